#pragma once
// Fault injection: decides, per arriving request, whether the back-end
// answers normally, waits first, drops the connection or dies on the spot.
// Occurrences are counted over the daemon's lifetime (all connections).

#include <cstdint>
#include <map>
#include <vector>

#include "backend/options.hpp"

namespace vufront::backend {

struct FaultAction {
  bool crash = false;      ///< _exit now, no cleanup
  bool close = false;      ///< drop the connection instead of answering
  uint32_t delay_ms = 0;   ///< wait this long before answering
};

class Faults {
public:
  explicit Faults(std::vector<FaultSpec> specs) : specs_(std::move(specs)) {}

  /// Counts one arrival of `request` and returns what to do about it.
  [[nodiscard]] FaultAction on_request(uint32_t request);

private:
  std::vector<FaultSpec> specs_;
  std::map<uint32_t, uint32_t> seen_;
};

/// Terminates the process immediately without any cleanup (socket file and
/// pidfile stay behind), as a crashing back-end would.
[[noreturn]] void crash_now();

}  // namespace vufront::backend
