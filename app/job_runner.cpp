#include "app/job_runner.hpp"

#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include <caf/after.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/error.hpp"
#include "ops/checker.hpp"
#include "ops/job_barrier.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::app {

using ops::BarrierBook;
using ops::CheckOptions;
using ops::Checker;
using ops::CheckStep;
using ops::DeviceOutcome;
using ops::JobDevice;
using ops::JobStep;
using ops::JobStepKind;
using ops::step_message;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// The runner's own answer to a request may take a little longer than the
/// deadline the coordinator or the device keeps.
constexpr milliseconds slack{5000};
/// How much later than the step's deadline the runner stops waiting for the
/// device's answer (so the device's own, more precise error comes first).
constexpr milliseconds guard{2000};
/// How often a live display is redrawn when nothing happens.
constexpr milliseconds tick_interval{250};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string path_key(const std::string& p) {
  return std::filesystem::path(p).lexically_normal().string();
}

// ---- the progress relay of one transfer step ------------------------------------------------

caf::behavior progress_relay(caf::event_based_actor* self, job_coordinator_actor coord,
                             uint32_t device, uint32_t step) {
  return {[self, coord, device, step](actors::progress_atom, uint64_t done, uint64_t total) {
    JobEvent e;
    e.device = device;
    e.step = step;
    e.kind = JobEvent::Kind::progress;
    e.bytes = done;
    e.total = total;
    self->send(coord, job_event_atom_v, std::move(e));
  }};
}

// ---- one device's steps -----------------------------------------------------------------------

CheckOptions check_options(const JobDevice& d) {
  CheckOptions o;
  o.socket = d.socket;
  o.device = d.kind;
  o.queues = d.queues;
  o.queue_size = d.queue_size;
  o.packed = d.packed;
  o.msix = d.msix;
  o.fs_file = d.fs_file;
  o.timeout = d.timeout;
  o.drain_timeout = d.drain_timeout;
  return o;
}

class DeviceRunner {
public:
  DeviceRunner(caf::blocking_actor* self, std::shared_ptr<const Job> job, uint32_t index,
               job_coordinator_actor coord)
      : self_(self),
        job_(std::move(job)),
        dev_(job_->devices[index]),
        index_(index),
        coord_(std::move(coord)),
        checker_(self->system(), with_session_hook(check_options(dev_))) {}

  void run() {
    for (uint32_t i = 0; i < dev_.steps.size(); ++i) {
      if (cancelled()) {
        emit(i, JobEvent::Kind::failed, 0, "cancelled before the step began");
        return;
      }
      emit(i, JobEvent::Kind::start);
      auto t0 = Clock::now();
      Outcome r;
      try {
        r = perform(i, dev_.steps[i]);
      } catch (const std::exception& e) {
        r = {false, std::string("internal error: ") + e.what(), 0};
      }
      emit(i, r.ok ? JobEvent::Kind::done : JobEvent::Kind::failed, ms_since(t0), r.detail, r.bytes);
      if (!r.ok)
        return;
    }
  }

private:
  struct Outcome {
    bool ok = false;
    std::string detail;
    uint64_t bytes = 0;
  };

  CheckOptions with_session_hook(CheckOptions o) {
    o.on_session = [this](actors::DeviceSession& s) {
      self_->send(coord_, device_atom_v, index_, s.device().address());
    };
    return o;
  }

  void emit(uint32_t step, JobEvent::Kind kind, double ms = 0, std::string detail = "",
            uint64_t bytes = 0) {
    JobEvent e;
    e.device = index_;
    e.step = step;
    e.kind = kind;
    e.ms = ms;
    e.detail = std::move(detail);
    e.bytes = bytes;
    self_->send(coord_, job_event_atom_v, std::move(e));
  }

  /// Whether the coordinator cancelled the job (looks at the mailbox without waiting).
  bool cancelled() {
    if (!cancelled_)
      self_->receive([this](actors::cancel_atom) { cancelled_ = true; },
                     caf::after(milliseconds(0)) >> [] {});
    return cancelled_;
  }

  /// Runs checker steps (each returns false on failure) within one
  /// deadline; the outcome joins their details, or is the failed one's.
  /// The failed checker step's error, named by the request that failed
  /// ("snapshot: SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ...").
  [[nodiscard]] std::string failure(const CheckStep& step, const JobStep& s) const {
    return step.error ? step_message(*step.error, name(s.kind)) : step.detail;
  }

