#pragma once
// The actor-system configuration every vufront program uses: two scheduler
// threads (the machine class has 2 cores), no "moderate" polling naps (they
// add ~100 µs to every hand-off from a non-worker thread, measured with CAF
// 0.17.6 here), and the vufront error renderer.

#include <caf/actor_system_config.hpp>

namespace vufront::actors {

class SystemConfig : public caf::actor_system_config {
public:
  SystemConfig();
};

/// The same, with CAF's deterministic test_coordinator as scheduler.
class TestSystemConfig : public caf::actor_system_config {
public:
  TestSystemConfig();
};

}  // namespace vufront::actors
