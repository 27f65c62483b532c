#pragma once
// A job file as the job's actors run it (actors/job_plan.hpp): the plan of a
// Job, and each device's steps through a Checker (activate, sleep, wake,
// reset, check, snapshot, restore) or its runner (wait, barrier), each within
// the step's deadline. No actors here: actors/job_coordinator.* and
// actors/job_device_runner.* run it.

#include <memory>

#include "actors/job_plan.hpp"
#include "ops/job_file.hpp"

namespace vufront::ops {

/// The plan of `job`: its devices, their steps' names and barriers, and a
/// maker of each device's steps (a Checker for the device, made on its
/// runner's thread).
[[nodiscard]] std::shared_ptr<const actors::JobPlan> job_plan(std::shared_ptr<const Job> job);

}  // namespace vufront::ops