  Outcome checker_steps(const JobStep& s, const std::vector<std::function<bool()>>& steps) {
    const milliseconds timeout = s.timeout;
    auto deadline = Clock::now() + timeout;
    size_t first = checker_.steps().size();
    for (const auto& fn : steps) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0)
        return {false, "timeout: the step's deadline of " + std::to_string(timeout.count()) +
                           " ms passed", 0};
      // The device's own deadlines (connect, each request: the device's
      // timeout) fire first and say what was late; this guard follows.
      checker_.set_timeout(left + guard);
      if (!fn())
        break;
    }
    Outcome out{checker_.ok(), "", 0};
    const auto& recorded = checker_.steps();
    for (size_t i = first; i < recorded.size(); ++i) {
      if (!out.ok && recorded[i].ok)
        continue;
      out.detail += (out.detail.empty() ? "" : "; ") +
                    (recorded[i].ok ? recorded[i].detail : failure(recorded[i], s));
    }
    return out;
  }

  /// The step's relay for transfer progress; ended with the step.
  struct Relay {
    caf::actor actor;
    ~Relay() {
      if (actor)
        caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    }
  };

  Outcome perform(uint32_t i, const JobStep& s) {
    Checker& c = checker_;
    switch (s.kind) {
      case JobStepKind::activate: {
        std::vector<std::function<bool()>> steps;
        if (!negotiated_)
          steps = {[&] { return c.negotiate(); }, [&] { return c.set_memory(); }};
        steps.push_back([&] { return c.activate(); });
        auto r = checker_steps(s, steps);
        negotiated_ = negotiated_ || c.guest() != nullptr;
        return r;
      }
      case JobStepKind::sleep: return checker_steps(s, {[&] { return c.sleep(); }});
      case JobStepKind::wake: return checker_steps(s, {[&] { return c.wake(); }});
      case JobStepKind::reset: return checker_steps(s, {[&] { return c.reset(); }});
      case JobStepKind::check: return checker_steps(s, {[&] { return c.io("check"); }});
      case JobStepKind::snapshot: {
        Relay relay{self_->system().spawn(progress_relay, coord_, index_, i)};
        actors::SnapshotOptions o;
        o.path = s.path;
        o.max_bytes = s.max_bytes;
        o.timeout_ms = static_cast<uint32_t>(s.timeout.count());
        o.progress = relay.actor;
        // The transfer keeps its own deadline; this one bounds the answer.
        c.set_timeout(s.timeout + 2 * dev_.timeout + slack);
        if (!c.snapshot(o))
          return {false, failure(c.steps().back(), s), 0};
        saved_rounds_[path_key(s.path)] = c.written_rounds();
        return {true, c.steps().back().detail, c.last_transfer().state_bytes};
      }
      case JobStepKind::restore: {
        Relay relay{self_->system().spawn(progress_relay, coord_, index_, i)};
        actors::RestoreOptions o;
        o.path = s.path;
        o.timeout_ms = static_cast<uint32_t>(s.timeout.count());
        o.progress = relay.actor;
        c.set_timeout(s.timeout + 2 * dev_.timeout + slack);
        if (!c.restore(s.socket, o))
          return {false, failure(c.steps().back(), s), 0};
        // The disk is now the snapshot's: what was written by then (when
        // this device took it) is what a check may read back.
        auto saved = saved_rounds_.find(path_key(s.path));
        c.set_written_rounds(saved != saved_rounds_.end() ? saved->second
                                                          : std::vector<unsigned>{});
        return {true, c.steps().back().detail, c.last_transfer().state_bytes};
      }
      case JobStepKind::wait: {
        bool interrupted = false;
        self_->receive([&](actors::cancel_atom) { interrupted = cancelled_ = true; },
                       caf::after(s.wait) >> [] {});
        if (interrupted)
          return {false, "cancelled", 0};
        return {true, "waited " + std::to_string(s.wait.count()) + " ms", 0};
      }
      case JobStepKind::barrier: {
        Outcome out;
        self_->request(coord_, s.timeout + slack, barrier_atom_v, index_, s.barrier,
                       static_cast<uint32_t>(s.timeout.count()))
            .receive(
                [&](std::string& note) {
                  out = {true, note.empty() ? "every device arrived" : note, 0};
                },
                [&](caf::error& e) {
                  out = {false, actors::from_caf(e, "barrier \"" + s.barrier + "\"").message(), 0};
                });
        return out;
      }
    }
    return {false, "unknown step", 0};
  }

  caf::blocking_actor* self_;
  std::shared_ptr<const Job> job_;
  const JobDevice& dev_;
  uint32_t index_;
  job_coordinator_actor coord_;
  Checker checker_;
  bool negotiated_ = false;
  bool cancelled_ = false;
  /// blk rounds on the disk when this device saved each snapshot file.
  std::map<std::string, std::vector<unsigned>> saved_rounds_;
};

void device_runner(caf::blocking_actor* self, std::shared_ptr<const Job> job, uint32_t index,
                   job_coordinator_actor coord) {
  {
    DeviceRunner runner(self, job, index, coord);
    runner.run();
  }  // the device session is gone before the coordinator hears we are done
  self->send(coord, runner_done_atom_v, index);
}

// ---- the coordinator ----------------------------------------------------------------------------

struct CoordinatorState {
  static inline const char* name = "vufront.job";

