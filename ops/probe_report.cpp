#include "ops/probe_report.hpp"

#include <algorithm>
#include <cstdio>

#include "ops/json_style.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::ops {

namespace {

std::string hex64(uint64_t v) { return hex_bits(v); }

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty())
      out += ' ';
    out += n;
  }
  return out;
}

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

std::string to_hex(const std::vector<uint8_t>& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

nlohmann::json probe_json(const ProbeResult& r) {
  nlohmann::json j;
  j["ok"] = true;
  j["socket"] = r.socket;
  j["device"] = name(r.device);
  j["kind_doubt"] = r.kind_doubt.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.kind_doubt);
  j["features"] = features_json(r.features, r.device);
  j["protocol_features"] =
      r.protocol_features ? protocol_features_json(*r.protocol_features) : nlohmann::json(nullptr);
  j["protocol_features_acked"] = r.protocol_features_acked
                                     ? protocol_features_json(*r.protocol_features_acked)
                                     : nlohmann::json(nullptr);
  j["queue_num"] = or_null(r.queue_num);
  j["max_mem_slots"] = or_null(r.max_mem_slots);
  j["backend_channel"] = r.backend_channel;
  j["backend_channel_error"] = or_null(r.backend_channel_error);
  j["config"] = r.config ? nlohmann::json(to_hex(*r.config)) : nlohmann::json(nullptr);
  j["config_error"] = or_null(r.config_error);
  j["config_decoded"] = nullptr;
  if (r.config) {
    nlohmann::json fields = nlohmann::json::object();
    for (const auto& f : virtio::decode_config(r.device, *r.config))
      fields[f.name] = f.number ? nlohmann::json(*f.number) : nlohmann::json(f.text);
    j["config_decoded"] = fields;
  }
  j["shmem_regions"] = nullptr;
  if (r.shmem_regions) {
    nlohmann::json regions = nlohmann::json::array();
    for (const auto& [id, size] : *r.shmem_regions)
      regions.push_back({{"shmid", id}, {"size", size}});
    j["shmem_regions"] = regions;
  }
  return j;
}

nlohmann::json probe_failure_json(const ProbeOptions& opts, const Error& e) {
  return {{"ok", false}, {"socket", opts.socket}, {"device", name(opts.device)},
          {"error", e.message()}};
}

void print_probe_text(std::ostream& out, const ProbeResult& r) {
  auto line = [&out](const std::string& key, const std::string& value) {
    std::string k = key;
    k.resize(std::max<size_t>(k.size() + 1, 20), ' ');  // a column, never glued to the value
    out << k << value << "\n";
  };
  line("back-end", r.socket + " (device " + name(r.device) + ")");
  if (!r.kind_doubt.empty())
    line("device kind", r.kind_doubt);
  line("features", hex64(r.features) + "  " + joined(feature_names(r.features, r.device)));
  if (r.protocol_features) {
    line("protocol features",
         hex64(*r.protocol_features) + "  " + joined(protocol_feature_names(*r.protocol_features)));
    line("  acked", hex64(r.protocol_features_acked.value_or(0)) + "  " +
                        joined(protocol_feature_names(r.protocol_features_acked.value_or(0))));
  } else {
    line("protocol features", "not offered (no PROTOCOL_FEATURES bit)");
  }
  line("queues", r.queue_num ? std::to_string(*r.queue_num) : "not offered (no MQ)");
  line("max mem slots",
       r.max_mem_slots ? std::to_string(*r.max_mem_slots) : "not offered (8 with SET_MEM_TABLE)");
  if (r.backend_channel_error)
    line("back-end channel", "refused: " + *r.backend_channel_error);
  else
    line("back-end channel", r.backend_channel ? "set up" : "not offered");
  if (r.config) {
    line("config", std::to_string(r.config->size()) + " bytes  " + to_hex(*r.config));
    for (const auto& f : virtio::decode_config(r.device, *r.config))
      line("  " + f.name, f.text);
  } else if (r.config_error) {
    line("config", "refused (" + std::to_string(r.config_size_requested) +
                       " bytes asked): " + *r.config_error);
  } else {
    line("config", "not offered (no CONFIG)");
  }
  if (r.shmem_regions) {
    if (r.shmem_regions->empty())
      line("shared memory", "none");
    for (const auto& [id, size] : *r.shmem_regions)
      line("shared memory", "shmid " + std::to_string(id) + ": " + std::to_string(size) + " bytes");
  } else {
    line("shared memory", "not offered (no SHMEM)");
  }
}

}  // namespace vufront::ops
