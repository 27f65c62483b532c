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

#include <sys/socket.h>

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
  // The VMM socket's port hears of a loss and of a config change too.
  if (auto port = caf::actor_cast<vmm_port_actor>(self->state.vmm_port)) {
    if (ev.kind == DeviceEvent::Kind::backend_lost)
      caf::anon_send(port, vmm_lost_atom_v, ev.detail);
    else if (ev.kind == DeviceEvent::Kind::resumed)
      caf::anon_send(port, vmm_back_atom_v, ev.detail);
    else if (ev.kind == DeviceEvent::Kind::config_changed)
      caf::anon_send(port, cfg_change_atom_v);
  }
  if (self->state.subscriber)
    caf::anon_send(self->state.subscriber, event_atom_v, std::move(ev));
}

inline void tell_port_conn(Self self, bool force = false);

inline void set_state(Self self, DeviceState s) {
  if (self->state.state == s)
    return;
  self->state.state = s;
  tell_port_conn(self);  // before the events that follow (the port's vmm_lost, vmm_back)
  emit(self, DeviceEvent{DeviceEvent::Kind::state_changed, s, -1, to_string(s)});
}

inline std::string states_text(std::initializer_list<DeviceState> allowed) {
  std::string out;
  for (auto s : allowed)
    out += (out.empty() ? "" : " or ") + std::string(to_string(s));
  return out;
}

/// What `op` fails with on a device whose back-end is lost (broken after a
/// loss, reconnect off or given up; or lost while `op` ran): `broken`,
/// naming the loss as the child that saw it reported it (which names the
/// back-end request when one saw it), and `request`, the step's request that
/// the loss cut short, if any ("read_config: GET_CONFIG: broken: the
/// back-end was lost: back-end channel: BACKEND_CONFIG_CHANGE_MSG (...): oversized: ...").
inline Error loss_error(const DeviceData& st, const char* op, const std::string& request = {}) {
  Error e = make_error(errc::broken, request, "the back-end was lost: " + st.last_error);
  e.op = op;
  return e;
}

/// Tells a VMM socket's port where its requests go (vmm_conn_atom), when
/// that changed or `force`: the connection actor while the device is
/// negotiated and has one (the steps already sent to it go first), else
/// none, with the error a request fails with then, as the device itself
/// answered one before the port sent them straight to the connection (the
/// loss on a broken device, bad_state otherwise).
inline void tell_port_conn(Self self, bool force) {
  auto& st = self->state;
  auto port = caf::actor_cast<vmm_port_actor>(st.vmm_port);
  if (!port)
    return;
  caf::actor_addr conn;
  caf::error why;
  if (st.state == DeviceState::negotiated && st.conn)
    conn = caf::actor_cast<caf::actor_addr>(st.conn);
  else if (st.state == DeviceState::broken)
    why = to_caf(loss_error(st, "VMM request"));
  else if (st.exiting)
    why = to_caf(make_error(errc::bad_state, "VMM request", "the device is shutting down"));
  else if (st.state == DeviceState::negotiated)
    why = to_caf(make_error(errc::bad_state, "VMM request",
                            "the device is between two back-end connections"));
  else
    why = to_caf(make_error(errc::bad_state, "VMM request",
                            std::string("the device is ") + to_string(st.state)));
  std::string why_text = why ? from_caf(why, "VMM request").message() : std::string();
  if (!force && conn == st.port_conn && why_text == st.port_conn_why)
    return;
  st.port_conn = conn;
  st.port_conn_why = std::move(why_text);
  caf::anon_send(port, vmm_conn_atom_v, std::move(conn), std::move(why));
}

/// An error unless `op` may run now: not busy, and in one of `allowed`. On a
/// broken device, the loss at once (never a wait for a deadline).
inline std::optional<caf::error> admit(Self self, const char* op,
                                std::initializer_list<DeviceState> allowed) {
  auto& st = self->state;
  if (st.exiting)
    return to_caf(make_error(errc::bad_state, op, "the device is shutting down"));
  if (!st.busy.empty())
    return to_caf(make_error(errc::bad_state, op, "busy: " + st.busy + " is in progress"));
  if (st.vmm_port)
    return to_caf(make_error(errc::bad_state, op,
                             "the device is driven by the VMM socket (--vmm-socket); its VMM "
                             "sets memory, starts and stops the rings"));
  for (auto s : allowed)
    if (st.state == s)
      return std::nullopt;
  if (st.state == DeviceState::broken)
    return to_caf(loss_error(st, op));
  return to_caf(make_error(errc::bad_state, op,
                           std::string("the device is ") + to_string(st.state) + ", needs " +
                               states_text(allowed)));
}

