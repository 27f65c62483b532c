#include "actors/worker.hpp"

#include <cerrno>
#include <exception>
#include <string>
#include <utility>

#include <poll.h>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/error.hpp"
#include "actors/eventfd_io.hpp"

namespace vufront::actors {

namespace {

constexpr int32_t config_vector = -1;
constexpr int32_t max_queue_index = 0xffff;  // queue indices are uint16_t
constexpr int32_t generation_mask = 0x3fffffff;

using WorkerPtr = worker_actor::stateful_pointer<WorkerState>;

bool has_fd(const SharedFd& fd) {
  return fd && fd->valid();
}

bool valid_vector(int32_t v) {
  return v >= config_vector && v <= max_queue_index;
}

/// Delivers one interrupt to the sink now and counts it.
void forward(WorkerState& st, int32_t vector) {
  bool delivered = false;
  if (has_fd(st.sink.eventfd)) {
    add_to_eventfd(st.sink.eventfd->get(), 1, st.sink_nonblocking);
    delivered = true;
  }
  if (st.sink.target) {
    caf::anon_send(st.sink.target, interrupt_atom_v, vector);
    delivered = true;
  }
  if (!delivered)
    return;
  if (vector == config_vector) {
    ++st.config_forwarded;
    return;
  }
  const auto i = static_cast<size_t>(vector);
  if (st.forwarded.size() <= i)
    st.forwarded.resize(i + 1, 0);
  ++st.forwarded[i];
}

/// An interrupt for `vector`: forwarded when running, else remembered.
void raise(WorkerState& st, int32_t vector) {
  if (!valid_vector(vector))
    return;
  if (st.running)
    forward(st, vector);
  else
    st.pending.insert(vector);
}

void forward_pending(WorkerState& st) {
  auto pending = std::exchange(st.pending, {});
  for (int32_t v : pending)
    forward(st, v);
}

std::string lost_reason(int32_t which) {
  if (which == 0)
    return "back-end closed the connection (hang-up on the vhost-user socket)";
  return "back-end closed the back-end channel (hang-up on the channel socket)";
}

caf::error worker_error(errc code, const char* step, std::string detail, int sys_errno = 0) {
  return to_caf(make_error(code, step, std::move(detail), sys_errno));
}

// ---- the handlers' bodies (each may not throw out of the handler)

void on_watch(WorkerPtr self, SharedFd main_socket, SharedFd channel) {
  auto& st = self->state;
  st.hangup_watcher.reset();  // stops and joins the old watch
  if (st.watched)
    st.watch_generation = (st.watch_generation + 1) & generation_mask;
  st.watched = true;
  st.lost_reported = false;
  st.main_socket = std::move(main_socket);
  st.channel = std::move(channel);
  if (!st.start_threads)
    return;
  const int base = st.watch_generation << 1;
  std::vector<FdWatcher::Entry> entries;
  if (has_fd(st.main_socket))
    entries.push_back({st.main_socket->get(), base | 0, 0});
  if (has_fd(st.channel))
    entries.push_back({st.channel->get(), base | 1, 0});
  if (entries.empty())
    return;
  // Weak: the thread must not keep the worker alive.
  auto weak = caf::actor_cast<caf::actor_addr>(self);
  auto watcher = FdWatcher::start(std::move(entries), [weak](int tag, int, short revents) {
    // With events 0 poll() reports only POLLHUP, POLLERR and POLLNVAL.
    if ((revents & (POLLHUP | POLLERR | POLLNVAL)) != 0)
      if (auto hdl = caf::actor_cast<worker_actor>(weak))
        caf::anon_send(hdl, hangup_atom_v, static_cast<int32_t>(tag));
    return false;  // one report per fd and watch is enough
  });
  // Without a watcher the loss shows up at the next request instead.
  if (watcher)
    st.hangup_watcher = std::move(watcher).value();
}

void on_hangup(WorkerPtr self, int32_t tag) {
  auto& st = self->state;
  if (tag < 0 || (tag >> 1) != st.watch_generation || st.lost_reported)
    return;  // not ours, from a replaced watch, or already reported
  st.lost_reported = true;
  tell_device(st.device, lost_atom_v, caf::actor_cast<caf::actor_addr>(self), lost_reason(tag & 1));
}

/// Whether `queues` are the ones the kept watcher watches (same fds).
bool same_queues(const std::vector<WatchedQueue>& a, const std::vector<WatchedQueue>& b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].index != b[i].index || a[i].call != b[i].call)
      return false;
  return true;
}

