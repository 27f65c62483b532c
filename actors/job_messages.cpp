#include "actors/job_messages.hpp"

#include <algorithm>

namespace vufront::actors {

const char* to_string(JobEvent::Kind k) noexcept {
  switch (k) {
    case JobEvent::Kind::start: return "start";
    case JobEvent::Kind::progress: return "progress";
    case JobEvent::Kind::done: return "done";
    case JobEvent::Kind::failed: return "failed";
  }
  return "?";
}

bool JobOutcome::ok() const {
  return !devices.empty() && std::all_of(devices.begin(), devices.end(), [](const auto& d) {
    return d.result == DeviceOutcome::Result::ok;
  });
}

}  // namespace vufront::actors
