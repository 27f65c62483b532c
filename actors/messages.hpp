#pragma once
// Every atom and typed actor interface of the actor layer, in one place (one
// CAF type-ID block); the payload structs are in actors/payloads.hpp.
// CAF 0.17.6: `replies_to<...>::with<...>` syntax, atoms of at most 10
// characters.
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

#include "actors/payloads.hpp"
#include "control/packet.hpp"
#include "memory/shmem_mapper.hpp"
#include "base/unique_fd.hpp"
#include "protocol/backend_request.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"
#include "proxy/forward.hpp"

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
  CAF_ADD_ATOM(vufront, vufront::actors, dirty_log_atom, "dirtylog")
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
  // attach: VMM-facing vhost-user sockets (actors/vmm_port.hpp)
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_atom, "vmm")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_fwd_atom, "vmmfwd")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_conn_atom, "vmmconn")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_msg_atom, "vmmmsg")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_eof_atom, "vmmeof")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_lost_atom, "vmmlost")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_renew_atom, "vmmrenew")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_back_atom, "vmmback")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_replay_atom, "vmmreplay")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_hold_atom, "vmmhold")
  CAF_ADD_ATOM(vufront, vufront::actors, fence_atom, "fence")
  CAF_ADD_ATOM(vufront, vufront::actors, fenced_atom, "fenced")
  CAF_ADD_ATOM(vufront, vufront::actors, vmm_save_atom, "vmmsave")
CAF_END_TYPE_ID_BLOCK(vufront)
// (caf::get_atom, caf::ok_atom, caf::reset_atom are predefined.)

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

/// A device's VMM-facing vhost-user socket (actors/vmm_port.hpp): serves
/// one VMM connection at a time as its back-end, forwarding to the device's
/// connection actor.
using vmm_port_actor = caf::typed_actor<
    /// From the accept task: a new VMM connection.
    caf::reacts_to<accept_atom, SharedFd>,
    /// From the reader task: one request (framing checked, not yet decoded).
    caf::reacts_to<vmm_msg_atom, std::shared_ptr<Message>>,
    /// From the reader task: the VMM closed the connection, or it broke.
    caf::reacts_to<vmm_eof_atom, std::string>,
    /// From the device: the connection actor the VMM's requests go to
    /// (vmm_fwd_atom, straight to it), told when it changes: on the device's
    /// connect, renewal and reconnect; null (and why: the error a request
    /// fails with) whenever the device is not negotiated with one (lost,
    /// reconnecting, shutting down).
    caf::reacts_to<vmm_conn_atom, caf::actor_addr, caf::error>,
    /// From the device: its back-end was lost (why); vufront answers for it
    /// until the next one is there (docs/vmm-proxy.md, "Back-end loss").
    caf::reacts_to<vmm_lost_atom, std::string>,
    /// From the device: a new back-end connection after a loss (what the
    /// device's resumed event said); the VMM's shadow is replayed into it.
    caf::reacts_to<vmm_back_atom, std::string>,
    /// To itself: the deadline of held request N.
    caf::reacts_to<vmm_hold_atom, uint64_t>,
    /// From the device: a snapshot of a device the VMM drives: its running
    /// rings are stopped, the state saved, the rings resumed where they
    /// stopped (actors/vmm_pause.cpp).
    caf::replies_to<snapshot_atom, SnapshotOptions>::with<SnapshotInfo>,
    /// From the device: the back-end's CONFIG_CHANGE_MSG, for the VMM's channel.
    caf::reacts_to<cfg_change_atom>,
    /// The VMM session as `status` shows it.
    caf::replies_to<status_atom>::with<nlohmann::json>>;

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
    caf::reacts_to<subscribe_atom, caf::actor>,
    /// A VMM-facing socket's port drives the device from now on (commands
    /// that would fight it answer bad_state); replies with what was
    /// negotiated. Only on a negotiated device, once.
    caf::replies_to<vmm_atom, caf::actor_addr>::with<DeviceInfo>,
    /// The VMM left: a new connection to the back-end makes it forget the
    /// dead VM's memory and rings (answered once it is negotiated; if it
    /// cannot be, the device is lost with `why`).
    caf::replies_to<vmm_renew_atom, std::string>::with<caf::ok_atom>,
    /// A VMM's shadow replayed into the current connection (replay_shadow()).
    caf::replies_to<vmm_replay_atom, ActivateRequest>::with<caf::ok_atom>,
    /// Makes sure the back-end whose connection was lost can no longer touch
    /// guest memory (docs/vmm-proxy.md, "Fencing"): replies with what was
    /// done ("process 123 had exited", "... killed"), or fails (fencing off,
    /// refused, the peer unknown, still there after the drain timeout).
    caf::replies_to<fence_atom>::with<std::string>,
    /// From the port: the back-end's state saved, with the VMM's features and
    /// stopped rings in the manifest (a snapshot under a running VMM).
    caf::replies_to<vmm_save_atom, SnapshotOptions, VmmSaveSpec>::with<SnapshotInfo>,
    /// To itself: fence N ended (what was done, or the error).
    caf::reacts_to<fenced_atom, uint64_t, std::string, caf::error>,
    /// Dirty logging on (true) or off (false) (actors/device_dirty_log.cpp):
    /// replies with the log's memfd and size (on; the same log when already
    /// on), or an empty fd and 0 (off).
    caf::replies_to<dirty_log_atom, bool>::with<SharedFd, uint64_t>>;

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
    /// SET_VRING_ENABLE(0) (bit 30) then GET_VRING_BASE for each index;
    /// replies with the bases in the same order. `packed`: packed rings
    /// (bases of 32 bits, normalised to the full form: BackendClient's
    /// normalise_packed_base), and the first queue whose answer came in the
    /// short form (-1: none did).
    caf::replies_to<stop_queues_atom, std::vector<uint16_t>, bool>::with<std::vector<uint32_t>,
                                                                        int32_t>,
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
    /// One VMM request, forwarded as it came (proxy/forward.hpp).
    caf::replies_to<vmm_fwd_atom, proxy::Forward, proxy::Answer>::with<proxy::ForwardResult>,
    /// A change of dirty logging (LogChange: SET_LOG_BASE, SET_FEATURES,
    /// SET_VRING_ADDR, each in that order when given).
    caf::replies_to<dirty_log_atom, LogChange>::with<caf::ok_atom>,
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
    /// From the call watcher: the queues whose call eventfd held signals in
    /// one wake, each once (while stopped: running, the relay delivers to the sink itself).
    caf::reacts_to<irq_atom, std::vector<int32_t>>,
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
    caf::reacts_to<push_atom, nlohmann::json, std::vector<SharedFd>>,
    /// From a transfer's relay (actors/transfer_events.hpp): a
    /// transfer_progress event of the command whose id (dumped) is given;
    /// sent only while that command has not been answered.
    caf::reacts_to<progress_atom, std::string, nlohmann::json>>;

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
