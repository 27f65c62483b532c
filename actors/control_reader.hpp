#pragma once
// ControlReader: the thread that reads one VMM connection of `vufront
// attach` (docs/attach-protocol.md) and hands each packet, with its fds, to
// the connection's control_session actor. At most `credits` packets are in
// the actor's mailbox at once (CreditGate): a VMM that floods the socket
// only fills its own socket buffer. On EOF or an error it sends ctl_eof once.
//
// Ownership as for FdWatcher (actors/fd_watcher.hpp): the session keeps the
// reader as the LAST member of its state and the socket open while it
// runs; the thread holds a weak handle to the session; everything it
// touches lives in a shared core, so a reader destroyed on its own thread
// detaches safely.

#include <memory>
#include <thread>

#include <caf/actor_addr.hpp>

#include "actors/credit_gate.hpp"
#include "base/error.hpp"

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

  /// Reader threads alive in this process (for tests and leak checks).
  [[nodiscard]] static int live_threads() noexcept;

private:
  struct Core;
  explicit ControlReader(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
  std::thread thread_;
};

}  // namespace vufront::actors
