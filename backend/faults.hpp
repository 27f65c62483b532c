#pragma once
// Fault injection: decides, per arriving request, whether the back-end
// answers normally, waits first, drops the connection or dies on the spot.
// Occurrences are counted over the daemon's lifetime (all connections).
// For device-state transfers, state_transfer_plan() turns the --state-*
// options into the TransferPlan that save_state/load_state follow.

#include <cstdint>
#include <map>
#include <vector>

#include "backend/device_state.hpp"
#include "backend/options.hpp"

namespace vufront::backend {

struct FaultAction {
  bool crash = false;      ///< _exit now, no cleanup
  bool close = false;      ///< drop the connection instead of answering
  uint32_t delay_ms = 0;   ///< wait this long before answering
  /// before answering, send an oversized back-end request on the back-end
  /// channel and wait (bounded) for the front-end to close the channel
  bool oversize = false;
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

/// How long --state-stall-after keeps a stalled pipe open at most (10 min).
inline constexpr int state_stall_hold_ms = 10 * 60 * 1000;

/// The plan of one SET_DEVICE_STATE_FD transfer (`save`: direction SAVE)
/// under `f`: --state-endless (save only) streams forever;
/// --state-crash-after calls crash_now() once that many bytes moved;
/// --state-stall-after then calls stall_until_closed(). --state-own-fd is
/// the server's business (which pipe), not the plan's.
[[nodiscard]] TransferPlan state_transfer_plan(const StateFaults& f, bool save);

/// Keeps the transfer's pipe end `fd` open without moving data, polling it
/// until the front-end closes its end (POLLERR/POLLHUP) or `max_ms` pass.
/// Always an error, as the transfer failed: disconnected (the front-end
/// closed) or timeout; io_error if poll fails.
[[nodiscard]] Result<void> stall_until_closed(int fd, const char* op,
                                              int max_ms = state_stall_hold_ms);

/// Terminates the process immediately without any cleanup (socket file and
/// pidfile stay behind), as a crashing back-end would.
[[noreturn]] void crash_now();

}  // namespace vufront::backend
