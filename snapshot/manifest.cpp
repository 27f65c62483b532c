#include "snapshot/manifest.hpp"

#include <cctype>
#include <ctime>
#include <set>

namespace vufront::snapshot {
namespace {

constexpr const char* kWhat = "snapshot manifest";

Error bad(const std::string& field, const std::string& why) {
  return make_error(errc::invalid_payload, kWhat, field + ": " + why);
}

bool is_hex_digit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

unsigned hex_value(char c) {
  if (c >= '0' && c <= '9')
    return static_cast<unsigned>(c - '0');
  return static_cast<unsigned>(std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
}

std::string fixed_hex64(uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4)
    out[static_cast<size_t>(i)] = digits[v & 0xf];
  return out;
}

std::string bytes_to_hex(const std::vector<uint8_t>& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 0xf];
  }
  return out;
}

// "YYYY-MM-DDThh:mm:ssZ" with plausible ranges (not a calendar check).
bool is_utc_time(const std::string& s) {
  static const char pattern[] = "dddd-dd-ddTdd:dd:ddZ";
  if (s.size() != sizeof pattern - 1)
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool digit = std::isdigit(static_cast<unsigned char>(s[i])) != 0;
    if (pattern[i] == 'd' ? !digit : s[i] != pattern[i])
      return false;
  }
  auto num = [&](size_t at) { return (s[at] - '0') * 10 + (s[at + 1] - '0'); };
  return num(5) >= 1 && num(5) <= 12 && num(8) >= 1 && num(8) <= 31 && num(11) <= 23 &&
         num(14) <= 59 && num(17) <= 60;
}

// ---- typed field access: each names the field in its error.

Result<uint64_t> get_unsigned(const nlohmann::json& obj, const std::string& key,
                              const std::string& field, uint64_t max) {
  auto it = obj.find(key);
  if (it == obj.end())
    return bad(field, "missing");
  if (!it->is_number_unsigned())
    return bad(field, std::string("expected an unsigned integer, got ") + it->type_name() +
                          (it->is_number() ? " " + it->dump() : ""));
  uint64_t v = it->get<uint64_t>();
  if (v > max)
    return bad(field, std::to_string(v) + " is larger than " + std::to_string(max));
  return v;
}

Result<std::string> get_string(const nlohmann::json& obj, const std::string& key,
                               const std::string& field) {
  auto it = obj.find(key);
  if (it == obj.end())
    return bad(field, "missing");
  if (!it->is_string())
    return bad(field, std::string("expected a string, got ") + it->type_name());
  return it->get<std::string>();
}

Result<const nlohmann::json*> get_array(const nlohmann::json& obj, const std::string& key,
                                        const std::string& field, size_t max) {
  auto it = obj.find(key);
  if (it == obj.end())
    return bad(field, "missing");
  if (!it->is_array())
    return bad(field, std::string("expected an array, got ") + it->type_name());
  if (it->size() > max)
    return bad(field, std::to_string(it->size()) + " entries, at most " +
                          std::to_string(max) + " allowed");
  return &*it;
}

// "0x" + 1..16 hex digits.
Result<uint64_t> get_mask(const nlohmann::json& obj, const std::string& key) {
  auto s = get_string(obj, key, key);
  if (!s)
    return std::move(s).error();
  const std::string& v = *s;
  if (v.size() < 3 || v.size() > 18 || v[0] != '0' || v[1] != 'x')
    return bad(key, "\"" + v.substr(0, 40) + "\" is not \"0x\" and 1 to 16 hex digits");
  uint64_t out = 0;
  for (size_t i = 2; i < v.size(); ++i) {
    if (!is_hex_digit(v[i]))
      return bad(key, "\"" + v.substr(0, 40) + "\" is not \"0x\" and 1 to 16 hex digits");
    out = (out << 4) | hex_value(v[i]);
  }
  return out;
}

Result<void> check_keys(const nlohmann::json& obj, const std::string& where,
                        std::initializer_list<const char*> known) {
  if (!obj.is_object())
    return bad(where.empty() ? "manifest" : where,
               std::string("expected an object, got ") + obj.type_name());
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool found = false;
    for (const char* k : known)
      found = found || it.key() == k;
    if (!found)
      return bad(where.empty() ? it.key() : where + "." + it.key(), "unknown key");
  }
  return ok();
}

}  // namespace