/// Starts reconnecting after a loss (actors/device_connect.cpp).
void start_reconnecting(Self self);

template <class Handle>
void drop_child(Self self, Handle& h);
inline void drop_children(Self self);

/// Ends the connection's sockets at once: the vhost-user socket and the
/// back-end channel are shut down, which ends them for every copy (the
/// back-end sees EOF now, and a request waiting for its reply fails now,
/// naming itself); the device's references go.
inline void shut_down_sockets(DeviceData& st) {
  for (SharedFd* fd : {&st.socket, &st.channel_socket}) {
    if (*fd && (*fd)->valid())
      ::shutdown((*fd)->get(), SHUT_RDWR);
    *fd = nullptr;
  }
}

/// The back-end is lost (or broke the protocol), as `why` says; `by_conn`:
/// the connection's own request saw it (the step that failed says it best).
/// In every mode: the vhost-user socket and the back-end channel are shut
/// down, the worker and the channel go at once, and the connection (and a
/// transfer) with the operation in progress, if one is (which fails at once:
/// its socket is gone), else at once too; so every fd of the connection is
/// closed. Then broken, backend_lost, and with DeviceConfig::reconnect,
/// reconnecting. A loss while connecting (negotiate, a reconnect attempt)
/// is the attempt's business (DeviceData::child_lost).
inline void mark_broken(Self self, const std::string& why, bool by_conn = false) {
  auto& st = self->state;
  if (st.state == DeviceState::broken || st.state == DeviceState::disconnected ||
      st.state == DeviceState::reconnecting)
    return;
  st.lost_from = st.state;
  st.last_error = why;
  st.lost_by_conn = by_conn;
  // Kept to be fenced before a VMM is answered for it (only a VMM socket asks).
  if (st.vmm_port && (st.peer.process || !st.peer.unknown.empty()))
    st.lost_peers.push_back(std::move(st.peer));
  st.peer = {};
  if (st.lost_peers.size() > 8)  // back-ends that came and went unfenced, never asked about
    st.lost_peers.erase(st.lost_peers.begin());
  shut_down_sockets(st);
  if (st.busy.empty()) {
    drop_children(self);
  } else {
    drop_child(self, st.worker);
    drop_child(self, st.channel);
  }
  set_state(self, DeviceState::broken);
  emit(self, DeviceEvent{DeviceEvent::Kind::backend_lost, st.state, -1, why});
  if (st.config.reconnect.enabled)
    start_reconnecting(self);
}

/// The step's error as part of operation `op` ("sleep: GET_VRING_BASE: ...").
inline Error step_error(const caf::error& e, const char* op) { return in_operation(from_caf(e, op), op); }

inline bool is_lost(const DeviceData& st) {
  return st.state == DeviceState::broken || st.state == DeviceState::reconnecting;
}

/// A step of `op` failed with `x` on a device lost meanwhile: what `op` fails
/// with. The step's own error when its request saw the loss; otherwise the
/// loss (seen by the worker or the channel), naming the request it cut short.
inline Error after_loss(const DeviceData& st, const char* op, Error x) {
  if (st.lost_by_conn)
    return x;
  // cancelled: the connection was let go of between requests
  return loss_error(st, op, x.code == errc::cancelled ? std::string() : x.request);
}

/// Ends `op` with an error; the device is broken when the back-end is at fault.
/// On a device lost meanwhile, what is left of the connection goes now.
template <class Promise>
inline void fail(Self self, Promise& rp, const char* op, const caf::error& e) {
  Error x = step_error(e, op);
  auto& st = self->state;
  st.busy.clear();
  if (is_lost(st)) {
    x = after_loss(st, op, std::move(x));
    drop_children(self);
    return (void)rp.deliver(to_caf(x));
  }
  if (x.reconnect_may_help())
    mark_broken(self, x.message(), true);
  rp.deliver(to_caf(x));
}

/// After an asynchronous step: the back-end may have been lost meanwhile.
template <class Promise>
bool lost_meanwhile(Self self, Promise& rp, const char* op) {
  auto& st = self->state;
  if (!is_lost(st))
    return false;
  st.busy.clear();
  drop_children(self);
  rp.deliver(to_caf(loss_error(st, op)));
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
/// eventfd of ours that the worker forwards; bases at the ring's start
/// unless the spec carries one.
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
    dq.base = q.base ? *q.base : packed ? virtio::packed_fresh_base : 0;
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
  st.child_lost.clear();
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
  st.socket = nullptr;
  st.channel_socket = nullptr;
  tell_port_conn(self);
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
