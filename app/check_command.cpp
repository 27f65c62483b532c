#include "app/check_command.hpp"

#include <cstdio>
#include <iostream>

#include "actors/system.hpp"

namespace vufront::app {

void print_step(std::ostream& out, const ops::CheckStep& s) {
  char head[96];
  std::snprintf(head, sizeof head, "  %-5s %-20s %9.1f ms  ", s.ok ? "ok" : "FAIL", s.name.c_str(),
                s.ms);
  out << head << s.detail << '\n' << std::flush;
}

nlohmann::json steps_json(const std::vector<ops::CheckStep>& steps) {
  nlohmann::json j;
  bool ok = !steps.empty();
  j["steps"] = nlohmann::json::array();
  for (const auto& s : steps) {
    ok = ok && s.ok;
    j["steps"].push_back({{"name", s.name}, {"ok", s.ok}, {"ms", s.ms}, {"detail", s.detail}});
  }
  j["ok"] = ok;
  return j;
}

int check_main(ops::CheckOptions opts) {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  bool json = opts.json;
  if (!json) {
    std::cout << "vufront check " << opts.socket << " (" << name(opts.device) << ", "
              << opts.queues << (opts.device == DeviceKind::net ? " queue pair(s), " : " queue(s), ")
              << (opts.packed ? "packed" : "split") << " rings)\n";
    opts.on_step = [](const ops::CheckStep& s) { print_step(std::cout, s); };
  }
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
    auto j = steps_json(steps);
    j["socket"] = opts.socket;
    j["device"] = name(opts.device);
    std::cout << j.dump(2) << '\n';
  } else {
    std::printf("result: %s (%zu steps, %.1f ms)\n", ok ? "ok" : "FAILED", steps.size(), total);
  }
  return ok ? 0 : 1;
}

}  // namespace vufront::app
