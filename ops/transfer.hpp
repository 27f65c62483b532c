#pragma once
// One state transfer through a device of its own (`vufront snapshot`,
// `vufront restore`): connect and negotiate, then the transfer, with a
// progress line on stderr when it is a terminal; Ctrl-C cancels it. How it
// is reported is in transfer_report.hpp.

#include <chrono>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/messages.hpp"
#include "actors/session.hpp"
#include "base/error.hpp"
#include "ops/cancel_on_signal.hpp"

namespace vufront::ops {

struct TransferSpec {
  std::string command;  ///< "snapshot" / "restore": the operation (and the step's name)
  std::string socket;
  actors::NegotiateOptions negotiate;
  /// The transfer's deadline; connecting and each request get at most 5 s of it.
  std::chrono::milliseconds timeout{60000};
  /// Connecting waits for the socket to appear, up to `timeout`, instead of
  /// failing at once when nothing (or no socket) is at the path.
  bool wait_for_backend = false;
  /// The transfer itself, given the progress line (an invalid handle when
  /// stderr is not a terminal).
  std::function<Result<actors::SnapshotInfo>(actors::DeviceSession&, const caf::actor& progress)>
      transfer;
};

struct TransferOutcome {
  /// The step that failed: "negotiate" or the command; empty on success.
  std::string failed_step;
  Result<actors::SnapshotInfo> result;
};

/// Runs `spec` on a device of its own in `sys`: negotiate, then the
/// transfer. The first signal `interrupt` catches cancels it (a signal while
/// connecting makes the transfer fail "cancelled before the transfer
/// began"). The device is gone when this returns.
[[nodiscard]] TransferOutcome run_transfer(caf::actor_system& sys, const TransferSpec& spec,
                                           CancelOnSignal& interrupt);

}  // namespace vufront::ops
