#pragma once
// The device actor's state (actors/device*.cpp): everything negotiated and set
// up, in one place — what wake replays, what a reconnect replays
// (actors/bring_up.hpp builds those requests from it) — plus the children,
// the operation in progress and the reconnect's bookkeeping.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/error.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/device_config.hpp"
#include "actors/messages.hpp"
#include "base/peer_process.hpp"
#include "base/unique_fd.hpp"
#include "memory/dirty_log.hpp"

namespace vufront::actors {

/// The client-mode listening socket; the file goes with it (if it is still
/// this socket's: another process may have replaced it meanwhile).
struct ListenSocket {
  SharedFd fd;
  std::string path;
  uint64_t dev = 0, ino = 0;  ///< the socket file's identity after bind
  /// Whether `path` is still this socket's file (not removed or replaced).
  [[nodiscard]] bool file_is_ours() const;
  ListenSocket() = default;
  ListenSocket(const ListenSocket&) = delete;
  ListenSocket& operator=(const ListenSocket&) = delete;
  ~ListenSocket();
};

/// Everything negotiated and set up, in one place: what wake replays and
/// what a reconnect would replay.
struct DeviceData {
  static inline const char* name = "vufront.device";

  DeviceConfig config;
  DeviceState state = DeviceState::disconnected;
  /// The operation in progress ("" when idle).
  std::string busy;
  std::string last_error;
  /// What the device works around in its back-end, each said once per
  /// device (a backend_notice event, and DeviceStatus::notices).
  std::vector<std::string> notices;
  /// The back-end answered a packed GET_VRING_BASE in the short form (said).
  bool short_vring_base_noted = false;
  /// What a current child reported lost while the device was connecting
  /// (negotiate, a reconnect attempt, its replay), when no state could turn
  /// broken yet: the connection fails with it. Cleared with new children.
  std::string child_lost;
  /// The loss was seen by the connection's own request (so the step that
  /// failed names it best), not by the worker or the channel.
  bool lost_by_conn = false;
  /// Shutting down: nothing new starts, and the device ends once `stopping`
  /// is empty.
  bool exiting = false;
  /// Children told to stop and not down yet (monitored). A dropped child may
  /// still be inside a blocking step (a connect retry, a receive) holding its
  /// fds: the device ends only after the last of them, so no fd or thread of
  /// the device outlives it.
  std::vector<caf::actor_addr> stopping;
  caf::error exit_reason;

  /// The connection's vhost-user socket (a dup of the connection actor's)
  /// and the front-end's end of the back-end channel, shared with the
  /// children: a loss shuts them down at once (device_steps.hpp).
  SharedFd socket;
  SharedFd channel_socket;
  connection_actor conn;
  /// Tells `conn` to stop waiting for a back-end when it is dropped.
  std::shared_ptr<std::atomic<bool>> conn_stop;
  worker_actor worker;
  channel_actor channel;
  snapshot_actor transfer;  ///< from the start to the end of a snapshot or restore
  /// (cancel_all_atom) came: every later snapshot or restore is refused.
  bool transfers_cancelled = false;
  caf::actor subscriber;
  std::shared_ptr<SharedMemoryMapper> mapper;

  // ---- negotiated state
  NegotiateOptions options;
  DeviceInfo info;
  MemorySpec memory;
  std::vector<wire::MemoryRegion> mem_table;
  uint64_t acked_features = 0;  ///< SET_FEATURES value of the running activation
  uint8_t virtio_status = 0;
  struct Queue {
    QueueSpec spec;
    SharedFd call;        ///< what the back-end signals (the VMM's irqfd or ours)
    bool forwarded = false;  ///< ours: the worker forwards it to the sink
    uint32_t base = 0;    ///< next base to start from
  };
  std::vector<Queue> queues;
  InterruptSink sink;
  bool packed = false;
  /// Restored into a sleeping device: wake sends DRIVER_OK after the queues.
  bool driver_ok_pending = false;
  /// INFLIGHT_SHMFD: the region the back-end tracks in-flight requests in,
  /// kept for the device's life (not the connection's) and handed to every
  /// new back-end, which resubmits what the old one left in flight.
  wire::InflightDesc inflight{};
  SharedFd inflight_fd;
  /// LOG_SHMFD: the dirty log while logging is on (actors/device_dirty_log.cpp),
  /// for the device's life (not the connection's): every new back-end gets
  /// the same log (replay.hpp), every page marked once after a loss.
  std::shared_ptr<DirtyLog> dirty_log;

  // ---- a VMM-facing socket (actors/device_vmm.cpp)
  /// Weak; set: the port of `attach --vmm-socket` drives the device, and
  /// commands that would fight it are refused (admit()).
  caf::actor_addr vmm_port;
  /// What the port was last told (tell_port_conn()): the connection its
  /// requests go to, or why there is none.
  caf::actor_addr port_conn;
  std::string port_conn_why;

  // ---- the back-end's process (fencing; actors/device_vmm.cpp)
  /// The peer of a connection: its process (SO_PEERCRED + pidfd), or why
  /// it is not known (then it cannot be fenced).
  struct Peer {
    std::shared_ptr<const ProcessHandle> process;
    std::string unknown;
  };
  Peer peer;  ///< the current connection's
  /// The peers of connections that were lost, each until it is fenced, found
  /// exited, or came back itself (the same process on a new connection).
  std::vector<Peer> lost_peers;
  /// Fences in progress by number, and what ended: `status` counts them.
  std::map<uint64_t, caf::typed_response_promise<std::string>> fencing;
  uint64_t fence_count = 0;
  uint32_t fenced = 0;  ///< back-ends SIGKILLed by vufront

  // ---- reconnect (actors/device_connect.cpp)
  /// The state the device was in when the back-end was lost (what a
  /// reconnect replays); disconnected when there is nothing to resume.
  DeviceState lost_from = DeviceState::disconnected;
  struct Reconnect {
    uint64_t generation = 0;  ///< tells timers of a cancelled reconnect apart
    uint32_t attempts = 0;
    std::chrono::milliseconds delay{0};
    std::chrono::steady_clock::time_point since;
    bool attempting = false;
  } reconnect;
  uint32_t reconnects = 0;
  std::unique_ptr<ListenSocket> listen;
};

}  // namespace vufront::actors
