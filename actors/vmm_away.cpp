// The back-end lost under a VMM session (docs/vmm-proxy.md, "Back-end
// loss"). The VMM is not told: vufront answers for the back-end from the
// shadow (identity and cached config at once; everything else once the lost
// back-end is fenced: exited, or SIGKILLed and gone), records what the VMM
// sets up meanwhile, holds what only a back-end can answer (up to
// hold_timeout), and when the device has a new connection replays the
// shadow into it through the one replay builder (replay_shadow()), then
// goes on with the held request. The session ends instead only where a
// resume would be wrong: virtio-fs, started packed rings without an
// in-flight region, best effort refused (--resume-without-inflight=no), a
// back-end that cannot be fenced.
#include <utility>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/replay.hpp"
#include "actors/vmm_port_steps.hpp"
#include "proxy/log_base.hpp"

namespace vufront::actors::vmm_port_steps {

using proxy::ForwardResult;
using StandIn = proxy::Shadow::StandIn;

namespace {

/// Why resuming this session after a loss would be wrong; empty when it is not.
std::string cannot_resume(const VmmPortState& st) {
  const auto& sh = *st.shadow;
  if (st.kind == DeviceKind::fs)
    return "virtio-fs cannot be resumed: the FUSE session died with the back-end";
  if (!sh.any_started() || sh.inflight_fd())
    return {};
  if (sh.packed())
    return "its packed rings were running without an in-flight region (INFLIGHT_SHMFD): where the "
           "back-end stopped lives only in the back-end";
  if (!has_bit(sh.acked_features(), feature::in_order) && !st.config.resume_without_inflight)
    return "resuming its rings without INFLIGHT_SHMFD or IN_ORDER is best effort, and "
           "--resume-without-inflight=no";
  return {};
}

/// How the resume went, for the vmm_resumed event and `status`.
std::string resume_kind(const proxy::Shadow& sh) {
  if (!sh.any_started())
    return "exact: no ring was running";
  if (sh.inflight_fd())
    return "exact: the back-end resubmits what was in flight (INFLIGHT_SHMFD)";
  if (has_bit(sh.acked_features(), feature::in_order))
    return "exact: the rings complete in order (IN_ORDER), so the used index is where to resume";
  return "best effort: no INFLIGHT_SHMFD or IN_ORDER; requests in flight are processed again from the "
         "used index (one completed out of order may be lost or repeated)";
}

/// Records `p` in the shadow as if the back-end had answered `r`, with the
/// ring addresses its memory made usable (forwarded with the replay).
void record(VmmPortState& st, const Prepared& p, const ForwardResult& r) {
  st.shadow->commit(p, r);
  for (auto& ready : st.shadow->take_ready())
    st.shadow->commit(ready, ForwardResult{});
}

/// The lost back-end can no longer write: while the VMM logs (live
/// migration), every page of its log is marked dirty once, since the
/// back-end may have died between a write to guest memory and its log bit.
/// False when that failed and the session ended (the VMM would miss pages).
bool mark_log(Self self) {
  const auto& sh = *self->state.shadow;
  if (!sh.logging())
    return true;
  if (auto r = proxy::mark_all_dirty(sh.log(), sh.log_fd()->get()); !r) {
    end_session(self, "the back-end was lost while the VMM logs, and its log could not be marked dirty: " +
                          r.error().message(),
                false);
    return false;
  }
  log(self, "the VMM logs: every page of its dirty log (" + std::to_string(sh.log().mmap_size) +
                " bytes) marked dirty once");
  return true;
}

void answer_now(Self self, const Prepared& p, const ForwardResult& r) {
  auto& st = self->state;
  record(st, p, r);
  ++st.answered_for_backend;
  if (answer(self, p, r))
    done(self);
}

void hold(Self self, std::shared_ptr<Prepared> p, bool for_backend) {
  auto& st = self->state;
  st.held = std::move(p);
  st.held_for_backend = for_backend;
  if (for_backend)
    self->delayed_send(self, st.config.hold_timeout, vmm_hold_atom_v, ++st.hold_token);
}

/// The lost back-end is fenced (or fencing failed): the held request goes on.
void fence(Self self) {
  auto& st = self->state;
  if (st.fencing)
    return;
  st.fencing = true;
  const uint64_t session = st.connections;
  self->request(st.config.device, device_wait, fence_atom_v)
      .then(
          [self, session](const std::string& what) {
            if (!current(self, session))
              return;
            auto& s = self->state;
            s.fencing = false;
            s.fenced = true;
            log(self, "the lost back-end is fenced: " + what);
            if (!mark_log(self))
              return;
            if (s.held && !s.held_for_backend) {
              auto p = std::move(s.held);
              handle_away(self, std::move(*p));
            }
          },
          [self, session](caf::error& e) {
            if (!current(self, session))
              return;
            end_session(self, "the lost back-end could not be fenced, so vufront cannot answer for it: " +
                                  from_caf(e, "fence").message(),
                        false);
          });
}

/// Replays the shadow into the new connection, then the held request.
void replay(Self self) {
  auto& st = self->state;
  st.replaying = true;
  const uint64_t session = st.connections;
  self->request(st.config.device, device_wait, vmm_replay_atom_v, replay_shadow(*st.shadow))
      .then(
          [self, session](caf::ok_atom) {
            auto& s = self->state;
            if (!current(self, session)) {
              // the VMM left during the replay: the back-end must forget it again
              self->request(s.config.device, device_wait, vmm_renew_atom_v, std::string("the VMM left"))
                  .then([](caf::ok_atom) {}, [](caf::error&) {});
              return;
            }
            s.replaying = false;
            s.away = false;
            ++s.resumes;
            s.last_resume = resume_kind(*s.shadow);
            if (s.shadow->logging())
              s.last_resume += "; the VMM logs: its log went to the new back-end before any ring, every page "
                               "marked dirty once";
            if (s.last_resume.rfind("best effort", 0) == 0)
              ++s.best_effort_resumes;
            log(self, "the VMM's set-up was replayed into the new back-end; " + s.last_resume);
            event(self, DeviceEvent::Kind::vmm_resumed, s.last_resume);
            if (auto p = std::move(s.held)) {
              s.held_for_backend = false;
              forward(self, std::move(*p));
            }
          },
          [self, session](caf::error& err) {
            if (!current(self, session))
              return;
            Error e = from_caf(err, "replay");
            if (e.code == errc::backend_failure) {
              end_session(self, "the new back-end refused the VMM's set-up: " + e.message(), false);
              return;
            }
            // lost again: the device reconnects, and the next one gets it; the
            // back-end just lost must be fenced too before vufront answers for it
            self->state.replaying = false;
            self->state.fenced = false;
            warn(self, "the replay into the new back-end failed (" + e.message() + "); waiting for the next");
          });
}

}  // namespace

void forget_away(VmmPortState& st) {
  st.away = st.replaying = st.fenced = st.fencing = false;
  st.held.reset();
  st.held_for_backend = st.held_for_snapshot = false;
  ++st.hold_token;
}

void backend_lost(Self self, const std::string& why) {
  auto& st = self->state;
  if (!st.vmm || !st.shadow || st.tearing_down || st.away)
    return;
  if (auto no = cannot_resume(st); !no.empty()) {
    end_session(self, "the back-end was lost (" + why + ") and " + no, false);
    return;
  }
  forget_away(st);
  st.away = true;
  ++st.backend_losses;
  const std::string detail = why + "; vufront answers the VMM for it until the next back-end is there";
  warn(self, "the back-end was lost: " + detail);
  event(self, DeviceEvent::Kind::vmm_backend_away, detail);
}

void handle_away(Self self, Prepared prepared) {
  auto& st = self->state;
  auto p = std::make_shared<Prepared>(std::move(prepared));
  if (st.replaying) {  // the replay's end forwards it
    hold(self, std::move(p), true);
    return;
  }
  StandIn s = st.shadow->stand_in(*p);
  switch (s.kind) {
    case StandIn::Kind::refuse:
      end_session(self, s.why, false);
      return;
    case StandIn::Kind::hold:
      hold(self, std::move(p), true);
      return;
    case StandIn::Kind::answer:
      break;
  }
  if (!st.shadow->answer_due(*p)) {  // nothing to tell the VMM: recorded for the replay
    record(st, *p, s.result);
    done(self);
    return;
  }
  if (s.fence && !st.fenced) {
    hold(self, std::move(p), false);
    fence(self);
    return;
  }
  answer_now(self, *p, s.result);
}

void backend_back(Self self, const std::string& detail) {
  auto& st = self->state;
  if (!st.vmm || !st.shadow || !st.away || st.replaying)
    return;
  log(self, "the device has a new back-end connection (" + detail + ")");
  // What is left of the lost back-end (a process other than the new one's,
  // still running) is fenced first: two back-ends must never serve one ring.
  const uint64_t session = st.connections;
  st.replaying = true;
  self->request(st.config.device, device_wait, fence_atom_v)
      .then(
          [self, session](const std::string& what) {
            if (!current(self, session))
              return;
            log(self, "before the replay: " + what);
            if (mark_log(self))
              replay(self);
          },
          [self, session](caf::error& e) {
            if (!current(self, session))
              return;
            end_session(self, "the lost back-end could not be fenced before the new one resumes its rings: " +
                                  from_caf(e, "fence").message(),
                        false);
          });
}

void hold_expired(Self self, uint64_t token) {
  auto& st = self->state;
  if (!st.held || !st.held_for_backend || token != st.hold_token)
    return;
  end_session(self,
              "no back-end to answer " + req_name(st.held->forward.req) + " within " +
                  std::to_string(st.config.hold_timeout.count()) + " ms (the back-end is away)",
              false);
}

}  // namespace vufront::actors::vmm_port_steps
