#pragma once
// Every atom, message payload and typed actor interface of the actor layer,
// in one place (one CAF type-ID block). CAF 0.17.6: `replies_to<...>::with<...>`
// syntax, atoms of at most 10 characters.
//
// Actor tree (see docs/lifecycle.md):
//   device ──linked──> connection  (socket + BackendClient; steps are loop/ tasks)
//          ──linked──> worker      (interrupt loop + hang-up watch; fd_watcher task)
//          ──linked──> channel     (back-end request handler; reader task)
// Children hold only a weak handle (caf::actor_addr) to the device, so the
// device dies when its last outside handle is dropped and takes its children
// with it.
//
// `vufront attach` (docs/attach-protocol.md):
//   control_server ──linked──> device ...   (one tree per device id)
//                  ──linked──> control_session (detached; one per VMM
//                              connection; control_reader task)

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/send.hpp>
#include <caf/typed_actor.hpp>
#include <nlohmann/json.hpp>

#include "control/packet.hpp"
#include "memory/shmem_mapper.hpp"
#include "base/unique_fd.hpp"
#include "protocol/backend_request.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"
#include "snapshot/file_target.hpp"

CAF_BEGIN_TYPE_ID_BLOCK(vufront, caf::first_custom_type_id)
  // device facade
  CAF_ADD_ATOM(vufront, vufront::actors, negotiate_atom, "negotiate")
  CAF_ADD_ATOM(vufront, vufront::actors, memory_atom, "memory")
  CAF_ADD_ATOM(vufront, vufront::actors, mem_add_atom, "memadd")
  CAF_ADD_ATOM(vufront, vufront::actors, mem_rm_atom, "memrm")
  CAF_ADD_ATOM(vufront, vufront::actors, activate_atom, "activate")
  CAF_ADD_ATOM(vufront, vufront::actors, sleep_atom, "sleep")
  CAF_ADD_ATOM(vufront, vufront::actors, wake_atom, "wake")
  CAF_ADD_ATOM(vufront, vufront::actors, rd_config_atom, "rdconfig")
  CAF_ADD_ATOM(vufront, vufront::actors, wr_config_atom, "wrconfig")
  CAF_ADD_ATOM(vufront, vufront::actors, status_atom, "status")
  CAF_ADD_ATOM(vufront, vufront::actors, shmem_atom, "shmem")
  CAF_ADD_ATOM(vufront, vufront::actors, mapper_atom, "mapper")
  CAF_ADD_ATOM(vufront, vufront::actors, subscribe_atom, "subscribe")
  CAF_ADD_ATOM(vufront, vufront::actors, event_atom, "event")
  CAF_ADD_ATOM(vufront, vufront::actors, snapshot_atom, "snapshot")
  CAF_ADD_ATOM(vufront, vufront::actors, restore_atom, "restore")
  CAF_ADD_ATOM(vufront, vufront::actors, cancel_atom, "cancel")
  CAF_ADD_ATOM(vufront, vufront::actors, cancel_all_atom, "cancelall")
  CAF_ADD_ATOM(vufront, vufront::actors, progress_atom, "progress")
  CAF_ADD_ATOM(vufront, vufront::actors, reconnect_atom, "reconnect")
  CAF_ADD_ATOM(vufront, vufront::actors, retry_atom, "retry")
  // children -> device
  CAF_ADD_ATOM(vufront, vufront::actors, lost_atom, "lost")
  CAF_ADD_ATOM(vufront, vufront::actors, cfg_change_atom, "cfgchange")
  CAF_ADD_ATOM(vufront, vufront::actors, vring_call_atom, "vringcall")
  CAF_ADD_ATOM(vufront, vufront::actors, vring_err_atom, "vringerr")
  // connection actor (one message per lifecycle step, not per request)
  CAF_ADD_ATOM(vufront, vufront::actors, mem_table_atom, "memtable")
  CAF_ADD_ATOM(vufront, vufront::actors, add_mem_reg_atom, "addmemreg")
  CAF_ADD_ATOM(vufront, vufront::actors, rem_mem_reg_atom, "remmemreg")
  CAF_ADD_ATOM(vufront, vufront::actors, start_queues_atom, "startq")
  CAF_ADD_ATOM(vufront, vufront::actors, stop_queues_atom, "stopq")
  CAF_ADD_ATOM(vufront, vufront::actors, get_config_atom, "getconfig")
  CAF_ADD_ATOM(vufront, vufront::actors, set_config_atom, "setconfig")
  CAF_ADD_ATOM(vufront, vufront::actors, reset_device_atom, "resetdev")
  CAF_ADD_ATOM(vufront, vufront::actors, state_fd_atom, "statefd")
  CAF_ADD_ATOM(vufront, vufront::actors, check_state_atom, "chkstate")
  CAF_ADD_ATOM(vufront, vufront::actors, inflight_atom, "inflight")
  CAF_ADD_ATOM(vufront, vufront::actors, step_done_atom, "stepdone")
  // worker
  CAF_ADD_ATOM(vufront, vufront::actors, watch_atom, "watch")
  CAF_ADD_ATOM(vufront, vufront::actors, start_atom, "start")
  CAF_ADD_ATOM(vufront, vufront::actors, stop_atom, "stop")
  CAF_ADD_ATOM(vufront, vufront::actors, irq_atom, "irq")
  CAF_ADD_ATOM(vufront, vufront::actors, hangup_atom, "hangup")
  CAF_ADD_ATOM(vufront, vufront::actors, interrupt_atom, "interrupt")
  // back-end request handler
  CAF_ADD_ATOM(vufront, vufront::actors, backend_req_atom, "bereq")
  CAF_ADD_ATOM(vufront, vufront::actors, channel_eof_atom, "chaneof")
  // snapshot (state transfer) actor
  CAF_ADD_ATOM(vufront, vufront::actors, open_atom, "open")
  CAF_ADD_ATOM(vufront, vufront::actors, save_atom, "save")
  CAF_ADD_ATOM(vufront, vufront::actors, load_atom, "load")
  CAF_ADD_ATOM(vufront, vufront::actors, pump_atom, "pump")
  // attach: control server and sessions
  CAF_ADD_ATOM(vufront, vufront::actors, accept_atom, "accept")
  CAF_ADD_ATOM(vufront, vufront::actors, hello_atom, "hello")
  CAF_ADD_ATOM(vufront, vufront::actors, lookup_atom, "lookup")
  CAF_ADD_ATOM(vufront, vufront::actors, add_dev_atom, "adddev")
  CAF_ADD_ATOM(vufront, vufront::actors, rm_dev_atom, "rmdev")
  CAF_ADD_ATOM(vufront, vufront::actors, owner_atom, "shmowner")
  CAF_ADD_ATOM(vufront, vufront::actors, dev_event_atom, "devevent")
  CAF_ADD_ATOM(vufront, vufront::actors, shmem_fwd_atom, "shmemfwd")
  CAF_ADD_ATOM(vufront, vufront::actors, packet_atom, "packet")
  CAF_ADD_ATOM(vufront, vufront::actors, ctl_eof_atom, "ctleof")
  CAF_ADD_ATOM(vufront, vufront::actors, push_atom, "push")
