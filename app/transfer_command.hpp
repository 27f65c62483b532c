#pragma once
// One `vufront snapshot` / `vufront restore` run, from the command line to
// the summary: the transfer (ops/transfer.hpp) in an actor system of its own,
// Ctrl-C, and the output.

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "ops/transfer.hpp"

namespace vufront::app {

/// One `vufront snapshot` / `vufront restore` run: `spec`, then the summary
/// line (or one JSON object with `json_extra` merged in) on stdout, or one
/// line on stderr naming the step that failed ("vufront snapshot:
/// SET_DEVICE_STATE_FD: ..."). Ctrl-C cancels the transfer. Returns the exit
/// status (0 or 1).
struct TransferRun {
  ops::TransferSpec spec;
  bool json = false;
  /// The text line for a successful transfer.
  std::function<std::string(const actors::SnapshotInfo&)> summary;
  nlohmann::json json_extra = nlohmann::json::object();
};
[[nodiscard]] int run_transfer_command(const TransferRun& run);

}  // namespace vufront::app
