#pragma once
// The conventions every command's JSON output follows (docs/json-output.md):
// counts, sizes and times are JSON numbers; a 64-bit feature set is an object
// {"bits": "0x" + 16 hex digits, "names": [...]} (a string, so no reader loses
// bits above 2^53); what is unknown or not offered is null, never a missing key;
// every top-level object has "ok", and a failure {"ok": false, "error": ...}.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/messages.hpp"

namespace vufront::ops {

/// "0x0000000175007e46".
[[nodiscard]] std::string hex_bits(uint64_t mask);
/// {"bits": hex_bits(mask), "names": names}.
[[nodiscard]] nlohmann::json feature_set_json(uint64_t mask, const std::vector<std::string>& names);
/// A virtio feature set, its device-specific bits named for `kind`.
[[nodiscard]] nlohmann::json features_json(uint64_t mask, DeviceKind kind);
/// A protocol feature set.
[[nodiscard]] nlohmann::json protocol_features_json(uint64_t mask);

}  // namespace vufront::ops
