#include "backend/faults.hpp"

#include <unistd.h>

namespace vufront::backend {

FaultAction Faults::on_request(uint32_t request) {
  const uint32_t n = ++seen_[request];
  FaultAction a;
  for (const FaultSpec& f : specs_) {
    if (f.request != request)
      continue;
    switch (f.kind) {
      case FaultKind::delay: a.delay_ms += f.delay_ms; break;
      case FaultKind::close: a.close = a.close || f.nth == n; break;
      case FaultKind::crash: a.crash = a.crash || f.nth == n; break;
    }
  }
  return a;
}

void crash_now() {
  _exit(134);
}

}  // namespace vufront::backend
