#include "app/probe_command.hpp"

#include <iostream>

#include "app/backend_wait.hpp"
#include "base/log.hpp"
#include "ops/probe_report.hpp"

namespace vufront::app {

int probe_main(const ops::ProbeOptions& opts) {
  if (opts.wait_for_backend)
    if (auto note = backend_wait_note(opts.socket, opts.timeout); !note.empty())
      log::info(note);
  auto result = ops::run_probe(opts);
  if (!result) {
    std::cerr << "vufront probe: " << result.error().message() << "\n";
    if (opts.json)
      std::cout << ops::probe_failure_json(opts, result.error()).dump(2) << "\n";
    return 1;
  }
  if (!result->kind_doubt.empty())
    std::cerr << "vufront probe: warning: " << result->kind_doubt << "\n";
  if (opts.json)
    std::cout << ops::probe_json(*result).dump(2) << "\n";
  else
    ops::print_probe_text(std::cout, *result);
  return 0;
}

}  // namespace vufront::app
