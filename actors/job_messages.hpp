#pragma once
// The messages of a job (`vufront job`, docs/jobs.md): its atoms, the events
// its runners report, the outcome, and the coordinator's typed interface.
// The job's actors are job_coordinator.* and job_device_runner.*; what they
// are given to run is in job_plan.hpp.
//
// The atoms are a type-ID block of their own, right after the device actors'
// block in messages.hpp: only the job's actors send them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"

CAF_BEGIN_TYPE_ID_BLOCK(vufront_job, caf::id_block::vufront::end)
  CAF_ADD_ATOM(vufront_job, vufront::actors, job_run_atom, "jobrun")
  CAF_ADD_ATOM(vufront_job, vufront::actors, job_event_atom, "jobevent")
  CAF_ADD_ATOM(vufront_job, vufront::actors, barrier_atom, "barrier")
  CAF_ADD_ATOM(vufront_job, vufront::actors, barrier_timeout_atom, "barriertmo")
  CAF_ADD_ATOM(vufront_job, vufront::actors, job_device_atom, "jobdevice")
  CAF_ADD_ATOM(vufront_job, vufront::actors, runner_done_atom, "runnerdone")
CAF_END_TYPE_ID_BLOCK(vufront_job)

namespace vufront::actors {

/// What a runner (or a transfer's progress relay) reports about a step.
struct JobEvent {
  enum class Kind : uint8_t { start, progress, done, failed };
  uint32_t device = 0;
  uint32_t step = 0;   ///< index in the device's steps (as in "steps[3]")
  Kind kind = Kind::start;
  uint64_t bytes = 0;  ///< progress: state bytes moved so far; done: moved in all
  uint64_t total = 0;  ///< progress: bytes to move (0 while unknown)
  double ms = 0;       ///< done, failed: the step's time
  std::string detail;  ///< done: what the step did; failed: the error
  std::string figures;  ///< done: the step's figures (JobStepResult::figures)
};
[[nodiscard]] const char* to_string(JobEvent::Kind k) noexcept;

struct DeviceOutcome {
  std::string name;
  size_t steps_total = 0;
  size_t steps_ok = 0;
  uint64_t state_bytes = 0;  ///< moved by its snapshot and restore steps
  double ms = 0;
  enum class Result : uint8_t { ok, failed, cancelled } result = Result::ok;
  std::optional<uint32_t> failed_step;
  std::string error;
};

struct JobOutcome {
  std::vector<DeviceOutcome> devices;
  double ms = 0;
  [[nodiscard]] bool ok() const;
};

}  // namespace vufront::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::JobEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::JobOutcome)

namespace vufront::actors {

using job_coordinator_actor = caf::typed_actor<
    /// Starts the runners; answered with the outcome when all have ended.
    caf::replies_to<job_run_atom>::with<JobOutcome>,
    /// Cancels transfers in progress and every device's remaining steps.
    caf::reacts_to<cancel_atom>,
    /// From runners and relays: a step started, progressed, ended.
    caf::reacts_to<job_event_atom, JobEvent>,
    /// From a runner: (device, barrier, timeout ms); answered when the
    /// passage opens ("" or a note naming who left instead of arriving), or
    /// with an error (timeout naming who is missing, cancelled).
    caf::replies_to<barrier_atom, uint32_t, std::string, uint32_t>::with<std::string>,
    /// To itself: a barrier wait's deadline (device, barrier, passage).
    caf::reacts_to<barrier_timeout_atom, uint32_t, std::string, uint64_t>,
    /// From a runner: the device actor it now drives (for cancel).
    caf::reacts_to<job_device_atom, uint32_t, caf::actor_addr>,
    /// From a runner: it has ended (after its last event).
    caf::reacts_to<runner_done_atom, uint32_t>,
    /// To itself: redraw a live view (elapsed times move on).
    caf::reacts_to<caf::tick_atom>>;

}  // namespace vufront::actors
