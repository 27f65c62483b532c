#include "actors/replay.hpp"

#include "actors/device_checks.hpp"
#include "protocol/messages.hpp"

namespace vufront::actors {

uint8_t replayed_status(ReplayTo to) noexcept {
  const auto features_ok =
      static_cast<uint8_t>(status_bit::acknowledge | status_bit::driver | status_bit::features_ok);
  if (to == ReplayTo::running)
    return static_cast<uint8_t>(features_ok | status_bit::driver_ok);
  return features_ok;
}

ActivateRequest replay_request(const DeviceData& st, ReplayTo to, uint64_t features) {
  ActivateRequest req;
  req.features = features;
  req.features_ok_status = replayed_status(ReplayTo::rings_stopped);
  // 0: no DRIVER_OK in this step (wake sends it after the rings)
  req.driver_ok_status = to == ReplayTo::running ? replayed_status(to) : 0;
  if (to != ReplayTo::state_load) {
    req.mem_table = st.mem_table;
    req.mem_fds = memory_fds(st.memory);
  }
  if (to == ReplayTo::running || to == ReplayTo::rings_stopped) {
    req.inflight = st.inflight;
    req.inflight_fd = st.inflight_fd;
    if (st.dirty_log) {
      // the same log, before any ring starts (actors/device_dirty_log.cpp)
      req.features |= bit(feature::log_all);
      req.log_fd = st.dirty_log->fd();
      req.log = wire::Log{st.dirty_log->size(), 0};
    }
  }
  if (to == ReplayTo::running)
    req.queues = queue_starts(st);
  return req;
}

ActivateRequest replay_shadow(const proxy::Shadow& shadow) {
  ActivateRequest req;
  req.features = shadow.acked_features();
  const uint8_t status = shadow.status();
  const auto driver_ok = static_cast<uint8_t>(status_bit::driver_ok);
  req.features_ok_status = static_cast<uint8_t>(status & ~driver_ok);
  req.driver_ok_status = (status & driver_ok) ? status : 0;
  for (const auto& r : shadow.regions()) {
    wire::MemoryRegion m = r.vmm;
    m.user_addr = r.synthetic;
    req.mem_table.push_back(m);
    req.mem_fds.push_back(r.fd);
  }
  if (shadow.inflight_fd()) {
    req.inflight = shadow.inflight();
    req.inflight_fd = shadow.inflight_fd();
  }
  if (shadow.logging()) {
    // the VMM's own log, before any ring starts; its features carry LOG_ALL
    // and its rings the LOG flag as the VMM sent them (docs/vmm-proxy.md)
    req.log = shadow.log();
    req.log_fd = shadow.log_fd();
  }
  const auto& rings = shadow.rings();
  for (uint32_t i = 0; i < rings.size(); ++i) {
    const auto& ring = rings[i];
    auto addr = shadow.backend_addr(i);
    if (!addr)
      continue;  // nothing the back-end could use yet; the VMM sends it again
    QueueStart q;
    q.addr = *addr;
    q.num = ring.num;
    q.base = ring.base;
    if (ring.started && !shadow.packed())
      if (auto used = shadow.used_index(i))
        q.base = *used;
    q.kick = ring.kick;
    q.call = ring.call;
    q.err = ring.err;
    q.start = ring.started && ring.kick;
    q.enable = ring.enabled;
    req.queues.push_back(std::move(q));
  }
  return req;
}

std::vector<QueueStart> queue_starts(const DeviceData& st) {
  std::vector<QueueStart> out;
  for (const auto& q : st.queues) {
    QueueStart s;
    // Checked by check_activation; the table cannot change the translation
    // (user addresses are gpa + bias).
    s.addr = vring_addr(q.spec, st.packed, st.mem_table).value();
    if (st.dirty_log)
      s.addr.flags |= wire::vring_addr_flag_log;
    s.num = q.spec.size;
    s.base = q.base;
    s.kick = q.spec.kick;
    s.call = q.call;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<SharedFd> memory_fds(const MemorySpec& m) {
  std::vector<SharedFd> out;
  for (const auto& r : m)
    out.push_back(r.fd);
  return out;
}

}  // namespace vufront::actors
