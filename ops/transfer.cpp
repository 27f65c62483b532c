#include "ops/transfer.hpp"

#include <algorithm>
#include <iostream>

#include "actors/progress_line.hpp"
#include "ops/transfer_report.hpp"
#include "ops/units.hpp"

namespace vufront::ops {

namespace {

/// progress_text() (ops/transfer_report.hpp), cut to the terminal's width.
actors::ProgressRender progress_render(const std::string& label) {
  return [label](uint64_t done, uint64_t total, uint64_t us) {
    return progress_text(label, done, total, us, terminal_columns());
  };
}

}  // namespace

TransferOutcome run_transfer(caf::actor_system& sys, const TransferSpec& spec,
                             CancelOnSignal& interrupt) {
  using std::chrono::milliseconds;
  actors::DeviceConfig dc;
  dc.socket = spec.socket;
  auto short_wait = std::min(spec.timeout, milliseconds(5000));
  dc.connect_timeout = spec.wait_for_backend ? spec.timeout : short_wait;
  dc.wait_for_backend = spec.wait_for_backend;
  dc.timeouts.request = short_wait;
  actors::DeviceSession session(sys, dc);
  interrupt.on_signal([&session] { session.cancel(); });
  // The device's own deadlines (connect, each request, the transfer: no
  // progress for spec.timeout) fire first; this one only bounds the wait
  // for its answer.
  session.set_timeout(dc.connect_timeout + actors::max_transfer_time + short_wait +
                      milliseconds(10000));
  auto info = session.negotiate(spec.negotiate);
  if (!info) {
    interrupt.on_signal(nullptr);
    return {"negotiate", std::move(info).error()};
  }
  if (!info->kind_doubt.empty())
    std::cerr << "vufront " << spec.command << ": warning: " << info->kind_doubt << "\n";
  // A Ctrl-C while connecting found no transfer to cancel: the session's
  // cancel is sticky, so the transfer fails "cancelled before the transfer began".
  caf::actor line;
  if (stderr_is_terminal())
    line = actors::spawn_progress_line(sys, progress_render(spec.command));
  auto result = spec.transfer(session, line);
  actors::close_progress_line(sys, line);
  interrupt.on_signal(nullptr);
  std::string failed = result ? "" : spec.command;
  return {std::move(failed), std::move(result)};
}

}  // namespace vufront::ops
