#pragma once
// `vufront attach --backend [ID=]SOCKET ... --control PATH`: vhost-user
// front-ends for a VMM, driven over a control socket
// (docs/attach-protocol.md), or through a VMM-facing vhost-user socket per
// device (`--vmm-socket [ID=]PATH`, docs/vmm-proxy.md). Connects to every back-end, listens on PATH,
// serves VMM connections until SIGINT/SIGTERM, then stops the devices
// (their back-ends see the connection close) and removes PATH (and the pid
// file, --pidfile).

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/device.hpp"
#include "actors/messages.hpp"
#include "base/error.hpp"
#include "base/unix_socket.hpp"

namespace vufront::app {

struct AttachOptions {
  std::vector<actors::DeviceSetup> devices;
  std::string control;
  std::vector<uint32_t> allowed_uids;
  /// The control socket's mode and group (--control-mode, --control-group,
  /// widened by --allow-uid: base/listen_options.hpp).
  ListenOptions control_listen;
  /// Client mode: the back-end sockets' mode and group (--listen-mode, --listen-group).
  ListenOptions backend_listen;
  /// The VMM-facing vhost-user sockets' mode and group (--vmm-mode,
  /// --vmm-group; 0666 with --allow-uid, like the control socket).
  ListenOptions vmm_listen;
  /// --snapshot-dir: where VMMs may name snapshot files by path ("": nowhere
  /// for other uids; vufront's own uid names any path).
  std::string snapshot_dir;
  /// Connecting to each back-end, and each request to it.
  std::chrono::milliseconds timeout{Timeouts::default_request};
  /// Each ring stop, GET_VRING_BASE (`--drain-timeout`).
  std::chrono::milliseconds drain_timeout{Timeouts::default_drain};
  /// `--wait-for-backend`: a first connect waits up to `timeout` for the
  /// socket to appear instead of failing at once when nothing is there.
  bool wait_for_backend = false;
  /// `--fence kill|none`: a lost back-end is SIGKILLed before a VMM is
  /// answered for it (kill), or only one that exited counts as fenced.
  bool fence_kill = true;
  /// `--resume-without-inflight yes|no`: a VMM's rings without INFLIGHT_SHMFD
  /// or IN_ORDER are resumed best effort after a loss (yes), or its
  /// connection closes (no).
  bool resume_without_inflight = true;
  /// `--pidfile`: written once the sockets listen, removed at exit; a file
  /// that names a live process is refused at start ("": none).
  std::string pidfile;
  /// After a lost back-end: reconnect with backoff and replay (default on).
  actors::ReconnectPolicy reconnect = [] {
    actors::ReconnectPolicy p;
    p.enabled = true;
    return p;
  }();
};

/// The devices from the command line: --backend [ID=]SOCKET (repeated),
/// --device [ID=]KIND and --queues [ID=]N (a value without ID applies to
/// every device that has none of its own), --queue-size N. Ids default to
/// the kind and a number: disk0, disk1, net0, fs0. Errors: invalid_argument
/// naming the option (unknown id, duplicate id or socket, bad kind).
[[nodiscard]] Result<std::vector<actors::DeviceSetup>> device_setups(
    const std::vector<std::string>& backends, const std::vector<std::string>& kinds,
    const std::vector<std::string>& queues, uint32_t max_queue_size);

/// --vmm-socket [ID=]PATH (repeated) into `devices` (without ID: the only
/// device). Errors: invalid_argument naming the option (unknown or repeated
/// id, a path used twice or by a back-end, an ID missing with several
/// devices).
[[nodiscard]] Result<void> assign_vmm_sockets(std::vector<actors::DeviceSetup>& devices,
                                              const std::vector<std::string>& vmm_sockets);

/// Logs through base/log.hpp (date and milliseconds on each line); with
/// NOTIFY_SOCKET set tells the service manager READY=1 once it serves and
/// STOPPING=1 when a signal stops it (app/service.hpp).
/// Exit status: 0 after a signal, 1 when a back-end cannot be negotiated,
/// the control socket cannot be created or --pidfile names a live process
/// (one line on stderr naming it), 2 when --snapshot-dir is not a directory.
[[nodiscard]] int attach_main(const AttachOptions& opts);

}  // namespace vufront::app
