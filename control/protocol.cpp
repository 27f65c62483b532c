#include "control/protocol.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace vufront::control {

namespace {

constexpr const char* kParse = "command";

Error bad_message(const std::string& detail) { return make_error(errc::bad_message, kParse, detail); }

/// A JSON type name for messages ("a string", "an array").
std::string kind_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_float: return "a fraction";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "something else";
  }
}

bool parse_unsigned(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20)
    return false;
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
    if (s.size() > 16)
      return false;
  }
  for (char c : s)
    if (!(base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) : std::isdigit(static_cast<unsigned char>(c))))
      return false;
  std::string copy(s);
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(copy.c_str(), &end, base);
  if (errno != 0 || end != copy.c_str() + copy.size())
    return false;
  out = v;
  return true;
}

}  // namespace

Result<Command> parse_command(std::string_view text, json& id_out) {
  id_out = nullptr;
  json v = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded())
    return bad_message("not valid JSON");
  if (!v.is_object())
    return bad_message("a command must be a JSON object, not " + kind_of(v));
  Command c;
  auto id = v.find("id");
  if (id != v.end()) {
    if (id->is_number_integer() || (id->is_string() && id->get_ref<const std::string&>().size() <= max_id_bytes))
      id_out = *id;
  }
  if (id == v.end())
    return bad_message("no \"id\"");
  if (id_out.is_null())
    return bad_message("\"id\" must be an integer or a string of at most " +
                       std::to_string(max_id_bytes) + " bytes");
  c.id = id_out;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    if (k != "id" && k != "cmd" && k != "device" && k != "args")
      return bad_message("unknown key \"" + k + "\" (a command has id, cmd, device, args)");
  }
  auto cmd = v.find("cmd");
  if (cmd == v.end() || !cmd->is_string() || cmd->get_ref<const std::string&>().empty())
    return bad_message("\"cmd\" must be a non-empty string");
  c.cmd = cmd->get<std::string>();
  if (c.cmd.size() > 64)
    return bad_message("\"cmd\" is too long");
  auto dev = v.find("device");
  if (dev != v.end()) {
    if (!dev->is_string() || !valid_device_id(dev->get_ref<const std::string&>()))
      return bad_message("\"device\" must be a device id (1..32 letters, digits, '-', '_', '.')");
    c.device = dev->get<std::string>();
  }
  auto args = v.find("args");
  if (args != v.end()) {
    if (!args->is_object())
      return bad_message("\"args\" must be an object, not " + kind_of(*args));
    c.args = std::move(*args);
  }
  return c;
}

json make_command(const json& id, const std::string& cmd, const std::optional<std::string>& device,
                  json args) {
  json c = {{"id", id}, {"cmd", cmd}};
  if (device)
    c["device"] = *device;
  if (!args.is_null() && !args.empty())
    c["args"] = std::move(args);
  return c;
}

json ok_reply(const json& id, json result) {
  return {{"id", id}, {"ok", true}, {"result", result.is_null() ? json::object() : std::move(result)}};
}

json error_json(const Error& e) {
  return {{"code", to_string(e.code)}, {"op", e.op}, {"request", e.request}, {"message", e.message()}};
}

json error_reply(const json& id, const Error& e) {
  return {{"id", id}, {"ok", false}, {"error", error_json(e)}};
}

Error error_from_json(const json& e, const std::string& cmd) {
  Error out;
  out.code = errc::backend_failure;
  out.request = cmd;
  if (!e.is_object()) {
    out.detail = "the reply's error is not an object";
    return out;
  }
  std::string code = e.value("code", std::string());
  std::string message = e.value("message", std::string());
  std::string request = e.value("request", std::string());
  out.op = e.value("op", std::string());
  if (!request.empty() || !out.op.empty())
    out.request = request;
  errc c{};
  if (errc_from_string(code, c)) {
    out.code = c;
    // The message already names the operation, the request and the code; keep the rest.
    Error named = out;
    named.detail.clear();
    std::string prefix = named.message() + ": ";
    out.detail = message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
  } else {
    out.detail = "unknown error code \"" + code + "\": " + message;
  }
  return out;
}

json make_event(const std::string& name, const std::optional<std::string>& device, json fields) {
  json ev = {{"event", name}};
  if (device)
    ev["device"] = *device;
  if (fields.is_object())
    for (auto it = fields.begin(); it != fields.end(); ++it)
      ev[it.key()] = it.value();
  return ev;
}

