// A VMM-facing socket driving the device (`vufront attach --vmm-socket`,
// docs/vmm-proxy.md): the port registers once the device is negotiated, and
// from then on the device tells it its current connection actor
// (tell_port_conn(): on connect, renewal, reconnect; none while it has
// none), to which the port sends each VMM request straight, as it came.
// The device's own operations are refused meanwhile (admit()). When the back-end is lost the
// port asks for the lost one to be fenced before it answers the VMM for it,
// and replays the VMM's shadow into the next connection.
#include <algorithm>

#include <caf/send.hpp>

#include "actors/device_connect.hpp"
#include "actors/device_handlers.hpp"
#include "loop/event_loop.hpp"

namespace vufront::actors::device_handlers {

using namespace device_steps;

caf::result<DeviceInfo> on_vmm(Self self, const caf::actor_addr& port) {
  auto& st = self->state;
  if (st.vmm_port && st.vmm_port != port)
    return to_caf(make_error(errc::bad_state, "VMM socket", "another VMM socket drives the device"));
  if (st.state == DeviceState::broken)
    return to_caf(loss_error(st, "VMM socket"));
  if (st.state != DeviceState::negotiated)
    return to_caf(make_error(errc::bad_state, "VMM socket",
                             std::string("the device is ") + to_string(st.state) +
                                 "; a VMM socket needs a negotiated device that vufront has not "
                                 "activated itself"));
  st.vmm_port = port;
  tell_port_conn(self, true);  // before the reply: the port knows where its requests go
  return st.info;
}

caf::result<caf::ok_atom> on_vmm_renew(Self self, const std::string& why) {
  auto& st = self->state;
  if (st.state != DeviceState::negotiated)
    return caf::ok_atom_v;  // lost already: the next connection is new anyway
  if (!st.busy.empty())  // said, not skipped: the back-end keeps the VMM's memory meanwhile
    return to_caf(make_error(errc::bad_state, "renew",
                             "busy: " + st.busy + " is in progress; the back-end keeps the VMM's memory "
                                                  "until its connection is next renewed or lost"));
  // The old connection's sockets go now: the back-end sees EOF and forgets
  // the VMM's memory and rings; the old children's reports are ignored.
  st.busy = "renew";
  shut_down_sockets(st);
  auto rp = self->make_response_promise<caf::ok_atom>();
  connect_and_negotiate(self, [self, rp, why](Result<DeviceInfo> r) mutable {
    auto& s = self->state;
    s.busy.clear();
    if (!r) {
      Error e = std::move(r).error();
      mark_broken(self, why + ": the new connection failed: " + e.message());
      rp.deliver(to_caf(e));
      return;
    }
    s.info = *r;
    rp.deliver(caf::ok_atom_v);
  });
  return rp;
}

caf::result<caf::ok_atom> on_vmm_replay(Self self, const ActivateRequest& req) {
  auto& st = self->state;
  if (st.state == DeviceState::broken || st.state == DeviceState::reconnecting)
    return to_caf(loss_error(st, "VMM replay", "SET_FEATURES"));
  if (st.state != DeviceState::negotiated || !st.conn)
    return to_caf(make_error(errc::bad_state, "VMM replay", std::string("the device is ") + to_string(st.state)));
  return self->delegate(st.conn, activate_atom_v, req);
}

namespace {

/// Fences the lost peers one after another on the event loop (each waits
/// for its process to exit, up to the drain timeout), then reports to the
/// device as (fenced_atom, n, what was done, error).
void fence_task(caf::actor_addr device, uint64_t n, std::vector<DeviceData::Peer> peers, bool kill,
                std::chrono::milliseconds limit) {
  std::string done;
  caf::error err;
  for (const auto& p : peers) {
    if (!p.process) {
      err = to_caf(make_error(errc::bad_state, "fence", "the lost back-end's process is not known (" +
                                                            p.unknown + "), so it cannot be fenced"));
      break;
    }
    const auto started = std::chrono::steady_clock::now();
    auto r = fence_process(*p.process, kill, limit);
    if (!r) {
      err = to_caf(r.error());
      break;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                          started).count();
    done += (done.empty() ? "" : "; ") + std::string("process ") + std::to_string(p.process->pid) +
            (*r == FenceOutcome::killed ? " killed (SIGKILL) and gone after " + std::to_string(ms) + " ms"
                                        : " had exited");
  }
  if (auto d = caf::actor_cast<device_actor>(device))
    caf::anon_send(d, fenced_atom_v, n, done, err);
}

}  // namespace

caf::result<std::string> on_fence(Self self) {
  auto& st = self->state;
  if (st.lost_peers.empty())
    return std::string("nothing to fence: the lost back-end came back itself, or was fenced");
  auto rp = self->make_response_promise<std::string>();
  const uint64_t n = ++st.fence_count;
  st.fencing.emplace(n, rp);
  auto device = caf::actor_cast<caf::actor_addr>(self);
  const bool kill = st.config.fence_kill;
  const auto limit = kill ? st.config.timeouts.drain : std::chrono::milliseconds{0};
  loop::EventLoop::instance().spawn(
      [device, n, peers = st.lost_peers, kill, limit]() mutable {
        fence_task(device, n, std::move(peers), kill, limit);
      },
      "fence");
  return rp;
}

void on_fenced(Self self, uint64_t n, const std::string& done, const caf::error& e) {
  auto& st = self->state;
  auto it = st.fencing.find(n);
  if (it == st.fencing.end())
    return;
  auto rp = it->second;
  st.fencing.erase(it);
  if (e) {
    rp.deliver(e);
    return;
  }
  for (size_t at = done.find(" killed "); at != std::string::npos; at = done.find(" killed ", at + 1))
    ++st.fenced;
  auto gone = [](const DeviceData::Peer& p) { return p.process && has_exited(*p.process); };
  st.lost_peers.erase(std::remove_if(st.lost_peers.begin(), st.lost_peers.end(), gone), st.lost_peers.end());
  emit(self, DeviceEvent{DeviceEvent::Kind::fenced, st.state, -1, done});
  rp.deliver(done);
}

void deliver_status(Self self, caf::typed_response_promise<DeviceStatus> rp, DeviceStatus s) {
  auto port = caf::actor_cast<vmm_port_actor>(self->state.vmm_port);
  if (!port) {
    rp.deliver(std::move(s));
    return;
  }
  self->request(port, local_step, status_atom_v)
      .then(
          [rp, s](const nlohmann::json& vmm) mutable {
            s.vmm = vmm;
            rp.deliver(std::move(s));
          },
          [rp, s](caf::error&) mutable { rp.deliver(std::move(s)); });
}

}  // namespace vufront::actors::device_handlers
