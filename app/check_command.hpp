#pragma once
// `vufront check SOCKET --device blk|net|fs`: runs the Checker against any
// back-end and prints each step with its time (text, live) or one JSON
// object at the end. Exit status 0 only when every step worked.

#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "ops/checker.hpp"

namespace vufront::app {

/// One step as a text line: "  ok    negotiate          0.8 ms  detail".
void print_step(std::ostream& out, const ops::CheckStep& s);
/// {"ok": bool, "steps": [{"name", "ok", "ms", "detail"}...]} plus `extra` members.
[[nodiscard]] nlohmann::json steps_json(const std::vector<ops::CheckStep>& steps);

[[nodiscard]] int check_main(ops::CheckOptions opts);

}  // namespace vufront::app