CAF_END_TYPE_ID_BLOCK(vufront)
// (caf::get_atom, caf::ok_atom, caf::reset_atom are predefined.)

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
  /// Largest queue size the VMM will use; rounded down to a power of two and
  /// capped at 32768 (split ring limit).
  uint16_t max_queue_size = 256;
  bool backend_channel = true;  ///< BACKEND_REQ (SHMEM, BACKEND_SEND_FD) when offered
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
  uint16_t max_queue_size = 256;           ///< power of two
  uint32_t max_mem_slots = 8;
  uint32_t config_size = 0;                ///< virtio config bytes for this device kind
  bool backend_channel = false;            ///< SET_BACKEND_REQ_FD accepted
  std::vector<uint64_t> shmem_sizes;       ///< GET_SHMEM_CONFIG, index = shmid (0 = absent)
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
  SharedFd call;  ///< MSI-X: an irqfd the back-end signals; empty: forwarded to the sink
};

/// Where forwarded interrupts go (the non-MSI-X path): one set when a queue has no call fd.
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
  MemorySpec memory;            ///< the guest memory set (its fds are the device's)
  uint32_t reconnect_attempts = 0;  ///< of the current (or last) reconnect
  uint32_t reconnects = 0;          ///< resumed after a loss, since the device began
  bool inflight = false;            ///< an INFLIGHT_SHMFD region is kept for the queues
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
  };
  Kind kind = Kind::state_changed;
  DeviceState state = DeviceState::disconnected;
  int32_t queue = -1;
  std::string detail;
};
[[nodiscard]] const char* to_string(DeviceEvent::Kind k) noexcept;

