#pragma once
// BarrierBook: who waits at which barrier of a job, and who may go on. Plain
// data, driven by the job's coordinator actor (one thread), tested alone
// (tests/ops/test_job_report.cpp, with the barriers of a job file).
//
// The k-th time a device reaches barrier N it waits at passage (N, k). A
// passage opens when every device that uses N has reached it or has left
// the job (failed, timed out, cancelled); the devices waiting there are then
// released, with a note naming those that left instead of arriving.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "actors/job_plan.hpp"

namespace vufront::actors {

class BarrierBook {
public:
  BarrierBook() = default;
  /// The barriers of `plan`: who uses which.
  explicit BarrierBook(const JobPlan& plan);

  struct Release {
    uint32_t device = 0;
    /// "" when everyone arrived, else "released without disk1 (failed)".
    std::string note;
  };

  /// `device` reaches its next passage of `name`. Returns the devices this
  /// opens (itself included), or nothing while others are still missing.
  [[nodiscard]] std::vector<Release> arrive(uint32_t device, const std::string& name);
  /// `device` will not reach any barrier any more (`why`: "failed at
  /// steps[2]", "timed out at barrier \"x\""); if it was waiting it waits no
  /// more. Returns the devices its leaving releases. Idempotent.
  [[nodiscard]] std::vector<Release> leave(uint32_t device, const std::string& why);

  /// The devices `device` is waiting for (names), empty when not waiting.
  [[nodiscard]] std::vector<std::string> missing_for(uint32_t device) const;
  /// The passage `device` waits at: (name, k); name empty when not waiting.
  [[nodiscard]] std::pair<std::string, size_t> waiting_at(uint32_t device) const;

private:
  using Passage = std::pair<std::string, size_t>;
  [[nodiscard]] bool open(const Passage& p) const;
  [[nodiscard]] std::vector<Release> release(const Passage& p);

  std::vector<std::string> names_;                        // device names
  std::map<std::string, std::vector<uint32_t>> users_;    // barrier -> devices using it
  std::map<std::pair<uint32_t, std::string>, size_t> reached_;  // passages begun
  std::map<Passage, std::set<uint32_t>> waiting_;
  std::map<uint32_t, std::string> left_;                  // device -> why
};

}  // namespace vufront::actors
