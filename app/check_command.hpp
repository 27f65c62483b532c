#pragma once
// `vufront check SOCKET --device blk|net|fs`: runs the Checker (ops/checker.hpp)
// against any back-end and prints each step with its time (text, live) or one
// JSON object at the end. Exit status 0 only when every step worked.

#include "ops/checker.hpp"

namespace vufront::app {

[[nodiscard]] int check_main(ops::CheckOptions opts);

}  // namespace vufront::app
