#include "actors/device.hpp"

#include <algorithm>
#include <utility>

#include <caf/exit_reason.hpp>

#include "actors/device_connect.hpp"
#include "actors/device_handlers.hpp"
#include "actors/device_snapshot.hpp"
#include "actors/device_steps.hpp"

namespace vufront::actors {

namespace {

using namespace device_steps;

/// Ends the device only after its children are gone (the current ones and
/// any dropped earlier that are still stopping), so that when a VMM sees the
/// device down, every fd and thread of the device is released. From here on
/// nothing new starts: no operation is admitted, no reconnect attempt runs,
/// and a reply still in flight spawns no child.
void shut_down(Self self, const caf::error& reason) {
  auto& st = self->state;
  if (st.exiting)
    return;
  st.exiting = true;
  st.exit_reason = reason;
  ++st.reconnect.generation;  // a retry already scheduled is stale
  st.reconnect.attempting = false;
  drop_children(self);
  if (st.stopping.empty())
    self->quit(reason);
}

bool is_child(Self self, const caf::actor_addr& a) {
  auto& st = self->state;
  return a == caf::actor_cast<caf::actor_addr>(st.conn) ||
         a == caf::actor_cast<caf::actor_addr>(st.worker) ||
         a == caf::actor_cast<caf::actor_addr>(st.channel) ||
         a == caf::actor_cast<caf::actor_addr>(st.transfer);
}

}  // namespace

// The behaviour only wires each message to its handler (actors/device_handlers.hpp,
// device_snapshot.hpp, device_connect.hpp).
device_actor::behavior_type device_impl(device_actor::stateful_pointer<DeviceData> self,
                                        DeviceConfig config) {
  namespace h = device_handlers;
  self->state.config = std::move(config);
  // A child that dies (it should not) breaks the device instead of killing
  // it; an exit from anyone else ends the device, and its linked children.
  self->set_exit_handler([self](caf::exit_msg& em) {
    if (is_child(self, em.source)) {
      mark_broken(self, "an actor of the device stopped: " + caf::to_string(em.reason));
      return;
    }
    shut_down(self, em.reason);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = std::find(st.stopping.begin(), st.stopping.end(), dm.source);
    if (it == st.stopping.end())
      return;
    st.stopping.erase(it);
    if (st.exiting && st.stopping.empty())
      self->quit(st.exit_reason);
  });
  return {
      // ---- lifecycle
      [self](negotiate_atom, const NegotiateOptions& o) { return h::on_negotiate(self, o); },
      [self](activate_atom, const ActivateSpec& spec) { return h::on_activate(self, spec); },
      [self](sleep_atom) { return h::on_sleep(self); },
      [self](wake_atom) { return h::on_wake(self); },
      [self](caf::reset_atom) { return h::on_reset(self); },
      // ---- guest memory
      [self](memory_atom, const MemorySpec& m) { return h::on_set_memory(self, m); },
      [self](mem_add_atom, const MemoryRegionSpec& r) { return h::on_add_region(self, r); },
      [self](mem_rm_atom, uint64_t gpa) { return h::on_remove_region(self, gpa); },
      // ---- config space, queries, settings
      [self](rd_config_atom, uint32_t offset, uint32_t size) {
        return h::on_read_config(self, offset, size);
      },
      [self](wr_config_atom, uint32_t offset, const std::vector<uint8_t>& data) {
        return h::on_write_config(self, offset, data);
      },
      [self](status_atom) { return h::on_status(self); },
      [self](shmem_atom) { return h::on_shmem(self); },
      [self](mapper_atom, std::shared_ptr<SharedMemoryMapper> m) {
        return h::on_mapper(self, std::move(m));
      },
      [self](subscribe_atom, caf::actor subscriber) {
        self->state.subscriber = std::move(subscriber);
      },
      // ---- a VMM-facing socket (actors/device_vmm.cpp)
      [self](vmm_atom, const caf::actor_addr& port) { return h::on_vmm(self, port); },
      [self](vmm_renew_atom, const std::string& why) { return h::on_vmm_renew(self, why); },
      [self](vmm_replay_atom, const ActivateRequest& req) { return h::on_vmm_replay(self, req); },
      [self](dirty_log_atom, bool on) { return h::on_dirty_log(self, on); },
      [self](fence_atom) { return h::on_fence(self); },
      [self](vmm_save_atom, const SnapshotOptions& o, const VmmSaveSpec& a) {
        return snapshot_for_vmm(self, o, a);
      },
      [self](fenced_atom, uint64_t n, const std::string& done, const caf::error& e) {
        h::on_fenced(self, n, done, e);
      },
      // ---- back-end state (actors/device_snapshot.cpp)
      [self](snapshot_atom, const SnapshotOptions& o) { return snapshot_device(self, o); },
      [self](restore_atom, const RestoreOptions& o) { return restore_device(self, o); },
      [self](cancel_atom) { cancel_transfer(self); },
      [self](cancel_all_atom) {
        self->state.transfers_cancelled = true;
        cancel_transfer(self);
      },
      // ---- reconnect (actors/device_connect.cpp)
      [self](reconnect_atom) { return reconnect_now(self); },
      [self](retry_atom, uint64_t generation) { reconnect_attempt(self, generation); },
      // ---- from the children
      [self](lost_atom, const caf::actor_addr& from, const std::string& why) {
        h::on_lost(self, from, why);
      },
      [self](cfg_change_atom) { h::on_config_changed(self); },
      [self](vring_call_atom, uint16_t index) { h::on_vring_call(self, index); },
      [self](vring_err_atom, uint16_t index) { h::on_vring_err(self, index); },
      [self](event_atom, DeviceEvent ev) { emit(self, std::move(ev)); },
  };
}

}  // namespace vufront::actors
