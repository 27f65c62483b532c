#pragma once
// The plain structs the actor layer's messages carry (device facade, attach,
// connection steps, snapshot transfer, worker), and the CAF declarations that
// let them travel between local actors. Atoms and typed interfaces are in
// actors/messages.hpp.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <nlohmann/json.hpp>

#include "base/unique_fd.hpp"
#include "control/packet.hpp"
#include "memory/shmem_mapper.hpp"
#include "protocol/backend_request.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"
#include "proxy/forward.hpp"
#include "snapshot/file_target.hpp"
#include "snapshot/manifest.hpp"

namespace vufront::snapshot {
struct Manifest;
}

namespace vufront::actors {

// ---- device facade payloads --------------------------------------------------

/// What the VMM asks for when negotiating.
struct NegotiateOptions {
  DeviceKind kind = DeviceKind::blk;
  /// Queues the VMM will use; negotiation fails if the back-end has fewer.
  uint16_t queues = 1;
  /// Largest queue size the VMM will use, capped at 32768. Packed rings may
  /// have any size up to it; split rings a power of two up to it.
  uint16_t max_queue_size = 256;
  /// Negotiate BACKEND_REQ (and SHMEM, BACKEND_SEND_FD) when offered and
  /// serve the back-end channel.
  bool backend_channel = true;
  /// Request INFLIGHT_SHMFD when offered (the reconnect issue uses it).
  bool inflight = false;
};

/// What negotiation found; stays valid until reset or loss.
struct DeviceInfo {
  DeviceKind kind = DeviceKind::blk;
  uint64_t backend_features = 0;           ///< GET_FEATURES
  uint64_t protocol_features_offered = 0;  ///< GET_PROTOCOL_FEATURES (0 without bit 30)
  uint64_t protocol_features = 0;          ///< what vufront acked
  uint16_t queue_num = 1;                  ///< GET_QUEUE_NUM or the device's fixed count
  uint16_t max_queue_size = 256;           ///< NegotiateOptions::max_queue_size, capped
  uint32_t max_mem_slots = 8;
  uint32_t config_size = 0;                ///< virtio config bytes for this device kind
  bool backend_channel = false;            ///< SET_BACKEND_REQ_FD accepted
  std::vector<uint64_t> shmem_sizes;       ///< GET_SHMEM_CONFIG, index = shmid (0 = absent)
  /// Empty when the back-end looks like `kind`; else why the kind check
  /// could not tell (protocol/device_kind_check.hpp; a clear mismatch fails
  /// the negotiation). Commands print it as a warning.
  std::string kind_doubt;
};

/// One guest RAM region as the VMM shares it.
struct MemoryRegionSpec {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t fd_offset = 0;  ///< offset of the region in fd
  SharedFd fd;
};
using MemorySpec = std::vector<MemoryRegionSpec>;

/// One virtqueue as the guest driver set it up. Addresses are guest-physical.
struct QueueSpec {
  uint16_t index = 0;
  uint16_t size = 0;
  uint64_t desc = 0;    ///< descriptor table (packed: descriptor ring)
  uint64_t driver = 0;  ///< avail ring (packed: driver event suppression)
  uint64_t device = 0;  ///< used ring (packed: device event suppression)
  SharedFd kick;        ///< the queue-notify eventfd (required)
  /// MSI-X path: an irqfd the back-end signals directly. Empty: vufront
  /// creates the call eventfd and the worker forwards it to the sink.
  SharedFd call;
  /// The base to start the ring at (a migration on shared storage carries
  /// the source's; vhost-user spec, "Migration"); none: a fresh ring.
  std::optional<uint32_t> base;
};

/// Where forwarded interrupts go (the non-MSI-X path). At least one of the
/// two must be set when any queue has no call fd.
struct InterruptSink {
  /// Written with 1 per forwarded interrupt (e.g. the VMM's INTx irqfd).
  SharedFd eventfd;
  /// Receives (interrupt_atom, int32_t vector): the queue index, or -1 for
  /// a configuration change.
  caf::actor target;
};

struct ActivateSpec {
  /// Features the guest driver acked; must be offered by the back-end.
  /// PROTOCOL_FEATURES (bit 30) is added by the device when offered.
  uint64_t driver_features = 0;
  std::vector<QueueSpec> queues;
  InterruptSink sink;
};

enum class DeviceState : uint8_t {
  disconnected,  ///< no back-end connection yet (or after a clean close)
  negotiated,    ///< features known, memory may be set, queues not running
  active,        ///< queues running
  sleeping,      ///< queues stopped with their indices saved
  broken,        ///< the back-end was lost or violated the protocol
  reconnecting,  ///< lost; connecting again to replay the state (DeviceConfig::reconnect)
};
[[nodiscard]] const char* to_string(DeviceState s) noexcept;

/// Per-queue state the device keeps (replayed on wake and, later, reconnect).
struct QueueStatus {
  uint16_t index = 0;
  uint16_t size = 0;
  uint32_t base = 0;  ///< last vring base (GET_VRING_BASE, or the initial one)
  uint64_t interrupts = 0;  ///< forwarded by the worker (0 on the MSI-X path)
};

struct DeviceStatus {
  DeviceState state = DeviceState::disconnected;
  std::string socket;
  DeviceInfo info;
  uint64_t acked_features = 0;  ///< SET_FEATURES value of the last activation
  uint8_t virtio_status = 0;    ///< last SET_STATUS value
  std::vector<QueueStatus> queues;
  std::string last_error;       ///< why the device is broken, if it is
  /// What the device works around in its back-end, in the order noticed
  /// (each also a backend_notice event, once per device).
  std::vector<std::string> notices;
  MemorySpec memory;            ///< the guest memory set (its fds are the device's)
  uint32_t reconnect_attempts = 0;  ///< of the current (or last) reconnect
  uint32_t reconnects = 0;          ///< resumed after a loss, since the device began
  uint32_t fenced = 0;              ///< lost back-ends SIGKILLed by vufront (docs/vmm-proxy.md)
  bool inflight = false;            ///< an INFLIGHT_SHMFD region is kept for the queues
  uint64_t dirty_log_size = 0;      ///< the dirty log's bytes while logging, else 0
  /// The VMM-facing socket's session (actors/vmm_port.hpp), null without one.
  nlohmann::json vmm;
};

struct DeviceEvent {
  enum class Kind : uint8_t {
    state_changed,   ///< state: the new state
    config_changed,  ///< the back-end sent CONFIG_CHANGE_MSG
    backend_lost,    ///< detail: why
    vring_error,     ///< queue: which ring reported an error
    shmem_mapped,    ///< detail: "shmid=0 offset=0x2000 len=0x3000"
    shmem_unmapped,
    reconnecting,    ///< detail: the attempt and when the next one is
    resumed,         ///< detail: what was replayed, and what in flight became of
    resume_failed,   ///< detail: why the device cannot resume (it stays broken)
    backend_notice,  ///< detail: what the device works around in this back-end (once per device)
    vmm_connected,   ///< detail: the VMM socket's new connection (peer uid, count)
    vmm_disconnected,  ///< detail: why, and what was undone in the back-end
    fenced,            ///< detail: the lost back-end's process, killed or found exited
    vmm_backend_away,  ///< detail: why; vufront answers the VMM for the back-end meanwhile
    vmm_resumed,       ///< detail: the VMM's set-up replayed into a new back-end; exact or best effort
    dirty_log_resized,  ///< the memory grew: `fd` is the new log (`size` bytes), detail: why
  };
  Kind kind = Kind::state_changed;
  DeviceState state = DeviceState::disconnected;
  int32_t queue = -1;
  std::string detail;
  SharedFd fd = nullptr;  ///< dirty_log_resized: the new log
  uint64_t size = 0;      ///< dirty_log_resized: its size in bytes
};
[[nodiscard]] const char* to_string(DeviceEvent::Kind k) noexcept;

/// What a VMM socket's port saves with the back-end's state (a device the VMM
/// drives has no activation of vufront's own): the VMM's acked features and
/// its rings, stopped, at their bases (actors/vmm_pause.cpp).
struct VmmSaveSpec {
  uint64_t features = 0;
  std::vector<snapshot::QueueState> queues;
};

/// A snapshot of the back-end's state into a file (docs/snapshot-format.md).
/// The device must be sleeping (or negotiated and never activated).
struct SnapshotOptions {
  std::string path;
  snapshot::FileTarget target;  ///< the file when not `path` itself (a VMM's fd, --snapshot-dir)
  /// Cap on the back-end's state; more is errc::oversized.
  uint64_t max_bytes = uint64_t{64} << 30;
  /// Whether a file already at `path` may be replaced (false: the snapshot
  /// fails instead, at commit, without touching it).
  bool replace = true;
  /// The transfer fails once no byte moved for this long
  /// (TransferDeadline::stalling; SET_DEVICE_STATE_FD to the file's commit).
  uint32_t timeout_ms = 60000;
  /// Optional: receives (progress_atom, uint64_t done, uint64_t total) a few
  /// times a second (total 0 while unknown, i.e. while saving; the last one,
  /// at the end of the stream, has total = done).
  caf::actor progress;
};

/// A restore of a snapshot file into a fresh back-end (device negotiated,
/// memory set when `activation` is given).
struct RestoreOptions {
  std::string path;
  snapshot::FileTarget target;  ///< as in SnapshotOptions
  uint32_t timeout_ms = 60000;  ///< as in SnapshotOptions: no progress for this long
  /// The VMM's queues (addresses, kick/call fds, sink) as for activate. With
  /// it the device ends up sleeping, its queues at the snapshot's bases, and
  /// wake starts them; the driver features must be the snapshot's and the
  /// queues must have the snapshot's indices and sizes. Without it only the
  /// back-end's state is restored (features set, no queues) and the device
  /// stays negotiated.
  std::optional<ActivateSpec> activation;
  caf::actor progress;
};

/// What a snapshot or restore transferred.
struct SnapshotInfo {
  std::string path;
  uint64_t state_bytes = 0;
  uint64_t checksum = 0;   ///< XXH3-64 of the state
  uint64_t features = 0;   ///< the virtio features of the snapshot
  std::vector<QueueStatus> queues;  ///< the saved / restored bases
  uint64_t elapsed_us = 0;
};

// ---- attach (control server) payloads ----------------------------------------

/// One device of `vufront attach`: its id, back-end and how to negotiate.
struct DeviceSetup {
  std::string id;
  std::string backend;  ///< the back-end's vhost-user socket
  NegotiateOptions negotiate;
  /// Client mode: vufront listens on `backend`, the back-end connects.
  bool listen = false;
  /// `--vmm-socket`: the VMM-facing vhost-user socket a VMM drives the
  /// device through (actors/vmm_port.hpp); empty: none.
  std::string vmm_socket;
  /// At run time: the session whose VMM maps the back-end's shared memory
  /// (set_shmem_owner vmm); 0 = vufront maps it.
  uint64_t shmem_owner = 0;
};

// ---- connection actor payloads ---------------------------------------------

/// Negotiation as one step: connect (retrying until the timeout as `wait` says),
/// SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_BACKEND_REQ_FD (with
/// `channel_fd`), GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_SHMEM_CONFIG.
struct NegotiateRequest {
  std::string socket;
  uint32_t connect_timeout_ms = 5000;
  ConnectWait wait = ConnectWait::socket;
  NegotiateOptions options;
  /// The back-end's end of the channel socketpair (may be empty).
  SharedFd channel_fd;
  /// Client mode: accept the back-end on this listening socket instead of
  /// connecting to `socket`.
  SharedFd listen_fd;
  /// Set by the device when it drops the connection actor: a connect or
  /// accept still waiting for the back-end, and later any request waiting
  /// for its reply, gives up (within 100 ms) instead of holding its fds
  /// until connect_timeout_ms or the request's deadline.
  std::shared_ptr<const std::atomic<bool>> stop;
};

/// One queue start: SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE,
/// SET_VRING_CALL, SET_VRING_KICK (+ one kick), SET_VRING_ENABLE(1).
struct QueueStart {
  wire::VringAddr addr{};  ///< user addresses (already translated)
  uint32_t num = 0;
  uint32_t base = 0;
  SharedFd kick;
  SharedFd call;
  SharedFd err;  ///< SET_VRING_ERR when set (a VMM's shadow)
  /// false: only set up (NUM, ADDR, BASE, CALL, ERR), not kicked or enabled
  /// (a VMM's ring it has not started, or stopped).
  bool start = true;
  /// SET_VRING_ENABLE 1 after the start (with PROTOCOL_FEATURES); false: a
  /// VMM's ring it started and left disabled.
  bool enable = true;
};

/// Activation as one step: SET_FEATURES, SET_STATUS(FEATURES_OK),
/// SET_MEM_TABLE, the queues (as start_queues), SET_STATUS(+DRIVER_OK);
/// SET_STATUS only when STATUS was negotiated. An empty memory table and
/// driver_ok_status 0 skip those steps (a restore's bring-up before the load).
struct ActivateRequest {
  uint64_t features = 0;
  uint8_t features_ok_status = 0;
  uint8_t driver_ok_status = 0;
  std::vector<wire::MemoryRegion> mem_table;
  std::vector<SharedFd> mem_fds;
  std::vector<QueueStart> queues;
  /// INFLIGHT_SHMFD: SET_INFLIGHT_FD with this region after the memory
  /// table, before the queues (when `inflight_fd` is set).
  wire::InflightDesc inflight{};
  SharedFd inflight_fd;
  /// Dirty logging (LOG_SHMFD): SET_LOG_BASE with this log after the memory
  /// table and the in-flight region, before any ring (when `log_fd` is set);
  /// `features` then has LOG_ALL and the rings VHOST_VRING_F_LOG.
  wire::Log log{};
  SharedFd log_fd;
};

/// One change of a running device's dirty logging, as one connection step
/// (actors/device_dirty_log.cpp): [SET_LOG_BASE], [SET_FEATURES], every
/// SET_VRING_ADDR, then a GET_FEATURES to sync when REPLY_ACK was not acked.
struct LogChange {
  SharedFd log_fd;  ///< SET_LOG_BASE with it first, waiting for its reply; empty: none
  wire::Log log{};
  bool set_features = false;
  uint64_t features = 0;  ///< SET_FEATURES' value (with or without LOG_ALL)
  std::vector<wire::VringAddr> rings;  ///< SET_VRING_ADDR each (with or without the LOG flag)
};

// ---- snapshot actor payloads -----------------------------------------------

/// The longest a snapshot or restore may take in all, however steadily its
/// bytes move (a transfer fails sooner when they stop: TransferDeadline::stall).
inline constexpr std::chrono::hours max_transfer_time{24};

/// When a transfer must end: `at` at the latest, and, with a `stall`
/// window, once no byte moved for that long (progressed() moves it on).
struct TransferDeadline {
  using Clock = std::chrono::steady_clock;
  Clock::time_point at;
  std::chrono::milliseconds stall{0};  ///< 0: none
  Clock::time_point last;              ///< the last progress (or the start)
  /// A fixed deadline, `d` from now.
  [[nodiscard]] static TransferDeadline in(std::chrono::milliseconds d) {
    auto now = Clock::now();
    return {now + d, std::chrono::milliseconds{0}, now};
  }
  /// A deadline that follows progress: no byte moved for `window` (and
  /// max_transfer_time in all).
  [[nodiscard]] static TransferDeadline stalling(std::chrono::milliseconds window) {
    auto now = Clock::now();
    return {now + max_transfer_time, window, now};
  }
  /// Bytes moved (or a phase of the transfer began): the stall window restarts.
  void progressed() { last = Clock::now(); }
  /// The point the transfer fails at unless it progresses first.
  [[nodiscard]] Clock::time_point next() const {
    return stall.count() > 0 ? std::min(at, last + stall) : at;
  }
  /// Whether it is the stall window that ran out at `now` (not `at`).
  [[nodiscard]] bool stalled(Clock::time_point now) const {
    return stall.count() > 0 && now >= last + stall && now < at;
  }
  /// Time left (zero when passed).
  [[nodiscard]] std::chrono::milliseconds left() const {
    auto l = std::chrono::duration_cast<std::chrono::milliseconds>(next() - Clock::now());
    return l.count() > 0 ? l : std::chrono::milliseconds{0};
  }
};

/// One save: SET_DEVICE_STATE_FD(save) -> stream pipe to file ->
/// CHECK_DEVICE_STATE -> commit with `manifest` (state length and checksum
/// filled in).
struct SaveJob {
  std::string path;
  snapshot::FileTarget target;
  uint64_t max_bytes = 0;
  TransferDeadline deadline;
  std::shared_ptr<const snapshot::Manifest> manifest;
  bool replace = true;  ///< SnapshotOptions::replace
};

// ---- worker payloads ---------------------------------------------------------

struct WatchedQueue {
  uint16_t index = 0;
  SharedFd call;  ///< the eventfd the back-end signals
};

}  // namespace vufront::actors

// Local-only types: copyable, never serialised (they carry fds / handles).
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::NegotiateOptions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::DeviceInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::MemorySpec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::ActivateSpec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::InterruptSink)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::DeviceStatus)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::VmmSaveSpec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::DeviceEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::ActivateRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::LogChange)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::NegotiateRequest)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::SnapshotOptions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::RestoreOptions)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::SnapshotInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::SaveJob)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::TransferDeadline)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<const vufront::snapshot::Manifest>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vufront::actors::QueueStart>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vufront::actors::WatchedQueue>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vufront::wire::MemoryRegion>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::wire::MemoryRegion)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::wire::InflightDesc)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::MemoryRegionSpec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::DeviceSetup)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(nlohmann::json)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<vufront::control::Packet>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::SharedFd)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vufront::SharedFd>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<vufront::BackendRequest>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<vufront::SharedMemoryMapper>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::proxy::Forward)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::proxy::ForwardResult)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::proxy::Answer)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<vufront::Message>)
