#pragma once
// Rendering of a probe result: a human-readable report and a JSON object.

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ops/probe.hpp"

namespace vufront::ops {

/// Lower-case hex of `bytes`, no separators ("0000020000000000...").
[[nodiscard]] std::string to_hex(const std::vector<uint8_t>& bytes);

/// JSON with at least: features, protocol_features, queue_num, max_mem_slots
/// (integers, null when not offered) and config (hex string, null when not
/// offered or refused).
[[nodiscard]] nlohmann::json probe_json(const ProbeResult& r);

/// The text report.
void print_probe_text(std::ostream& out, const ProbeResult& r);

}  // namespace vufront::ops
