#pragma once
// `vufront probe`: runs the probe (ops/probe.hpp) and prints its report, text
// or JSON (ops/probe_report.hpp).

#include "ops/probe.hpp"

namespace vufront::app {

/// Runs the probe and prints the report (text or JSON) on stdout, or a
/// one-line error on stderr. Returns the exit status (0 success, 1 back-end
/// or protocol error).
[[nodiscard]] int probe_main(const ops::ProbeOptions& opts);

}  // namespace vufront::app