std::string to_wire(const json& message) {
  // Invalid UTF-8 in a string (a path, a back-end's message) is replaced
  // rather than throwing.
  return message.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string to_hex(const std::vector<uint8_t>& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

Result<std::vector<uint8_t>> from_hex(std::string_view text, const std::string& what) {
  if (text.size() % 2 != 0)
    return make_error(errc::bad_message, kParse, what + ": hex bytes need an even number of digits");
  std::vector<uint8_t> out;
  out.reserve(text.size() / 2);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < text.size(); i += 2) {
    int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0)
      return make_error(errc::bad_message, kParse, what + ": not a hex digit at " + std::to_string(i));
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

bool valid_device_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 32)
    return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// ---- Args ------------------------------------------------------------------------------

Args::Args(const json& value, std::string path) : value_(&value), path_(std::move(path)) {}

Error Args::bad(const char* key, const std::string& what) const {
  return make_error(errc::bad_message, kParse, path_ + "." + key + ": " + what);
}

const json* Args::find(const char* key) {
  seen_.emplace_back(key);
  if (!value_->is_object())
    return nullptr;
  auto it = value_->find(key);
  return it == value_->end() ? nullptr : &*it;
}

bool Args::has(const char* key) const { return value_->is_object() && value_->contains(key); }

Result<uint64_t> Args::u64(const char* key, uint64_t min, uint64_t max, std::optional<uint64_t> fallback) {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  const json* v = find(key);
  auto range = [&] { return "expected an integer " + std::to_string(min) + ".." + std::to_string(max); };
  if (v == nullptr) {
    if (fallback)
      return *fallback;
    return bad(key, "missing (" + range() + ")");
  }
  uint64_t out = 0;
  if (v->is_number_unsigned()) {
    out = v->get<uint64_t>();
  } else if (v->is_number_integer()) {
    if (v->get<int64_t>() < 0)
      return bad(key, range() + ", got " + v->dump());
    out = static_cast<uint64_t>(v->get<int64_t>());
  } else if (v->is_string()) {
    if (!parse_unsigned(v->get_ref<const std::string&>(), out))
      return bad(key, range() + " (a number, or a string in hex \"0x..\" or decimal), got " + v->dump());
  } else {
    return bad(key, range() + ", got " + kind_of(*v));
  }
  if (out < min || out > max)
    return bad(key, range() + ", got " + std::to_string(out));
  return out;
}

Result<std::string> Args::string(const char* key, size_t max_bytes, std::optional<std::string> fallback) {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  const json* v = find(key);
  if (v == nullptr) {
    if (fallback)
      return *fallback;
    return bad(key, "missing (expected a string)");
  }
  if (!v->is_string())
    return bad(key, "expected a string, got " + kind_of(*v));
  const auto& s = v->get_ref<const std::string&>();
  if (s.empty() || s.size() > max_bytes)
    return bad(key, "expected 1.." + std::to_string(max_bytes) + " bytes, got " + std::to_string(s.size()));
  return s;
}

Result<bool> Args::boolean(const char* key, std::optional<bool> fallback) {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  const json* v = find(key);
  if (v == nullptr) {
    if (fallback)
      return *fallback;
    return bad(key, "missing (expected true or false)");
  }
  if (!v->is_boolean())
    return bad(key, "expected true or false, got " + kind_of(*v));
  return v->get<bool>();
}

Result<std::string> Args::one_of(const char* key, std::initializer_list<const char*> choices,
                                 std::optional<std::string> fallback) {
  auto s = string(key, 64, std::move(fallback));
  if (!s)
    return s;
  std::string list;
  for (const char* c : choices) {
    if (*s == c)
      return s;
    list += list.empty() ? c : std::string(", ") + c;
  }
  return bad(key, "expected one of " + list + ", got \"" + *s + "\"");
}

Result<Args> Args::object(const char* key) {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  const json* v = find(key);
  if (v == nullptr)
    return bad(key, "missing (expected an object)");
  if (!v->is_object())
    return bad(key, "expected an object, got " + kind_of(*v));
  return Args(*v, path_ + "." + key);
}

Result<std::vector<Args>> Args::objects(const char* key, size_t min, size_t max) {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  const json* v = find(key);
  if (v == nullptr)
    return bad(key, "missing (expected an array of objects)");
  if (!v->is_array())
    return bad(key, "expected an array, got " + kind_of(*v));
  if (v->size() < min || v->size() > max)
    return bad(key, "expected " + std::to_string(min) + ".." + std::to_string(max) +
                        " elements, got " + std::to_string(v->size()));
  std::vector<Args> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& e = (*v)[i];
    std::string p = path_ + "." + key + "[" + std::to_string(i) + "]";
    if (!e.is_object())
      return make_error(errc::bad_message, kParse, p + ": expected an object, got " + kind_of(e));
    out.emplace_back(e, p);
  }
  return out;
}

Result<void> Args::done() const {
  if (!value_->is_object())
    return make_error(errc::bad_message, kParse, path_ + " must be an object");
  for (auto it = value_->begin(); it != value_->end(); ++it)
    if (std::find(seen_.begin(), seen_.end(), it.key()) == seen_.end())
      return make_error(errc::bad_message, kParse, path_ + ": unknown argument \"" + it.key() + "\"");
  return ok();
}

}  // namespace vufront::control
