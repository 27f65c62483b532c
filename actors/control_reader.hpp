#pragma once
// ControlReader: the task (on the event loop) that reads one VMM connection of `vufront
// attach` (docs/attach-protocol.md) and hands each packet, with its fds, to
// the connection's control_session actor. At most `credits` packets are in
// the actor's mailbox at once (CreditGate): a VMM that floods the socket
// only fills its own socket buffer. On EOF or an error it sends ctl_eof once.
//
// Ownership as for FdWatcher (actors/fd_watcher.hpp): the session keeps the
// reader as the LAST member of its state and the socket open while it
// runs; the task holds a weak handle to the session; everything it
// touches lives in a shared core, so a reader destroyed on the loop thread
// (in a task) lets its task end on its own safely.

#include <memory>

#include <caf/actor_addr.hpp>

#include "actors/credit_gate.hpp"
#include "base/error.hpp"
#include "loop/event_loop.hpp"

namespace vufront::actors {

class ControlReader {
public:
  /// Starts reading `fd` (not owned) for `session`. Errors: io_error.
  [[nodiscard]] static Result<std::unique_ptr<ControlReader>> start(int fd, caf::actor_addr session,
                                                                    uint32_t credits);
  ~ControlReader();
  ControlReader(const ControlReader&) = delete;
  ControlReader& operator=(const ControlReader&) = delete;

  /// The session handled one packet: its credit comes back. Any thread.
  void packet_done() noexcept;
  /// Stops reading (no ctl_eof follows); does not wait. Idempotent.
  void stop() noexcept;

  /// Reader tasks alive in this process (for tests and leak checks).
  [[nodiscard]] static int live_readers() noexcept;

private:
  struct Core;
  explicit ControlReader(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
  loop::TaskHandle task_;
};

}  // namespace vufront::actors
