#pragma once
// What a device is told when it is made: its back-end's socket, the deadlines
// of its requests, what it does when the back-end is lost, client mode.

#include <chrono>
#include <string>

#include "base/unix_socket.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

/// What the device does when its back-end is lost (docs/lifecycle.md,
/// "Reconnect"): connect again with backoff and replay the negotiated state.
struct ReconnectPolicy {
  bool enabled = false;
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{5000};
  /// Stop trying after this long (the device stays broken; a reconnect
  /// request starts again). 0: never give up.
  std::chrono::milliseconds give_up_after{0};
};

struct DeviceConfig {
  std::string socket;
  Timeouts timeouts;
  /// Connecting (or, in client mode, waiting for the back-end) per attempt.
  std::chrono::milliseconds connect_timeout{5000};
  /// The first connect waits for the socket to appear (connect_timeout) instead
  /// of failing at once when the path does not exist or is not a socket.
  /// Reconnect attempts always wait (a restarting back-end makes its socket anew).
  bool wait_for_backend = false;
  /// false: children run no threads (deterministic tests inject messages).
  bool start_threads = true;
  ReconnectPolicy reconnect;
  /// Client mode: vufront listens on `socket` and the back-end connects to
  /// it (DPDK's --client, QEMU's server=on); the socket lives as long as
  /// the device.
  bool listen = false;
  /// Client mode: the socket's mode and group (base/listen_options.hpp).
  ListenOptions listen_options;
  /// Fencing a lost back-end before a VMM is answered for it
  /// (docs/vmm-proxy.md): true: SIGKILL and wait for its exit; false
  /// (`--fence none`): only a back-end that has exited counts as fenced.
  bool fence_kill = true;
};

}  // namespace vufront::actors
