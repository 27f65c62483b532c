// A VMM-facing socket driving the device (`vufront attach --vmm-socket`,
// docs/vmm-proxy.md): the port registers once the device is negotiated, and
// from then on each VMM request goes through the device to the current
// connection actor, which forwards it as it came. The device's own
// operations are refused meanwhile (admit()).
#include "actors/device_connect.hpp"
#include "actors/device_handlers.hpp"

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
  return st.info;
}

caf::result<proxy::ForwardResult> on_vmm_forward(Self self, const proxy::Forward& f) {
  auto& st = self->state;
  const std::string req = frontend_req_name(static_cast<uint32_t>(f.req));
  if (st.state == DeviceState::broken)
    return to_caf(loss_error(st, "VMM request", req));
  if (st.state != DeviceState::negotiated || !st.conn)
    return to_caf(make_error(errc::bad_state, req,
                             std::string("the device is ") + to_string(st.state)));
  return self->delegate(st.conn, vmm_fwd_atom_v, f);
}

caf::result<caf::ok_atom> on_vmm_renew(Self self, const std::string& why) {
  auto& st = self->state;
  if (st.state != DeviceState::negotiated || !st.busy.empty())
    return caf::ok_atom_v;  // lost already: the next connection is new anyway
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
