#pragma once
// The connection actor: owns the vhost-user socket and its BackendClient,
// linked to the device. One message is one lifecycle step (negotiate, start
// these queues, stop those), not one request, so a step costs one actor
// round trip plus its socket round trips.
//
// The actor itself never waits. Each step runs as a task on the event loop
// (loop/event_loop.hpp): the synchronous BackendClient code, whose waits for
// replies suspend the task instead of a thread, each request bounded by its
// deadline from Timeouts. Steps run one at a time, in the order they came;
// when one ends, the task sends (step_done_atom, n) and the actor answers
// the step's request. So no thread is kept per device, and a step costs the
// same hand-offs as with a thread of its own (actor -> loop -> actor).
//
// When an error leaves the connection broken (EOF, timeout, protocol
// violation) it tells the device once with (lost_atom, reason), besides
// answering the request with the error. When the actor is told to exit, the
// running step gives up its wait at once (`quit`), its result is dropped,
// and it and every queued step are answered with errc::cancelled.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/messages.hpp"
#include "loop/event_loop.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

struct ConnectionState {
  static inline const char* name = "vufront.connection";
  /// Shared with the running step's task, which may outlive the actor.
  std::shared_ptr<BackendClient> client;
  Timeouts timeouts;
  caf::actor_addr device;  ///< weak: the device owns us, not the reverse
  bool lost_reported = false;
  /// Set when the actor ends: the running step stops waiting.
  std::shared_ptr<std::atomic<bool>> quit = std::make_shared<std::atomic<bool>>(false);

  /// A step: starts its task; answers its request with an error instead.
  struct Step {
    std::function<void()> start;
    std::function<void(const caf::error&)> abandon;
  };
  /// Steps not started yet, in arrival order.
  std::deque<Step> queued;
  bool busy = false;
  uint64_t step = 0;                 ///< number of the running (or last) step
  std::function<void()> finish;      ///< answers the running step's request
  std::function<void(const caf::error&)> abandon;  ///< the running step's
  loop::TaskHandle running;

  ConnectionState() = default;
  ConnectionState(const ConnectionState&) = delete;
  ConnectionState& operator=(const ConnectionState&) = delete;
  ~ConnectionState() {
    quit->store(true);
    running.interrupt();
  }
};

[[nodiscard]] connection_actor::behavior_type connection_impl(
    connection_actor::stateful_pointer<ConnectionState> self, caf::actor_addr device,
    Timeouts timeouts);

}  // namespace vufront::actors
