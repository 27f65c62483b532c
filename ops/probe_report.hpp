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

/// The probe's JSON (docs/json-output.md, "probe"): feature sets as
/// {"bits", "names"}, numbers as numbers, null for what was not offered.
[[nodiscard]] nlohmann::json probe_json(const ProbeResult& r);
/// A failed probe's JSON: {"ok": false, "socket", "device", "error"}.
[[nodiscard]] nlohmann::json probe_failure_json(const ProbeOptions& opts, const Error& e);

/// The text report.
void print_probe_text(std::ostream& out, const ProbeResult& r);

}  // namespace vufront::ops
