#include "app/check_command.hpp"

#include <cstdio>
#include <iostream>

#include "actors/system.hpp"
#include "app/backend_wait.hpp"
#include "base/log.hpp"
#include "ops/check_report.hpp"

namespace vufront::app {

int check_main(ops::CheckOptions opts) {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  bool json = opts.json;
  if (!json) {
    std::cout << "vufront check " << opts.socket << " (" << name(opts.device) << ", "
              << opts.queues << (opts.device == DeviceKind::net ? " queue pair(s), " : " queue(s), ")
              << (opts.packed ? "packed" : "split") << " rings)\n";
    opts.on_step = [](const ops::CheckStep& s) { ops::print_step(std::cout, s); };
  }
  if (opts.wait_for_backend)
    if (auto note = backend_wait_note(opts.socket, opts.timeout); !note.empty())
      log::info(note);
  bool ok = false;
  std::vector<ops::CheckStep> steps;
  {
    ops::Checker checker(sys, opts);
    ok = checker.run();
    steps = checker.steps();
  }
  double total = 0;
  for (const auto& s : steps)
    total += s.ms;
  if (json) {
    auto j = ops::steps_json(steps);
    j["socket"] = opts.socket;
    j["device"] = name(opts.device);
    std::cout << j.dump(2) << '\n';
  } else {
    std::printf("result: %s (%zu steps, %.1f ms)\n", ok ? "ok" : "FAILED", steps.size(), total);
  }
  return ok ? 0 : 1;
}

}  // namespace vufront::app
