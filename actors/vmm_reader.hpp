#pragma once
// VmmReader: the task (on the event loop) that reads the vhost-user requests
// of one VMM connected to a VMM-facing socket (`vufront attach --vmm-socket`,
// docs/vmm-proxy.md) and hands each, with its fds, to the device's vmm_port
// actor. One request at a time (a CreditGate of one credit): the next is
// read only when the port answered the last, so the VMM's order is kept and
// a VMM that floods the socket only fills its own socket buffer. On EOF or a
// framing error (oversized body, surplus fds) it sends vmm_eof once.
//
// Ownership as for ControlReader (actors/control_reader.hpp): the port keeps
// the reader as the LAST member of its session and the socket open while it
// runs; the task holds a weak handle to the port and a dup of the socket.

#include <functional>
#include <memory>

#include <caf/actor_addr.hpp>

#include "actors/credit_gate.hpp"
#include "base/error.hpp"
#include "loop/event_loop.hpp"

namespace vufront::actors {

class VmmReader {
public:
  /// Starts reading `fd` (duplicated: the reader owns its copy) for `port`.
  /// Errors: io_error.
  [[nodiscard]] static Result<std::unique_ptr<VmmReader>> start(int fd, caf::actor_addr port);
  ~VmmReader();
  VmmReader(const VmmReader&) = delete;
  VmmReader& operator=(const VmmReader&) = delete;

  /// The port answered the request: the next one may be read. Any thread.
  void request_done() noexcept;
  /// request_done() as a callable for another thread (the connection step
  /// that sent the VMM its answer: proxy::Answer::sent); it keeps what it
  /// needs alive, and does nothing harmful once the reader stopped.
  [[nodiscard]] std::function<void()> done_hook() const;
  /// Stops reading (no vmm_eof follows); does not wait. Idempotent.
  void stop() noexcept;

private:
  struct Core;
  explicit VmmReader(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
  loop::TaskHandle task_;
};

}  // namespace vufront::actors