bool Manifest::operator==(const Manifest& o) const {
  return format_version == o.format_version && kind == o.kind && features == o.features &&
         protocol_features == o.protocol_features && queues == o.queues &&
         config == o.config && shmem == o.shmem && state_length == o.state_length &&
         state_checksum == o.state_checksum && created == o.created;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<void> validate(const Manifest& m) {
  if (m.format_version != format_version)
    return bad("format_version", std::to_string(m.format_version) +
                                     " is not supported (this build knows " +
                                     std::to_string(format_version) + ")");
  if (m.queues.size() > max_queues)
    return bad("queues", std::to_string(m.queues.size()) + " entries, at most " +
                             std::to_string(max_queues) + " allowed");
  std::set<uint16_t> indices;
  for (size_t i = 0; i < m.queues.size(); ++i) {
    const QueueState& q = m.queues[i];
    std::string field = "queues[" + std::to_string(i) + "]";
    if (q.index >= max_queues)
      return bad(field + ".index", std::to_string(q.index) + " is not below " +
                                       std::to_string(max_queues));
    if (q.size == 0 || q.size > max_queue_size)
      return bad(field + ".size", std::to_string(q.size) + " is not in 1.." +
                                      std::to_string(max_queue_size));
    if (!indices.insert(q.index).second)
      return bad(field + ".index", "queue " + std::to_string(q.index) + " appears twice");
  }
  if (m.config.size() > max_config_bytes)
    return bad("config", std::to_string(m.config.size()) + " bytes, at most " +
                             std::to_string(max_config_bytes) + " allowed");
  if (m.shmem.size() > max_shmem_regions)
    return bad("shmem", std::to_string(m.shmem.size()) + " entries, at most " +
                            std::to_string(max_shmem_regions) + " allowed");
  std::set<uint8_t> shmids;
  for (size_t i = 0; i < m.shmem.size(); ++i) {
    std::string field = "shmem[" + std::to_string(i) + "]";
    if (m.shmem[i].size == 0)
      return bad(field + ".size", "0 (absent regions are not listed)");
    if (!shmids.insert(m.shmem[i].shmid).second)
      return bad(field + ".shmid",
                 "region " + std::to_string(m.shmem[i].shmid) + " appears twice");
  }
  if (!is_utc_time(m.created))
    return bad("created", "\"" + m.created.substr(0, 40) +
                              "\" is not a UTC time \"YYYY-MM-DDThh:mm:ssZ\"");
  return ok();
}

nlohmann::json to_json(const Manifest& m) {
  nlohmann::json queues = nlohmann::json::array();
  for (const QueueState& q : m.queues)
    queues.push_back({{"index", q.index}, {"size", q.size}, {"base", q.base}});
  nlohmann::json shmem = nlohmann::json::array();
  for (const ShmemRegion& r : m.shmem)
    shmem.push_back({{"shmid", r.shmid}, {"size", r.size}});
  return {
      {"format_version", m.format_version},
      {"device", name(m.kind)},
      {"features", hex(m.features)},
      {"protocol_features", hex(m.protocol_features)},
      {"queues", std::move(queues)},
      {"config", bytes_to_hex(m.config)},
      {"shmem", std::move(shmem)},
      {"state_length", m.state_length},
      {"state_checksum", fixed_hex64(m.state_checksum)},
      {"created", m.created},
  };
}

Result<Manifest> manifest_from_json(const nlohmann::json& j) {
  if (auto r = check_keys(j, "", {"format_version", "device", "features", "protocol_features",
                                  "queues", "config", "shmem", "state_length",
                                  "state_checksum", "created"});
      !r)
    return std::move(r).error();
  Manifest m;

  auto version = get_unsigned(j, "format_version", "format_version", UINT32_MAX);
  if (!version)
    return std::move(version).error();
  m.format_version = static_cast<uint32_t>(*version);
  if (m.format_version != format_version)  // before anything else is interpreted
    return bad("format_version", std::to_string(m.format_version) +
                                     " is not supported (this build knows " +
                                     std::to_string(format_version) + ")");

  auto device = get_string(j, "device", "device");
  if (!device)
    return std::move(device).error();
  auto kind = device_kind_from_string(*device);
  if (!kind)
    return bad("device", "\"" + device->substr(0, 40) +
                             "\" is not one of blk, net, fs, generic");
  m.kind = *kind;

  auto features = get_mask(j, "features");
  if (!features)
    return std::move(features).error();
  m.features = *features;
  auto protocol = get_mask(j, "protocol_features");
  if (!protocol)
    return std::move(protocol).error();
  m.protocol_features = *protocol;

  auto queues = get_array(j, "queues", "queues", max_queues);
  if (!queues)
    return std::move(queues).error();
  for (size_t i = 0; i < (*queues)->size(); ++i) {
    const nlohmann::json& q = (**queues)[i];
    std::string field = "queues[" + std::to_string(i) + "]";
    if (auto r = check_keys(q, field, {"index", "size", "base"}); !r)
      return std::move(r).error();
    auto index = get_unsigned(q, "index", field + ".index", UINT16_MAX);
    if (!index)
      return std::move(index).error();
    auto size = get_unsigned(q, "size", field + ".size", UINT16_MAX);
    if (!size)
      return std::move(size).error();
    auto base = get_unsigned(q, "base", field + ".base", UINT32_MAX);
    if (!base)
      return std::move(base).error();
    m.queues.push_back({static_cast<uint16_t>(*index), static_cast<uint16_t>(*size),
                        static_cast<uint32_t>(*base)});
  }

  auto config = get_string(j, "config", "config");
  if (!config)
    return std::move(config).error();
  if (config->size() % 2 != 0)
    return bad("config", "odd number of hex digits (" + std::to_string(config->size()) + ")");
  if (config->size() / 2 > max_config_bytes)
    return bad("config", std::to_string(config->size() / 2) + " bytes, at most " +
                             std::to_string(max_config_bytes) + " allowed");
  for (size_t i = 0; i < config->size(); i += 2) {
    char hi = (*config)[i], lo = (*config)[i + 1];
    if (!is_hex_digit(hi) || !is_hex_digit(lo))
      return bad("config", "not a hex digit at position " +
                               std::to_string(is_hex_digit(hi) ? i + 1 : i));
    m.config.push_back(static_cast<uint8_t>(hex_value(hi) << 4 | hex_value(lo)));
  }

  auto shmem = get_array(j, "shmem", "shmem", max_shmem_regions);
  if (!shmem)
    return std::move(shmem).error();
  for (size_t i = 0; i < (*shmem)->size(); ++i) {
    const nlohmann::json& r = (**shmem)[i];
    std::string field = "shmem[" + std::to_string(i) + "]";
    if (auto k = check_keys(r, field, {"shmid", "size"}); !k)
      return std::move(k).error();
    auto shmid = get_unsigned(r, "shmid", field + ".shmid", UINT8_MAX);
    if (!shmid)
      return std::move(shmid).error();
    auto size = get_unsigned(r, "size", field + ".size", UINT64_MAX);
    if (!size)
      return std::move(size).error();
    m.shmem.push_back({static_cast<uint8_t>(*shmid), *size});
  }

  auto length = get_unsigned(j, "state_length", "state_length", UINT64_MAX);
  if (!length)
    return std::move(length).error();
  m.state_length = *length;

  auto checksum = get_string(j, "state_checksum", "state_checksum");
  if (!checksum)
    return std::move(checksum).error();
  if (checksum->size() != 16)
    return bad("state_checksum", "expected 16 hex digits, got " +
                                     std::to_string(checksum->size()) + " characters");
  for (char c : *checksum) {
    if (!is_hex_digit(c))
      return bad("state_checksum", "\"" + *checksum + "\" is not 16 hex digits");
    m.state_checksum = (m.state_checksum << 4) | hex_value(c);
  }

  auto created = get_string(j, "created", "created");
  if (!created)
    return std::move(created).error();
  m.created = std::move(*created);

  if (auto r = validate(m); !r)
    return std::move(r).error();
  return m;
}

Result<Manifest> manifest_from_text(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    return make_error(errc::invalid_payload, kWhat,
                      "not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  }
  return manifest_from_json(j);
}

}  // namespace vufront::snapshot
