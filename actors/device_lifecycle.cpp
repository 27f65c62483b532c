// The device's lifecycle operations: negotiate, activate, sleep, wake, reset
// (see device.hpp for the sequences and docs/lifecycle.md).
#include <algorithm>

#include "actors/device_connect.hpp"
#include "actors/device_handlers.hpp"
#include "actors/replay.hpp"

namespace vufront::actors::device_handlers {

namespace {

using namespace device_steps;
using OkPromise = caf::typed_response_promise<caf::ok_atom>;

/// start worker -> active.
void start_worker(Self self, OkPromise rp, const char* op) {
  auto& st = self->state;
  self->request(st.worker, local_step, start_atom_v, watched_queues(st), st.sink)
      .then(
          [self, rp, op](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            self->state.busy.clear();
            set_state(self, DeviceState::active);
            rp.deliver(caf::ok_atom_v);
          },
          [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
}

/// start queues at their bases -> [DRIVER_OK after a restore] -> start
/// worker -> active (wake).
void start_running(Self self, OkPromise rp, const char* op) {
  auto& st = self->state;
  self->request(st.conn, conn_wait, start_queues_atom_v, queue_starts(st))
      .then(
          [self, rp, op](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            auto& now = self->state;
            if (!now.driver_ok_pending)
              return start_worker(self, rp, op);
            auto status = static_cast<uint8_t>(now.virtio_status | replayed_status(ReplayTo::running));
            self->request(now.conn, conn_wait, status_atom_v, status)
                .then(
                    [self, rp, op, status](caf::ok_atom) mutable {
                      if (lost_meanwhile(self, rp, op))
                        return;
                      auto& after = self->state;
                      after.driver_ok_pending = false;
                      if (has_bit(after.info.protocol_features, protocol_feature::status))
                        after.virtio_status = status;
                      start_worker(self, rp, op);
                    },
                    [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
          },
          [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
}

/// The first short-form GET_VRING_BASE answer of the device's back-end
/// (`queue` answered it, `base` is what it became): said once per device.
void note_short_vring_base(Self self, int32_t queue, uint32_t base) {
  auto& st = self->state;
  if (st.short_vring_base_noted)
    return;
  st.short_vring_base_noted = true;
  std::string text = "the back-end answers GET_VRING_BASE for packed rings in the short form "
                     "(bits 0-15 only, as DPDK's librte_vhost does): queue " +
                     std::to_string(queue) + " answered " + hex(base & 0xffffu) +
                     ", taken as " + hex(base) +
                     " (a stopped ring is drained: used index = avail index)";
  st.notices.push_back(text);
  emit(self, DeviceEvent{DeviceEvent::Kind::backend_notice, st.state, queue, std::move(text)});
}

/// stop queues (bases saved) -> stop worker; then `next` (sleep and reset).
template <class Next>
void stop_running(Self self, OkPromise rp, const char* op, Next next) {
  auto& st = self->state;
  self->request(st.conn, conn_wait, stop_queues_atom_v, queue_indices(st), st.packed)
      .then(
          [self, rp, op, next](const std::vector<uint32_t>& bases, int32_t first_short) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            auto& now = self->state;
            for (size_t i = 0; i < bases.size() && i < now.queues.size(); ++i) {
              now.queues[i].base = bases[i];
              if (now.queues[i].spec.index == first_short)
                note_short_vring_base(self, first_short, bases[i]);
            }
            self->request(now.worker, local_step, stop_atom_v)
                .then([self, rp, next](caf::ok_atom) mutable { next(self, rp); },
                      [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
          },
          [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
}

/// Device reset proper: RESET_DEVICE / SET_STATUS(0), drop shared-memory
/// mappings, forget the queues -> negotiated.
void reset_tail(Self self, OkPromise rp) {
  auto& st = self->state;
  self->request(st.conn, conn_wait, reset_device_atom_v)
      .then(
          [self, rp](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, "reset"))
              return;
            auto finish = [self, rp]() mutable {
              if (lost_meanwhile(self, rp, "reset"))
                return;
              auto& now = self->state;
              forget_activation(now);
              now.busy.clear();
              set_state(self, DeviceState::negotiated);
              rp.deliver(caf::ok_atom_v);
            };
            if (!self->state.channel)
              return finish();
            self->request(self->state.channel, local_step, caf::reset_atom_v)
                .then([finish](caf::ok_atom) mutable { finish(); },
                      [self, rp](caf::error& e) mutable { fail(self, rp, "reset", e); });
          },
          [self, rp](caf::error& e) mutable { fail(self, rp, "reset", e); });
}

/// activate: one connection step (features, FEATURES_OK, memory table,
/// queues, DRIVER_OK), then the worker.
void activate_sequence(Self self, OkPromise rp) {
  auto& st = self->state;
  constexpr const char* op = "activate";
  ActivateRequest req = replay_request(st, ReplayTo::running, st.acked_features);
  auto status = req.driver_ok_status;
  self->request(st.conn, conn_wait, activate_atom_v, std::move(req))
      .then(
          [self, rp, status](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            if (has_bit(self->state.info.protocol_features, protocol_feature::status))
              self->state.virtio_status = status;
            start_worker(self, rp, op);
          },
          [self, rp](caf::error& e) mutable { fail(self, rp, op, e); });
}

/// INFLIGHT_SHMFD: the region first (once per device), sized for the
/// largest queue index and size; then the activation.
void inflight_then_activate(Self self, OkPromise rp) {
  auto& st = self->state;
  uint16_t num = 0, size = 0;
  for (const auto& q : st.queues) {
    num = std::max<uint16_t>(num, static_cast<uint16_t>(q.spec.index + 1));
    size = std::max(size, q.spec.size);
  }
  self->request(st.conn, conn_wait, inflight_atom_v, num, size)
      .then(
          [self, rp](const wire::InflightDesc& desc, const SharedFd& fd) mutable {
            if (lost_meanwhile(self, rp, "activate"))
              return;
            if (desc.mmap_size != 0 && fd) {
              self->state.inflight = desc;
              self->state.inflight_fd = fd;
            }
            activate_sequence(self, rp);
          },
          [self, rp](caf::error& e) mutable {
            forget_activation(self->state);
            fail(self, rp, "activate", e);
          });
}

void negotiate_failed(Self self, caf::typed_response_promise<DeviceInfo>& rp,
                      const caf::error& e) {
  auto& st = self->state;
  Error x = step_error(e, "negotiate");
  st.last_error = x.message();
  st.busy.clear();
  drop_children(self);
  forget_negotiation(st);
  rp.deliver(to_caf(x));
}

}  // namespace

caf::result<DeviceInfo> on_negotiate(Self self, const NegotiateOptions& opts) {
  if (auto e = admit(self, "negotiate", {DeviceState::disconnected}))
    return *e;
  if (opts.queues == 0 || opts.max_queue_size == 0)
    return to_caf(make_error(errc::invalid_argument, "negotiate",
                             "queues and max_queue_size must be at least 1"));
  auto& st = self->state;
  st.busy = "negotiate";
  st.options = opts;
  st.last_error.clear();
  st.lost_from = DeviceState::disconnected;
  auto rp = self->make_response_promise<DeviceInfo>();
  connect_and_negotiate(self, [self, rp](Result<DeviceInfo> r) mutable {
    if (!r)
      return negotiate_failed(self, rp, to_caf(r.error()));
    self->state.info = *r;
    self->state.busy.clear();
    set_state(self, DeviceState::negotiated);
    rp.deliver(std::move(r).value());
  });
  return rp;
}

caf::result<caf::ok_atom> on_activate(Self self, const ActivateSpec& spec) {
  if (auto e = admit(self, "activate", {DeviceState::negotiated}))
    return *e;
  auto& st = self->state;
  if (st.mem_table.empty())
    return to_caf(make_error(errc::bad_state, "activate", "no guest memory: set_memory first"));
  auto features = check_activation(spec, st.info, st.mem_table);
  if (!features)
    return to_caf(features.error());
  bool packed = has_bit(*features, feature::ring_packed);
  if (auto e = refuse_packed_logging(st, packed))
    return *e;
  auto queues = queues_of(spec, packed, "activate");
  if (!queues)
    return to_caf(queues.error());
  st.acked_features = *features;
  st.packed = packed;
  st.sink = spec.sink;
  st.queues = std::move(queues).value();
  st.busy = "activate";
  auto rp = self->make_response_promise<caf::ok_atom>();
  if (has_bit(st.info.protocol_features, protocol_feature::inflight_shmfd) && !st.inflight_fd)
    inflight_then_activate(self, rp);
  else
    activate_sequence(self, rp);
  return rp;
}

caf::result<caf::ok_atom> on_sleep(Self self) {
  if (auto e = admit(self, "sleep", {DeviceState::active}))
    return *e;
  self->state.busy = "sleep";
  auto rp = self->make_response_promise<caf::ok_atom>();
  stop_running(self, rp, "sleep", [](Self s, OkPromise& p) {
    if (lost_meanwhile(s, p, "sleep"))
      return;
    s->state.busy.clear();
    set_state(s, DeviceState::sleeping);
    p.deliver(caf::ok_atom_v);
  });
  return rp;
}

caf::result<caf::ok_atom> on_wake(Self self) {
  if (auto e = admit(self, "wake", {DeviceState::sleeping}))
    return *e;
  self->state.busy = "wake";
  auto rp = self->make_response_promise<caf::ok_atom>();
  start_running(self, rp, "wake");
  return rp;
}

caf::result<caf::ok_atom> on_reset(Self self) {
  if (auto e = admit(self, "reset",
                     {DeviceState::disconnected, DeviceState::negotiated, DeviceState::active,
                      DeviceState::sleeping, DeviceState::broken, DeviceState::reconnecting}))
    return *e;
  auto& st = self->state;
  if (st.state == DeviceState::disconnected)
    return caf::ok_atom_v;
  if (st.state == DeviceState::broken || st.state == DeviceState::reconnecting) {
    cancel_reconnect(st);
    // Nothing to tell a lost back-end: drop the connection; negotiate
    // connects again.
    drop_children(self);
    forget_negotiation(st);
    set_state(self, DeviceState::disconnected);
    return caf::ok_atom_v;
  }
  st.busy = "reset";
  auto rp = self->make_response_promise<caf::ok_atom>();
  if (st.state == DeviceState::active)
    stop_running(self, rp, "reset", [](Self s, OkPromise& p) {
      if (!lost_meanwhile(s, p, "reset"))
        reset_tail(s, p);
    });
  else
    reset_tail(self, rp);
  return rp;
}

}  // namespace vufront::actors::device_handlers
