#pragma once
// One `vufront snapshot` / `vufront restore` run, from the command line to
// the summary: the device, the transfer, its progress and Ctrl-C.

#include <chrono>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "actors/session.hpp"
#include "base/error.hpp"

namespace vufront::app {

/// One `vufront snapshot` / `vufront restore` run: a device for `socket`,
/// negotiated with `negotiate`, then `transfer` (given the progress line, or
/// an invalid handle when stderr is not a terminal). Prints the summary line
/// (or one JSON object with `json_extra` merged in) on stdout, or one line on
/// stderr naming the step that failed ("vufront snapshot: SET_DEVICE_STATE_FD:
/// ..."). Ctrl-C cancels the transfer. Returns the exit status (0 or 1).
struct TransferRun {
  std::string command;  ///< "snapshot" / "restore": the operation and the message prefix
  std::string socket;
  actors::NegotiateOptions negotiate;
  std::chrono::milliseconds timeout{60000};
  bool json = false;
  std::function<Result<actors::SnapshotInfo>(actors::DeviceSession&, const caf::actor& progress)>
      transfer;
  /// The text line for a successful transfer.
  std::function<std::string(const actors::SnapshotInfo&)> summary;
  nlohmann::json json_extra = nlohmann::json::object();
};
[[nodiscard]] int run_transfer_command(const TransferRun& run);

}  // namespace vufront::app
