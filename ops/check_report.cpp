#include "ops/check_report.hpp"

#include <cstdio>

namespace vufront::ops {

void print_step(std::ostream& out, const CheckStep& s) {
  char head[96];
  std::snprintf(head, sizeof head, "  %-5s %-20s %9.1f ms  ", s.ok ? "ok" : "FAIL", s.name.c_str(),
                s.ms);
  out << head << s.detail << '\n';
  for (const auto& e : s.events)
    out << "        event " << e << '\n';
  out << std::flush;
}

nlohmann::json steps_json(const std::vector<CheckStep>& steps) {
  nlohmann::json j;
  bool ok = !steps.empty();
  j["steps"] = nlohmann::json::array();
  for (const auto& s : steps) {
    ok = ok && s.ok;
    nlohmann::json step = {{"name", s.name}, {"ok", s.ok}, {"ms", s.ms}, {"detail", s.detail},
                           {"events", s.events}};
    j["steps"].push_back(std::move(step));
  }
  j["ok"] = ok;
  return j;
}

}  // namespace vufront::ops
