// A snapshot of a device its VMM drives (docs/vmm-proxy.md, "Snapshot under a
// running VMM"): once the VMM's request in progress is answered, vufront
// stops the running rings itself (SET_VRING_ENABLE 0, GET_VRING_BASE: the
// back-end finishes what is in flight), saves the back-end's state with the
// VMM's features and ring bases in the manifest, and starts the rings again
// at the bases they stopped at (SET_VRING_NUM, ADDR, BASE, CALL, KICK, ENABLE,
// as QEMU starts them). The guest sees a pause: the drain, the save and the
// restart. VMM requests meanwhile: GET_VRING_BASE of a stopped ring is
// answered from the shadow (the base the snapshot stopped at) and cancels
// that ring's restart; SET_VRING_ENABLE of one is recorded; anything else
// waits for the end of the snapshot and is then forwarded in order.
#include <algorithm>
#include <chrono>
#include <utility>

#include "actors/error.hpp"
#include "actors/vmm_port_steps.hpp"

namespace vufront::actors::vmm_port_steps {

using proxy::Forward;
using proxy::ForwardResult;
using InfoPromise = caf::typed_response_promise<SnapshotInfo>;
using Clock = std::chrono::steady_clock;

namespace {

Prepared of(Forward f) {
  Prepared p;
  p.original = f.payload;
  p.forward = std::move(f);
  return p;
}

VmmPortState::Paused* paused_ring(VmmPortState& st, uint32_t ring) {
  for (auto& p : st.paused)
    if (p.ring == ring)
      return &p;
  return nullptr;
}

/// The paused rings as running again in the shadow, without a word to the
/// back-end: after a loss during the snapshot, the replay starts them (at
/// the used index: the back-end drained them when they stopped).
void restore_paused(VmmPortState& st) {
  if (!st.shadow)
    return;
  for (const auto& p : st.paused) {
    const auto& ring = st.shadow->rings().at(p.ring);
    if (!ring.kick)
      continue;
    st.shadow->commit(of(Forward{FrontendReq::set_vring_kick, VringFd{p.ring, true}, {ring.kick}, false}), {});
    if (p.enable)
      st.shadow->commit(of(Forward{FrontendReq::set_vring_enable, wire::VringState{p.ring, 1}, {}, false}), {});
  }
  st.paused.clear();
}

/// Sends `steps[i..]` to the back-end one after another, each recorded in
/// the shadow once accepted; then `then(error or nothing)`.
void run_steps(Self self, uint64_t session, std::shared_ptr<std::vector<Prepared>> steps, size_t i,
               std::function<void(std::optional<Error>)> then) {
  if (!current(self, session))
    return then(make_error(errc::cancelled, "snapshot", "the VMM left"));
  if (i == steps->size())
    return then(std::nullopt);
  to_backend(
      self, (*steps)[i].forward, proxy::Answer{},
      [self, session, steps, i, then](ForwardResult& r) {
        if (current(self, session))
          self->state.shadow->commit((*steps)[i], r);
        run_steps(self, session, steps, i + 1, then);
      },
      [self, steps, i, then](caf::error& e) { then(from_caf(e, req_name((*steps)[i].forward.req))); });
}

/// The stop of every running ring: enable 0 (with PROTOCOL_FEATURES), then
/// GET_VRING_BASE.
std::vector<Prepared> stop_steps(VmmPortState& st) {
  std::vector<Prepared> out;
  const auto& sh = *st.shadow;
  const bool enable = has_bit(sh.acked_features(), feature::protocol_features);
  st.paused.clear();
  for (uint32_t i = 0; i < sh.rings().size(); ++i) {
    if (!sh.rings()[i].started)
      continue;
    st.paused.push_back({i, sh.rings()[i].enabled});
    if (enable)
      out.push_back(of(Forward{FrontendReq::set_vring_enable, wire::VringState{i, 0}, {}, false}));
    out.push_back(of(Forward{FrontendReq::get_vring_base, wire::VringState{i, 0}, {}, sh.packed()}));
  }
  return out;
}

/// The restart of the paused rings the VMM did not stop meanwhile, as QEMU
/// starts a ring, enabled as the VMM left it.
std::vector<Prepared> start_steps(const VmmPortState& st) {
  std::vector<Prepared> out;
  const auto& sh = *st.shadow;
  for (const auto& paused : st.paused) {
    const uint32_t i = paused.ring;
    const auto& ring = sh.rings()[i];
    auto addr = sh.backend_addr(i);
    if (!addr || !ring.kick)
      continue;
    out.push_back(of(Forward{FrontendReq::set_vring_num, wire::VringState{i, ring.num}, {}, false}));
    Prepared a = of(Forward{FrontendReq::set_vring_addr, *addr, {}, false});
    a.original = ring.vmm_addr;  // the shadow records the VMM's addresses
    out.push_back(std::move(a));
    out.push_back(of(Forward{FrontendReq::set_vring_base, wire::VringState{i, ring.base}, {}, false}));
    if (ring.call)
      out.push_back(of(Forward{FrontendReq::set_vring_call, VringFd{i, true}, {ring.call}, false}));
    out.push_back(of(Forward{FrontendReq::set_vring_kick, VringFd{i, true}, {ring.kick}, false}));
    if (paused.enable && has_bit(sh.acked_features(), feature::protocol_features))
      out.push_back(of(Forward{FrontendReq::set_vring_enable, wire::VringState{i, 1}, {}, false}));
  }
  return out;
}

/// The snapshot is over (or failed): the rings start again, then the caller
/// is answered and the held request goes on.
void finish(Self self, uint64_t session, InfoPromise rp, Clock::time_point t0, Result<SnapshotInfo> saved) {
  auto& st = self->state;
  if (!current(self, session)) {
    if (saved)
      rp.deliver(std::move(saved).value());
    else
      rp.deliver(to_caf(saved.error()));
    pause_over(self);
    return;
  }
  auto steps = std::make_shared<std::vector<Prepared>>(start_steps(st));
  const size_t restarted = st.paused.size();
  run_steps(self, session, steps, 0,
            [self, session, rp, t0, saved = std::move(saved), restarted](std::optional<Error> e) mutable {
              auto& s = self->state;
              s.pausing = false;
              if (e)  // the back-end is lost: the replay starts what is not running
                restore_paused(s);
              s.paused.clear();
              const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
              s.last_pause = std::to_string(ms) + " ms, " + std::to_string(restarted) + " ring(s) restarted";
              log(self, "snapshot: the guest's rings were stopped for " + s.last_pause);
              if (e && current(self, session))
                backend_lost(self, "restarting the rings after a snapshot: " + e->message());
              if (!saved)
                rp.deliver(to_caf(saved.error()));
              else if (e)
                rp.deliver(to_caf(*e));
              else
                rp.deliver(std::move(saved).value());
              pause_over(self);
              if (!current(self, session))
                return;
              if (auto p = std::move(s.held); p && s.held_for_snapshot) {
                s.held_for_snapshot = false;
                if (s.away)
                  handle_away(self, std::move(*p));
                else
                  forward(self, std::move(*p));
              }
            });
}

void start(Self self, InfoPromise rp, SnapshotOptions o) {
  auto& st = self->state;
  const uint64_t session = st.connections;
  const auto t0 = Clock::now();
  auto stops = std::make_shared<std::vector<Prepared>>(stop_steps(st));
  run_steps(self, session, stops, 0, [self, session, rp, o, t0](std::optional<Error> e) mutable {
    auto& s = self->state;
    if (e) {
      s.pausing = false;
      restore_paused(s);
      if (current(self, session))
        backend_lost(self, "stopping the rings for a snapshot: " + e->message());
      rp.deliver(to_caf(in_operation(std::move(*e), "snapshot")));
      pause_over(self);
      return;
    }
    VmmSaveSpec spec;
    spec.features = s.shadow ? s.shadow->acked_features() : 0;
    if (s.shadow)
      for (uint32_t i = 0; i < s.shadow->rings().size(); ++i) {
        const auto& r = s.shadow->rings()[i];
        if (r.num != 0)
          spec.queues.push_back({static_cast<uint16_t>(i), static_cast<uint16_t>(r.num), r.base});
      }
    self->request(s.config.device, device_wait, vmm_save_atom_v, o, spec)
        .then([self, session, rp, t0](SnapshotInfo& info) mutable {
                ++self->state.snapshots;
                finish(self, session, rp, t0, std::move(info));
              },
              [self, session, rp, t0](caf::error& err) mutable {
                finish(self, session, rp, t0, from_caf(err, "snapshot"));
              });
  });
}

}  // namespace

caf::result<SnapshotInfo> snapshot_under_vmm(Self self, const SnapshotOptions& o) {
  auto& st = self->state;
  if (!st.vmm || !st.shadow)  // no VMM: nothing of one in the back-end
    return self->delegate(st.config.device, vmm_save_atom_v, o, VmmSaveSpec{});
  if (st.pausing)
    return to_caf(make_error(errc::busy, "snapshot", "a snapshot is in progress"));
  if (st.away || st.replaying || st.tearing_down)
    return to_caf(make_error(errc::bad_state, "snapshot",
                             "the back-end is away (lost under the VMM); snapshot once it is back"));
  auto rp = self->make_response_promise<SnapshotInfo>();
  st.pausing = true;  // from now on the VMM's requests wait (handle_pause)
  if (st.in_request)
    st.when_idle = [self, rp, o]() mutable { start(self, rp, o); };
  else
    start(self, rp, o);
  return rp;
}

void handle_pause(Self self, Prepared p) {
  auto& st = self->state;
  const auto& f = p.forward;
  if (f.req == FrontendReq::get_vring_base || f.req == FrontendReq::set_vring_enable) {
    const uint32_t i = std::get<wire::VringState>(f.payload).index;
    if (auto* paused = paused_ring(st, i); paused && !st.when_idle) {
      ForwardResult r;
      if (f.req == FrontendReq::get_vring_base) {
        const uint32_t base = st.shadow->rings().at(i).base;  // where the snapshot stopped it
        r.has_reply = true;
        r.vring_base = base;
        r.body = encode_vring_base_reply(i, base).body;
        st.paused.erase(st.paused.begin() + (paused - st.paused.data()));  // the VMM stopped it: no restart
      } else {
        paused->enable = std::get<wire::VringState>(f.payload).num != 0;  // restarted as the VMM wants it
        st.shadow->commit(p, r);
        if (answer(self, p, r))
          done(self);
        return;
      }
      st.shadow->commit(p, r);
      if (answer(self, p, r))
        done(self);
      return;
    }
  }
  st.held = std::make_shared<Prepared>(std::move(p));
  st.held_for_snapshot = true;
}

void pause_over(Self self) {
  auto& st = self->state;
  st.pausing = false;
  if (auto why = std::exchange(st.teardown_after_snapshot, std::nullopt))
    teardown(self, *why + "; its teardown waited for the snapshot");
}

void request_over(Self self) {
  auto& st = self->state;
  st.in_request = false;
  if (auto start_now = std::move(st.when_idle)) {
    st.when_idle = nullptr;
    start_now();
  }
}

}  // namespace vufront::actors::vmm_port_steps
