#pragma once
// `vufront demo`: no arguments, no set-up. Starts the reference back-end
// (vufront-backend, next to this executable) on a private socket, runs the
// whole check through the actors plus a configuration change and a
// shared-memory mapping, prints a short report, and stops the back-end.

#include <string>

namespace vufront::app {

struct DemoOptions {
  std::string backend;  ///< path of vufront-backend ("" = next to this executable)
  bool json = false;
};

[[nodiscard]] int demo_main(const DemoOptions& opts);

}  // namespace vufront::app
