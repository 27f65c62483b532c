#include "actors/vmm_port.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/vmm_port_steps.hpp"
#include "control/packet.hpp"
#include "proxy/offer.hpp"

namespace vufront::actors {

namespace vmm_port_steps {

void say(Self self, log::Level level, const std::string& line) {
  log::write(level, self->state.config.id + ": VMM socket: " + line);
}

std::string req_name(FrontendReq r) { return frontend_req_name(static_cast<uint32_t>(r)); }

void event(Self self, DeviceEvent::Kind kind, std::string detail) {
  caf::anon_send(self->state.config.device, event_atom_v,
                 DeviceEvent{kind, DeviceState::negotiated, -1, std::move(detail)});
}

}  // namespace vmm_port_steps

namespace {

using namespace vmm_port_steps;

// ---- accepting --------------------------------------------------------------------

void on_accept(Self self, const SharedFd& conn) {
  auto& st = self->state;
  auto uid = control::peer_uid(conn->get());
  const uint32_t me = static_cast<uint32_t>(::geteuid());
  const bool allowed =
      uid && (*uid == me || std::find(st.config.allowed_uids.begin(), st.config.allowed_uids.end(), *uid) !=
                                st.config.allowed_uids.end());
  if (!allowed) {
    warn(self, "refused " + (uid ? "uid " + std::to_string(*uid) : std::string("a peer of unknown uid")) +
                  " (allowed: uid " + std::to_string(me) + " and --allow-uid)");
    return;  // the last reference closes it
  }
  if (st.vmm || st.tearing_down) {
    warn(self, "refused a second VMM connection (one at a time)");
    return;
  }
  UniqueFd own = UniqueFd::adopt(::fcntl(conn->get(), F_DUPFD_CLOEXEC, 0));
  // OWNERSHIP: one more dup for the answers the connection steps send, for
  // the session's life (closed with its last reference).
  UniqueFd answers = UniqueFd::adopt(::fcntl(conn->get(), F_DUPFD_CLOEXEC, 0));
  if (!own || !answers) {
    warn(self, "accept: dup failed");
    return;
  }
  st.vmm.emplace(std::move(own));
  auto reader = VmmReader::start(st.vmm->fd(), caf::actor_cast<caf::actor_addr>(self));
  if (!reader) {
    warn(self, "accept: " + reader.error().message());
    st.vmm.reset();
    return;
  }
  st.reader = std::move(reader).value();
  st.vmm_answer_stop = std::make_shared<std::atomic<bool>>(false);
  st.vmm_answer = std::make_shared<Connection>(std::move(answers));
  st.vmm_answer->stop_when(st.vmm_answer_stop);
  st.shadow.emplace(st.offer);
  st.peer_uid = *uid;
  st.requests = 0;
  ++st.connections;
  const std::string detail =
      "connection " + std::to_string(st.connections) + " from uid " + std::to_string(*uid);
  log(self, detail);
  event(self, DeviceEvent::Kind::vmm_connected, detail);
}

Result<void> start_listening(Self self) {
  auto& st = self->state;
  auto fd = Connection::listen(st.config.path, st.config.listen);
  if (!fd)
    return std::move(fd).error();
  st.listen_fd = std::move(fd).value();
  auto port = caf::actor_cast<caf::actor_addr>(self);
  const int lfd = st.listen_fd.get();
  auto w = FdWatcher::start({{lfd, 0, POLLIN}}, [port, lfd](int, int, short) {
    UniqueFd c = UniqueFd::adopt(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c)
      return true;  // EAGAIN: the connection went away before accept
    if (auto p = caf::actor_cast<vmm_port_actor>(port))
      caf::anon_send(p, accept_atom_v, share(std::move(c)));
    return true;
  });
  if (!w)
    return std::move(w).error();
  st.acceptor = std::move(w).value();
  return ok();
}

caf::result<caf::ok_atom> on_start(Self self) {
  auto rp = self->make_response_promise<caf::ok_atom>();
  self->request(self->state.config.device, device_wait, vmm_atom_v, caf::actor_cast<caf::actor_addr>(self))
      .then(
          [self, rp](const DeviceInfo& info) mutable {
            proxy::BackendOffer b{info.kind,         info.backend_features, info.protocol_features,
                                  info.queue_num,    info.max_mem_slots,    info.backend_channel};
            auto offer = proxy::vmm_offer(b);
            if (!offer) {
              rp.deliver(to_caf(offer.error()));
              return;
            }
            self->state.offer = *offer;
            self->state.kind = info.kind;
            if (auto r = start_listening(self); !r) {
              rp.deliver(to_caf(r.error()));
              return;
            }
            log(self, "listening on " + self->state.config.path + " (offering protocol features " +
                          proxy::protocol_feature_list(offer->offered_protocol_features) + ")");
            rp.deliver(caf::ok_atom_v);
          },
          [rp](caf::error& e) mutable { rp.deliver(e); });
  return rp;
}

nlohmann::json status_json(Self self) {
  auto& st = self->state;
  nlohmann::json j = {{"socket", st.config.path},
                      {"connected", st.vmm.has_value()},
                      {"connections", st.connections},
                      {"requests", st.requests},
                      {"requests_total", st.requests_total},
                      {"backend_channel", st.channel.has_value()}};
  if (st.peer_uid)
    j["peer_uid"] = *st.peer_uid;
  if (!st.last_disconnect.empty())
    j["last_disconnect"] = st.last_disconnect;
  if (!st.last_session.is_null())
    j["last_session"] = st.last_session;
  j["tearing_down"] = st.tearing_down;
  if (st.teardown_after_snapshot)
    j["teardown"] = "waits for the snapshot in progress";
  j["backend"] = st.replaying ? "replaying" : st.away ? "away" : "here";
  j["backend_losses"] = st.backend_losses;
  j["resumes"] = st.resumes;
  j["best_effort_resumes"] = st.best_effort_resumes;
  j["answered_for_backend"] = st.answered_for_backend;
  if (!st.last_resume.empty())
    j["last_resume"] = st.last_resume;
  j["snapshots"] = st.snapshots;
  if (!st.last_pause.empty())
    j["last_snapshot_pause"] = st.last_pause;
  if (st.shadow)
    j["session"] = st.shadow->to_json();
  return j;
}

void on_config_change(Self self) {
  auto& st = self->state;
  if (st.shadow)
    st.shadow->config_changed();
  if (!st.channel || !st.shadow ||
      !has_bit(st.shadow->context().acked_protocol_features, protocol_feature::backend_req))
    return;
  auto r = st.channel->send(static_cast<uint32_t>(BackendReq::config_change_msg), flag_version, nullptr, 0,
                            nullptr, 0, deadline_in(st.config.send_timeout), "BACKEND_CONFIG_CHANGE_MSG");
  if (!r) {
    warn(self, "could not pass the back-end's config change on: " + r.error().message());
    st.channel.reset();
  }
}

}  // namespace

vmm_port_full::behavior_type vmm_port_impl(vmm_port_full::stateful_pointer<VmmPortState> self,
                                           VmmPortConfig config) {
  self->state.config = std::move(config);
  return {
      [self](start_atom) { return on_start(self); },
      [self](accept_atom, const SharedFd& conn) {
        if (conn)
          on_accept(self, conn);
      },
      [self](vmm_msg_atom, std::shared_ptr<Message> m) { on_request(self, std::move(m)); },
      [self](vmm_eof_atom, const std::string& why) { on_eof(self, why); },
      [self](vmm_conn_atom, const caf::actor_addr& conn, const caf::error& why) {
        self->state.backend_conn = conn;
        self->state.no_conn = why;
      },
      [self](vmm_lost_atom, const std::string& why) { backend_lost(self, why); },
      [self](vmm_back_atom, const std::string& detail) { backend_back(self, detail); },
      [self](vmm_hold_atom, uint64_t token) { hold_expired(self, token); },
      [self](snapshot_atom, const SnapshotOptions& o) { return snapshot_under_vmm(self, o); },
      [self](cfg_change_atom) { on_config_change(self); },
      [self](status_atom) -> nlohmann::json { return status_json(self); },
  };
}

}  // namespace vufront::actors
