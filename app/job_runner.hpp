#pragma once
// Running a job (`vufront job`) with actors:
//
//   job_main ──run──> coordinator (detached; owns the JobDisplay and the BarrierBook)
//                       │ spawns, monitors
//                       ├──> runner dev0 (detached, blocking: one Checker = one
//                       ├──> runner dev1   DeviceSession + guest driver, its steps
//                       :                  one by one, each with its deadline)
//   runner ──job_event──> coordinator ──> display
//   runner ──barrier (request)──> coordinator: answered when the passage opens
//   transfer progress: device ──progress──> relay (per step) ──job_event──> coordinator
//   Ctrl-C: signal thread ──cancel──> coordinator ──cancel──> devices, runners;
//           waiting barriers fail with "cancelled"
//
// A device that fails stops its own steps; the coordinator takes it out of
// the barriers, so the others go on (the release is noted in their barrier
// step). The coordinator answers `run` with the outcome when every runner
// has ended. No shared mutexes: everything crosses threads as messages.

#include <chrono>
#include <memory>
#include <string>

#include <caf/actor_addr.hpp>
#include <caf/actor_system.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.hpp"
#include "ops/job_display.hpp"
#include "ops/job_file.hpp"

// The app's atoms, in a block after the actor layer's.
CAF_BEGIN_TYPE_ID_BLOCK(vufront_app, caf::id_block::vufront::end)
  CAF_ADD_ATOM(vufront_app, vufront::app, run_atom, "jobrun")
  CAF_ADD_ATOM(vufront_app, vufront::app, job_event_atom, "jobevent")
  CAF_ADD_ATOM(vufront_app, vufront::app, barrier_atom, "barrier")
  CAF_ADD_ATOM(vufront_app, vufront::app, barrier_timeout_atom, "barriertmo")
  CAF_ADD_ATOM(vufront_app, vufront::app, device_atom, "jobdevice")
  CAF_ADD_ATOM(vufront_app, vufront::app, runner_done_atom, "runnerdone")
CAF_END_TYPE_ID_BLOCK(vufront_app)

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::ops::JobEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::ops::JobOutcome)

namespace vufront::app {

using ops::Job;
using ops::JobDisplay;
using ops::JobEvent;
using ops::JobOutcome;

using job_coordinator_actor = caf::typed_actor<
    /// Starts the runners; answered with the outcome when all have ended.
    caf::replies_to<run_atom>::with<JobOutcome>,
    /// Cancels transfers in progress and every device's remaining steps.
    caf::reacts_to<actors::cancel_atom>,
    /// From runners and relays: a step started, progressed, ended.
    caf::reacts_to<job_event_atom, JobEvent>,
    /// From a runner: (device, barrier, timeout ms); answered when the
    /// passage opens ("" or a note naming who left instead of arriving), or
    /// with an error (timeout naming who is missing, cancelled).
    caf::replies_to<barrier_atom, uint32_t, std::string, uint32_t>::with<std::string>,
    /// To itself: a barrier wait's deadline (device, barrier, passage).
    caf::reacts_to<barrier_timeout_atom, uint32_t, std::string, uint64_t>,
    /// From a runner: the device actor it now drives (for cancel).
    caf::reacts_to<device_atom, uint32_t, caf::actor_addr>,
    /// From a runner: it has ended (after its last event).
    caf::reacts_to<runner_done_atom, uint32_t>,
    /// To itself: redraw a live display (elapsed times move on).
    caf::reacts_to<caf::tick_atom>>;

/// Spawns the coordinator (detached: it writes the display). `display`
/// must refer to `job`.
[[nodiscard]] job_coordinator_actor spawn_job_coordinator(caf::actor_system& sys,
                                                          std::shared_ptr<const Job> job,
                                                          std::unique_ptr<JobDisplay> display);

}  // namespace vufront::app
