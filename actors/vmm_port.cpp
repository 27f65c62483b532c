#include "actors/vmm_port.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <utility>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/handoff.hpp"
#include "base/log.hpp"
#include "control/packet.hpp"
#include "proxy/offer.hpp"

namespace vufront::actors {

namespace {

using Self = vmm_port_full::stateful_pointer<VmmPortState>;
using proxy::Forward;
using proxy::ForwardResult;
using Prepared = proxy::Shadow::Prepared;

const caf::duration device_wait{caf::infinite};  // the connection bounds every request

void say(Self self, log::Level level, const std::string& line) {
  log::write(level, self->state.config.id + ": VMM socket: " + line);
}

void log(Self self, const std::string& line) { say(self, log::Level::info, line); }
void warn(Self self, const std::string& line) { say(self, log::Level::warning, line); }

std::string req_name(FrontendReq r) { return frontend_req_name(static_cast<uint32_t>(r)); }

void event(Self self, DeviceEvent::Kind kind, std::string detail) {
  caf::anon_send(self->state.config.device, event_atom_v,
                 DeviceEvent{kind, DeviceState::negotiated, -1, std::move(detail)});
}

// ---- the session ------------------------------------------------------------------

void teardown(Self self, std::string why);

/// Ends the VMM connection: no more requests are read, the socket is shut
/// down. `undo`: take what the VMM set up out of the back-end (it left
/// without a word); otherwise the back-end is gone and only vufront's fds go.
void end_session(Self self, const std::string& why, bool undo) {
  auto& st = self->state;
  if (!st.vmm)
    return;
  log(self, "connection " + std::to_string(st.connections) + " ended after " +
                std::to_string(st.requests) + " requests: " + why);
  st.last_disconnect = why;
  if (st.shadow)
    st.last_session = st.shadow->to_json();
  if (st.reader)
    st.reader->stop();
  ::shutdown(st.vmm->fd(), SHUT_RDWR);
  st.reader.reset();
  st.vmm.reset();
  st.channel.reset();
  st.peer_uid.reset();
  if (undo && st.shadow) {
    teardown(self, why);
    return;
  }
  st.shadow.reset();
  event(self, DeviceEvent::Kind::vmm_disconnected, why);
}

/// Sends `reply` to the VMM; a failure ends the session.
bool send(Self self, const FrontendReply& reply) {
  auto& st = self->state;
  if (!st.vmm)
    return false;
  auto r = send_reply(*st.vmm, reply, deadline_in(st.config.send_timeout));
  if (!r) {
    end_session(self, "the reply to " + req_name(reply.req) + " could not be sent: " + r.error().message(),
                true);
    return false;
  }
  return true;
}

/// The request is answered: the reader may read the next.
void done(Self self) {
  if (self->state.reader)
    self->state.reader->request_done();
}

/// A request vufront answers from what was negotiated; nullopt when it is
/// not one of those.
std::optional<FrontendReply> local_reply(Self self, FrontendRequest& r) {
  auto& st = self->state;
  auto& sh = *st.shadow;
  const auto& ctx = sh.context();
  switch (r.req) {
    case FrontendReq::get_features:
      return encode_u64_reply(r.req, ctx.offered_features);
    case FrontendReq::get_protocol_features:
      return encode_u64_reply(r.req, ctx.offered_protocol_features);
    case FrontendReq::get_queue_num:
      return encode_u64_reply(r.req, ctx.num_queues);
    case FrontendReq::get_max_mem_slots:
      return encode_mem_slots_reply(ctx.max_mem_slots);
    case FrontendReq::set_protocol_features:
      sh.set_protocol_features(std::get<wire::U64>(r.payload).value);
      return encode_ack(r.req, 0);
    case FrontendReq::set_owner:
    case FrontendReq::reset_owner:
      return encode_ack(r.req, 0);
    case FrontendReq::set_backend_req_fd:
      st.channel.emplace(std::move(r.fds.at(0)));
      return encode_ack(r.req, 0);
    default:
      return std::nullopt;
  }
}

/// The back-end refused `req` (a documented refusal: the stream is in sync).
void refused(Self self, const Prepared& p, const Error& e) {
  const FrontendReq req = p.forward.req;
  warn(self, "the back-end refused " + req_name(req) + ": " + e.message());
  if (req == FrontendReq::get_config) {
    if (send(self, encode_config_refusal()))
      done(self);
    return;
  }
  if (p.need_reply) {
    if (send(self, encode_ack(req, 1)))
      done(self);
    return;
  }
  if (has_native_reply(req, self->state.shadow->context().acked_protocol_features)) {
    end_session(self, "the back-end refused " + req_name(req) + ", which has no failure reply", true);
    return;
  }
  done(self);
}

/// Whether `session` is still the VMM connection being served.
bool current(Self self, uint64_t session) {
  const auto& st = self->state;
  return st.vmm && st.connections == session && st.shadow;
}

/// Forwards queue[i..] one after another, each recorded once accepted, then
/// `then`; a failure ends the session.
void forward_ready(Self self, uint64_t session, std::shared_ptr<std::vector<Prepared>> queue, size_t i,
                   std::function<void()> then) {
  if (!current(self, session))
    return;
  if (i == queue->size()) {
    then();
    return;
  }
  self->request(self->state.config.device, device_wait, vmm_fwd_atom_v, (*queue)[i].forward)
      .then(
          [self, session, queue, i, then](ForwardResult& r) {
            if (!current(self, session))
              return;
            self->state.shadow->commit((*queue)[i], r);
            forward_ready(self, session, queue, i + 1, then);
          },
          [self, session, queue, i](caf::error& err) {
            if (!current(self, session))
              return;
            const auto index = std::get<wire::VringAddr>((*queue)[i].forward.payload).index;
            end_session(self, "SET_VRING_ADDR (ring " + std::to_string(index) + ", once its memory came): " +
                                  from_caf(err, "SET_VRING_ADDR").message(),
                        false);
          });
}

/// Forwards the ring addresses that waited for memory (Shadow::take_ready),
/// then `then`.
void flush_ready(Self self, uint64_t session, std::function<void()> then) {
  if (!current(self, session))
    return;
  auto queue = std::make_shared<std::vector<Prepared>>(self->state.shadow->take_ready());
  forward_ready(self, session, std::move(queue), 0, std::move(then));
}

void forward(Self self, Prepared prepared) {
  auto& st = self->state;
  auto p = std::make_shared<Prepared>(std::move(prepared));
  const uint64_t session = st.connections;
  self->request(st.config.device, device_wait, vmm_fwd_atom_v, p->forward)
      .then(
          [self, p, session](ForwardResult& r) {
            if (!current(self, session))
              return;  // the session ended meanwhile
            self->state.shadow->commit(*p, r);
            if (r.has_reply) {
              FrontendReply reply{p->forward.req, std::move(r.body), r.fd ? r.fd->get() : -1};
              if (!send(self, reply))
                return;
            } else if (p->need_reply) {
              if (!send(self, encode_ack(p->forward.req, 0)))
                return;
            }
            flush_ready(self, session, [self] { done(self); });
          },
          [self, p, session](caf::error& err) {
            if (!current(self, session))
              return;
            Error e = from_caf(err, req_name(p->forward.req));
            if (e.code == errc::backend_failure)
              return refused(self, *p, e);
            // The back-end is lost (the device says so too) or the request
            // could not be forwarded: the VMM must start again.
            end_session(self, req_name(p->forward.req) + ": " + e.message(), false);
          });
}

void on_request(Self self, std::shared_ptr<Message> m) {
  auto& st = self->state;
  taken_over(m.get());
  if (!st.vmm || !st.shadow || st.tearing_down)
    return;  // from a session that ended
  ++st.requests;
  ++st.requests_total;
  auto r = decode_frontend_request(std::move(*m), st.shadow->context());
  if (!r) {
    end_session(self, "request " + std::to_string(st.requests) + " refused: " + r.error().message(), true);
    return;
  }
  if (auto reply = local_reply(self, *r)) {
    // A request without a reply of its own is acked only when the VMM asked.
    if (!has_native_reply(r->req, st.shadow->context().acked_protocol_features) && !r->need_reply) {
      done(self);
      return;
    }
    if (send(self, *reply))
      done(self);
    return;
  }
  if (!proxy::forwarded(r->req)) {
    end_session(self, req_name(r->req) + " is not proxied (docs/vmm-proxy.md)", true);
    return;
  }
  auto p = st.shadow->prepare(std::move(*r));
  if (!p) {
    end_session(self, "request " + std::to_string(st.requests) + " refused: " + p.error().message(), true);
    return;
  }
  if (p->deferred) {  // a ring before its memory: recorded, forwarded when the memory comes
    st.shadow->commit(*p, ForwardResult{});
    if (!p->need_reply || send(self, encode_ack(p->forward.req, 0)))
      done(self);
    return;
  }
  forward(self, std::move(p).value());
}

/// Runs the teardown's requests one after another (a failure stops it: the
/// back-end is then lost and the device handles that), then lets go of the
/// shadow and, when the memory could not be removed, renews the connection.
void run_teardown(Self self, std::shared_ptr<proxy::Shadow::Teardown> t, size_t i, std::string why);

/// The teardown is over (`failure`: why it stopped short): the session's
/// last fds go and the socket takes the next VMM.
void teardown_done(Self self, const std::string& why, const std::string& failure) {
  auto& st = self->state;
  st.shadow.reset();
  st.tearing_down = false;
  std::string detail = why + (failure.empty() ? "; the back-end was told to forget it" : "; " + failure);
  log(self, detail);
  event(self, DeviceEvent::Kind::vmm_disconnected, detail);
}

/// After the ring stops: a new connection, so the back-end forgets the VM.
void renew(Self self, std::string why) {
  self->request(self->state.config.device, device_wait, vmm_renew_atom_v,
                "the VMM left (" + why + ")")
      .then([self, why](caf::ok_atom) { teardown_done(self, why + "; its rings were stopped and the "
                                                                   "back-end connection renewed", ""); },
            [self, why](caf::error& e) {
              teardown_done(self, why, "renewing the back-end connection failed: " +
                                           from_caf(e, "renew").message());
            });
}

/// Runs the teardown's requests one after another (a refusal is skipped; a
/// failure stops it: the back-end is then lost and the device handles that),
/// then renews the connection when the VMM had set anything up.
void run_teardown(Self self, std::shared_ptr<proxy::Shadow::Teardown> t, size_t i, std::string why) {
  if (i == t->requests.size()) {
    if (t->renew)
      renew(self, std::move(why));
    else
      teardown_done(self, why, "");
    return;
  }
  self->request(self->state.config.device, device_wait, vmm_fwd_atom_v, t->requests[i])
      .then([self, t, i, why](ForwardResult&) { run_teardown(self, t, i + 1, why); },
            [self, t, i, why](caf::error& err) {
              Error e = from_caf(err, req_name(t->requests[i].req));
              if (e.code == errc::backend_failure) {  // refused: go on with the rest
                run_teardown(self, t, i + 1, why);
                return;
              }
              teardown_done(self, why, "undoing its set-up failed: " + e.message());
            });
}

void teardown(Self self, std::string why) {
  auto& st = self->state;
  auto t = std::make_shared<proxy::Shadow::Teardown>(st.shadow->teardown());
  st.tearing_down = true;
  run_teardown(self, std::move(t), 0, std::move(why));
}

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
  if (!own) {
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
  if (st.shadow)
    j["session"] = st.shadow->to_json();
  return j;
}

void on_config_change(Self self) {
  auto& st = self->state;
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
      [self](vmm_eof_atom, const std::string& why) { end_session(self, why, true); },
      [self](vmm_lost_atom, const std::string& why) {
        end_session(self, "the back-end was lost: " + why, false);
      },
      [self](cfg_change_atom) { on_config_change(self); },
      [self](status_atom) -> nlohmann::json { return status_json(self); },
  };
}

}  // namespace vufront::actors
