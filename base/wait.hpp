#pragma once
// How blocking code waits for fds: wait_fds() is ::poll() with one seam.
//
// Everything in vufront that waits on an fd with a deadline (a request's
// reply in protocol/connection.cpp, a reader's credits, a watcher's eventfds)
// calls wait_fds(). On an ordinary thread that is ::poll(). A thread that runs
// many waits at once, the event loop (loop/event_loop.hpp), installs a
// WaitHook for the task it is running: the task's wait then suspends it and
// lets the loop serve every other socket until one of the fds is ready or the
// time is up. So the same synchronous code (BackendClient, the bring-up) runs
// on a thread of its own or as one of a thousand tasks on one thread.

#include <cstdint>

#include <poll.h>

namespace vufront {

/// What a thread does instead of ::poll() while it runs a task of an event
/// loop. Same contract as ::poll(): fills revents, returns the number of
/// ready fds, 0 when the time is up, -1 with errno set on error.
class WaitHook {
public:
  virtual int wait(pollfd* fds, nfds_t n, int timeout_ms) = 0;
  /// `fd` is about to be closed on this thread (note_fd_closing): forget
  /// any registration of it while the number still names its file.
  virtual void closing(int fd) noexcept = 0;

protected:
  ~WaitHook() = default;
};

/// ::poll(fds, n, timeout_ms), or the hook of the task running on this
/// thread. timeout_ms -1: no timeout. n may be 0 (a sleep). EINTR is not
/// retried here: callers already handle it as for ::poll().
int wait_fds(pollfd* fds, nfds_t n, int timeout_ms);

/// Installs `hook` for the calling thread (nullptr: back to ::poll()).
/// Returns the previous one. Used by the event loop around each task.
WaitHook* set_wait_hook(WaitHook* hook) noexcept;

/// Called just before `fd` is closed (UniqueFd does, and so must any code
/// that closes an fd it took with release()): counts the close for
/// fd_closes() and tells this thread's hook. An event loop keeps a task's
/// fds registered across its waits (loop/wait_set.hpp); this is how it
/// learns that a number it registered may name another file now.
void note_fd_closing(int fd) noexcept;

/// A count of the closes of fds with this number (numbers share counters
/// modulo a table size, so a change may also be another number's close).
/// Equal in two readings: `fd` was not closed in between.
[[nodiscard]] uint32_t fd_closes(int fd) noexcept;

}  // namespace vufront
