#pragma once
// The runner of one device of a job: a detached, blocking actor that runs the
// device's steps (JobPlan::make_steps, job_plan.hpp) one by one, each within
// its deadline, and tells the coordinator (job_coordinator.hpp) about each:
// start, progress (through a relay per transfer step), done or failed. It
// stops at the first failure or at the coordinator's cancel, and says so with
// runner_done_atom after its last event, the device session gone.

#include <cstdint>
#include <memory>

#include <caf/blocking_actor.hpp>

#include "actors/job_messages.hpp"
#include "actors/job_plan.hpp"

namespace vufront::actors {

/// Runs device `index` of `plan` for `coord`. Spawned by the coordinator,
/// detached (the steps block) and monitored.
void job_device_runner(caf::blocking_actor* self, std::shared_ptr<const JobPlan> plan,
                       uint32_t index, job_coordinator_actor coord);

}  // namespace vufront::actors
