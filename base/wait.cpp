#include "base/wait.hpp"

#include <atomic>

namespace vufront {

namespace {
thread_local WaitHook* current_hook = nullptr;

constexpr unsigned close_slots = 16384;
std::atomic<uint32_t> closes[close_slots];

std::atomic<uint32_t>& close_slot(int fd) noexcept {
  return closes[static_cast<unsigned>(fd) % close_slots];
}
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

void note_fd_closing(int fd) noexcept {
  if (fd < 0)
    return;
  close_slot(fd).fetch_add(1);  // seq_cst: ordered before the close itself
  if (current_hook != nullptr)
    current_hook->closing(fd);
}

uint32_t fd_closes(int fd) noexcept {
  return fd < 0 ? 0 : close_slot(fd).load();
}

}  // namespace vufront
