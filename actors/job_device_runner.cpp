#include "actors/job_device_runner.hpp"

#include <chrono>
#include <exception>
#include <string>
#include <vector>

#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "actors/error.hpp"

namespace vufront::actors {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- the progress relay of one transfer step ------------------------------------------------

caf::behavior progress_relay_impl(caf::event_based_actor* self, job_coordinator_actor coord,
                                  uint32_t device, uint32_t step) {
  return {[self, coord, device, step](progress_atom, uint64_t done, uint64_t total) {
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

class DeviceRunner final : public JobStepHost {
public:
  DeviceRunner(caf::blocking_actor* self, std::shared_ptr<const JobPlan> plan, uint32_t index,
               job_coordinator_actor coord)
      : self_(self),
        plan_(std::move(plan)),
        index_(index),
        coord_(std::move(coord)),
        steps_(plan_->make_steps(self->system(), index, *this)) {}

  ~DeviceRunner() override { end_relays(); }

  void run() {
    const size_t n = plan_->devices[index_].steps.size();
    for (uint32_t i = 0; i < n; ++i) {
      if (cancelled()) {
        emit(i, JobEvent::Kind::failed, 0, "cancelled before the step began");
        return;
      }
      emit(i, JobEvent::Kind::start);
      step_ = i;
      auto t0 = Clock::now();
      JobStepResult r;
      try {
        r = steps_->perform(i);
      } catch (const std::exception& e) {
        r = {false, std::string("internal error: ") + e.what(), 0};
      }
      end_relays();  // the step's progress relays end with it
      emit(i, r.ok ? JobEvent::Kind::done : JobEvent::Kind::failed, ms_since(t0), r.detail, r.bytes,
           r.figures);
      if (!r.ok)
        return;
    }
  }

  bool wait(milliseconds d) override {
    bool interrupted = false;
    self_->receive([&](cancel_atom) { interrupted = cancelled_ = true; }, caf::after(d) >> [] {});
    return !interrupted;
  }

  JobStepResult barrier(const std::string& barrier, milliseconds timeout) override {
    JobStepResult out;
    self_->request(coord_, timeout + job_answer_slack, barrier_atom_v, index_, barrier,
                   static_cast<uint32_t>(timeout.count()))
        .receive(
            [&](std::string& note) {
              out = {true, note.empty() ? "every device arrived" : note, 0};
            },
            [&](caf::error& e) {
              out = {false, from_caf(e, "barrier \"" + barrier + "\"").message(), 0};
            });
    return out;
  }

  caf::actor progress_relay() override {
    auto relay = self_->system().spawn(progress_relay_impl, coord_, index_, step_);
    relays_.push_back(relay);
    return relay;
  }

  void drives(const caf::actor_addr& device) override {
    self_->send(coord_, job_device_atom_v, index_, device);
  }

private:
  void emit(uint32_t step, JobEvent::Kind kind, double ms = 0, std::string detail = "",
            uint64_t bytes = 0, std::string figures = "") {
    JobEvent e;
    e.device = index_;
    e.step = step;
    e.kind = kind;
    e.ms = ms;
    e.detail = std::move(detail);
    e.bytes = bytes;
    e.figures = std::move(figures);
    self_->send(coord_, job_event_atom_v, std::move(e));
  }

  /// Whether the coordinator cancelled the job (looks at the mailbox without waiting).
  bool cancelled() {
    if (!cancelled_)
      self_->receive([this](cancel_atom) { cancelled_ = true; },
                     caf::after(milliseconds(0)) >> [] {});
    return cancelled_;
  }

  void end_relays() {
    for (auto& relay : relays_)
      caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
    relays_.clear();
  }

  caf::blocking_actor* self_;
  std::shared_ptr<const JobPlan> plan_;
  uint32_t index_;
  job_coordinator_actor coord_;
  uint32_t step_ = 0;                 // the step in progress
  bool cancelled_ = false;
  std::vector<caf::actor> relays_;    // the step's progress relays
  std::unique_ptr<JobDeviceSteps> steps_;  // last: made with *this as their host
};

}  // namespace

void job_device_runner(caf::blocking_actor* self, std::shared_ptr<const JobPlan> plan,
                       uint32_t index, job_coordinator_actor coord) {
  {
    DeviceRunner runner(self, std::move(plan), index, coord);
    runner.run();
  }  // the device session is gone before the coordinator hears we are done
  self->send(coord, runner_done_atom_v, index);
}

}  // namespace vufront::actors
