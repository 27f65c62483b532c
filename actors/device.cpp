#include "actors/device.hpp"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <utility>

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/backend_channel.hpp"
#include "actors/connection.hpp"
#include "actors/device_checks.hpp"
#include "actors/device_connect.hpp"
#include "actors/device_snapshot.hpp"
#include "actors/device_steps.hpp"
#include "actors/error.hpp"
#include "actors/worker.hpp"
#include "virtio/ring_layout.hpp"

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

// ---- sequences ------------------------------------------------------------------------

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
  self->request(st.conn, conn_wait, start_queues_atom_v,
                queue_starts(st))
      .then(
          [self, rp, op](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            auto& now = self->state;
            if (!now.driver_ok_pending)
              return start_worker(self, rp, op);
            auto status = static_cast<uint8_t>(now.virtio_status | status_bit::acknowledge |
                                               status_bit::driver | status_bit::features_ok |
                                               status_bit::driver_ok);
            self->request(now.conn, conn_wait, status_atom_v, status)
                .then(
                    [self, rp, op, status](caf::ok_atom) mutable {
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

/// stop queues (bases saved) -> stop worker; then `next` (sleep and reset).
template <class Next>
void stop_running(Self self, OkPromise rp, const char* op, Next next) {
  auto& st = self->state;
  self->request(st.conn, conn_wait, stop_queues_atom_v,
                queue_indices(st), st.packed)
      .then(
          [self, rp, op, next](const std::vector<uint32_t>& bases) mutable {
            auto& now = self->state;
            for (size_t i = 0; i < bases.size() && i < now.queues.size(); ++i)
              now.queues[i].base = bases[i];
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
            auto finish = [self, rp]() mutable {
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
  auto done = [self, rp, next, t = table.value()](caf::ok_atom) mutable {
    self->state.memory = std::move(next);
    self->state.mem_table = std::move(t);
    self->state.busy.clear();
    rp.deliver(caf::ok_atom_v);
  };
  auto failed = [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); };
  if (has_bit(st.info.protocol_features, protocol_feature::configure_mem_slots)) {
    if (adding)
      self->request(st.conn, conn_wait, add_mem_reg_atom_v, entry, fd).then(done, failed);
    else
      self->request(st.conn, conn_wait, rem_mem_reg_atom_v, entry).then(done, failed);
  } else {
    self->request(st.conn, conn_wait, mem_table_atom_v, table.value(), memory_fds(next))
        .then(done, failed);
  }
  return rp;
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

device_actor::behavior_type device_impl(device_actor::stateful_pointer<DeviceData> self,
                                        DeviceConfig config) {
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
      // ---- negotiate: connect, features, protocol features, channel
      [self](negotiate_atom, const NegotiateOptions& opts) -> caf::result<DeviceInfo> {
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
      },
      // ---- memory: checked now, sent at activation (or now when running)
      [self](memory_atom, const MemorySpec& m) -> caf::result<caf::ok_atom> {
        if (auto e = admit(self, "set_memory", {DeviceState::negotiated, DeviceState::active,
                                                DeviceState::sleeping}))
          return *e;
        auto& st = self->state;
        auto table = check_memory(m, st.info.max_mem_slots);
        if (!table)
          return to_caf(table.error());
        if (st.state == DeviceState::negotiated) {
          st.memory = m;
          st.mem_table = std::move(table).value();
          return caf::ok_atom_v;
        }
        st.busy = "set_memory";
        auto rp = self->make_response_promise<caf::ok_atom>();
        auto t = table.value();
        self->request(st.conn, conn_wait, mem_table_atom_v, t,
                      memory_fds(m))
            .then(
                [self, rp, m, t](caf::ok_atom) mutable {
                  self->state.memory = m;
                  self->state.mem_table = t;
                  self->state.busy.clear();
                  rp.deliver(caf::ok_atom_v);
                },
                [self, rp](caf::error& e) mutable { fail(self, rp, "set_memory", e); });
        return rp;
      },
      [self](mem_add_atom, const MemoryRegionSpec& r) -> caf::result<caf::ok_atom> {
        MemorySpec next = self->state.memory;
        next.push_back(r);
        return change_memory(self, "add_memory_region", std::move(next), r.gpa, true);
      },
      [self](mem_rm_atom, uint64_t gpa) -> caf::result<caf::ok_atom> {
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
      },
      // ---- activate
      [self](activate_atom, const ActivateSpec& spec) -> caf::result<caf::ok_atom> {
        if (auto e = admit(self, "activate", {DeviceState::negotiated}))
          return *e;
        auto& st = self->state;
        if (st.mem_table.empty())
          return to_caf(make_error(errc::bad_state, "activate", "no guest memory: set_memory first"));
        auto features = check_activation(spec, st.info, st.mem_table);
        if (!features)
          return to_caf(features.error());
        bool packed = has_bit(*features, feature::ring_packed);
        auto queues = queues_of(spec, packed, "activate");
        if (!queues)
          return to_caf(queues.error());
        st.acked_features = *features;
        st.packed = packed;
        st.sink = spec.sink;
        st.queues = std::move(queues).value();
        st.busy = "activate";
        auto rp = self->make_response_promise<caf::ok_atom>();
        if (!has_bit(st.info.protocol_features, protocol_feature::inflight_shmfd) || st.inflight_fd) {
          activate_sequence(self, rp);
          return rp;
        }
        // INFLIGHT_SHMFD: the region first (once per device), sized for the
        // largest queue index and size.
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
        return rp;
      },
      // ---- config space
      [self](rd_config_atom, uint32_t offset, uint32_t size) -> caf::result<std::vector<uint8_t>> {
        auto& st = self->state;
        if (st.state != DeviceState::negotiated && st.state != DeviceState::active &&
            st.state != DeviceState::sleeping)
          return to_caf(make_error(errc::bad_state, "read_config",
                                   std::string("the device is ") + to_string(st.state)));
        uint32_t limit = st.info.config_size ? st.info.config_size : 256;
        if (size == 0 || offset > limit || size > limit - offset)
          return to_caf(make_error(errc::invalid_argument, "read_config",
                                   "bytes " + std::to_string(offset) + "+" + std::to_string(size) +
                                       " are outside the " + std::to_string(limit) +
                                       "-byte config space"));
        auto rp = self->make_response_promise<std::vector<uint8_t>>();
        self->request(st.conn, conn_wait, get_config_atom_v, offset, size)
            .then([rp](std::vector<uint8_t>& data) mutable { rp.deliver(std::move(data)); },
                  [self, rp](caf::error& e) mutable {
                    Error x = step_error(e, "read_config");
                    if (x.reconnect_may_help())
                      mark_broken(self, x.message());
                    rp.deliver(to_caf(x));
                  });
        return rp;
      },
      [self](wr_config_atom, uint32_t offset,
             const std::vector<uint8_t>& data) -> caf::result<caf::ok_atom> {
        if (auto e = admit(self, "write_config", {DeviceState::negotiated, DeviceState::active,
                                                  DeviceState::sleeping}))
          return *e;
        auto& st = self->state;
        uint32_t limit = st.info.config_size ? st.info.config_size : 256;
        if (data.empty() || offset > limit || data.size() > limit - offset)
          return to_caf(make_error(errc::invalid_argument, "write_config",
                                   "bytes outside the " + std::to_string(limit) +
                                       "-byte config space"));
        st.busy = "write_config";
        auto rp = self->make_response_promise<caf::ok_atom>();
        self->request(st.conn, conn_wait, set_config_atom_v, offset, data)
            .then(
                [self, rp](caf::ok_atom) mutable {
                  self->state.busy.clear();
                  rp.deliver(caf::ok_atom_v);
                },
                [self, rp](caf::error& e) mutable { fail(self, rp, "write_config", e); });
        return rp;
      },
      // ---- sleep / wake / reset
      [self](sleep_atom) -> caf::result<caf::ok_atom> {
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
      },
      [self](wake_atom) -> caf::result<caf::ok_atom> {
        if (auto e = admit(self, "wake", {DeviceState::sleeping}))
          return *e;
        self->state.busy = "wake";
        auto rp = self->make_response_promise<caf::ok_atom>();
        start_running(self, rp, "wake");
        return rp;
      },
      [self](caf::reset_atom) -> caf::result<caf::ok_atom> {
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
          stop_running(self, rp, "reset", [](Self s, OkPromise& p) { reset_tail(s, p); });
        else
          reset_tail(self, rp);
        return rp;
      },
      // ---- queries and settings
      [self](status_atom) -> caf::result<DeviceStatus> {
        auto& st = self->state;
        DeviceStatus s;
        s.state = st.state;
        s.socket = st.config.socket;
        s.info = st.info;
        s.acked_features = st.acked_features;
        s.virtio_status = st.virtio_status;
        s.last_error = st.last_error;
        s.memory = st.memory;
        s.reconnect_attempts = st.reconnect.attempts;
        s.reconnects = st.reconnects;
        s.inflight = static_cast<bool>(st.inflight_fd);
        for (const auto& q : st.queues)
          s.queues.push_back({q.spec.index, q.spec.size, q.base, 0});
        if (!st.worker)
          return s;
        auto rp = self->make_response_promise<DeviceStatus>();
        self->request(st.worker, local_step, caf::get_atom_v)
            .then(
                [rp, s](const std::vector<uint64_t>& counts) mutable {
                  for (auto& q : s.queues)
                    if (q.index < counts.size())
                      q.interrupts = counts[q.index];
                  rp.deliver(s);
                },
                [rp, s](caf::error&) mutable { rp.deliver(s); });
        return rp;
      },
      [self](shmem_atom) -> caf::result<uint8_t, uint64_t> {
        const auto& sizes = self->state.info.shmem_sizes;
        for (size_t i = 0; i < sizes.size(); ++i)
          if (sizes[i] != 0)
            return {static_cast<uint8_t>(i), sizes[i]};
        return to_caf(make_error(errc::not_negotiated, "shared_memory_region",
                                 "the back-end has no shared-memory region"));
      },
      [self](mapper_atom, std::shared_ptr<SharedMemoryMapper> m) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        st.mapper = std::move(m);
        if (!st.channel)
          return caf::ok_atom_v;
        return self->delegate(st.channel, mapper_atom_v, st.mapper, st.info.shmem_sizes);
      },
      // ---- back-end state (actors/device_snapshot.cpp)
      [self](snapshot_atom, const SnapshotOptions& o) -> caf::result<SnapshotInfo> {
        return snapshot_device(self, o);
      },
      [self](restore_atom, const RestoreOptions& o) -> caf::result<SnapshotInfo> {
        return restore_device(self, o);
      },
      [self](cancel_atom) { cancel_transfer(self); },
      [self](cancel_all_atom) {
        self->state.transfers_cancelled = true;
        cancel_transfer(self);
      },
      [self](subscribe_atom, caf::actor subscriber) {
        self->state.subscriber = std::move(subscriber);
      },
      // ---- from the children
      [self](lost_atom, const caf::actor_addr& from, const std::string& why) {
        auto& st = self->state;
        auto is = [&from](const auto& child) { return child && from == child.address(); };
        if (is(st.conn) || is(st.worker) || is(st.channel))
          mark_broken(self, why);
        // else: a child of a connection already dropped (a late hang-up)
      },
      [self](reconnect_atom) -> caf::result<caf::ok_atom> { return reconnect_now(self); },
      [self](retry_atom, uint64_t generation) { reconnect_attempt(self, generation); },
      [self](cfg_change_atom) {
        emit(self, DeviceEvent{DeviceEvent::Kind::config_changed, self->state.state, -1, ""});
        if (self->state.worker)
          self->send(self->state.worker, interrupt_atom_v, int32_t{-1});
      },
      [self](vring_call_atom, uint16_t index) {
        for (const auto& q : self->state.queues)
          if (q.spec.index == index && self->state.worker)
            self->send(self->state.worker, interrupt_atom_v, static_cast<int32_t>(index));
      },
      [self](vring_err_atom, uint16_t index) {
        emit(self, DeviceEvent{DeviceEvent::Kind::vring_error, self->state.state, index,
                               "the back-end reported an error on queue " + std::to_string(index)});
      },
      [self](event_atom, DeviceEvent ev) { emit(self, std::move(ev)); },
  };
}

}  // namespace vufront::actors
