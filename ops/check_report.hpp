#pragma once
// How a check's steps are reported (`vufront check`, `vufront demo`): one
// text line per step as it ends, or one JSON object at the end.

#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "ops/checker.hpp"

namespace vufront::ops {

/// One step as a text line: "  ok    negotiate          0.8 ms  detail".
void print_step(std::ostream& out, const CheckStep& s);
/// {"ok": bool, "steps": [{"name", "ok", "ms", "detail"[, "events"]}...]};
/// the caller adds its own members. Events are printed one per line under
/// their step.
[[nodiscard]] nlohmann::json steps_json(const std::vector<CheckStep>& steps);

}  // namespace vufront::ops
