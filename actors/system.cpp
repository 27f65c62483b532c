#include "actors/system.hpp"

#include <cstddef>

#include "actors/error.hpp"

namespace vufront::actors {

SystemConfig::SystemConfig() {
  set("scheduler.max-threads", size_t{2});
  set("work-stealing.moderate-poll-attempts", size_t{0});
  add_error_category(error_category, render_error);
}

TestSystemConfig::TestSystemConfig() {
  set("scheduler.policy", caf::atom("testing"));
  add_error_category(error_category, render_error);
}

}  // namespace vufront::actors
