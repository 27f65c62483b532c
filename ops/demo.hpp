#pragma once
// The steps of `vufront demo` against the reference back-end it started: the
// standard check (negotiate, config, memory, activate, I/O) plus a
// shared-memory mapping the back-end makes (the window shows the data written
// through the ring) and a configuration change (SIGUSR1 to the back-end),
// then sleep, wake, reset and activate again.

#include "ops/checker.hpp"
#include "ops/child_process.hpp"

namespace vufront::ops {

/// Runs the demo's steps on `c` (recorded in c.steps()); `backend` is the
/// reference back-end process `c` talks to. True when every step passed.
[[nodiscard]] bool run_demo(Checker& c, ChildProcess& backend);

}  // namespace vufront::ops