/// The relay's view of `queues`: each call fd with its blocking mode.
std::vector<CallRelay::Queue> relay_queues(const std::vector<WatchedQueue>& queues) {
  std::vector<CallRelay::Queue> out;
  out.reserve(queues.size());
  for (const auto& q : queues)
    out.push_back({q.index, q.call->get(), fd_nonblocking(q.call->get())});
  return out;
}

/// Signals written into the call eventfds while nobody read them (stopped,
/// or before the watcher starts) become pending.
void take_unread(WorkerState& st) {
  const auto& qs = st.relay->queues();
  for (size_t slot = 0; slot < qs.size(); ++slot)
    if (st.relay->take(slot) > 0)
      st.pending.insert(qs[slot].index);
}

/// Direct delivery by the relay while running: the sink eventfd, the sink
/// actor, or both.
void open_relay(WorkerState& st) {
  if (!st.relay)
    return;
  const int fd = has_fd(st.sink.eventfd) ? st.sink.eventfd->get() : -1;
  if (fd >= 0 || st.sink.target)
    st.relay->open(fd, st.sink_nonblocking, st.sink.target);
}

/// Adds what the relay delivered straight to the sink to `counts` (indexed
/// by queue index, grown as needed).
void add_relay_counts(const CallRelay& relay, std::vector<uint64_t>& counts) {
  const auto& qs = relay.queues();
  for (size_t slot = 0; slot < qs.size(); ++slot) {
    const size_t i = qs[slot].index;
    if (counts.size() <= i)
      counts.resize(i + 1, 0);
    counts[i] += relay.delivered(slot);
  }
}

/// Ends the watcher and the relay of the last queues (the worker is
/// stopped: the relay is closed); what the relay delivered moves into the
/// worker's counts.
void retire_relay(WorkerState& st) {
  st.call_watcher.reset();  // joined: the relay's counts are final
  if (!st.relay)
    return;
  add_relay_counts(*st.relay, st.forwarded);
  st.relay.reset();
}

/// A watcher task over the relay's call eventfds (tag = slot).
Result<std::unique_ptr<FdWatcher>> watch_calls(const std::shared_ptr<CallRelay>& relay) {
  std::vector<FdWatcher::Entry> entries;
  const auto& qs = relay->queues();
  entries.reserve(qs.size());
  for (size_t slot = 0; slot < qs.size(); ++slot)
    entries.push_back({qs[slot].fd, static_cast<int>(slot), POLLIN});
  auto on_ready = [relay](int tag, int, short revents) {
    return relay->on_ready(static_cast<size_t>(tag), revents);
  };
  return FdWatcher::start(std::move(entries), std::move(on_ready),
                          [relay] { relay->end_of_wake(); });
}

