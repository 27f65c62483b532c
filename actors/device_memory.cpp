// The device's guest memory: set_memory, add or remove one region. Checked
// at once; sent at activation, or at once when the device has queues.
#include "actors/device_handlers.hpp"
#include "actors/replay.hpp"

namespace vufront::actors::device_handlers {

namespace {

using namespace device_steps;

/// A negotiated device's bigger log for `next` (no back-end to tell yet).
std::optional<caf::error> grow_log_now(Self self, const MemorySpec& next, const char* op) {
  std::optional<caf::error> err;
  log_for_memory(self, next, op, [] {}, [&err](const caf::error& e) { err = e; });
  return err;
}

/// add_memory_region / remove_memory_region: `next` is the whole new
/// memory, `gpa` the region added or removed. Checked as set_memory is, and
/// refused when a ring of the activation would no longer be in guest
/// memory. Sent as ADD_MEM_REG / REM_MEM_REG with CONFIGURE_MEM_SLOTS, else
/// as a whole SET_MEM_TABLE; nothing is sent before activation.
caf::result<caf::ok_atom> change_memory(Self self, const char* op, MemorySpec next, uint64_t gpa,
                                        bool adding) {
  if (auto e = admit(self, op, {DeviceState::negotiated, DeviceState::active, DeviceState::sleeping}))
    return *e;
  auto& st = self->state;
  if (next.empty() && st.state != DeviceState::negotiated)
    return to_caf(make_error(errc::invalid_argument, op,
                             "the last region cannot be removed while the device has queues"));
  auto table = next.empty() ? Result<std::vector<wire::MemoryRegion>>(std::vector<wire::MemoryRegion>{})
                            : check_memory(next, st.info.max_mem_slots);
  if (!table) {
    Error e = std::move(table).error();
    e.request = op;
    return to_caf(e);
  }
  for (const auto& q : st.queues)
    if (auto a = vring_addr(q.spec, st.packed, *table); !a)
      return to_caf(make_error(errc::invalid_argument, op,
                               "queue " + std::to_string(q.spec.index) +
                                   "'s rings would no longer be in guest memory"));
  if (st.state == DeviceState::negotiated) {
    if (auto e = grow_log_now(self, next, op))
      return *e;
    st.memory = std::move(next);
    st.mem_table = std::move(table).value();
    return caf::ok_atom_v;
  }
  // The table entry of the region, as the back-end knows it.
  const auto& lookup = adding ? *table : st.mem_table;
  wire::MemoryRegion entry{};
  SharedFd fd;
  for (size_t i = 0; i < lookup.size(); ++i)
    if (lookup[i].guest_phys_addr == gpa) {
      entry = lookup[i];
      if (adding)
        fd = next[i].fd;
    }
  st.busy = op;
  auto rp = self->make_response_promise<caf::ok_atom>();
  auto done = [self, rp, op, next, t = table.value()](caf::ok_atom) mutable {
    if (lost_meanwhile(self, rp, op))
      return;
    self->state.memory = std::move(next);
    self->state.mem_table = std::move(t);
    self->state.busy.clear();
    rp.deliver(caf::ok_atom_v);
  };
  auto failed = [self, rp, op](const caf::error& e) mutable { fail(self, rp, op, e); };
  auto send = [self, adding, entry, fd, next, t = table.value(), done, failed]() mutable {
    auto& now = self->state;
    if (has_bit(now.info.protocol_features, protocol_feature::configure_mem_slots)) {
      if (adding)
        self->request(now.conn, conn_wait, add_mem_reg_atom_v, entry, fd).then(done, failed);
      else
        self->request(now.conn, conn_wait, rem_mem_reg_atom_v, entry).then(done, failed);
    } else {
      self->request(now.conn, conn_wait, mem_table_atom_v, t, memory_fds(next)).then(done, failed);
    }
  };
  // a bigger dirty log first: the back-end never writes beyond the log it has
  log_for_memory(self, next, op, send, failed);
  return rp;
}

}  // namespace

caf::result<caf::ok_atom> on_set_memory(Self self, const MemorySpec& m) {
  if (auto e = admit(self, "set_memory", {DeviceState::negotiated, DeviceState::active,
                                          DeviceState::sleeping}))
    return *e;
  auto& st = self->state;
  auto table = check_memory(m, st.info.max_mem_slots);
  if (!table)
    return to_caf(table.error());
  if (st.state == DeviceState::negotiated) {
    if (auto e = grow_log_now(self, m, "set_memory"))
      return *e;
    st.memory = m;
    st.mem_table = std::move(table).value();
    return caf::ok_atom_v;
  }
  st.busy = "set_memory";
  auto rp = self->make_response_promise<caf::ok_atom>();
  auto t = table.value();
  auto failed = [self, rp](const caf::error& e) mutable { fail(self, rp, "set_memory", e); };
  auto send = [self, rp, m, t, failed]() mutable {
    self->request(self->state.conn, conn_wait, mem_table_atom_v, t, memory_fds(m))
        .then(
            [self, rp, m, t](caf::ok_atom) mutable {
              if (lost_meanwhile(self, rp, "set_memory"))
                return;
              self->state.memory = m;
              self->state.mem_table = t;
              self->state.busy.clear();
              rp.deliver(caf::ok_atom_v);
            },
            failed);
  };
  // a bigger dirty log first: the back-end never writes beyond the log it has
  log_for_memory(self, m, "set_memory", send, failed);
  return rp;
}

caf::result<caf::ok_atom> on_add_region(Self self, const MemoryRegionSpec& r) {
  MemorySpec next = self->state.memory;
  next.push_back(r);
  return change_memory(self, "add_memory_region", std::move(next), r.gpa, true);
}

caf::result<caf::ok_atom> on_remove_region(Self self, uint64_t gpa) {
  MemorySpec next;
  bool found = false;
  for (const auto& r : self->state.memory) {
    if (r.gpa == gpa && !found)
      found = true;
    else
      next.push_back(r);
  }
  if (!found)
    return to_caf(make_error(errc::invalid_argument, "remove_memory_region",
                             "no region starts at " + hex(gpa)));
  return change_memory(self, "remove_memory_region", std::move(next), gpa, false);
}

}  // namespace vufront::actors::device_handlers
