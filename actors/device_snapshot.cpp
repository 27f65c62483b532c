#include "actors/device_snapshot.hpp"

#include <memory>
#include <string>
#include <utility>

#include "actors/device_checks.hpp"
#include "actors/device_steps.hpp"
#include "actors/snapshot.hpp"
#include "snapshot/manifest.hpp"
#include "snapshot/reader.hpp"

namespace vufront::actors {

namespace {

using namespace device_steps;
using InfoPromise = caf::typed_response_promise<SnapshotInfo>;
using ManifestPtr = std::shared_ptr<const snapshot::Manifest>;

// ---- the transfer child -------------------------------------------------------------

void spawn_transfer(Self self, const caf::actor& progress) {
  auto& st = self->state;
  st.transfer = self->spawn<caf::detached + caf::linked>(snapshot_impl, st.conn, progress);
}

/// After (cancel_all_atom) every snapshot and restore is refused.
std::optional<caf::error> cancelled_already(Self self, const char* op) {
  if (self->state.transfers_cancelled)
    return to_caf(make_error(errc::cancelled, op, "cancelled before the transfer began"));
  return std::nullopt;
}

/// `e` as part of operation `op` ("restore: CHECK_DEVICE_STATE: ...").
Error named(Error e, const char* op) { return in_operation(std::move(e), op); }

/// Ends a snapshot or restore: the transfer child is dropped (its fds and
/// temporary file with it) and the caller answered. The device's state is
/// left as it is: a failed transfer breaks nothing by itself (a lost
/// back-end arrives as lost_atom from the connection).
void end(Self self, InfoPromise& rp, const char* op, Result<SnapshotInfo> r) {
  auto& st = self->state;
  drop_child(self, st.transfer);
  st.busy.clear();
  if (is_lost(st)) {
    // lost meanwhile: what is left of the connection goes now
    drop_children(self);
    if (!r)
      return (void)rp.deliver(to_caf(after_loss(st, op, named(r.error(), op))));
  }
  if (!r) {
    rp.deliver(to_caf(named(r.error(), op)));
    return;
  }
  rp.deliver(std::move(r).value());
}

void end_caf(Self self, InfoPromise& rp, const char* op, const caf::error& e) {
  end(self, rp, op, step_error(e, op));
}

/// fail() for a step of a snapshot or restore: its transfer child goes too.
void fail_transfer(Self self, InfoPromise& rp, const char* op, const caf::error& e) {
  drop_child(self, self->state.transfer);
  fail(self, rp, op, e);
}

/// lost_meanwhile() for a step of a snapshot or restore: its transfer child goes too.
bool transfer_lost(Self self, InfoPromise& rp, const char* op) {
  if (!lost_meanwhile(self, rp, op))
    return false;
  drop_child(self, self->state.transfer);
  return true;
}

// ---- snapshot -------------------------------------------------------------------------

/// What the manifest says of the device's activation: its own, or the VMM's.
VmmSaveSpec activation_of(const DeviceData& st) {
  VmmSaveSpec a;
  a.features = st.acked_features;
  for (const auto& q : st.queues)
    a.queues.push_back({q.spec.index, q.spec.size, q.base});
  return a;
}

snapshot::Manifest manifest_of(const DeviceData& st, const VmmSaveSpec& a, std::vector<uint8_t> config) {
  snapshot::Manifest m;
  m.kind = st.info.kind;
  m.features = a.features;
  m.protocol_features = st.info.protocol_features;
  m.queues = a.queues;
  m.config = std::move(config);
  for (size_t i = 0; i < st.info.shmem_sizes.size(); ++i)
    if (st.info.shmem_sizes[i] != 0)
      m.shmem.push_back({static_cast<uint8_t>(i), st.info.shmem_sizes[i]});
  m.created = snapshot::utc_now();
  return m;
}

void save(Self self, InfoPromise rp, const SnapshotOptions& o, const VmmSaveSpec& a, TransferDeadline dl,
          std::vector<uint8_t> config) {
  constexpr const char* op = "snapshot";
  if (transfer_lost(self, rp, op))
    return;
  auto& st = self->state;
  auto m = std::make_shared<snapshot::Manifest>(manifest_of(st, a, std::move(config)));
  if (auto v = snapshot::validate(*m); !v)
    return end(self, rp, op, named(v.error(), "manifest"));
  SaveJob job{o.path, o.target, o.max_bytes, dl, std::move(m), o.replace};
  self->request(st.transfer, conn_wait, save_atom_v, std::move(job))
      .then([self, rp](SnapshotInfo& info) mutable { end(self, rp, op, std::move(info)); },
            [self, rp](caf::error& e) mutable { end_caf(self, rp, op, e); });
}

// ---- restore ----------------------------------------------------------------------------

/// Whether this back-end and the VMM's activation fit the snapshot; with an
/// activation also builds the device's queues at the snapshot's bases.
Result<std::vector<DeviceData::Queue>> check_restore(const snapshot::Manifest& m,
                                                     const DeviceInfo& info,
                                                     const std::optional<ActivateSpec>& activation,
                                                     uint64_t driver_features) {
  constexpr const char* op = "restore";
  if (auto r = snapshot::check_compatible(m, info.kind, info.backend_features,
                                          info.protocol_features, info.queue_num);
      !r)
    return std::move(r).error();
  for (const auto& region : m.shmem) {
    uint64_t have = region.shmid < info.shmem_sizes.size() ? info.shmem_sizes[region.shmid] : 0;
    if (have != region.size)
      return make_error(errc::not_negotiated, op,
                        "the snapshot has shared-memory region " + std::to_string(region.shmid) +
                            " of " + hex(region.size) + " bytes, the back-end " +
                            (have ? "has " + hex(have) + " bytes" : "has none"));
  }
  if (!activation)
    return std::vector<DeviceData::Queue>{};
  if (driver_features != m.features)
    return make_error(errc::invalid_argument, op,
                      "the driver's features " + hex(driver_features) + " are not the snapshot's " +
                          hex(m.features));
  if (activation->queues.size() != m.queues.size())
    return make_error(errc::invalid_argument, op,
                      "the activation has " + std::to_string(activation->queues.size()) +
                          " queues, the snapshot " + std::to_string(m.queues.size()));
  bool packed = has_bit(m.features, feature::ring_packed);
  auto queues = queues_of(*activation, packed, op);
  if (!queues)
    return queues;
  for (auto& q : *queues) {
    const snapshot::QueueState* saved = nullptr;
    for (const auto& s : m.queues)
      if (s.index == q.spec.index)
        saved = &s;
    if (!saved)
      return make_error(errc::invalid_argument, op,
                        "queue " + std::to_string(q.spec.index) + " is not in the snapshot");
    if (saved->size != q.spec.size)
      return make_error(errc::invalid_argument, op,
                        "queue " + std::to_string(q.spec.index) + " has size " +
                            std::to_string(q.spec.size) + ", the snapshot " +
                            std::to_string(saved->size));
    q.base = saved->base;
  }
  return queues;
}

/// The load, and the device's state after it.
void load(Self self, InfoPromise rp, const RestoreOptions& o, TransferDeadline dl,
          std::vector<DeviceData::Queue> queues, uint64_t features, uint8_t status) {
  constexpr const char* op = "restore";
  auto& st = self->state;
  self->request(st.transfer, conn_wait, load_atom_v, dl)
      .then(
          [self, rp, o, queues, features, status](SnapshotInfo& info) mutable {
            if (transfer_lost(self, rp, op))
              return;
            auto& now = self->state;
            now.acked_features = features;
            if (o.activation) {
              now.packed = has_bit(features, feature::ring_packed);
              now.sink = o.activation->sink;
              now.queues = std::move(queues);
              if (has_bit(now.info.protocol_features, protocol_feature::status))
                now.virtio_status = status;
              now.driver_ok_pending = true;
              set_state(self, DeviceState::sleeping);
            }
            end(self, rp, op, std::move(info));
          },
          [self, rp](caf::error& e) mutable { end_caf(self, rp, op, e); });
}

/// After the file was opened and verified: checks, the bring-up before the
/// load (features, FEATURES_OK, memory table), the load.
void restore_checked(Self self, InfoPromise rp, const RestoreOptions& o, TransferDeadline dl,
                     uint64_t driver_features, const ManifestPtr& m) {
  constexpr const char* op = "restore";
  if (transfer_lost(self, rp, op))
    return;
  auto& st = self->state;
  auto queues = check_restore(*m, st.info, o.activation, driver_features);
  if (!queues)
    return end(self, rp, op, queues.error());
  uint64_t features = o.activation ? driver_features : m->features;
  const uint8_t status = replayed_status(ReplayTo::state_load);
  if (!o.activation && features == 0)  // a snapshot of a never-activated device
    return load(self, rp, o, dl, {}, 0, 0);
  ActivateRequest req =
      replay_request(st, o.activation ? ReplayTo::state_load_with_memory : ReplayTo::state_load, features);
  self->request(st.conn, conn_wait, activate_atom_v,
                std::move(req))
      .then(
          [self, rp, o, dl, q = std::move(queues).value(), features, status](caf::ok_atom) mutable {
            if (transfer_lost(self, rp, op))
              return;
            load(self, rp, o, dl, std::move(q), features, status);
          },
          [self, rp](caf::error& e) mutable { fail_transfer(self, rp, op, e); });
}

std::optional<caf::error> check_options(const char* op, const std::string& path,
                                        const snapshot::FileTarget& target, uint32_t timeout_ms) {
  if (path.empty() && target.empty())
    return to_caf(make_error(errc::invalid_argument, op, "no file path"));
  if (timeout_ms == 0)
    return to_caf(make_error(errc::invalid_argument, op, "the timeout must be at least 1 ms"));
  return std::nullopt;
}


/// The snapshot once admitted: [GET_CONFIG] -> save, with `a` in the manifest.
caf::result<SnapshotInfo> start_snapshot(Self self, const SnapshotOptions& o, VmmSaveSpec a) {
  constexpr const char* op = "snapshot";
  if (auto e = cancelled_already(self, op))
    return *e;
  if (auto e = check_options(op, o.path, o.target, o.timeout_ms))
    return *e;
  if (o.max_bytes == 0)
    return to_caf(make_error(errc::invalid_argument, op, "max_bytes must be at least 1"));
  auto& st = self->state;
  st.busy = op;
  auto rp = self->make_response_promise<SnapshotInfo>();
  auto dl = TransferDeadline::stalling(milliseconds(o.timeout_ms));
  // Spawned before GET_CONFIG, so a cancel from now on reaches it; it keeps
  // one that comes before its save, which then fails "cancelled".
  spawn_transfer(self, o.progress);
  if (!has_bit(st.info.protocol_features, protocol_feature::config) || st.info.config_size == 0) {
    save(self, rp, o, a, dl, {});
    return rp;
  }
  self->request(st.conn, conn_wait, get_config_atom_v, uint32_t{0}, st.info.config_size)
      .then([self, rp, o, a, dl](std::vector<uint8_t>& cfg) mutable { save(self, rp, o, a, dl, std::move(cfg)); },
            [self, rp](caf::error& e) mutable { fail_transfer(self, rp, op, e); });
  return rp;
}

}  // namespace

caf::result<SnapshotInfo> snapshot_device(Self self, const SnapshotOptions& o) {
  // A device a VMM drives is paused, saved and resumed by its VMM socket's port.
  if (auto port = caf::actor_cast<vmm_port_actor>(self->state.vmm_port); port && !self->state.exiting)
    return self->delegate(port, snapshot_atom_v, o);
  if (auto e = admit(self, "snapshot", {DeviceState::sleeping, DeviceState::negotiated}))
    return *e;
  return start_snapshot(self, o, activation_of(self->state));
}

caf::result<SnapshotInfo> snapshot_for_vmm(Self self, const SnapshotOptions& o, const VmmSaveSpec& a) {
  constexpr const char* op = "snapshot";
  auto& st = self->state;
  if (st.exiting)
    return to_caf(make_error(errc::bad_state, op, "the device is shutting down"));
  if (!st.busy.empty())
    return to_caf(make_error(errc::bad_state, op, "busy: " + st.busy + " is in progress"));
  if (st.state == DeviceState::broken || st.state == DeviceState::reconnecting)
    return to_caf(loss_error(st, op));
  if (st.state != DeviceState::negotiated)
    return to_caf(make_error(errc::bad_state, op, std::string("the device is ") + to_string(st.state)));
  return start_snapshot(self, o, a);
}

caf::result<SnapshotInfo> restore_device(Self self, const RestoreOptions& o) {
  constexpr const char* op = "restore";
  if (auto e = admit(self, op, {DeviceState::negotiated}))
    return *e;
  if (auto e = cancelled_already(self, op))
    return *e;
  if (auto e = check_options(op, o.path, o.target, o.timeout_ms))
    return *e;
  auto& st = self->state;
  if (st.dirty_log)  // a state load's replay carries no log (actors/replay.hpp)
    return to_caf(make_error(errc::bad_state, op,
                             "dirty logging is on: dirty_log_stop first (a restore is not logged)"));
  uint64_t driver_features = 0;
  if (o.activation) {
    if (st.mem_table.empty())
      return to_caf(make_error(errc::bad_state, op, "no guest memory: set_memory first"));
    auto f = check_activation(*o.activation, st.info, st.mem_table);
    if (!f)
      return to_caf(named(f.error(), op));
    driver_features = *f;
  }
  st.busy = op;
  auto rp = self->make_response_promise<SnapshotInfo>();
  auto dl = TransferDeadline::stalling(milliseconds(o.timeout_ms));
  spawn_transfer(self, o.progress);
  self->request(st.transfer, conn_wait, open_atom_v, o, dl)
      .then(
          [self, rp, o, dl, driver_features](const ManifestPtr& m) mutable {
            restore_checked(self, rp, o, dl, driver_features, m);
          },
          [self, rp](caf::error& e) mutable { end_caf(self, rp, op, e); });
  return rp;
}

void cancel_transfer(Self self) {
  if (self->state.transfer)
    self->send(self->state.transfer, cancel_atom_v);
}

}  // namespace vufront::actors