caf::result<caf::ok_atom> on_start(WorkerPtr self, std::vector<WatchedQueue> queues,
                                   InterruptSink sink) {
  auto& st = self->state;
  if (st.running)
    return worker_error(errc::bad_state, "worker start", "the interrupt loop is already running");
  for (const auto& q : queues)
    if (!has_fd(q.call))
      return worker_error(errc::invalid_argument, "worker start",
                          "queue " + std::to_string(q.index) + " has no call eventfd");
  if (!queues.empty() && !has_fd(sink.eventfd) && !sink.target)
    return worker_error(errc::invalid_argument, "worker start",
                        "queues to watch but no interrupt sink (eventfd or target)");
  const bool sink_nonblocking = has_fd(sink.eventfd) && fd_nonblocking(sink.eventfd->get());
  // The same queues as before (wake after sleep): the kept watcher and
  // relay go on; otherwise they are replaced.
  const bool watching = !st.start_threads || (st.call_watcher && st.call_watcher->active());
  if (!(st.relay && watching && same_queues(st.queues, queues))) {
    retire_relay(st);
    if (!queues.empty())
      st.relay = std::make_shared<CallRelay>(relay_queues(queues),
                                             caf::actor_cast<caf::actor_addr>(self));
  }
  // Signals written while stopped are still in the eventfds: take them now,
  // before a new watcher reads the same fds.
  if (st.relay)
    take_unread(st);
  if (st.relay && st.start_threads && !st.call_watcher) {
    auto started = watch_calls(st.relay);
    if (!started) {
      Error e = std::move(started).error();
      e.request = "worker start";
      st.relay.reset();  // closed, nothing delivered; what was drained stays pending
      return to_caf(e);
    }
    st.call_watcher = std::move(started).value();
  }
  st.queues = std::move(queues);
  st.sink = std::move(sink);
  st.sink_nonblocking = sink_nonblocking;
  st.running = true;
  forward_pending(st);
  open_relay(st);
  return caf::ok_atom_v;
}

caf::ok_atom on_stop(WorkerPtr self) {
  auto& st = self->state;
  if (!st.running)
    return caf::ok_atom_v;
  // No direct delivery from here on: close() returns after the one in
  // progress, if any, has written the sink.
  if (st.relay)
    st.relay->close();
  // Forward what is pending now. The watcher is kept for the next start (a
  // sleep -> wake cycle creates no task): what it reads from now on arrives
  // as irq messages while stopped and becomes pending.
  if (st.relay) {
    const auto& qs = st.relay->queues();
    for (size_t slot = 0; slot < qs.size(); ++slot)
      if (st.relay->take(slot) > 0)
        forward(st, qs[slot].index);
  }
  st.running = false;
  return caf::ok_atom_v;
}

std::vector<uint64_t> on_get(WorkerPtr self) {
  auto& st = self->state;
  auto out = st.forwarded;
  for (const auto& q : st.queues)
    if (out.size() <= q.index)
      out.resize(size_t{q.index} + 1, 0);
  if (st.relay)
    add_relay_counts(*st.relay, out);
  return out;
}

}  // namespace

worker_actor::behavior_type worker_impl(WorkerPtr self, caf::actor_addr device,
                                        bool start_threads) {
  self->state.device = std::move(device);
  self->state.start_threads = start_threads;
  return {
      [self](watch_atom, SharedFd main_socket, SharedFd channel) {
        try {
          on_watch(self, std::move(main_socket), std::move(channel));
        } catch (const std::exception&) {
          // Out of memory: no hang-up watch; the loss surfaces elsewhere.
        }
      },
      [self](start_atom, std::vector<WatchedQueue>& queues,
             InterruptSink& sink) -> caf::result<caf::ok_atom> {
        try {
          return on_start(self, std::move(queues), std::move(sink));
        } catch (const std::exception& e) {
          return worker_error(errc::io_error, "worker start", e.what());
        }
      },
      [self](stop_atom) -> caf::result<caf::ok_atom> {
        try {
          return on_stop(self);
        } catch (const std::exception& e) {
          if (self->state.relay)
            self->state.relay->close();
          self->state.running = false;
          return worker_error(errc::io_error, "worker stop", e.what());
        }
      },
      [self](irq_atom, const std::vector<int32_t>& queues) {
        try {
          for (int32_t q : queues)
            raise(self->state, q);
        } catch (const std::exception&) {
        }
      },
      [self](interrupt_atom, int32_t vector) {
        try {
          raise(self->state, vector);
        } catch (const std::exception&) {
        }
      },
      [self](hangup_atom, int32_t tag) {
        try {
          on_hangup(self, tag);
        } catch (const std::exception&) {
        }
      },
      [self](caf::get_atom) -> caf::result<std::vector<uint64_t>> {
        try {
          return on_get(self);
        } catch (const std::exception& e) {
          return worker_error(errc::io_error, "worker get", e.what());
        }
      },
  };
}

}  // namespace vufront::actors
