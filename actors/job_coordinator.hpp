#pragma once
// Running a job (`vufront job`, docs/jobs.md) with actors:
//
//   job_main ──run──> coordinator (detached; owns the JobView and the BarrierBook)
//                       │ spawns, monitors
//                       ├──> runner dev0 (detached, blocking: the device's
//                       ├──> runner dev1   steps, JobPlan::make_steps, one by
//                       :                  one, each with its deadline)
//   runner ──job_event──> coordinator ──> view
//   runner ──barrier (request)──> coordinator: answered when the passage opens
//   transfer progress: device ──progress──> relay (per step) ──job_event──> coordinator
//   Ctrl-C: signal thread ──cancel──> coordinator ──cancel──> devices, runners;
//           waiting barriers fail with "cancelled"
//
// A device that fails stops its own steps; the coordinator takes it out of
// the barriers, so the others go on (the release is noted in their barrier
// step). The coordinator answers `run` with the outcome when every runner
// has ended. No shared mutexes: everything crosses threads as messages.
//
// The messages are in job_messages.hpp, the runner in job_device_runner.hpp,
// what the actors are given (plan, steps, view) in job_plan.hpp: the ops
// library makes it from a job file (ops/job_steps.hpp).

#include <memory>

#include <caf/actor_system.hpp>

#include "actors/job_messages.hpp"
#include "actors/job_plan.hpp"

namespace vufront::actors {

/// Spawns the coordinator of `plan` (detached: it writes the view).
[[nodiscard]] job_coordinator_actor spawn_job_coordinator(caf::actor_system& sys,
                                                          std::shared_ptr<const JobPlan> plan,
                                                          std::unique_ptr<JobView> view);

}  // namespace vufront::actors
