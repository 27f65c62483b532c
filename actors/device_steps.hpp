#pragma once
// The device actor's shared steps (internal to actors/device*.cpp): events
// and state changes, admission of an operation, failures that name the
// operation and the step, deadlines of the steps, children handles.

#include <cerrno>
#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <caf/duration.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/connection.hpp"
#include "actors/device_data.hpp"
#include "actors/replay.hpp"
#include "actors/device_checks.hpp"
#include "actors/worker.hpp"
#include "actors/error.hpp"
#include "base/unique_fd.hpp"
#include "virtio/ring_layout.hpp"

namespace vufront::actors::device_steps {

using Self = device_actor::stateful_pointer<DeviceData>;
using std::chrono::milliseconds;

// ---- deadlines of the steps ----------------------------------------------------
//
// A step is bounded by the actor that does its waiting, never by a layer above
// it counting that actor's requests. The connection actor gives every request
// it sends its own deadline (Timeouts: `--timeout`, ring stops
// `--drain-timeout`) and answers a step once its last request is answered or
// the first one fails, so the device waits on it without a deadline of its own
// (`conn_wait`). So does a wait on the transfer child, which bounds itself by
// the transfer's deadline and the connection actor's. The worker and the channel do no I/O with the back-end: a
// step of theirs is bounded by `local_step`.

inline constexpr caf::duration conn_wait{caf::infinite};
inline constexpr milliseconds local_step{5000};  // worker / channel: no I/O with the back-end

// ---- events and state ----------------------------------------------------------

inline void emit(Self self, DeviceEvent ev) {
  ev.state = self->state.state;
  if (self->state.subscriber)
    caf::anon_send(self->state.subscriber, event_atom_v, std::move(ev));
}

inline void set_state(Self self, DeviceState s) {
  if (self->state.state == s)
    return;
  self->state.state = s;
  emit(self, DeviceEvent{DeviceEvent::Kind::state_changed, s, -1, to_string(s)});
}

inline std::string states_text(std::initializer_list<DeviceState> allowed) {
  std::string out;
  for (auto s : allowed)
    out += (out.empty() ? "" : " or ") + std::string(to_string(s));
  return out;
}

/// An error unless `op` may run now: not busy, and in one of `allowed`.
inline std::optional<caf::error> admit(Self self, const char* op,
                                std::initializer_list<DeviceState> allowed) {
  auto& st = self->state;
  if (st.exiting)
    return to_caf(make_error(errc::bad_state, op, "the device is shutting down"));
  if (!st.busy.empty())
    return to_caf(make_error(errc::bad_state, op, "busy: " + st.busy + " is in progress"));
  for (auto s : allowed)
    if (st.state == s)
      return std::nullopt;
  return to_caf(make_error(errc::bad_state, op,
                           std::string("the device is ") + to_string(st.state) + ", needs " +
                               states_text(allowed)));
}

inline void stop_worker(Self self) {
  if (self->state.worker)
    self->request(self->state.worker, local_step, stop_atom_v)
        .then([](caf::ok_atom) {}, [](caf::error&) {});
}

/// Starts reconnecting after a loss (actors/device_connect.cpp).
void start_reconnecting(Self self);

/// The back-end is lost (or broke the protocol): broken, backend_lost, and
/// with DeviceConfig::reconnect, reconnecting. A loss while reconnecting is
/// the attempt's business.
inline void mark_broken(Self self, const std::string& why) {
  auto& st = self->state;
  if (st.state == DeviceState::broken || st.state == DeviceState::disconnected ||
      st.state == DeviceState::reconnecting)
    return;
  st.lost_from = st.state;
  st.last_error = why;
  stop_worker(self);
  set_state(self, DeviceState::broken);
  emit(self, DeviceEvent{DeviceEvent::Kind::backend_lost, st.state, -1, why});
  if (st.config.reconnect.enabled)
    start_reconnecting(self);
}

/// The step's error as part of operation `op` ("sleep: GET_VRING_BASE: ...").
inline Error step_error(const caf::error& e, const char* op) { return in_operation(from_caf(e, op), op); }

/// Ends `op` with an error; the device is broken when the back-end is at fault.
template <class Promise>
inline void fail(Self self, Promise& rp, const char* op, const caf::error& e) {
  Error x = step_error(e, op);
  self->state.busy.clear();
  if (x.reconnect_may_help())
    mark_broken(self, x.message());
  rp.deliver(to_caf(x));
}

/// After an asynchronous step: the back-end may have been lost meanwhile.
template <class Promise>
bool lost_meanwhile(Self self, Promise& rp, const char* op) {
  auto& st = self->state;
  if (st.state != DeviceState::broken && st.state != DeviceState::reconnecting)
    return false;
  st.busy.clear();
  rp.deliver(to_caf(make_error(errc::broken, op, "the back-end was lost: " + st.last_error)));
  return true;
}


inline caf::actor_addr weak(Self self) { return caf::actor_cast<caf::actor_addr>(self); }

/// Tells a child to stop and forgets its handle; it stays in `stopping`
/// (monitored) until it is down, which a shutdown waits for.
template <class Handle>
void drop_child(Self self, Handle& h) {
  if (!h)
    return;
  self->unlink_from(h);
  self->monitor(h);
  self->state.stopping.push_back(caf::actor_cast<caf::actor_addr>(h));
  caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
  h = nullptr;
}

// ---- activation pieces ------------------------------------------------------------

/// The device's queues for a checked activation: the VMM's call fd, or an
/// eventfd of ours that the worker forwards; bases at the ring's start.
inline Result<std::vector<DeviceData::Queue>> queues_of(const ActivateSpec& spec, bool packed,
                                                        const char* op) {
  std::vector<DeviceData::Queue> out;
  for (const auto& q : spec.queues) {
    DeviceData::Queue dq;
    dq.spec = q;
    dq.forwarded = !q.call;
    dq.call = q.call ? q.call : share(make_eventfd());
    if (!*dq.call)
      return make_error(errc::io_error, op, "eventfd for a call fd", errno);
    dq.base = packed ? virtio::packed_fresh_base : 0;
    out.push_back(std::move(dq));
  }
  return out;
}

// ---- children and what the device forgets ---------------------------------------

inline void spawn_children(Self self) {
  auto& st = self->state;
  st.conn = self->spawn<caf::linked>(connection_impl, weak(self), st.config.timeouts);
  st.conn_stop = std::make_shared<std::atomic<bool>>(false);
  st.worker = self->spawn<caf::linked>(worker_impl, weak(self), st.config.start_threads);
}

inline void drop_children(Self self) {
  auto& st = self->state;
  if (st.conn_stop)
    st.conn_stop->store(true);  // out of a connect or accept wait at once
  st.conn_stop.reset();
  drop_child(self, st.conn);
  drop_child(self, st.worker);
  drop_child(self, st.channel);
  drop_child(self, st.transfer);
}

/// Forgets the activation (queues, sink, features, status): after a reset.
inline void forget_activation(DeviceData& st) {
  st.queues.clear();
  st.sink = InterruptSink{};
  st.acked_features = 0;
  st.virtio_status = 0;
  st.driver_ok_pending = false;
  st.inflight = wire::InflightDesc{};
  st.inflight_fd = nullptr;
}

/// Forgets everything negotiated (back to disconnected).
inline void forget_negotiation(DeviceData& st) {
  st.info = DeviceInfo{};
  forget_activation(st);
}

// ---- queue helpers ------------------------------------------------------------------

inline std::vector<uint16_t> queue_indices(const DeviceData& st) {
  std::vector<uint16_t> out;
  for (const auto& q : st.queues)
    out.push_back(q.spec.index);
  return out;
}

inline std::vector<WatchedQueue> watched_queues(const DeviceData& st) {
  std::vector<WatchedQueue> out;
  for (const auto& q : st.queues)
    if (q.forwarded)
      out.push_back({q.spec.index, q.call});
  return out;
}

}  // namespace vufront::actors::device_steps