  std::shared_ptr<const Job> job;
  std::unique_ptr<JobDisplay> display;
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
  st.display->finish(out);
  if (st.run) {
    st.run->deliver(std::move(out));
    st.run.reset();
  }
}

/// Sets up the state for `job`: one outcome, current step, runner and device slot per device.
void init_state(Coordinator self, std::shared_ptr<const Job> job, std::unique_ptr<JobDisplay> display) {
  auto& st = self->state;
  st.job = std::move(job);
  st.display = std::move(display);
  st.book = BarrierBook(*st.job);
  size_t n = st.job->devices.size();
  st.outcomes.resize(n);
  st.current.resize(n);
  st.finished.assign(n, false);
  st.runners.resize(n);
  st.devices.resize(n);
  for (size_t i = 0; i < n; ++i) {
    st.outcomes[i].name = st.job->devices[i].name;
    st.outcomes[i].steps_total = st.job->devices[i].steps.size();
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

/// Starts the job: one monitored runner per device, the display's ticks when
/// it is live; the outcome comes when every device finished.
caf::result<JobOutcome> start_run(Coordinator self) {
  auto& s = self->state;
  if (s.run)
    return actors::to_caf(make_error(errc::bad_state, "job", "already running"));
  s.t0 = Clock::now();
  auto rp = self->make_response_promise<JobOutcome>();
  s.run = rp;
  auto me = caf::actor_cast<job_coordinator_actor>(self);
  for (uint32_t i = 0; i < s.job->devices.size(); ++i) {
    auto r = self->spawn<caf::detached + caf::monitored>(device_runner, s.job, i, me);
    s.runners[i] = r.address();
  }
  if (s.display->live())
    self->delayed_send(self, tick_interval, caf::tick_atom_v);
  return rp;
}

/// Refreshes the live display, until the outcome is out.
void on_tick(Coordinator self) {
  auto& s = self->state;
  if (s.run) {  // until the outcome is out
    s.display->tick();
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
    if (auto dev = caf::actor_cast<actors::device_actor>(addr))
      caf::anon_send(dev, actors::cancel_all_atom_v);
  for (const auto& addr : s.runners)
    if (auto r = caf::actor_cast<caf::actor>(addr))
      caf::anon_send(r, actors::cancel_atom_v);
  for (auto& [d, rp] : s.waiting)
    rp.deliver(actors::to_caf(make_error(errc::bad_state, "barrier", "cancelled")));
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
      const auto& step = s.job->devices[e.device].steps[e.step];
      release(self, s.book.leave(e.device, "failed at steps[" + std::to_string(e.step) +
                                               "] " + name(step.kind)));
      break;
    }
  }
  s.display->event(e);
}

/// Device `d` arrives at `barrier`: answered now when that releases it,
/// otherwise when the others arrive or `timeout_ms` passes.
caf::result<std::string> arrive_at_barrier(Coordinator self, uint32_t d, const std::string& barrier,
                                           uint32_t timeout_ms) {
  auto& s = self->state;
  if (s.cancelled)
    return actors::to_caf(make_error(errc::bad_state, "barrier", "cancelled"));
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
    it->second.deliver(actors::to_caf(make_error(
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
    if (auto dev = caf::actor_cast<actors::device_actor>(s.devices[d]))
      caf::anon_send(dev, actors::cancel_all_atom_v);
}

job_coordinator_actor::behavior_type coordinator_impl(Coordinator self, std::shared_ptr<const Job> job,
                                                      std::unique_ptr<JobDisplay> display) {
  init_state(self, std::move(job), std::move(display));
  self->set_down_handler([self](caf::down_msg& dm) { on_runner_down(self, dm); });
  return {
      [self](run_atom) -> caf::result<JobOutcome> { return start_run(self); },
      [self](caf::tick_atom) { on_tick(self); },
      [self](actors::cancel_atom) { cancel_job(self); },
      [self](job_event_atom, JobEvent e) { record_event(self, e); },
      [self](barrier_atom, uint32_t d, const std::string& barrier,
             uint32_t timeout_ms) -> caf::result<std::string> {
        return arrive_at_barrier(self, d, barrier, timeout_ms);
      },
      [self](barrier_timeout_atom, uint32_t d, const std::string& barrier, uint64_t passage) {
        barrier_timed_out(self, d, barrier, passage);
      },
      [self](device_atom, uint32_t d, caf::actor_addr device) { note_device(self, d, std::move(device)); },
      [self](runner_done_atom, uint32_t d) { finish_device(self, d, "stopped"); },
  };
}

}  // namespace

job_coordinator_actor spawn_job_coordinator(caf::actor_system& sys, std::shared_ptr<const Job> job,
                                            std::unique_ptr<JobDisplay> display) {
  return sys.spawn<caf::detached>(coordinator_impl, std::move(job), std::move(display));
}

}  // namespace vufront::app
