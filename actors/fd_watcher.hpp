#pragma once
// FdWatcher: one task on the event loop (loop/event_loop.hpp) that waits on a
// list of fds (not owned) plus a private stop eventfd, and runs a callback on
// the loop thread for every fd that becomes ready, then an optional end-of-wake
// callback once per wake. This is how fd readiness (call eventfds, hang-up of
// the back-end sockets) reaches the owning actor: the callback consumes the
// readiness, and it or the end-of-wake callback anon_sends a message to the
// owner (or, for the worker's call eventfds, writes the sink: call_relay.hpp).
//
// Ownership rules:
//  * The owning actor keeps the FdWatcher in its state, as the LAST member,
//    so the task is stopped and joined (state destruction in on_exit) before
//    the fds it watches are closed.
//  * The callback holds only a WEAK handle (caf::actor_addr) to the actor.
//    A strong one would be a cycle actor -> state -> task -> actor.
//  * If the last strong reference to the owner is dropped inside the
//    callback, ~FdWatcher runs on the loop thread: it then ends the task's
//    wait at once instead of joining, and the task returns when it resumes
//    without touching any watched fd again (they may already be closed).
//    Everything the task uses lives in a shared core for that reason.
//
// No mutex anywhere: the entry list is fixed at construction, stopping is an
// atomic flag plus one write to the stop eventfd.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "actors/eventfd_io.hpp"  // drain_eventfd, for the watchers' callbacks
#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "loop/event_loop.hpp"

namespace vufront::actors {

class FdWatcher {
public:
  struct Entry {
    int fd = -1;       ///< NOT owned: the owner keeps it open while watching
    int tag = 0;       ///< handed back to the callback
    short events = 0;  ///< poll() events, e.g. POLLIN; 0 = only POLLHUP/POLLERR
  };

  /// Runs on the loop thread for each ready fd with poll()'s revents.
  /// It must consume level-triggered readiness (read the eventfd, ...) or
  /// return false, else poll() spins. Returning false stops watching that
  /// fd. POLLNVAL always stops watching it (after the callback ran). The
  /// callback must not throw; if it does, the fd is no longer watched.
  using Callback = std::function<bool(int tag, int fd, short revents)>;

  /// Runs on the loop thread once after the callbacks of one wake (also
  /// when the watcher was stopped during them: what they consumed is not
  /// lost). It must not throw and must touch no watched fd (the owner may
  /// be gone when stopping); it is how a callback's work is batched per wake.
  using WakeEnd = std::function<void()>;

  /// Starts the task. Errors (no eventfd, no memory) come back
  /// as an Error with request "fd watcher"; nothing throws.
  [[nodiscard]] static Result<std::unique_ptr<FdWatcher>> start(std::vector<Entry> entries,
                                                                Callback cb,
                                                                WakeEnd wake_end = {});

  /// stop() + join (on the loop thread itself: ends the task's wait instead).
  ~FdWatcher();

  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;
  FdWatcher(FdWatcher&&) = delete;
  FdWatcher& operator=(FdWatcher&&) = delete;

  /// Asks the task to finish; it does after the callback that may be
  /// running returns. Thread-safe, idempotent, does not wait.
  void stop() noexcept;

  /// Whether the task is still in its wait loop. It leaves the loop on
  /// stop(), when no watched fd is left, or when poll() fails.
  [[nodiscard]] bool active() const noexcept;

  /// Watcher tasks alive in this process (for tests and leak checks).
  [[nodiscard]] static int live_watchers() noexcept { return live_.load(); }

private:
  struct Core;
  explicit FdWatcher(std::shared_ptr<Core> core);

  std::shared_ptr<Core> core_;
  loop::TaskHandle task_;

  static std::atomic<int> live_;
};

}  // namespace vufront::actors
