#include "backend/faults.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>

namespace vufront::backend {

FaultAction Faults::on_request(uint32_t request) {
  const uint32_t n = ++seen_[request];
  FaultAction a;
  for (const FaultSpec& f : specs_) {
    if (f.request != request)
      continue;
    switch (f.kind) {
      case FaultKind::delay: a.delay_ms += f.delay_ms; break;
      case FaultKind::close: a.close = a.close || f.nth == n; break;
      case FaultKind::crash: a.crash = a.crash || f.nth == n; break;
      case FaultKind::oversize: a.oversize = a.oversize || f.nth == n; break;
    }
  }
  return a;
}

TransferPlan state_transfer_plan(const StateFaults& f, bool save) {
  const char* op = save ? "SET_DEVICE_STATE_FD(save)" : "SET_DEVICE_STATE_FD(load)";
  TransferPlan plan;
  plan.endless = save && f.endless;
  if (f.crash_after) {
    plan.budget = *f.crash_after;
    plan.at_budget = [op, bytes = *f.crash_after](int) -> Result<void> {
      std::fprintf(stderr, "vufront-backend: --state-crash-after %llu: %s: exiting without cleanup\n",
                   static_cast<unsigned long long>(bytes), op);
      crash_now();
    };
  } else if (f.stall_after) {
    plan.budget = *f.stall_after;
    plan.at_budget = [op, bytes = *f.stall_after](int fd) {
      std::fprintf(stderr, "vufront-backend: --state-stall-after %llu: %s: stalled\n",
                   static_cast<unsigned long long>(bytes), op);
      return stall_until_closed(fd, op);
    };
  }
  return plan;
}

Result<void> stall_until_closed(int fd, const char* op, int max_ms) {
  using clock = std::chrono::steady_clock;
  const auto until = clock::now() + std::chrono::milliseconds(max_ms);
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
    if (left <= 0)
      return make_error(errc::timeout, op,
                        "stalled (--state-stall-after) for " + std::to_string(max_ms) +
                            " ms without the front-end closing its end");
    // events 0: only POLLERR (save: the reader is gone), POLLHUP (load: the
    // writer is gone) and POLLNVAL are reported.
    pollfd p{fd, 0, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r > 0)
      return make_error(errc::disconnected, op,
                        "stalled (--state-stall-after); the front-end closed its end");
    if (r < 0 && errno != EINTR)
      return make_error(errc::io_error, op, "poll", errno);
  }
}

void crash_now() {
  _exit(134);
}

}  // namespace vufront::backend
