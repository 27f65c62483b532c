#include "ops/job_steps.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ops/checker.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::ops {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using actors::JobStepResult;

/// How much later than the step's deadline the runner stops waiting for the
/// device's answer (so the device's own, more precise error comes first).
constexpr milliseconds guard{2000};

std::string path_key(const std::string& p) {
  return std::filesystem::path(p).lexically_normal().string();
}

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
  o.wait_for_backend = d.wait_for_backend;
  o.reconnect = d.reconnect;
  o.inflight = d.reconnect.enabled;  // a restarted back-end resubmits what was in flight
  o.report_events = true;
  return o;
}

/// One device's steps: a Checker (one DeviceSession and guest driver at a
/// time) for the device steps; waits and barriers through the runner.
class CheckerSteps final : public actors::JobDeviceSteps {
public:
  CheckerSteps(caf::actor_system& sys, std::shared_ptr<const Job> job, uint32_t index,
               actors::JobStepHost& host)
      : job_(std::move(job)),
        dev_(job_->devices[index]),
        host_(host),
        checker_(sys, with_session_hook(check_options(dev_))) {}

  JobStepResult perform(uint32_t i) override {
    const JobStep& s = dev_.steps[i];
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
      case JobStepKind::snapshot: return snapshot(s);
      case JobStepKind::restore: return restore(s);
      case JobStepKind::migrate: return migrate(s);
      case JobStepKind::wait:
        if (!host_.wait(s.wait))
          return {false, "cancelled", 0};
        return {true, "waited " + std::to_string(s.wait.count()) + " ms", 0};
      case JobStepKind::barrier: return host_.barrier(s.barrier, s.timeout);
    }
    return {false, "unknown step", 0};
  }

private:
  CheckOptions with_session_hook(CheckOptions o) {
    o.on_session = [this](actors::DeviceSession& s) { host_.drives(s.device().address()); };
    return o;
  }

  /// The failed checker step's error, named by the request that failed
  /// ("snapshot: SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ...").
  [[nodiscard]] std::string failure(const CheckStep& step, const JobStep& s) const {
    return step.error ? step_message(*step.error, name(s.kind)) : step.detail;
  }

  /// Runs checker steps (each returns false on failure) within one
  /// deadline; the outcome joins their details, or is the failed one's.
  JobStepResult checker_steps(const JobStep& s, const std::vector<std::function<bool()>>& steps) {
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
    JobStepResult out{checker_.ok(), "", 0};
    const auto& recorded = checker_.steps();
    std::string events;
    for (size_t i = first; i < recorded.size(); ++i) {
      for (const auto& e : recorded[i].events)
        events += (events.empty() ? "" : "; ") + e;
      if (!out.ok && recorded[i].ok)
        continue;
      out.detail += (out.detail.empty() ? "" : "; ") +
                    (recorded[i].ok ? recorded[i].detail : failure(recorded[i], s));
    }
    if (!events.empty())
      out.detail += " [" + events + "]";
    return out;
  }

  JobStepResult snapshot(const JobStep& s) {
    Checker& c = checker_;
    actors::SnapshotOptions o;
    o.path = s.path;
    o.max_bytes = s.max_bytes;
    o.replace = s.force;
    o.timeout_ms = static_cast<uint32_t>(s.timeout.count());
    o.progress = host_.progress_relay();
    // The transfer keeps its own deadline (no progress for `timeout`, at most
    // max_transfer_time in all); this one bounds the answer.
    c.set_timeout(actors::max_transfer_time + 2 * dev_.timeout + actors::job_answer_slack);
    if (!c.snapshot(o))
      return {false, failure(c.steps().back(), s), 0};
    saved_rounds_[path_key(s.path)] = c.written_rounds();
    return {true, c.steps().back().detail, c.last_transfer().state_bytes};
  }

  JobStepResult restore(const JobStep& s) {
    Checker& c = checker_;
    actors::RestoreOptions o;
    o.path = s.path;
    o.timeout_ms = static_cast<uint32_t>(s.timeout.count());
    o.progress = host_.progress_relay();
    c.set_timeout(actors::max_transfer_time + 2 * dev_.timeout + actors::job_answer_slack);
    if (!c.restore(s.socket, o))
      return {false, failure(c.steps().back(), s), 0};
    // The disk is now the snapshot's: what was written by then (when
    // this device took it) is what a check may read back.
    auto saved = saved_rounds_.find(path_key(s.path));
    c.set_written_rounds(saved != saved_rounds_.end() ? saved->second : std::vector<unsigned>{});
    return {true, c.steps().back().detail, c.last_transfer().state_bytes};
  }

  JobStepResult migrate(const JobStep& s) {
    Checker& c = checker_;
    MigrateOptions o;
    o.socket = s.socket;
    o.threshold_pages = s.threshold_pages;
    o.max_rounds = s.max_rounds;
    o.io = s.io;
    o.chunk_pages = s.chunk_pages;
    o.state_dir = s.state_dir;
    o.timeout_ms = static_cast<uint32_t>(s.timeout.count());
    o.progress = host_.progress_relay();
    c.set_timeout(actors::max_transfer_time + 2 * dev_.timeout + actors::job_answer_slack);
    if (!c.migrate(o))
      return {false, failure(c.steps().back(), s), 0};
    return {true, c.steps().back().detail, c.last_migration().state_bytes, c.migration_json()};
  }

  std::shared_ptr<const Job> job_;
  const JobDevice& dev_;
  actors::JobStepHost& host_;
  Checker checker_;
  bool negotiated_ = false;
  /// blk rounds on the disk when this device saved each snapshot file.
  std::map<std::string, std::vector<unsigned>> saved_rounds_;
};

}  // namespace

std::shared_ptr<const actors::JobPlan> job_plan(std::shared_ptr<const Job> job) {
  auto plan = std::make_shared<actors::JobPlan>();
  for (const auto& d : job->devices) {
    actors::JobPlan::Device pd;
    pd.name = d.name;
    for (const auto& s : d.steps) {
      actors::JobPlan::Step ps;
      ps.name = name(s.kind);
      if (s.kind == JobStepKind::barrier)
        ps.barrier = s.barrier;
      pd.steps.push_back(std::move(ps));
    }
    plan->devices.push_back(std::move(pd));
  }
  plan->make_steps = [job](caf::actor_system& sys, uint32_t d, actors::JobStepHost& host) {
    return std::make_unique<CheckerSteps>(sys, job, d, host);
  };
  return plan;
}

}  // namespace vufront::ops
