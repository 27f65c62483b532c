#include "app/job_command.hpp"

#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/job_coordinator.hpp"
#include "actors/system.hpp"
#include "ops/cancel_on_signal.hpp"
#include "ops/job_display.hpp"
#include "ops/job_file.hpp"
#include "ops/job_steps.hpp"
#include "ops/units.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::app {

int job_main(const JobCommandOptions& opts) {
  auto loaded = ops::load_job(opts.file);
  if (!loaded) {
    std::cerr << "vufront job: " << opts.file << ": " << loaded.error().detail << '\n';
    return 2;
  }
  auto job = std::make_shared<const ops::Job>(std::move(loaded).value());
  ops::JobDisplay::Mode mode = ops::JobDisplay::Mode::json;
  if (opts.no_progress)
    mode = ops::JobDisplay::Mode::none;
  else if (!opts.json_progress && ops::stdout_is_terminal() && ops::stderr_is_terminal())
    mode = ops::JobDisplay::Mode::terminal;

  ops::CancelOnSignal interrupt;  // before the actor system: its threads inherit the mask
  interrupt.on_quit([job] {
    std::vector<std::string> snapshots;
    for (const auto& d : job->devices)
      for (const auto& s : d.steps)
        if (s.kind == ops::JobStepKind::snapshot)
          snapshots.push_back(s.path);
    const std::string said = ops::remove_partial_snapshots(snapshots);
    return said + (said.empty() ? "" : "; ") +
           "devices were left where their steps stopped (a back-end mid-restore may hold part "
           "of a state)";
  });
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  auto display = std::make_unique<ops::JobDisplay>(mode, *job, std::cout, std::cerr, ops::terminal_columns());
  auto coord = actors::spawn_job_coordinator(sys, ops::job_plan(job), std::move(display));
  interrupt.on_signal([coord] { caf::anon_send(coord, actors::cancel_atom_v); });

  std::optional<actors::JobOutcome> outcome;
  std::string failure;
  {
    caf::scoped_actor self{sys};
    // Every step has its deadline; this one only guards against a lost answer.
    self->request(coord, job->deadline() + std::chrono::seconds(60), actors::job_run_atom_v)
        .receive([&](actors::JobOutcome& o) { outcome = std::move(o); },
                 [&](caf::error& e) { failure = actors::from_caf(e, "job").message(); });
    if (!outcome)
      caf::anon_send(coord, actors::cancel_atom_v);
    interrupt.on_signal(nullptr);
    self->send_exit(coord, caf::exit_reason::user_shutdown);
  }
  if (!outcome) {
    std::cerr << "vufront job: " << failure << '\n';
    return interrupt.interrupted() ? ops::CancelOnSignal::exit_interrupted : 1;
  }
  for (size_t i = 0; i < outcome->devices.size(); ++i) {
    const auto& d = outcome->devices[i];
    if (d.result == actors::DeviceOutcome::Result::ok)
      continue;
    std::cerr << "vufront job: " << d.name;
    if (d.failed_step && *d.failed_step < job->devices[i].steps.size())
      std::cerr << ": steps[" << *d.failed_step << "] "
                << name(job->devices[i].steps[*d.failed_step].kind);
    std::cerr << ": " << d.error << '\n';
  }
  if (interrupt.interrupted())
    return ops::CancelOnSignal::exit_interrupted;
  return outcome->ok() ? 0 : 1;
}

}  // namespace vufront::app
