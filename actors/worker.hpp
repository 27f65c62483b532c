#pragma once
// The worker: the interrupt loop and the hang-up watch of one device
// (worker_actor in actors/messages.hpp).
//
// Interrupts. While running, every signal on a queue's call eventfd and
// every (interrupt_atom, vector) is forwarded to the InterruptSink: 1 is
// written to sink.eventfd and (interrupt_atom, vector) is sent to
// sink.target, each if set. The call watcher (a task on the event loop)
// reads the call eventfds; its CallRelay (call_relay.hpp) delivers what one
// wake read:
//  * while running: straight to the sink from the loop thread (the eventfd
//    written, (interrupt_atom, queue) sent to the target; the worker not in
//    between), counted in the relay;
//  * while stopped: one (irq_atom, queue indices) message per wake to the
//    worker, which keeps it pending (and forwards it, should it arrive
//    after a start).
// One queue read is one forwarded interrupt, whatever its count (the eventfd
// already coalesced the signals), and (get_atom) counts the forwarded
// interrupts per queue (the worker's own plus the relay's).
// While stopped nothing is forwarded and nothing is lost:
//  * stop first closes the relay, which waits out a direct delivery in
//    progress: once stop has answered, nothing reaches the sink until the
//    next start. It then drains every call eventfd and forwards what it
//    held; the call watcher is kept for the next start with the same queues
//    (a sleep/wake cycle creates no task), and what it reads while stopped
//    arrives as irq messages;
//  * a signal the watcher has read but not yet sent is on its way as an irq
//    message: it is forwarded when it arrives (pending if stopped by then),
//    so a stop/start pair can answer before it is counted, never lose it;
//  * signals written into a call eventfd while stopped stay there; start
//    drains them and forwards them before starting the new watcher;
//  * irq/interrupt messages that arrive while stopped (the watcher's last ones,
//    BACKEND_VRING_CALL, config changes) are remembered per vector and
//    forwarded at the next start. Like an eventfd, several pending
//    interrupts of one vector become one.
//
// Hang-up. (watch_atom, main, channel) watches the sockets for POLLHUP/POLLERR
// only (events 0: another actor reads them). The first hang-up of a watch
// sends (lost_atom, its address, reason) to the device, once; a new watch replaces the old
// one and re-arms that. The watcher's hangup tag is `which | generation << 1`
// (which: 0 main, 1 channel; generation: the watch it belongs to, 0 for the
// first), so a hang-up of a replaced watch is ignored.
//
// The device is held only as a weak caf::actor_addr. The watcher tasks are
// owned by the state (last members) and are joined when the actor exits,
// before the fds they watch (and the sink the relay writes) are released.

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/call_relay.hpp"
#include "actors/fd_watcher.hpp"
#include "actors/messages.hpp"

namespace vufront::actors {

struct WorkerState {
  static inline const char* name = "vufront.worker";

  caf::actor_addr device;     ///< weak: receives (lost_atom, reason)
  bool start_threads = true;  ///< false in deterministic tests: no watcher threads

  // ---- interrupt loop
  bool running = false;
  std::vector<WatchedQueue> queues;  ///< of the current/last start
  InterruptSink sink;                ///< of the current/last start
  bool sink_nonblocking = false;     ///< sink.eventfd has O_NONBLOCK
  std::vector<uint64_t> forwarded;   ///< per queue index
  uint64_t config_forwarded = 0;     ///< vector -1
  std::set<int32_t> pending;         ///< vectors to forward at the next start

  // ---- hang-up watch
  SharedFd main_socket;
  SharedFd channel;
  int32_t watch_generation = 0;  ///< of the current watch (0 before the first)
  bool watched = false;          ///< a watch message was seen
  bool lost_reported = false;    ///< for the current watch

  /// The call watcher's relay for `queues` (none without queues); kept with
  /// the watcher across stop/start with the same queues. Also made without
  /// threads (tests drive it in place of the watcher).
  std::shared_ptr<CallRelay> relay;

  // Declared last, so destroyed first: the tasks are joined while the fds
  // above (and the queues' call fds) are still open.
  std::unique_ptr<FdWatcher> hangup_watcher;
  std::unique_ptr<FdWatcher> call_watcher;

  WorkerState() = default;
  WorkerState(const WorkerState&) = delete;
  WorkerState& operator=(const WorkerState&) = delete;
  /// Joins the watchers, then closes the relay before the sink is released
  /// (a test may still hold the relay).
  ~WorkerState() {
    call_watcher.reset();
    hangup_watcher.reset();
    if (relay)
      relay->close();
  }
};

/// Spawn with `sys.spawn(worker_impl, caf::actor_cast<caf::actor_addr>(device), true)`
/// (or `self->spawn<caf::linked>(...)` from the device). With
/// `start_threads == false` no watcher task is started; tests then play the
/// call watcher through `state.relay` (on_ready, end_of_wake) or inject
/// (irq_atom, queues) and (hangup_atom, tag) themselves.
worker_actor::behavior_type worker_impl(worker_actor::stateful_pointer<WorkerState> self,
                                        caf::actor_addr device, bool start_threads);

}  // namespace vufront::actors