/// A snapshot of the back-end's state into a file (docs/snapshot-format.md).
/// The device must be sleeping (or negotiated and never activated).
struct SnapshotOptions {
  std::string path;
  snapshot::FileTarget target;  ///< the file when not `path` itself (a VMM's fd, --snapshot-dir)
  /// Cap on the back-end's state; more is errc::oversized.
  uint64_t max_bytes = uint64_t{64} << 30;
  /// TransferDeadline of the whole transfer (SET_DEVICE_STATE_FD to the file's commit).
  uint32_t timeout_ms = 60000;
  /// Optional: receives (progress_atom, uint64_t done, uint64_t total) a few
  /// times a second (total 0 while unknown, i.e. while saving).
  caf::actor progress;
};

/// A restore of a snapshot file into a fresh back-end (device negotiated,
/// memory set when `activation` is given).
struct RestoreOptions {
  std::string path;
  snapshot::FileTarget target;  ///< as in SnapshotOptions
  uint32_t timeout_ms = 60000;
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
  /// At run time: the session whose VMM maps the back-end's shared memory
  /// (set_shmem_owner vmm); 0 = vufront maps it.
  uint64_t shmem_owner = 0;
};

// ---- connection actor payloads ---------------------------------------------

/// Negotiation as one step: connect (retrying until the timeout), SET_OWNER,
/// GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_BACKEND_REQ_FD (with
/// `channel_fd` if set and negotiated), GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
/// GET_SHMEM_CONFIG.
struct NegotiateRequest {
  std::string socket;
  uint32_t connect_timeout_ms = 5000;
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
};

// ---- snapshot actor payloads -----------------------------------------------

/// A point in time a step must be done by.
struct TransferDeadline {
  std::chrono::steady_clock::time_point at;
  [[nodiscard]] static TransferDeadline in(std::chrono::milliseconds d) {
    return {std::chrono::steady_clock::now() + d};
  }
  /// Time left (zero when passed).
  [[nodiscard]] std::chrono::milliseconds left() const {
    auto l = std::chrono::duration_cast<std::chrono::milliseconds>(at - std::chrono::steady_clock::now());
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
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::DeviceEvent)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vufront::actors::ActivateRequest)
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

