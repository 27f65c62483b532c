#include "base/wait.hpp"

namespace vufront {

namespace {
thread_local WaitHook* current_hook = nullptr;
}  // namespace

int wait_fds(pollfd* fds, nfds_t n, int timeout_ms) {
  if (current_hook != nullptr)
    return current_hook->wait(fds, n, timeout_ms);
  return ::poll(fds, n, timeout_ms);
}

WaitHook* set_wait_hook(WaitHook* hook) noexcept {
  WaitHook* old = current_hook;
  current_hook = hook;
  return old;
}

}  // namespace vufront
