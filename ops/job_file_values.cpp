#include "ops/job_file_values.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "ops/job_file.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::ops::job_file_values {

using nlohmann::json;

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

void fail(const std::string& where, std::string what) {
  throw JobFileInvalid{where, std::move(what)};
}

std::string in_quotes(const std::string& s) { return json(s).dump(); }

/// What a JSON value is, for "expected X, got Y".
std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40)
    text = text.substr(0, 37) + "...";
  switch (v.type()) {
    case json::value_t::string: return "the string " + text;
    case json::value_t::boolean: return text;
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    default: return text;
  }
}

/// " (did you mean "sleep"?)" when `word` is close to one of `choices`.
std::string suggestion(const std::string& word, const std::vector<std::string>& choices) {
  const std::string* best = nullptr;
  size_t best_d = 3;
  for (const auto& c : choices) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = &c;
    }
  }
  return best ? " (did you mean " + in_quotes(*best) + "?)" : "";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out;
}

void only_keys(const json& obj, const std::string& where, const std::vector<std::string>& keys) {
  for (const auto& [k, v] : obj.items())
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      fail(where, "unknown key " + in_quotes(k) + suggestion(k, keys) + " (keys: " + join(keys) + ")");
}

std::string at(const std::string& where, const std::string& key) {
  return where.empty() ? key : where + "." + key;
}

const json& object_at(const json& v, const std::string& where) {
  if (!v.is_object())
    fail(where, "expected an object, got " + describe(v));
  return v;
}

std::string get_string(const json& v, const std::string& where, size_t max_len) {
  if (!v.is_string())
    fail(where, "expected a string, got " + describe(v));
  auto s = v.get<std::string>();
  if (s.empty())
    fail(where, "must not be empty");
  if (s.size() > max_len)
    fail(where, "longer than " + std::to_string(max_len) + " bytes");
  if (s.find('\0') != std::string::npos)
    fail(where, "contains a NUL byte");
  return s;
}

uint64_t get_uint(const json& v, const std::string& where, uint64_t min, uint64_t max) {
  if (!v.is_number_integer())
    fail(where, "expected an integer, got " + describe(v));
  bool negative = !v.is_number_unsigned() && v.get<int64_t>() < 0;
  uint64_t u = negative ? 0 : v.get<uint64_t>();
  if (negative || u < min || u > max)
    fail(where, v.dump() + " is not in " + std::to_string(min) + ".." + std::to_string(max));
  return u;
}

bool get_bool(const json& v, const std::string& where) {
  if (!v.is_boolean())
    fail(where, "expected true or false, got " + describe(v));
  return v.get<bool>();
}

/// Seconds (integer or decimal) as milliseconds; `allow_zero` for waits.
std::chrono::milliseconds get_seconds(const json& v, const std::string& where, bool allow_zero) {
  if (!v.is_number())
    fail(where, "expected a number of seconds, got " + describe(v));
  double s = v.get<double>();
  if (!std::isfinite(s) || s < 0 || (!allow_zero && s < 0.001) || s > max_job_seconds)
    fail(where, v.dump() + " is not in " + (allow_zero ? "0" : "0.001") + ".." +
                    std::to_string(static_cast<long>(max_job_seconds)) + " seconds");
  return std::chrono::milliseconds(std::llround(s * 1000.0));
}

uint64_t get_size(const json& v, const std::string& where) {
  if (v.is_string()) {
    auto r = parse_size(v.get<std::string>());
    if (!r)
      fail(where, r.error().detail);
    return *r;
  }
  if (!v.is_number_integer())
    fail(where, "expected a size (bytes, or a string like \"512M\"), got " + describe(v));
  return get_uint(v, where, 1, uint64_t{1} << 62);
}

std::string get_socket(const json& v, const std::string& where) {
  auto s = get_string(v, where, 4096);
  if (s.size() > max_socket_path)
    fail(where, "a unix socket path has at most " + std::to_string(max_socket_path) + " bytes, " +
                    in_quotes(s.substr(0, 24) + "...") + " has " + std::to_string(s.size()));
  return s;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 32)
    return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

// ---- duplicate keys ---------------------------------------------------------------------------

std::string DuplicateKeys::path() const {
  std::string out;
  for (const auto& f : frames)
    out += f.selection;
  return out.rfind('.', 0) == 0 ? out.substr(1) : out;
}

void DuplicateKeys::element() {
  if (!frames.empty() && frames.back().array)
    frames.back().selection = "[" + std::to_string(frames.back().next++) + "]";
}

bool DuplicateKeys::operator()(int, json::parse_event_t ev, json& parsed) {
  using E = json::parse_event_t;
  switch (ev) {
    case E::object_start: element(); frames.push_back({}); break;
    case E::array_start: element(); frames.push_back({true, 0, "", {}}); break;
    case E::object_end:
    case E::array_end:
      if (!frames.empty())
        frames.pop_back();
      if (!frames.empty() && !frames.back().array)
        frames.back().selection.clear();
      break;
    case E::key: {
      auto k = parsed.get<std::string>();
      auto& f = frames.back();
      f.selection.clear();
      std::string where = path();
      if (!f.keys.insert(k).second && !found)
        found = (where.empty() ? "" : where + ": ") + "duplicate key " + in_quotes(k);
      f.selection = "." + k;
      break;
    }
    case E::value: element(); break;
  }
  return true;
}

}  // namespace vufront::ops::job_file_values
