#pragma once
// The JSON value readers and validators of the job file parser (job_file.cpp):
// each reads one value of a known type and range, or fails naming its place
// in the file ("devices[1].queues") and what is wrong with it. Internal to
// the job file parser: include it only from job_file*.cpp.
//
// A validation failure is thrown as JobFileInvalid and caught in parse_job
// (job_file.cpp), which turns it into its Result: nothing escapes the job
// file parser (conventions: no exceptions across module boundaries). Throwing
// keeps each check a single line where the parser reads a value.

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vufront::ops::job_file_values {

/// A job file's validation failure: where in the file, and what is wrong.
struct JobFileInvalid {
  std::string where;
  std::string what;
};

/// Throws JobFileInvalid{where, what}.
[[noreturn]] void fail(const std::string& where, std::string what);

/// `s` as a JSON string, in double quotes and escaped.
[[nodiscard]] std::string in_quotes(const std::string& s);
/// What a JSON value is, for "expected X, got Y".
[[nodiscard]] std::string describe(const nlohmann::json& v);
/// " (did you mean "sleep"?)" when `word` is close to one of `choices`, else "".
[[nodiscard]] std::string suggestion(const std::string& word, const std::vector<std::string>& choices);
/// "a, b, c".
[[nodiscard]] std::string join(const std::vector<std::string>& v);
/// The place of `key` inside `where` ("devices[0].name"; `key` alone when `where` is empty).
[[nodiscard]] std::string at(const std::string& where, const std::string& key);

/// Fails on the first key of `obj` not in `keys` (with a suggestion and the keys).
void only_keys(const nlohmann::json& obj, const std::string& where,
               const std::vector<std::string>& keys);
/// `v`, failing when it is not an object.
const nlohmann::json& object_at(const nlohmann::json& v, const std::string& where);
/// A non-empty string of at most `max_len` bytes without NUL.
/// Not [[nodiscard]]: a "comment" is read only to check it.
std::string get_string(const nlohmann::json& v, const std::string& where, size_t max_len = 4096);
/// An integer in min..max.
[[nodiscard]] uint64_t get_uint(const nlohmann::json& v, const std::string& where, uint64_t min,
                                uint64_t max);
/// true or false.
[[nodiscard]] bool get_bool(const nlohmann::json& v, const std::string& where);
/// Seconds (integer or decimal) as milliseconds, at most max_job_seconds;
/// `allow_zero` for waits (otherwise at least 1 ms).
[[nodiscard]] std::chrono::milliseconds get_seconds(const nlohmann::json& v, const std::string& where,
                                                    bool allow_zero);
/// A size: bytes, or a string like "512M" (parse_size).
[[nodiscard]] uint64_t get_size(const nlohmann::json& v, const std::string& where);
/// A unix socket path (at most max_socket_path bytes).
[[nodiscard]] std::string get_socket(const nlohmann::json& v, const std::string& where);
/// Whether `s` is a device name: 1 to 32 letters, digits, '-', '_' or '.'.
[[nodiscard]] bool valid_name(const std::string& s);

/// nlohmann keeps the last of two equal keys; a job file must not have them.
/// A parser callback (json::parse) that tracks the place in the document
/// while parsing and records the first duplicate as "devices[0].steps"
/// (where) + key. It never stops the parse.
struct DuplicateKeys {
  struct Frame {
    bool array = false;
    size_t next = 0;         // array: index of the next element
    std::string selection;   // "[3]" or ".key" of the element being read
    std::set<std::string> keys;
  };
  std::vector<Frame> frames;
  /// "<where>: duplicate key "<key>"" for the first duplicate, if any.
  std::optional<std::string> found;

  /// The place being read, as "devices[0].steps".
  [[nodiscard]] std::string path() const;
  /// A new element starts: in an array, its index becomes the selection.
  void element();
  /// The json::parse callback; always true (keep parsing).
  bool operator()(int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed);
};

}  // namespace vufront::ops::job_file_values
