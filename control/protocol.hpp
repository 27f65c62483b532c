#pragma once
// The messages of the attach control protocol (docs/attach-protocol.md):
// the command envelope, replies and events as JSON, and strict readers for
// command arguments (every field checked, unknown fields refused, numbers
// as JSON integers or hex/decimal strings). Shared by the attach server and
// the client library. No CAF.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"

namespace vufront::control {

using json = nlohmann::json;

/// The protocol version this side speaks.
inline constexpr int protocol_version = 1;
/// Most commands of one connection in flight at once.
inline constexpr size_t max_in_flight = 32;
/// Longest command id string.
inline constexpr size_t max_id_bytes = 64;

/// A command as received: envelope checked, args not yet.
struct Command {
  json id;                            ///< integer or string
  std::string cmd;
  std::optional<std::string> device;  ///< absent: the only device
  json args = json::object();
};

/// Parses one packet's text into a Command. Errors: bad_message (not JSON,
/// not an object, id/cmd/device/args missing or mistyped, unknown keys).
/// `id_out` gets the id whenever one could be read (for the error reply).
[[nodiscard]] Result<Command> parse_command(std::string_view text, json& id_out);

/// {"id", "cmd", "device"?, "args"}: what the client sends.
[[nodiscard]] json make_command(const json& id, const std::string& cmd,
                                const std::optional<std::string>& device, json args);
/// {"id", "ok": true, "result"}.
[[nodiscard]] json ok_reply(const json& id, json result);
/// {"id", "ok": false, "error": {"code", "op", "request", "message"}}.
[[nodiscard]] json error_reply(const json& id, const Error& e);
/// {"code", "op", "request", "message"} of an Error.
[[nodiscard]] json error_json(const Error& e);
/// The Error of an error object from the wire (unknown codes become
/// backend_failure with the code in the detail).
[[nodiscard]] Error error_from_json(const json& e, const std::string& cmd);
/// {"event": name, "device"?: device, ...fields}.
[[nodiscard]] json make_event(const std::string& name, const std::optional<std::string>& device,
                              json fields = json::object());

/// Serializes a message for the wire (compact, one line, "\n" at the end).
[[nodiscard]] std::string to_wire(const json& message);

/// Lower-case hex of bytes, and back (errors: bad_message naming `what`).
[[nodiscard]] std::string to_hex(const std::vector<uint8_t>& bytes);
[[nodiscard]] Result<std::vector<uint8_t>> from_hex(std::string_view text, const std::string& what);

/// A reader over one JSON object of arguments, naming each field by its
/// path in errors ("args.queues[1].size: expected an integer 1..32768").
/// Every field read is remembered; done() refuses the ones never read.
class Args {
public:
  /// `path` names the object in errors ("args"). `value` must be an object
  /// (else the first read fails with bad_message).
  Args(const json& value, std::string path);

  /// An unsigned integer in [min, max]: a JSON number, or a string in hex
  /// ("0x1f") or decimal. Absent: `fallback` if given, else bad_message.
  [[nodiscard]] Result<uint64_t> u64(const char* key, uint64_t min, uint64_t max,
                                     std::optional<uint64_t> fallback = std::nullopt);
  [[nodiscard]] Result<std::string> string(const char* key, size_t max_bytes,
                                           std::optional<std::string> fallback = std::nullopt);
  [[nodiscard]] Result<bool> boolean(const char* key, std::optional<bool> fallback = std::nullopt);
  /// A string that must be one of `choices`.
  [[nodiscard]] Result<std::string> one_of(const char* key, std::initializer_list<const char*> choices,
                                           std::optional<std::string> fallback = std::nullopt);
  /// A nested object (its reader names it "path.key").
  [[nodiscard]] Result<Args> object(const char* key);
  /// A nested array of objects, with between min and max elements.
  [[nodiscard]] Result<std::vector<Args>> objects(const char* key, size_t min, size_t max);
  [[nodiscard]] bool has(const char* key) const;

  /// bad_message when the object has a key no read asked for (typos fail
  /// loudly instead of being ignored), or is not an object at all.
  [[nodiscard]] Result<void> done() const;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
  [[nodiscard]] Error bad(const char* key, const std::string& what) const;
  [[nodiscard]] const json* find(const char* key);

  const json* value_;
  std::string path_;
  std::vector<std::string> seen_;
};

/// Device ids: 1..32 letters, digits, '-', '_' and '.'.
[[nodiscard]] bool valid_device_id(std::string_view id) noexcept;

}  // namespace vufront::control
