// The device's dirty log (LOG_SHMFD, LOG_ALL; vhost-user spec, "Migration"):
// start and stop, and the bigger log a growing memory needs. The log is the
// device's, not the connection's: a reconnect replays it (actors/replay.hpp).
//
// Start on a running device: a sealed memfd log covering GPA 0 to the highest
// region end, SET_LOG_BASE with it (its reply waited for), SET_FEATURES with
// LOG_ALL, then SET_VRING_ADDR with VHOST_VRING_F_LOG and log_guest_addr =
// the used ring's GPA for every started ring; acked with REPLY_ACK or synced
// with a GET_FEATURES (actors/connection.cpp, change_log). A device started
// while logging gets SET_FEATURES with LOG_ALL first, then the memory table,
// SET_LOG_BASE and the rings with the flag (actors/connection.cpp, activate).
// Stop: SET_FEATURES without LOG_ALL and the rings without the flag; the
// log is forgotten, so nothing replays it later.
//
// Packed rings are refused: a packed device writes its used descriptors into
// the descriptor ring, which log_guest_addr (one area) does not describe and
// the reference back-end does not log.
#include <algorithm>

#include "actors/device_handlers.hpp"
#include "actors/device_checks.hpp"

namespace vufront::actors::device_handlers {

namespace {

using namespace device_steps;

constexpr const char* start_op = "dirty_log_start";
constexpr const char* stop_op = "dirty_log_stop";

/// The end of guest-physical memory of `m` (0 when there is none).
uint64_t memory_end(const MemorySpec& m) {
  uint64_t end = 0;
  for (const auto& r : m)
    end = std::max(end, r.gpa + r.size);
  return end;
}

/// Every ring's SET_VRING_ADDR, with or without the LOG flag.
std::vector<wire::VringAddr> ring_addrs(const DeviceData& st, bool log) {
  std::vector<wire::VringAddr> out;
  for (const auto& q : st.queues) {
    auto a = vring_addr(q.spec, st.packed, st.mem_table).value();  // checked at activation
    if (log)
      a.flags |= wire::vring_addr_flag_log;
    out.push_back(a);
  }
  return out;
}

/// Why this device cannot log, if it cannot.
std::optional<Error> cannot_log(const DeviceData& st) {
  if (!has_bit(st.info.protocol_features, protocol_feature::log_shmfd))
    return make_error(errc::not_negotiated, start_op,
                      "the back-end did not offer LOG_SHMFD (protocol feature 1): no shared log");
  if (!has_bit(st.info.backend_features, feature::log_all))
    return make_error(errc::not_negotiated, start_op,
                      "the back-end did not offer LOG_ALL (feature 26)");
  if (st.packed && st.state != DeviceState::negotiated)
    return make_error(errc::invalid_argument, start_op,
                      "packed rings: dirty logging is not supported (a packed device writes used "
                      "descriptors into the descriptor ring, which vufront does not describe to "
                      "the back-end's log)");
  return std::nullopt;
}

using LogReply = caf::typed_response_promise<SharedFd, uint64_t>;

}  // namespace

caf::result<SharedFd, uint64_t> on_dirty_log(Self self, bool on) {
  const char* op = on ? start_op : stop_op;
  if (auto e = admit(self, op, {DeviceState::negotiated, DeviceState::active, DeviceState::sleeping}))
    return *e;
  auto& st = self->state;
  if (!on && !st.dirty_log)
    return caf::make_result(SharedFd{}, uint64_t{0});
  if (on && st.dirty_log)
    return caf::make_result(st.dirty_log->fd(), st.dirty_log->size());
  if (on)
    if (auto e = cannot_log(st))
      return to_caf(*e);
  std::shared_ptr<DirtyLog> log;
  if (on) {
    auto made = DirtyLog::create(memory_end(st.memory));
    if (!made) {
      Error e = std::move(made).error();
      e.request = op;
      return to_caf(e);
    }
    log = std::make_shared<DirtyLog>(std::move(made).value());
  }
  if (st.state == DeviceState::negotiated) {
    // nothing to tell a back-end that has no activation: activate sends it
    st.dirty_log = log;
    return on ? caf::make_result(log->fd(), log->size()) : caf::make_result(SharedFd{}, uint64_t{0});
  }
  LogChange ch;
  if (on) {
    ch.log_fd = log->fd();
    ch.log = wire::Log{log->size(), 0};
  }
  ch.set_features = true;
  ch.features = on ? st.acked_features | bit(feature::log_all) : st.acked_features;
  // sleeping: the rings are stopped; wake sends their SET_VRING_ADDR (replay.hpp)
  if (st.state == DeviceState::active)
    ch.rings = ring_addrs(st, on);
  st.busy = op;
  LogReply rp = self->make_response_promise<SharedFd, uint64_t>();
  self->request(st.conn, conn_wait, dirty_log_atom_v, std::move(ch))
      .then(
          [self, rp, op, log](caf::ok_atom) mutable {
            if (lost_meanwhile(self, rp, op))
              return;
            auto& now = self->state;
            now.busy.clear();
            now.dirty_log = log;
            if (log)
              rp.deliver(log->fd(), log->size());
            else
              rp.deliver(SharedFd{}, uint64_t{0});
          },
          [self, rp, op](caf::error& e) mutable { fail(self, rp, op, e); });
  return rp;
}

void log_for_memory(Self self, const MemorySpec& next, const char* op,
                    std::function<void()> then, std::function<void(const caf::error&)> failed) {
  auto& st = self->state;
  const uint64_t end = memory_end(next);
  if (!st.dirty_log || end <= st.dirty_log->covers())
    return then();
  auto made = DirtyLog::create(end);
  if (!made) {
    Error e = std::move(made).error();
    e.request = op;
    return failed(to_caf(e));
  }
  auto bigger = std::make_shared<DirtyLog>(std::move(made).value());
  auto swap_in = [self, bigger, op] {
    auto& now = self->state;
    // the back-end writes to the new log from now on; what it wrote to the
    // old one moves over, and the old one goes
    now.dirty_log->fold_into(*bigger);
    now.dirty_log = bigger;
    DeviceEvent ev{DeviceEvent::Kind::dirty_log_resized, now.state, -1,
                   std::string(op) + ": guest memory now ends at " + hex(bigger->covers())};
    ev.fd = bigger->fd();
    ev.size = bigger->size();
    emit(self, std::move(ev));
  };
  if (st.state == DeviceState::negotiated) {
    swap_in();
    return then();
  }
  LogChange ch;
  ch.log_fd = bigger->fd();
  ch.log = wire::Log{bigger->size(), 0};
  self->request(st.conn, conn_wait, dirty_log_atom_v, std::move(ch))
      .then(
          [swap_in, then](caf::ok_atom) mutable {
            swap_in();
            then();
          },
          [failed](caf::error& e) mutable { failed(e); });
}

std::optional<caf::error> refuse_packed_logging(const DeviceData& st, bool packed) {
  if (st.dirty_log && packed)
    return to_caf(make_error(errc::invalid_argument, "activate",
                             "packed rings while dirty logging is on: not supported (stop it with "
                             "dirty_log_stop first)"));
  return std::nullopt;
}

}  // namespace vufront::actors::device_handlers
