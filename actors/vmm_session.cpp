// One VMM connection of a port (actors/vmm_port.hpp): its requests, one at a
// time in the VMM's order, answered here (identity), forwarded to the
// device's connection actor (the reply after the back-end's), or, while the
// back-end is away, handed to vmm_away.cpp; and its end, with the teardown
// of what it set up.
#include <sys/socket.h>

#include <functional>
#include <utility>

#include "actors/error.hpp"
#include "actors/handoff.hpp"
#include "actors/vmm_port_steps.hpp"

namespace vufront::actors::vmm_port_steps {

using proxy::ForwardResult;

namespace {

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
  to_backend(
      self, (*queue)[i].forward, proxy::Answer{},
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
  self->request(self->state.config.device, device_wait, vmm_renew_atom_v, "the VMM left (" + why + ")")
      .then(
          [self, why](caf::ok_atom) {
            teardown_done(self, why + "; its rings were stopped and the back-end connection renewed", "");
          },
          [self, why](caf::error& e) {
            teardown_done(self, why, "renewing the back-end connection failed: " + from_caf(e, "renew").message());
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
  to_backend(
      self, t->requests[i], proxy::Answer{},
      [self, t, i, why](ForwardResult&) { run_teardown(self, t, i + 1, why); },
      [self, t, i, why](caf::error& err) {
        Error e = from_caf(err, req_name(t->requests[i].req));
        if (e.code == errc::backend_failure) {  // refused: go on with the rest
          run_teardown(self, t, i + 1, why);
          return;
        }
        teardown_done(self, why, "undoing its set-up failed: " + e.message());
      });
}

}  // namespace

void teardown(Self self, std::string why) {
  auto& st = self->state;
  st.tearing_down = true;
  if (st.pausing) {  // the device is saving and cannot renew its connection yet
    log(self, why + "; the teardown waits for the snapshot in progress");
    st.teardown_after_snapshot = std::move(why);
    return;
  }
  auto t = std::make_shared<proxy::Shadow::Teardown>(st.shadow->teardown());
  run_teardown(self, std::move(t), 0, std::move(why));
}

bool current(Self self, uint64_t session) {
  const auto& st = self->state;
  return st.vmm && st.connections == session && st.shadow;
}

void end_session(Self self, const std::string& why, bool undo) {
  auto& st = self->state;
  if (!st.vmm)
    return;
  log(self, "connection " + std::to_string(st.connections) + " ended after " + std::to_string(st.requests) +
                " requests: " + why);
  st.last_disconnect = why;
  if (st.shadow)
    st.last_session = st.shadow->to_json();
  if (st.reader)
    st.reader->stop();
  ::shutdown(st.vmm->fd(), SHUT_RDWR);
  st.reader.reset();
  st.vmm.reset();
  if (st.vmm_answer_stop)
    st.vmm_answer_stop->store(true);  // a connection step waiting to send the VMM an answer gives up
  st.vmm_answer.reset();
  st.vmm_answer_stop.reset();
  st.reader_ahead = false;
  st.next_request.reset();
  st.next_eof.reset();
  st.channel.reset();
  st.peer_uid.reset();
  // A back-end that is away has nothing of this VMM's: its next connection
  // starts fresh (a replay under way is undone when it ends: vmm_away.cpp).
  const bool away = st.away || st.replaying;
  forget_away(st);
  request_over(self);  // a snapshot waiting for a request starts, and sees the VMM gone
  if (undo && !away && st.shadow) {
    teardown(self, why);
    return;
  }
  st.shadow.reset();
  event(self, DeviceEvent::Kind::vmm_disconnected, why);
}

bool send(Self self, const FrontendReply& reply) {
  auto& st = self->state;
  if (!st.vmm)
    return false;
  auto r = send_reply(*st.vmm, reply, deadline_in(st.config.send_timeout));
  if (!r) {
    end_session(self, "the reply to " + req_name(reply.req) + " could not be sent: " + r.error().message(), true);
    return false;
  }
  return true;
}

void done(Self self) {
  auto& st = self->state;
  if (st.reader && !st.reader_ahead)
    st.reader->request_done();
  st.reader_ahead = false;
  request_over(self);
  if (auto m = std::move(st.next_request)) {
    st.next_request = nullptr;
    handle_request(self, std::move(m));
  } else if (auto why = std::move(st.next_eof)) {
    st.next_eof.reset();
    end_session(self, *why, true);
  }
}

bool answer(Self self, const Prepared& p, const ForwardResult& r) {
  auto reply = proxy::vmm_answer(p.forward, p.need_reply, r);
  return !reply || send(self, *reply);
}

/// After the connection step sent the VMM its answer (or tried): false
/// when sending failed (the session ends). Else answer() from here.
bool answered(Self self, const Prepared& p, const ForwardResult& r) {
  if (!r.answered)
    return answer(self, p, r);
  if (r.answer_error.empty())
    return true;
  end_session(self, "the reply to " + req_name(p.forward.req) + " could not be sent: " + r.answer_error, true);
  return false;
}

void forward(Self self, Prepared prepared) {
  auto& st = self->state;
  auto p = std::make_shared<Prepared>(std::move(prepared));
  const uint64_t session = st.connections;
  // The step answers the VMM itself once the back-end replied (no hand-off
  // back here first); this request is recorded when the step reports, and
  // the VMM's next one is read only then (done()), so the order holds.
  proxy::Answer a;
  a.to = st.vmm_answer;
  a.need_reply = p->need_reply;
  a.timeout = st.config.send_timeout;
  // Once the VMM has its answer, the reader may read the next request; the
  // port holds it (next_request) until this one is recorded.
  if (st.reader)
    a.sent = st.reader->done_hook();
  to_backend(
      self, p->forward, std::move(a),
      [self, p, session](ForwardResult& r) {
        if (!current(self, session))
          return;  // the session ended meanwhile
        self->state.reader_ahead = r.answered && r.answer_error.empty();
        self->state.shadow->commit(*p, r);
        if (!answered(self, *p, r))
          return;
        flush_ready(self, session, [self] { done(self); });
      },
      [self, p, session](caf::error& err) {
        if (!current(self, session))
          return;
        Error e = from_caf(err, req_name(p->forward.req));
        if (e.code == errc::backend_failure)
          return refused(self, *p, e);
        // The back-end is lost (the device says so too): vufront answers
        // for it, this request first, or the session ends.
        backend_lost(self, req_name(p->forward.req) + ": " + e.message());
        if (current(self, session))
          handle_away(self, std::move(*p));
      });
}

void on_request(Self self, std::shared_ptr<Message> m) {
  auto& st = self->state;
  taken_over(m.get());
  if (st.vmm && st.in_request) {  // the reader ran ahead: after the one in progress
    st.next_request = std::move(m);
    return;
  }
  handle_request(self, std::move(m));
}

void on_eof(Self self, const std::string& why) {
  auto& st = self->state;
  if (st.vmm && st.in_request) {  // the reader ran ahead: after the one in progress
    st.next_eof = why;
    return;
  }
  end_session(self, why, true);
}

void handle_request(Self self, std::shared_ptr<Message> m) {
  auto& st = self->state;
  if (!st.vmm || !st.shadow || st.tearing_down)
    return;  // from a session that ended
  ++st.requests;
  ++st.requests_total;
  st.in_request = true;
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
  if (st.pausing) {
    handle_pause(self, std::move(p).value());
    return;
  }
  if (st.away || st.replaying) {
    handle_away(self, std::move(p).value());
    return;
  }
  forward(self, std::move(p).value());
}

}  // namespace vufront::actors::vmm_port_steps
