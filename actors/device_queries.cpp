// The device's queries (config space, status, shared memory) and what its
// children report (a lost back-end, a config change, interrupts, ring errors).
#include "actors/device_handlers.hpp"

namespace vufront::actors::device_handlers {

using namespace device_steps;

namespace {

/// The device's config space size (256 when the kind does not say).
uint32_t config_limit(const DeviceData& st) { return st.info.config_size ? st.info.config_size : 256; }

}  // namespace

caf::result<std::vector<uint8_t>> on_read_config(Self self, uint32_t offset, uint32_t size) {
  auto& st = self->state;
  if (st.state == DeviceState::broken)
    return to_caf(loss_error(st, "read_config"));
  if (st.state != DeviceState::negotiated && st.state != DeviceState::active &&
      st.state != DeviceState::sleeping)
    return to_caf(make_error(errc::bad_state, "read_config",
                             std::string("the device is ") + to_string(st.state)));
  const uint32_t limit = config_limit(st);
  if (size == 0 || offset > limit || size > limit - offset)
    return to_caf(make_error(errc::invalid_argument, "read_config",
                             "bytes " + std::to_string(offset) + "+" + std::to_string(size) +
                                 " are outside the " + std::to_string(limit) +
                                 "-byte config space"));
  auto rp = self->make_response_promise<std::vector<uint8_t>>();
  // No admission (read_config may run beside another operation), so no busy
  // to clear: a loss meanwhile fails it, as fail() would, naming the loss.
  self->request(st.conn, conn_wait, get_config_atom_v, offset, size)
      .then(
          [self, rp](std::vector<uint8_t>& data) mutable {
            if (!is_lost(self->state))
              return (void)rp.deliver(std::move(data));
            rp.deliver(to_caf(loss_error(self->state, "read_config")));
          },
          [self, rp](caf::error& e) mutable {
            Error x = step_error(e, "read_config");
            auto& state = self->state;
            if (is_lost(state))  // the loss dropped (or the operation drops) the children
              return (void)rp.deliver(to_caf(after_loss(state, "read_config", std::move(x))));
            if (x.reconnect_may_help())
              mark_broken(self, x.message(), true);
            rp.deliver(to_caf(x));
          });
  return rp;
}

caf::result<caf::ok_atom> on_write_config(Self self, uint32_t offset, const std::vector<uint8_t>& data) {
  if (auto e = admit(self, "write_config", {DeviceState::negotiated, DeviceState::active,
                                            DeviceState::sleeping}))
    return *e;
  auto& st = self->state;
  const uint32_t limit = config_limit(st);
  if (data.empty() || offset > limit || data.size() > limit - offset)
    return to_caf(make_error(errc::invalid_argument, "write_config",
                             "bytes outside the " + std::to_string(limit) + "-byte config space"));
  st.busy = "write_config";
  auto rp = self->make_response_promise<caf::ok_atom>();
  self->request(st.conn, conn_wait, set_config_atom_v, offset, data)
      .then(
          [self, rp](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, "write_config"))
              return;
            self->state.busy.clear();
            rp.deliver(caf::ok_atom_v);
          },
          [self, rp](caf::error& e) mutable { fail(self, rp, "write_config", e); });
  return rp;
}

caf::result<DeviceStatus> on_status(Self self) {
  auto& st = self->state;
  DeviceStatus s;
  s.state = st.state;
  s.socket = st.config.socket;
  s.info = st.info;
  s.acked_features = st.acked_features;
  s.virtio_status = st.virtio_status;
  s.last_error = st.last_error;
  s.notices = st.notices;
  s.memory = st.memory;
  s.reconnect_attempts = st.reconnect.attempts;
  s.reconnects = st.reconnects;
  s.fenced = st.fenced;
  s.inflight = static_cast<bool>(st.inflight_fd);
  s.dirty_log_size = st.dirty_log ? st.dirty_log->size() : 0;
  for (const auto& q : st.queues)
    s.queues.push_back({q.spec.index, q.spec.size, q.base, 0});
  auto rp = self->make_response_promise<DeviceStatus>();
  if (!st.worker) {
    deliver_status(self, rp, std::move(s));
    return rp;
  }
  self->request(st.worker, local_step, caf::get_atom_v)
      .then(
          [self, rp, s](const std::vector<uint64_t>& counts) mutable {
            for (auto& q : s.queues)
              if (q.index < counts.size())
                q.interrupts = counts[q.index];
            deliver_status(self, rp, std::move(s));
          },
          [self, rp, s](caf::error&) mutable { deliver_status(self, rp, std::move(s)); });
  return rp;
}

caf::result<uint8_t, uint64_t> on_shmem(Self self) {
  const auto& sizes = self->state.info.shmem_sizes;
  for (size_t i = 0; i < sizes.size(); ++i)
    if (sizes[i] != 0)
      return {static_cast<uint8_t>(i), sizes[i]};
  return to_caf(make_error(errc::not_negotiated, "shared_memory_region",
                           "the back-end has no shared-memory region"));
}

caf::result<caf::ok_atom> on_mapper(Self self, std::shared_ptr<SharedMemoryMapper> m) {
  auto& st = self->state;
  st.mapper = std::move(m);
  if (!st.channel)
    return caf::ok_atom_v;
  return self->delegate(st.channel, mapper_atom_v, st.mapper, st.info.shmem_sizes);
}

void on_lost(Self self, const caf::actor_addr& from, const std::string& why) {
  auto& st = self->state;
  auto is = [&from](const auto& child) { return child && from == child.address(); };
  if (!is(st.conn) && !is(st.worker) && !is(st.channel))
    return;
  if (st.child_lost.empty())
    st.child_lost = why;
  mark_broken(self, why, is(st.conn));
}

void on_config_changed(Self self) {
  emit(self, DeviceEvent{DeviceEvent::Kind::config_changed, self->state.state, -1, ""});
  if (self->state.worker)
    self->send(self->state.worker, interrupt_atom_v, int32_t{-1});
}

void on_vring_call(Self self, uint16_t index) {
  for (const auto& q : self->state.queues)
    if (q.spec.index == index && self->state.worker)
      self->send(self->state.worker, interrupt_atom_v, static_cast<int32_t>(index));
}

void on_vring_err(Self self, uint16_t index) {
  emit(self, DeviceEvent{DeviceEvent::Kind::vring_error, self->state.state, index,
                         "the back-end reported an error on queue " + std::to_string(index)});
}

}  // namespace vufront::actors::device_handlers
