#pragma once
// What the job's actors (job_coordinator.*, job_device_runner.*) are given to
// run, by the library that reads job files (ops/job_steps.hpp): the plan
// (each device's name and steps, the barriers they meet, a maker of each
// device's steps), one device's steps, what the runner does for them, and the
// view the coordinator reports to. So the actors run a job without knowing
// the job file or the Checker, and ops/ stays above actors/.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_system.hpp>

#include "actors/job_messages.hpp"

namespace vufront::actors {

/// How much longer than the deadline a coordinator or a device keeps a runner
/// waits for their answer (a barrier's, a transfer's).
inline constexpr std::chrono::milliseconds job_answer_slack{5000};

/// What one step did.
struct JobStepResult {
  JobStepResult(bool ok_ = false, std::string detail_ = {}, uint64_t bytes_ = 0,
                std::string figures_ = {})
      : ok(ok_), detail(std::move(detail_)), bytes(bytes_), figures(std::move(figures_)) {}
  bool ok = false;
  std::string detail;  ///< what it did, or the error
  uint64_t bytes = 0;  ///< state moved (snapshot, restore, migrate)
  /// The step's figures as a JSON object's text (migrate: rounds, pages,
  /// times); empty: none.
  std::string figures;
};

/// What only a device's runner (an actor) can do for its steps. Called on the
/// runner's thread, from JobDeviceSteps::perform.
class JobStepHost {
public:
  virtual ~JobStepHost() = default;
  /// Waits `d`; false when the job was cancelled meanwhile.
  [[nodiscard]] virtual bool wait(std::chrono::milliseconds d) = 0;
  /// Waits at `barrier` until every device that uses it has arrived or left:
  /// ok with "every device arrived" or a note naming who left; failed with
  /// the coordinator's error (a timeout naming who is missing, cancelled).
  /// `timeout`: the step's deadline.
  [[nodiscard]] virtual JobStepResult barrier(const std::string& barrier,
                                              std::chrono::milliseconds timeout) = 0;
  /// An actor that turns a transfer's progress (progress_atom, done, total)
  /// into events of the step in progress; it ends with the step.
  [[nodiscard]] virtual caf::actor progress_relay() = 0;
  /// The device actor the steps now drive (the first, and each restore's):
  /// cancelled with the job.
  virtual void drives(const caf::actor_addr& device) = 0;
};

/// One device's steps.
class JobDeviceSteps {
public:
  virtual ~JobDeviceSteps() = default;
  /// Runs step `i` (blocking; an exception fails the step).
  [[nodiscard]] virtual JobStepResult perform(uint32_t i) = 0;
};

/// A job as its actors run it.
struct JobPlan {
  struct Step {
    std::string name;                    ///< as in the job file ("snapshot")
    std::optional<std::string> barrier;  ///< a barrier step: the barrier it meets
  };
  struct Device {
    std::string name;
    std::vector<Step> steps;
  };
  std::vector<Device> devices;
  /// Makes device `d`'s steps, on its runner's thread; `host` outlives them.
  std::function<std::unique_ptr<JobDeviceSteps>(caf::actor_system& sys, uint32_t d,
                                                JobStepHost& host)>
      make_steps;
};

/// Where the coordinator reports a job: events in order, then the outcome.
/// Used on the coordinator's thread only.
class JobView {
public:
  virtual ~JobView() = default;
  virtual void event(const JobEvent& e) = 0;
  /// Whether it wants tick() while the job runs (a live display).
  [[nodiscard]] virtual bool live() const noexcept = 0;
  /// Redraws a live view (times move on while nothing happens).
  virtual void tick() = 0;
  /// The outcome, once every device has ended.
  virtual void finish(const JobOutcome& o) = 0;
};

}  // namespace vufront::actors
