#include "actors/session.hpp"

#include <caf/after.hpp>
#include <caf/send.hpp>

#include "actors/error.hpp"

namespace vufront::actors {

DeviceSession::DeviceSession(caf::actor_system& sys, DeviceConfig config)
    : sys_(sys), self_(sys) {
  device_ = sys.spawn(device_impl, std::move(config));
  caf::anon_send(device_, subscribe_atom_v, caf::actor_cast<caf::actor>(self_));
}

DeviceSession::~DeviceSession() {
  self_->monitor(device_);
  caf::anon_send_exit(device_, caf::exit_reason::user_shutdown);
  bool down = false;
  // Events may still be queued in front of the down message.
  while (!down)
    self_->receive([&](caf::down_msg&) { down = true; },
                   [](event_atom, const DeviceEvent&) {},
                   caf::after(std::chrono::seconds(30)) >> [&] { down = true; });
}

template <class T, class... Ts>
Result<T> DeviceSession::ask(const char* op, Ts&&... xs) {
  std::optional<Result<T>> out;
  self_->request(device_, timeout_, std::forward<Ts>(xs)...)
      .receive([&](T& v) { out.emplace(std::move(v)); },
               [&](caf::error& e) { out.emplace(from_caf(e, op)); });
  return std::move(*out);
}

Result<DeviceInfo> DeviceSession::negotiate(const NegotiateOptions& o) {
  return ask<DeviceInfo>("negotiate", negotiate_atom_v, o);
}

namespace {
Result<void> as_void(Result<caf::ok_atom>&& r) {
  if (!r)
    return std::move(r).error();
  return ok();
}
}  // namespace

Result<void> DeviceSession::set_memory(const MemorySpec& m) {
  return as_void(ask<caf::ok_atom>("set_memory", memory_atom_v, m));
}
Result<void> DeviceSession::activate(const ActivateSpec& spec) {
  return as_void(ask<caf::ok_atom>("activate", activate_atom_v, spec));
}
Result<std::vector<uint8_t>> DeviceSession::read_config(uint32_t offset, uint32_t size) {
  return ask<std::vector<uint8_t>>("read_config", rd_config_atom_v, offset, size);
}
Result<void> DeviceSession::write_config(uint32_t offset, const std::vector<uint8_t>& data) {
  return as_void(ask<caf::ok_atom>("write_config", wr_config_atom_v, offset, data));
}
Result<void> DeviceSession::sleep() { return as_void(ask<caf::ok_atom>("sleep", sleep_atom_v)); }
Result<void> DeviceSession::wake() { return as_void(ask<caf::ok_atom>("wake", wake_atom_v)); }
Result<void> DeviceSession::reset() {
  return as_void(ask<caf::ok_atom>("reset", caf::reset_atom_v));
}
Result<void> DeviceSession::reconnect() {
  return as_void(ask<caf::ok_atom>("reconnect", reconnect_atom_v));
}
Result<DeviceStatus> DeviceSession::status() { return ask<DeviceStatus>("status", status_atom_v); }

Result<std::pair<uint8_t, uint64_t>> DeviceSession::shared_memory_region() {
  std::optional<Result<std::pair<uint8_t, uint64_t>>> out;
  self_->request(device_, timeout_, shmem_atom_v)
      .receive([&](uint8_t id, uint64_t size) { out.emplace(std::make_pair(id, size)); },
               [&](caf::error& e) { out.emplace(from_caf(e, "shared_memory_region")); });
  return std::move(*out);
}

Result<void> DeviceSession::add_memory_region(const MemoryRegionSpec& r) {
  return as_void(ask<caf::ok_atom>("add_memory_region", mem_add_atom_v, r));
}

Result<std::pair<SharedFd, uint64_t>> DeviceSession::dirty_log_start() {
  std::optional<Result<std::pair<SharedFd, uint64_t>>> out;
  self_->request(device_, timeout_, dirty_log_atom_v, true)
      .receive([&](SharedFd& fd, uint64_t size) { out.emplace(std::make_pair(std::move(fd), size)); },
               [&](caf::error& e) { out.emplace(from_caf(e, "dirty_log_start")); });
  return std::move(*out);
}

Result<void> DeviceSession::dirty_log_stop() {
  std::optional<Result<void>> out;
  self_->request(device_, timeout_, dirty_log_atom_v, false)
      .receive([&](SharedFd&, uint64_t) { out.emplace(ok()); },
               [&](caf::error& e) { out.emplace(from_caf(e, "dirty_log_stop")); });
  return std::move(*out);
}

Result<void> DeviceSession::set_shared_memory_mapper(std::shared_ptr<SharedMemoryMapper> m) {
  return as_void(ask<caf::ok_atom>("set_shared_memory_mapper", mapper_atom_v, std::move(m)));
}

Result<SnapshotInfo> DeviceSession::snapshot(const SnapshotOptions& o) {
  return ask<SnapshotInfo>("snapshot", snapshot_atom_v, o);
}

Result<SnapshotInfo> DeviceSession::restore(const RestoreOptions& o) {
  return ask<SnapshotInfo>("restore", restore_atom_v, o);
}

void DeviceSession::cancel() const { caf::anon_send(device_, cancel_all_atom_v); }

std::optional<DeviceEvent> DeviceSession::next_event(std::chrono::milliseconds timeout) {
  std::optional<DeviceEvent> out;
  self_->receive([&](event_atom, DeviceEvent& ev) { out = std::move(ev); },
                 caf::after(timeout) >> [] {});
  return out;
}

std::optional<DeviceEvent> DeviceSession::wait_event(DeviceEvent::Kind kind,
                                                     std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until -
                                                                      std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    auto ev = next_event(left);
    if (!ev)
      return std::nullopt;
    if (ev->kind == kind)
      return ev;
  }
}

MemorySpec memory_spec(const GuestMemory& mem) {
  MemorySpec out;
  for (const GuestRegion* r : mem.regions())
    out.push_back({r->gpa(), r->size(), r->fd_offset(), r->shared_fd()});
  return out;
}

ActivateSpec activate_spec(virtio::GuestDriver& g, uint64_t driver_features, bool msix,
                           bool at_driver_bases) {
  ActivateSpec spec;
  spec.driver_features = driver_features;
  for (uint16_t i = 0; i < g.queue_count(); ++i) {
    const auto& a = g.areas(i);
    QueueSpec q;
    q.index = i;
    q.size = g.queue(i).size();
    q.desc = a.desc;
    q.driver = a.driver;
    q.device = a.device;
    q.kick = g.kick(i);
    if (msix)
      q.call = g.call(i);
    if (at_driver_bases)
      q.base = g.queue(i).next_avail_base();
    spec.queues.push_back(std::move(q));
  }
  if (!msix)
    spec.sink.eventfd = g.intx();
  g.use_intx(!msix);
  return spec;
}

}  // namespace vufront::actors