namespace vufront::actors {

// ---- typed interfaces --------------------------------------------------------

/// What a device's children (connection, worker, channel) tell their device:
/// the only messages they may send it. They hold the device weakly (an
/// actor_addr) and send through tell_device(), so each message is checked
/// against this interface when it is compiled.
using device_child_side = caf::typed_actor<
    /// (lost_atom, the child that saw it, why); from a child of an earlier
    /// connection it is ignored.
    caf::reacts_to<lost_atom, caf::actor_addr, std::string>,
    /// The back-end's CONFIG_CHANGE_MSG.
    caf::reacts_to<cfg_change_atom>,
    /// The back-end's VRING_CALL / VRING_ERR for a queue (back-end channel).
    caf::reacts_to<vring_call_atom, uint16_t>,
    caf::reacts_to<vring_err_atom, uint16_t>,
    /// An event for the device's subscriber (e.g. a shared-memory map).
    caf::reacts_to<event_atom, DeviceEvent>>;

/// Sends `xs` to the device behind the weak `device` if it is still alive;
/// false when it is gone. Checked against device_child_side.
template <class... Ts>
bool tell_device(const caf::actor_addr& device, Ts&&... xs) {
  auto hdl = caf::actor_cast<device_child_side>(device);
  if (!hdl)
    return false;
  caf::anon_send(hdl, std::forward<Ts>(xs)...);
  return true;
}

/// The facade a VMM (or `vufront check`, or the attach server) talks to.
/// Every request is answered with a value or a caf::error made from a
/// vufront::Error (actors/error.hpp), naming the step that failed.
using device_actor = device_child_side::extend<
    caf::replies_to<negotiate_atom, NegotiateOptions>::with<DeviceInfo>,
    caf::replies_to<memory_atom, MemorySpec>::with<caf::ok_atom>,
    /// One more guest RAM region (ADD_MEM_REG with CONFIGURE_MEM_SLOTS, else
    /// the whole table again); the table is checked as for memory_atom.
    caf::replies_to<mem_add_atom, MemoryRegionSpec>::with<caf::ok_atom>,
    /// Removes the region starting at this guest-physical address
    /// (REM_MEM_REG, else the whole table); refused while a running ring is in it.
    caf::replies_to<mem_rm_atom, uint64_t>::with<caf::ok_atom>,
    caf::replies_to<activate_atom, ActivateSpec>::with<caf::ok_atom>,
    caf::replies_to<rd_config_atom, uint32_t, uint32_t>::with<std::vector<uint8_t>>,
    caf::replies_to<wr_config_atom, uint32_t, std::vector<uint8_t>>::with<caf::ok_atom>,
    caf::replies_to<sleep_atom>::with<caf::ok_atom>,
    caf::replies_to<wake_atom>::with<caf::ok_atom>,
    caf::replies_to<caf::reset_atom>::with<caf::ok_atom>,
    caf::replies_to<status_atom>::with<DeviceStatus>,
    /// (shmid, size) of the first shared-memory region; error if none.
    caf::replies_to<shmem_atom>::with<uint8_t, uint64_t>,
    caf::replies_to<mapper_atom, std::shared_ptr<SharedMemoryMapper>>::with<caf::ok_atom>,
    /// Saves the back-end's state (sleeping, or negotiated and never
    /// activated); the device stays as it was, also when the transfer fails.
    caf::replies_to<snapshot_atom, SnapshotOptions>::with<SnapshotInfo>,
    /// Restores a snapshot into this (negotiated) back-end; see RestoreOptions.
    caf::replies_to<restore_atom, RestoreOptions>::with<SnapshotInfo>,
    /// Cancels the snapshot or restore in progress (it fails with
    /// "cancelled"), also one still before its transfer (GET_CONFIG).
    caf::reacts_to<cancel_atom>,
    /// The same, and every snapshot or restore asked for later fails at once
    /// ("cancelled before the transfer began"): for callers that are ending
    /// (Ctrl-C), whose cancel may overtake their own request.
    caf::reacts_to<cancel_all_atom>,
    /// Reconnect now: while reconnecting, the next attempt at once; when
    /// broken after a loss (or a refused resume), start reconnecting again.
    caf::replies_to<reconnect_atom>::with<caf::ok_atom>,
    /// To itself: the reconnect timer of generation N.
    caf::reacts_to<retry_atom, uint64_t>,
    /// Events go to `subscriber` as (event_atom, DeviceEvent).
    caf::reacts_to<subscribe_atom, caf::actor>>;

/// Owns the back-end socket and BackendClient; runs each step (one request
/// sequence) as an event-loop task, one at a time, each request bounded by
/// its deadline. After any
/// error that breaks the connection it also sends (lost_atom, reason) to the
/// device, once.
using connection_actor = caf::typed_actor<
    /// Replies with what was negotiated and a dup of the socket (for the
    /// hang-up watch).
    caf::replies_to<negotiate_atom, NegotiateRequest>::with<DeviceInfo, SharedFd>,
    caf::replies_to<activate_atom, ActivateRequest>::with<caf::ok_atom>,
    caf::replies_to<mem_table_atom, std::vector<wire::MemoryRegion>, std::vector<SharedFd>>::with<
        caf::ok_atom>,
    /// ADD_MEM_REG / REM_MEM_REG (CONFIGURE_MEM_SLOTS).
    caf::replies_to<add_mem_reg_atom, wire::MemoryRegion, SharedFd>::with<caf::ok_atom>,
    caf::replies_to<rem_mem_reg_atom, wire::MemoryRegion>::with<caf::ok_atom>,
    caf::replies_to<start_queues_atom, std::vector<QueueStart>>::with<caf::ok_atom>,
    /// SET_VRING_ENABLE(0) then GET_VRING_BASE for each index: the bases in
    /// that order (`packed`: no 16-bit check as for split-ring bases).
    caf::replies_to<stop_queues_atom, std::vector<uint16_t>, bool>::with<std::vector<uint32_t>>,
    caf::replies_to<get_config_atom, uint32_t, uint32_t>::with<std::vector<uint8_t>>,
    caf::replies_to<set_config_atom, uint32_t, std::vector<uint8_t>>::with<caf::ok_atom>,
    /// RESET_DEVICE when negotiated, then SET_STATUS(0) when STATUS was.
    caf::replies_to<reset_device_atom>::with<caf::ok_atom>,
    /// SET_DEVICE_STATE_FD(direction, phase 0, fd): replies with the fd to
    /// use (the back-end's own, or empty = keep ours).
    caf::replies_to<state_fd_atom, uint32_t, SharedFd>::with<SharedFd>,
    caf::replies_to<check_state_atom>::with<caf::ok_atom>,
    /// SET_STATUS(status) when STATUS was negotiated (else nothing).
    caf::replies_to<status_atom, uint8_t>::with<caf::ok_atom>,
    /// GET_INFLIGHT_FD(num_queues, queue_size): the region (mmap_size 0 and
    /// no fd when the back-end declines).
    caf::replies_to<inflight_atom, uint16_t, uint16_t>::with<wire::InflightDesc, SharedFd>,
    caf::reacts_to<step_done_atom, uint64_t>>;  ///< internal: step N has ended

/// One back-end state transfer at a time, between a pipe and a snapshot file,
/// never holding the state in memory. Detached: it moves the bytes in short
/// slices and reads its mailbox between them, so cancel and the deadline
/// take effect within one slice.
using snapshot_actor = caf::typed_actor<
    caf::replies_to<save_atom, SaveJob>::with<SnapshotInfo>,
    /// Opens the restore's file and verifies it whole (checksum) before anything
    /// is sent: replies with its manifest. The file stays open for load.
    caf::replies_to<open_atom, RestoreOptions, TransferDeadline>::with<
        std::shared_ptr<const snapshot::Manifest>>,
    /// SET_DEVICE_STATE_FD(load) -> stream the opened file into the pipe ->
    /// CHECK_DEVICE_STATE.
    caf::replies_to<load_atom, TransferDeadline>::with<SnapshotInfo>,
    caf::reacts_to<cancel_atom>,
    /// To itself: move the next slice.
    caf::reacts_to<pump_atom>>;

/// The interrupt loop and the hang-up watch.
using worker_actor = caf::typed_actor<
    /// Watch these fds for hang-up (POLLHUP/POLLERR) until stopped by exit;
    /// on hang-up sends (lost_atom, its address, reason) to the device, once per watch (a
    /// new watch replaces the old one). Either may be empty.
    caf::reacts_to<watch_atom, SharedFd, SharedFd>,
    /// Start forwarding each queue's call eventfd to the sink. Interrupts kept
    /// pending while stopped merge per vector (like an eventfd) and go out first.
    caf::replies_to<start_atom, std::vector<WatchedQueue>, InterruptSink>::with<caf::ok_atom>,
    /// Stop forwarding; forwards what is pending first. Signals that arrive
    /// afterwards are held (in the eventfds, or as pending) and forwarded by
    /// the next start. The watcher thread is kept: a start with the same
    /// queues (wake) reuses it, other queues replace it.
    caf::replies_to<stop_atom>::with<caf::ok_atom>,
    /// From the watcher thread: `count` signals on queue `queue`.
    caf::reacts_to<irq_atom, int32_t, uint64_t>,
    /// An interrupt that did not come through an eventfd (BACKEND_VRING_CALL,
    /// vector -1 = config change): forwarded now if running, else at start.
    caf::reacts_to<interrupt_atom, int32_t>,
    /// From the watcher thread: a watched socket hung up (tag = which | generation << 1;
    /// which: 0 main socket, 1 channel; generation tells replaced watches apart).
    caf::reacts_to<hangup_atom, int32_t>,
    /// Interrupts forwarded so far (not raw eventfd signals), per queue index.
    caf::replies_to<caf::get_atom>::with<std::vector<uint64_t>>>;

/// Serves the back-end channel (BACKEND_REQ).
using channel_actor = caf::typed_actor<
    /// From the reader thread: one decoded request (fds owned by it).
    caf::reacts_to<backend_req_atom, std::shared_ptr<BackendRequest>>,
    /// From the reader thread: the channel closed or broke (reason).
    caf::reacts_to<channel_eof_atom, std::string>,
    /// The mapper for SHMEM_MAP/UNMAP and the region sizes (index = shmid).
    caf::replies_to<mapper_atom, std::shared_ptr<SharedMemoryMapper>, std::vector<uint64_t>>::with<
        caf::ok_atom>,
    /// Drops every mapping (device reset); keeps serving.
    caf::replies_to<caf::reset_atom>::with<caf::ok_atom>,
    /// Requests served so far.
    caf::replies_to<caf::get_atom>::with<uint64_t>>;

/// One VMM connection of `vufront attach` (actors/control_session.hpp).
using control_session_actor = caf::typed_actor<
    /// From the reader thread: one packet (its credit travels with it).
    caf::reacts_to<packet_atom, std::shared_ptr<control::Packet>>,
    /// From the reader thread: the VMM closed the connection, or it broke.
    caf::reacts_to<ctl_eof_atom, std::string>,
    /// From the server: an event to send, with its fds.
    caf::reacts_to<push_atom, nlohmann::json, std::vector<SharedFd>>>;

/// `vufront attach`'s root (actors/control_server.hpp): the devices by id,
/// the VMM connections, events from the devices to the connections.
using control_server_actor = caf::typed_actor<
    /// Negotiates every configured device and starts accepting; replies with
    /// the greeting's device list, or the first failure.
    caf::replies_to<start_atom>::with<nlohmann::json>,
    /// From the accept thread: a new connection.
    caf::reacts_to<accept_atom, SharedFd>,
    /// The greeting ({"event": "hello", ...}).
    caf::replies_to<hello_atom>::with<nlohmann::json>,
    /// The device `id` ("" = the only one), with its set-up.
    caf::replies_to<lookup_atom, std::string>::with<device_actor, DeviceSetup>,
    caf::replies_to<add_dev_atom, DeviceSetup>::with<nlohmann::json>,
    caf::replies_to<rm_dev_atom, std::string>::with<caf::ok_atom>,
    /// set_shmem_owner: (device id, session id, true = that VMM, false = vufront).
    caf::replies_to<owner_atom, std::string, uint64_t, bool>::with<caf::ok_atom>,
    /// From a device's event relay.
    caf::reacts_to<dev_event_atom, std::string, DeviceEvent>,
    /// From a device's VMM shared-memory mapper: an event for the owner, with the fd.
    caf::reacts_to<shmem_fwd_atom, std::string, nlohmann::json, SharedFd>>;

}  // namespace vufront::actors
