#include "app/transfer_command.hpp"

#include <iostream>

#include "actors/system.hpp"
#include "app/backend_wait.hpp"
#include "base/log.hpp"
#include "ops/cancel_on_signal.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::app {

int run_transfer_command(const TransferRun& run) {
  const std::string prefix = "vufront " + run.spec.command + ": ";
  ops::CancelOnSignal interrupt;  // before the actor system: its threads inherit the mask
  if (run.on_quit)
    interrupt.on_quit(run.on_quit);
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  nlohmann::json out = run.json_extra;
  out["socket"] = run.spec.socket;
  out["device"] = name(run.spec.negotiate.kind);
  if (run.spec.wait_for_backend)
    if (auto note = backend_wait_note(run.spec.socket, run.spec.timeout); !note.empty())
      log::info(note);
  auto outcome = ops::run_transfer(sys, run.spec, interrupt);
  if (!outcome.result) {
    std::string msg = ops::step_message(outcome.result.error(), outcome.failed_step);
    std::cerr << prefix << msg << '\n';
    if (run.json) {
      out["ok"] = false;
      out["step"] = outcome.failed_step;
      out["error"] = msg;
      std::cout << out.dump(2) << '\n';
    }
    return interrupt.interrupted() ? ops::CancelOnSignal::exit_interrupted : 1;
  }
  if (run.json) {
    out.update(ops::transfer_json(*outcome.result, run.spec.negotiate.kind));
    out["ok"] = true;
    std::cout << out.dump(2) << '\n';
  } else {
    std::cout << run.summary(*outcome.result) << '\n';
  }
  return 0;
}

}  // namespace vufront::app
