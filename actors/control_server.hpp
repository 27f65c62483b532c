#pragma once
// The control server actor: the root of `vufront attach`
// (docs/attach-protocol.md). It owns the devices (one device actor tree
// each, by id), the listening control socket and the VMM connections (one
// control_session each), and routes the devices' events to every
// connection.
//
//   start       negotiate every configured device -> its VMM socket, if it
//               has one (actors/vmm_port.hpp) -> listen (unless there is
//               no control socket) -> accept
//   accept      peer uid checked (SO_PEERCRED) -> refused, or a session
//   events      device -> relay -> server -> every session
//   last VMM    gone -> every active device is put to sleep
//
// Shared memory: by default the back-end's SHMEM_MAP/UNMAP requests land in
// an in-process window (memory/shmem_window); a session that sends
// set_shmem_owner vmm gets them as events (with the fd) instead, until it
// says otherwise or goes away.
//
// It traps exits: a session or device that dies takes nothing else with it;
// an exit from anyone else (the attach command's shutdown) ends the server,
// and with it, linked, every device and session.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/control_session.hpp"
#include "actors/device.hpp"
#include "actors/fd_watcher.hpp"
#include "actors/messages.hpp"
#include "actors/vmm_port.hpp"
#include "memory/shmem_window.hpp"
#include "base/unique_fd.hpp"
#include "base/unix_socket.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

struct ControlServerConfig {
  std::string control_path;
  /// The control socket's mode and group (base/listen_options.hpp).
  ListenOptions control_listen;
  /// uids allowed besides the one vufront runs as.
  std::vector<uint32_t> allowed_uids;
  /// --snapshot-dir (opened O_DIRECTORY) and its canonical path; empty: none.
  SharedFd snapshot_dir;
  std::string snapshot_dir_path;
  /// Client mode: the mode and group of the back-end sockets vufront listens on.
  ListenOptions backend_listen;
  /// The mode and group of the VMM-facing vhost-user sockets (--vmm-socket).
  ListenOptions vmm_listen;
  /// The devices negotiated at start.
  std::vector<DeviceSetup> devices;
  Timeouts timeouts;
  std::chrono::milliseconds connect_timeout{5000};
  /// A device's first connect waits for its socket to appear (DeviceConfig).
  bool wait_for_backend = false;
  /// What every device does when its back-end is lost.
  ReconnectPolicy reconnect;
  /// Fencing (DeviceConfig::fence_kill) and resuming a VMM's rings without
  /// INFLIGHT_SHMFD or IN_ORDER (VmmPortConfig::resume_without_inflight).
  bool fence_kill = true;
  bool resume_without_inflight = true;
};

struct ControlServerData {
  static inline const char* name = "vufront.control_server";

  struct Device {
    DeviceSetup setup;
    device_actor dev;
    caf::actor relay;
    DeviceState state = DeviceState::disconnected;  ///< as its events tell
    std::shared_ptr<ShmemWindow> window;  ///< when vufront maps shared memory
    vmm_port_full port;  ///< its VMM-facing socket (--vmm-socket), if it has one
    std::string kind_doubt;  ///< the last negotiation's DeviceInfo::kind_doubt
  };

  ControlServerConfig config;
  std::map<std::string, Device> devices;
  std::map<uint64_t, control_session_actor> sessions;
  uint64_t next_session = 1;
  bool listening = false;
  /// The start's answer while it is under way: a shutdown meanwhile (a
  /// signal while a back-end is still being connected) answers it.
  caf::typed_response_promise<nlohmann::json> start_promise;
  UniqueFd listen_fd;                     ///< before `acceptor`: it outlives the thread
  std::unique_ptr<FdWatcher> acceptor;    ///< LAST: joined first
};

[[nodiscard]] control_server_actor::behavior_type control_server_impl(
    control_server_actor::stateful_pointer<ControlServerData> self, ControlServerConfig config);

}  // namespace vufront::actors
