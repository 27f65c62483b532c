#include "ops/json_style.hpp"

#include <cstdio>

namespace vufront::ops {

std::string hex_bits(uint64_t mask) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(mask));
  return buf;
}

nlohmann::json feature_set_json(uint64_t mask, const std::vector<std::string>& names) {
  return {{"bits", hex_bits(mask)}, {"names", names}};
}

nlohmann::json features_json(uint64_t mask, DeviceKind kind) {
  return feature_set_json(mask, feature_names(mask, kind));
}

nlohmann::json protocol_features_json(uint64_t mask) {
  return feature_set_json(mask, protocol_feature_names(mask));
}

}  // namespace vufront::ops
