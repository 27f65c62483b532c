#pragma once
// `vufront snapshot SOCKET --out FILE`: connects to a back-end, negotiates,
// and saves the back-end's state (negotiated, never activated) into a
// snapshot file (docs/snapshot-format.md). Prints one summary line (bytes,
// checksum, time, throughput) or one JSON object; a progress line on stderr
// when it is a terminal. The file appears only on success: the writer renames
// a complete temporary to FILE, so a failure creates nothing. An existing
// FILE is replaced only with --force. Ctrl-C cancels the transfer.

#include <chrono>
#include <cstdint>
#include <string>

#include "protocol/messages.hpp"

namespace vufront::app {

struct SnapshotCommandOptions {
  std::string socket;
  std::string out;
  DeviceKind device = DeviceKind::blk;
  /// Deadline of the transfer (connect and each request get at most 5 s of it).
  std::chrono::milliseconds timeout{60000};
  uint64_t max_bytes = uint64_t{64} << 30;
  /// Replace an existing FILE (without it, an existing FILE is a usage error,
  /// and one that appears during the transfer is left as it is).
  bool force = false;
  /// `--wait-for-backend`: connecting waits up to `timeout` for the socket
  /// to appear instead of failing at once when nothing is there.
  bool wait_for_backend = false;
  bool json = false;
};

/// Exit status: 0 saved, 1 back-end or transfer error ("vufront snapshot:
/// SET_DEVICE_STATE_FD: ..." on stderr), 2 unusable --out (or an existing
/// one without --force).
[[nodiscard]] int snapshot_main(const SnapshotCommandOptions& opts);

}  // namespace vufront::app
