#include "actors/job_coordinator.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/error.hpp"
#include "actors/job_barrier.hpp"
#include "actors/job_device_runner.hpp"

namespace vufront::actors {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// How often a live view is redrawn when nothing happens.
constexpr milliseconds tick_interval{250};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct CoordinatorState {
  static inline const char* name = "vufront.job";

  std::shared_ptr<const JobPlan> plan;
  std::unique_ptr<JobView> view;
  BarrierBook book;
  std::vector<DeviceOutcome> outcomes;
  std::vector<std::optional<uint32_t>> current;  // step in progress per device
  std::vector<bool> finished;
  std::vector<caf::actor_addr> runners;
  std::vector<caf::actor_addr> devices;
  std::map<uint32_t, caf::typed_response_promise<std::string>> waiting;
  std::optional<caf::typed_response_promise<JobOutcome>> run;
  Clock::time_point t0 = Clock::now();
  bool cancelled = false;
};

using Coordinator = job_coordinator_actor::stateful_pointer<CoordinatorState>;

void release(Coordinator self, const std::vector<BarrierBook::Release>& rs) {
  auto& st = self->state;
  for (const auto& r : rs) {
    auto it = st.waiting.find(r.device);
    if (it == st.waiting.end())
      continue;
    it->second.deliver(r.note);
    st.waiting.erase(it);
  }
}

void finish_device(Coordinator self, uint32_t d, const std::string& why) {
  auto& st = self->state;
  if (d >= st.finished.size() || st.finished[d])
    return;
  st.finished[d] = true;
  auto& o = st.outcomes[d];
  o.ms = ms_since(st.t0);
  if (o.result == DeviceOutcome::Result::ok && o.steps_ok < o.steps_total) {
    o.result = st.cancelled ? DeviceOutcome::Result::cancelled : DeviceOutcome::Result::failed;
    o.error = why;
  }
  release(self, st.book.leave(d, o.result == DeviceOutcome::Result::ok ? "finished" : why));
  for (bool f : st.finished)
    if (!f)
      return;
  JobOutcome out{st.outcomes, ms_since(st.t0)};
  st.view->finish(out);
  if (st.run) {
    st.run->deliver(std::move(out));
    st.run.reset();
  }
}

/// Sets up the state for `plan`: one outcome, current step, runner and device slot per device.
void init_state(Coordinator self, std::shared_ptr<const JobPlan> plan, std::unique_ptr<JobView> view) {
  auto& st = self->state;
  st.plan = std::move(plan);
  st.view = std::move(view);
  st.book = BarrierBook(*st.plan);
  size_t n = st.plan->devices.size();
  st.outcomes.resize(n);
  st.current.resize(n);
  st.finished.assign(n, false);
  st.runners.resize(n);
  st.devices.resize(n);
  for (size_t i = 0; i < n; ++i) {
    st.outcomes[i].name = st.plan->devices[i].name;
    st.outcomes[i].steps_total = st.plan->devices[i].steps.size();
  }
}

/// A device runner stopped: a device not finished yet fails at its current step.
void on_runner_down(Coordinator self, const caf::down_msg& dm) {
  auto& s = self->state;
  for (uint32_t i = 0; i < s.runners.size(); ++i)
    if (s.runners[i] == dm.source && !s.finished[i]) {
      auto& o = s.outcomes[i];
      if (o.result == DeviceOutcome::Result::ok) {
        o.result = DeviceOutcome::Result::failed;
        o.failed_step = s.current[i];
        o.error = "the device's runner stopped: " + caf::to_string(dm.reason);
      }
      finish_device(self, i, "its runner stopped");
    }
}

/// Starts the job: one monitored runner per device, the view's ticks when
/// it is live; the outcome comes when every device finished.
caf::result<JobOutcome> start_run(Coordinator self) {
  auto& s = self->state;
  if (s.run)
    return to_caf(make_error(errc::bad_state, "job", "already running"));
  s.t0 = Clock::now();
  auto rp = self->make_response_promise<JobOutcome>();
  s.run = rp;
  auto me = caf::actor_cast<job_coordinator_actor>(self);
  for (uint32_t i = 0; i < s.plan->devices.size(); ++i) {
    auto r = self->spawn<caf::detached + caf::monitored>(job_device_runner, s.plan, i, me);
    s.runners[i] = r.address();
  }
  if (s.view->live())
    self->delayed_send(self, tick_interval, caf::tick_atom_v);
  return rp;
}

/// Refreshes the live view, until the outcome is out.
void on_tick(Coordinator self) {
  auto& s = self->state;
  if (s.run) {  // until the outcome is out
    s.view->tick();
    self->delayed_send(self, tick_interval, caf::tick_atom_v);
  }
}

/// Cancels every device and runner, and fails every barrier wait.
void cancel_job(Coordinator self) {
  auto& s = self->state;
  if (s.cancelled)
    return;
  s.cancelled = true;
  for (const auto& addr : s.devices)
    if (auto dev = caf::actor_cast<device_actor>(addr))
      caf::anon_send(dev, cancel_all_atom_v);
  for (const auto& addr : s.runners)
    if (auto r = caf::actor_cast<caf::actor>(addr))
      caf::anon_send(r, cancel_atom_v);
  for (auto& [d, rp] : s.waiting)
    rp.deliver(to_caf(make_error(errc::bad_state, "barrier", "cancelled")));
  s.waiting.clear();
}

/// A runner's event: counts it into the device's outcome (a failed step
/// leaves the barriers) and shows it.
void record_event(Coordinator self, const JobEvent& e) {
  auto& s = self->state;
  if (e.device >= s.outcomes.size())
    return;
  auto& o = s.outcomes[e.device];
  switch (e.kind) {
    case JobEvent::Kind::start: s.current[e.device] = e.step; break;
    case JobEvent::Kind::progress:
      if (s.current[e.device] != e.step)
        return;  // a late message of a step that is over
      break;
    case JobEvent::Kind::done:
      s.current[e.device].reset();
      ++o.steps_ok;
      o.state_bytes += e.bytes;
      break;
    case JobEvent::Kind::failed: {
      s.current[e.device].reset();
      o.result = s.cancelled ? DeviceOutcome::Result::cancelled : DeviceOutcome::Result::failed;
      o.failed_step = e.step;
      o.error = e.detail;
      const auto& step = s.plan->devices[e.device].steps[e.step];
      release(self, s.book.leave(e.device, "failed at steps[" + std::to_string(e.step) +
                                               "] " + step.name));
      break;
    }
  }
  s.view->event(e);
}

/// Device `d` arrives at `barrier`: answered now when that releases it,
/// otherwise when the others arrive or `timeout_ms` passes.
caf::result<std::string> arrive_at_barrier(Coordinator self, uint32_t d, const std::string& barrier,
                                           uint32_t timeout_ms) {
  auto& s = self->state;
  if (s.cancelled)
    return to_caf(make_error(errc::bad_state, "barrier", "cancelled"));
  std::optional<std::string> mine;
  std::vector<BarrierBook::Release> others;
  for (auto& r : s.book.arrive(d, barrier)) {
    if (r.device == d)
      mine = r.note;
    else
      others.push_back(std::move(r));
  }
  release(self, others);
  if (mine)
    return *mine;
  auto rp = self->make_response_promise<std::string>();
  s.waiting[d] = rp;
  auto at = s.book.waiting_at(d);
  self->delayed_send(self, milliseconds(timeout_ms), barrier_timeout_atom_v, d, at.first,
                     static_cast<uint64_t>(at.second));
  return rp;
}

/// Device `d`'s wait at `barrier` (its `passage`) timed out, unless it was
/// released meanwhile: fails the wait, naming who is missing, and leaves.
void barrier_timed_out(Coordinator self, uint32_t d, const std::string& barrier, uint64_t passage) {
  auto& s = self->state;
  auto at = s.book.waiting_at(d);
  if (at.first != barrier || at.second != passage)
    return;  // released meanwhile
  std::string missing;
  for (const auto& m : s.book.missing_for(d))
    missing += (missing.empty() ? "" : ", ") + m;
  auto it = s.waiting.find(d);
  if (it != s.waiting.end()) {
    it->second.deliver(to_caf(make_error(
        errc::timeout, "barrier \"" + barrier + "\"",
        "still waiting for " + missing + " when the step's deadline passed")));
    s.waiting.erase(it);
  }
  release(self, s.book.leave(d, "timed out at barrier \"" + barrier + "\""));
}

/// Device `d`'s device actor, to cancel it (at once when the job already is).
void note_device(Coordinator self, uint32_t d, caf::actor_addr device) {
  auto& s = self->state;
  if (d < s.devices.size())
    s.devices[d] = std::move(device);
  if (s.cancelled)
    if (auto dev = caf::actor_cast<device_actor>(s.devices[d]))
      caf::anon_send(dev, cancel_all_atom_v);
}

job_coordinator_actor::behavior_type coordinator_impl(Coordinator self, std::shared_ptr<const JobPlan> plan,
                                                      std::unique_ptr<JobView> view) {
  init_state(self, std::move(plan), std::move(view));
  self->set_down_handler([self](caf::down_msg& dm) { on_runner_down(self, dm); });
  return {
      [self](job_run_atom) -> caf::result<JobOutcome> { return start_run(self); },
      [self](caf::tick_atom) { on_tick(self); },
      [self](cancel_atom) { cancel_job(self); },
      [self](job_event_atom, JobEvent e) { record_event(self, e); },
      [self](barrier_atom, uint32_t d, const std::string& barrier,
             uint32_t timeout_ms) -> caf::result<std::string> {
        return arrive_at_barrier(self, d, barrier, timeout_ms);
      },
      [self](barrier_timeout_atom, uint32_t d, const std::string& barrier, uint64_t passage) {
        barrier_timed_out(self, d, barrier, passage);
      },
      [self](job_device_atom, uint32_t d, caf::actor_addr device) { note_device(self, d, std::move(device)); },
      [self](runner_done_atom, uint32_t d) { finish_device(self, d, "stopped"); },
  };
}

}  // namespace

job_coordinator_actor spawn_job_coordinator(caf::actor_system& sys, std::shared_ptr<const JobPlan> plan,
                                            std::unique_ptr<JobView> view) {
  return sys.spawn<caf::detached>(coordinator_impl, std::move(plan), std::move(view));
}

}  // namespace vufront::actors
