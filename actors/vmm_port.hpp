#pragma once
// The VMM port: a device's VMM-facing vhost-user socket (`vufront attach
// --vmm-socket ID=PATH`, docs/vmm-proxy.md). An unmodified VMM (QEMU's
// vhost-user-blk-pci, ...) connects to it as to any back-end; vufront serves
// it as that back-end and stays the front-end of the real one.
//
//   start     the device (negotiated) is taken over -> the offer -> listen
//   accept    peer uid checked -> one VMM connection at a time
//   request   decoded against what this VMM negotiated -> answered here
//             (identity: features, queues, slots) or prepared (addresses
//             translated, fds shared) and forwarded to the device's
//             connection actor (the one the device last told the port), one
//             at a time in the VMM's order -> the reply after the back-end's
//   eof       the VMM left without a word: its rings are stopped and its
//             memory removed from the back-end (or the connection renewed);
//             every fd of it in vufront is closed
//   lost      the device's back-end was lost (vmm_away.cpp): vufront answers
//             the VMM for it from the shadow (once the lost back-end is
//             fenced), holds what only a back-end can answer, and when the
//             device has a new connection replays the shadow into it; the VMM
//             connection closes only where a resume would be wrong (virtio-fs,
//             packed rings without an in-flight region, fencing impossible)
//
// Kick and call fds go straight to the back-end; the shadow keeps them.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/fd_watcher.hpp"
#include "actors/messages.hpp"
#include "actors/vmm_reader.hpp"
#include "base/unix_socket.hpp"
#include "protocol/connection.hpp"
#include "proxy/shadow.hpp"

namespace vufront::actors {

struct VmmPortConfig {
  std::string id;    ///< the device's id (logs, events)
  std::string path;  ///< the socket
  /// Its mode and group (base/listen_options.hpp).
  ListenOptions listen;
  /// uids allowed besides the one vufront runs as.
  std::vector<uint32_t> allowed_uids;
  device_actor device;
  /// How long a reply to the VMM may wait for room in its socket.
  std::chrono::milliseconds send_timeout{5000};
  /// How long a request only a back-end can answer waits for the next one
  /// while the back-end is away (then the VMM connection closes).
  std::chrono::milliseconds hold_timeout{5000};
  /// Whether rings without INFLIGHT_SHMFD or IN_ORDER are resumed after a
  /// loss at the used index (best effort, as QEMU's own fallback); false
  /// (`--resume-without-inflight=no`): the VMM connection closes instead.
  bool resume_without_inflight = true;
};

struct VmmPortState {
  static inline const char* name = "vufront.vmm_port";

  VmmPortConfig config;
  Negotiated offer;
  UniqueFd listen_fd;
  uint64_t connections = 0;     ///< accepted since the start
  uint64_t requests = 0;        ///< of the current connection
  uint64_t requests_total = 0;  ///< since the start
  std::string last_disconnect;
  /// The last session as it stood when it ended (`status`: what the VMM had
  /// set up, its rings' positions).
  nlohmann::json last_session;
  std::optional<uint32_t> peer_uid;
  /// The current VMM connection (sent on here; the reader reads a dup).
  std::optional<Connection> vmm;
  /// The same socket (one dup per session) for the connection step that
  /// forwards a request: it sends the VMM its answer as soon as the
  /// back-end's reply is read (proxy::forward_and_answer()), the shadow
  /// records it afterwards. A send waiting for room gives up when the
  /// session ends (`vmm_answer_stop`) or at send_timeout.
  std::shared_ptr<Connection> vmm_answer;
  std::shared_ptr<std::atomic<bool>> vmm_answer_stop;
  /// The device's connection actor the VMM's requests go to, straight
  /// (vmm_conn_atom: the device tells it on connect, renewal, reconnect);
  /// null while there is none, and `no_conn` says why.
  caf::actor_addr backend_conn;
  caf::error no_conn;
  /// The connection step that sent the VMM its answer let the reader read
  /// the next request (proxy::Answer::sent): done() gives it no credit.
  bool reader_ahead = false;
  /// What the reader, ahead, sent while the request before was not yet
  /// recorded: handled in order once that request is done.
  std::shared_ptr<Message> next_request;
  std::optional<std::string> next_eof;
  /// The VMM's end of its back-end channel (SET_BACKEND_REQ_FD).
  std::optional<Connection> channel;
  std::optional<proxy::Shadow> shadow;
  bool tearing_down = false;
  /// Why the session ended, when its teardown waits for the snapshot in
  /// progress (vmm_pause.cpp, pause_over()).
  std::optional<std::string> teardown_after_snapshot;
  DeviceKind kind = DeviceKind::blk;  ///< the device's (virtio-fs cannot be resumed)

  // ---- the back-end away (vmm_away.cpp)
  bool away = false;       ///< lost, and the shadow not yet replayed into a new one
  bool replaying = false;  ///< the shadow is being replayed into the new connection
  bool fenced = false;     ///< the lost back-end can no longer touch memory
  bool fencing = false;
  /// The request waiting for the fence, or (`held_for_backend`) for a back-end.
  std::shared_ptr<proxy::Shadow::Prepared> held;
  bool held_for_backend = false;
  uint64_t hold_token = 0;
  uint64_t backend_losses = 0;       ///< under a session, since the start
  uint64_t resumes = 0;              ///< shadows replayed into a new back-end
  uint64_t best_effort_resumes = 0;  ///< of those, without INFLIGHT_SHMFD or IN_ORDER
  uint64_t answered_for_backend = 0; ///< requests answered from the shadow
  std::string last_resume;

  // ---- a snapshot under the VMM (vmm_pause.cpp)
  bool in_request = false;  ///< a VMM request is taken and not yet answered
  bool pausing = false;     ///< a snapshot has the rings stopped (or is about to)
  /// Rings the snapshot stopped and will start again (enabled or not, as the
  /// VMM left them), unless the VMM stops them meanwhile.
  struct Paused {
    uint32_t ring = 0;
    bool enable = false;
  };
  std::vector<Paused> paused;
  bool held_for_snapshot = false;  ///< `held` waits for the snapshot's end
  std::function<void()> when_idle;  ///< the snapshot's start, once in_request is over
  uint64_t snapshots = 0;
  std::string last_pause;
  std::unique_ptr<VmmReader> reader;
  std::unique_ptr<FdWatcher> acceptor;  ///< LAST: joined first
};

/// The port with its start: take the device over, work out the offer,
/// listen (errors: the device is not negotiated, the back-end cannot be
/// proxied, the socket is in use).
using vmm_port_full = vmm_port_actor::extend<caf::replies_to<start_atom>::with<caf::ok_atom>>;

[[nodiscard]] vmm_port_full::behavior_type vmm_port_impl(
    vmm_port_full::stateful_pointer<VmmPortState> self, VmmPortConfig config);

}  // namespace vufront::actors
