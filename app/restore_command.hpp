#pragma once
// `vufront restore SOCKET --in FILE`: checks a snapshot file whole (manifest
// and state checksum), connects to a fresh back-end, negotiates as the file's
// device kind, and loads the back-end's state from the file (no activation:
// the device stays negotiated). Output and exit status as `vufront snapshot`.

#include <chrono>
#include <optional>
#include <string>

#include "protocol/messages.hpp"

namespace vufront::app {

struct RestoreCommandOptions {
  std::string socket;
  std::string in;
  /// When given, must be the file's device kind.
  std::optional<DeviceKind> device;
  std::chrono::milliseconds timeout{60000};
  /// `--wait-for-backend`: connecting waits up to `timeout` for the socket
  /// to appear instead of failing at once when nothing is there.
  bool wait_for_backend = false;
  bool json = false;
};

/// Exit status: 0 restored, 1 unreadable snapshot, back-end or transfer
/// error, 2 --device contradicting the file.
[[nodiscard]] int restore_main(const RestoreCommandOptions& opts);

}  // namespace vufront::app
