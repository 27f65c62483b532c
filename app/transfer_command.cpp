#include "app/transfer_command.hpp"

#include <algorithm>
#include <iostream>

#include "actors/progress_line.hpp"
#include "actors/system.hpp"
#include "ops/cancel_on_signal.hpp"
#include "ops/transfer_report.hpp"

namespace vufront::app {

namespace {

/// "  snapshot  [####....]  12.0 MiB / 64.0 MiB  1.2 s  52.1 MiB/s", cut to
/// the terminal's width.
actors::ProgressRender progress_render(const std::string& label) {
  return [label](uint64_t done, uint64_t total, uint64_t us) {
    std::string line = "  " + label + "  " + ops::progress_bar(done, total, 24, us / 100000) + "  " +
                       ops::format_bytes(done) + (total ? " / " + ops::format_bytes(total) : "") + "  " +
                       ops::format_duration_us(us) + "  " + ops::format_rate(done, us);
    const unsigned cols = ops::terminal_columns();
    if (line.size() >= cols)
      line.resize(cols - 1);
    return line;
  };
}

}  // namespace

int run_transfer_command(const TransferRun& run) {
  using std::chrono::milliseconds;
  const std::string prefix = "vufront " + run.command + ": ";
  ops::CancelOnSignal interrupt;  // before the actor system: its threads inherit the mask
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  actors::DeviceConfig dc;
  dc.socket = run.socket;
  auto short_wait = std::min(run.timeout, milliseconds(5000));
  dc.connect_timeout = short_wait;
  dc.timeouts.request = short_wait;
  nlohmann::json out = run.json_extra;
  out["socket"] = run.socket;
  out["device"] = name(run.negotiate.kind);
  auto fail = [&](const std::string& step, const Error& e) {
    std::string msg = ops::step_message(e, step);
    std::cerr << prefix << msg << '\n';
    if (run.json) {
      out["ok"] = false;
      out["step"] = step;
      out["error"] = msg;
      std::cout << out.dump(2) << '\n';
    }
    return 1;
  };
  Result<actors::SnapshotInfo> result = make_error(errc::bad_state, run.command, "not run");
  {
    actors::DeviceSession session(sys, dc);
    interrupt.on_signal([&session] { session.cancel(); });
    // The device's own deadlines (connect, each request, the transfer) fire
    // first; this one only bounds the wait for its answer.
    session.set_timeout(run.timeout + 2 * short_wait + milliseconds(10000));
    auto info = session.negotiate(run.negotiate);
    if (!info) {
      interrupt.on_signal(nullptr);
      return fail("negotiate", info.error());
    }
    // A Ctrl-C while connecting found no transfer to cancel: the session's
    // cancel is sticky, so the transfer fails "cancelled before the transfer began".
    caf::actor line;
    if (ops::stderr_is_terminal())
      line = actors::spawn_progress_line(sys, progress_render(run.command));
    result = run.transfer(session, line);
    actors::close_progress_line(sys, line);
    interrupt.on_signal(nullptr);
  }
  if (!result)
    return fail(run.command, result.error());
  if (run.json) {
    out.update(ops::transfer_json(*result));
    out["ok"] = true;
    std::cout << out.dump(2) << '\n';
  } else {
    std::cout << run.summary(*result) << '\n';
  }
  return 0;
}

}  // namespace vufront::app
