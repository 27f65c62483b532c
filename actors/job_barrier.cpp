#include "actors/job_barrier.hpp"

#include <algorithm>

namespace vufront::actors {

BarrierBook::BarrierBook(const JobPlan& plan) {
  for (uint32_t d = 0; d < plan.devices.size(); ++d) {
    names_.push_back(plan.devices[d].name);
    for (const auto& s : plan.devices[d].steps) {
      if (!s.barrier)
        continue;
      auto& u = users_[*s.barrier];
      if (std::find(u.begin(), u.end(), d) == u.end())
        u.push_back(d);
    }
  }
}

bool BarrierBook::open(const Passage& p) const {
  auto users = users_.find(p.first);
  auto waiting = waiting_.find(p);
  for (uint32_t d : users->second) {
    bool arrived = waiting != waiting_.end() && waiting->second.count(d) != 0;
    if (!arrived && left_.count(d) == 0)
      return false;
  }
  return true;
}

std::vector<BarrierBook::Release> BarrierBook::release(const Passage& p) {
  std::string without;
  for (uint32_t d : users_.at(p.first)) {
    auto l = left_.find(d);
    if (l != left_.end() && waiting_[p].count(d) == 0)
      without += (without.empty() ? "" : ", ") + names_[d] + " (" + l->second + ")";
  }
  std::string note = without.empty() ? "" : "released without " + without;
  std::vector<Release> out;
  for (uint32_t d : waiting_[p])
    out.push_back({d, note});
  waiting_.erase(p);
  return out;
}

std::vector<BarrierBook::Release> BarrierBook::arrive(uint32_t device, const std::string& name) {
  if (users_.count(name) == 0 || left_.count(device) != 0)
    return {{device, ""}};  // not a barrier of the job's devices: nothing to wait for
  Passage p{name, reached_[{device, name}]++};
  waiting_[p].insert(device);
  return open(p) ? release(p) : std::vector<Release>{};
}

std::vector<BarrierBook::Release> BarrierBook::leave(uint32_t device, const std::string& why) {
  if (left_.count(device) != 0)
    return {};
  left_[device] = why;
  for (auto& [p, set] : waiting_)
    set.erase(device);
  std::vector<Release> out;
  std::vector<Passage> opened;
  for (const auto& [p, set] : waiting_)
    if (!set.empty() && open(p))
      opened.push_back(p);
  for (const auto& p : opened)
    for (auto& r : release(p))
      out.push_back(std::move(r));
  return out;
}

std::pair<std::string, size_t> BarrierBook::waiting_at(uint32_t device) const {
  for (const auto& [p, set] : waiting_)
    if (set.count(device) != 0)
      return p;
  return {"", 0};
}

std::vector<std::string> BarrierBook::missing_for(uint32_t device) const {
  auto p = waiting_at(device);
  if (p.first.empty())
    return {};
  std::vector<std::string> out;
  const auto& set = waiting_.at(p);
  for (uint32_t d : users_.at(p.first))
    if (set.count(d) == 0 && left_.count(d) == 0)
      out.push_back(names_[d]);
  return out;
}

}  // namespace vufront::actors
