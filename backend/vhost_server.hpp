#pragma once
// VhostServer: the vhost-user server side of vufront-backend. Listens on a
// unix socket, serves one front-end at a time (the next one after a
// disconnect unless --once), and runs every connection in one poll loop over
// the socket, the kick eventfds, the back-end channel and a signalfd
// (SIGINT/SIGTERM: clean exit; SIGUSR1: CONFIG_CHANGE_MSG). What the rings
// carry is up to the Device (backend/device.hpp: blk or net); the server
// pops and pushes for it through the Rings interface.
//
// The front-end is untrusted: every request goes through the front-end
// request codec (protocol/frontend_request.hpp: exact payload size, fd
// count, gating feature, index range) before it is applied; a violation or
// an unknown request is logged and the connection dropped (the daemon keeps
// accepting). What is left here is the device's behaviour.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend_memory.hpp"
#include "backend/dirty_log_writer.hpp"
#include "backend/device.hpp"
#include "backend/faults.hpp"
#include "backend/inflight.hpp"
#include "backend/options.hpp"
#include "protocol/connection.hpp"
#include "protocol/frontend_request.hpp"
#include "virtio/device_queue.hpp"

namespace vufront::backend {

/// Virtio and protocol features offered for these options and device.
[[nodiscard]] uint64_t offered_features(const Options& o, const Device& d);
[[nodiscard]] uint64_t offered_protocol_features(const Options& o, const Device& d);

class VhostServer final : private Rings {
public:
  VhostServer(Options options, std::unique_ptr<Device> device);
  VhostServer(const VhostServer&) = delete;
  VhostServer& operator=(const VhostServer&) = delete;
  ~VhostServer() override;

  /// Binds and listens on the socket (replacing a stale socket file), writes
  /// the pidfile, blocks the handled signals. Errors: io_error, invalid_argument.
  [[nodiscard]] Result<void> listen();
  /// Accept/serve loop; returns the process exit code.
  int run();
  /// Client mode (--connect): connects to the front-end's socket, retrying
  /// every 50 ms while nobody listens; empty when a signal says stop.
  [[nodiscard]] UniqueFd connect_to_frontend();

private:
  struct Vring {
    uint16_t num = 0;
    wire::VringAddr addr{};
    bool addr_set = false;
    uint32_t base = 0;
    bool base_set = false;
    UniqueFd kick, call, err;
    bool started = false;
    bool enabled = false;
    bool notify = false;  ///< pushed since the last call signal
    bool resubmit = false;  ///< chains to resubmit: process once the ring is ready
    std::optional<virtio::DeviceQueue> queue;
  };
  /// Per-connection state; a new one for every front-end.
  struct Session {
    explicit Session(Connection c) : conn(std::move(c)) {}
    Connection conn;
    uint64_t features = 0;
    uint64_t protocol = 0;
    uint8_t status = 0;
    BackendMemory mem;
    std::vector<Vring> vrings;
    Inflight inflight;
    DirtyLogWriter log;  ///< SET_LOG_BASE's (LOG_SHMFD)
    std::optional<Connection> backend;
    uint32_t backend_pending = 0;  ///< back-end requests awaiting an ack
    bool shmem_mapped = false;
    bool start_pending = false;    ///< device just started: send SHMEM_MAP after the reply
  };
  enum class Next { keep, drop };
  using Status = Result<std::optional<uint64_t>>;  ///< ack value, nullopt = replied natively

  void serve(UniqueFd client);
  [[nodiscard]] bool handle_signal();
  [[nodiscard]] Next on_message(Message&& m);
  /// What the codec validates the next request against.
  [[nodiscard]] Negotiated context() const;
  [[nodiscard]] Status dispatch(FrontendRequest& r);
  /// SET_FEATURES (LOG_ALL with packed rings refused).
  [[nodiscard]] Status set_features(uint64_t f);
  /// Sends a native reply (its fd, if any, stays owned by the caller).
  [[nodiscard]] Result<void> reply(const FrontendReply& r);

  // request groups (vhost_rings.cpp)
  [[nodiscard]] Status vring_request(FrontendRequest& r);
  [[nodiscard]] Result<void> start_ring(uint32_t index);
  /// Packed rings with an in-flight region: initialise it, or resume the
  /// ring where the region says a previous back-end left it.
  [[nodiscard]] Result<void> start_packed_tracking(uint32_t index);
  void stop_ring(uint32_t index);
  void process_ring(uint32_t index);
  void rebuild_queues();
  /// RESET_DEVICE, RESET_OWNER: rings, features and status back to a new
  /// front-end's (protocol features stay: the connection's, not the device's).
  void reset_device();
  /// SET_STATUS 0: every ring stopped where it is (GET_VRING_BASE answers
  /// its position), status 0, the device's queued data dropped; the
  /// negotiated features, ring set-up and in-flight region stay.
  void stop_device();
  /// Fresh vrings for a new front-end or a device reset (the device decides
  /// which start enabled).
  void init_vrings();
  // Rings, for the device (vhost_rings.cpp)
  [[nodiscard]] bool ready(uint32_t index) const override;
  [[nodiscard]] std::optional<virtio::Chain> pop(uint32_t index) override;
  bool unpop(uint32_t index, const virtio::Chain& chain) override;
  bool push(uint32_t index, const virtio::Chain& chain, uint32_t written) override;
  /// LOG_ALL acked (and no --forget-log): marks the chain's writable
  /// buffers and the ring's used area (at its log_guest_addr, LOG flag set)
  /// in the dirty log.
  void log_writes(const Vring& v, const virtio::Chain* chain);
  // device state and back-end channel
  [[nodiscard]] Status config_request(const FrontendRequest& r);
  [[nodiscard]] Status device_state_request(FrontendRequest& r);
  void device_started();
  /// SIGUSR2: unmaps the shared-memory window if mapped, maps it again if not
  /// (exercises SHMEM_UNMAP / SHMEM_MAP on a running device).
  void toggle_shmem();
  void send_backend(BackendReq req, const void* body, size_t size, int fd);
  /// --backend-req-oversize at `during` (a front-end request's name): an
  /// oversized CONFIG_CHANGE_MSG header on the back-end channel, then up to
  /// 5 s for the front-end to close the channel; the channel is dropped.
  void send_oversized_backend_request(const std::string& during);
  void on_backend_readable();

  [[nodiscard]] bool negotiated(unsigned protocol_bit) const;

  Options opt_;
  std::unique_ptr<Device> dev_;
  Faults faults_;
  UniqueFd listen_fd_;
  UniqueFd signal_fd_;
  bool stop_ = false;
  bool drop_ = false;       ///< SIGHUP: drop the current front-end
  bool listening_ = false;
  uint64_t socket_dev_ = 0, socket_ino_ = 0;  ///< the socket file, as bound
  uint32_t popped_ = 0;     ///< requests taken off rings (--crash-in-request)
  uint32_t completed_ = 0;  ///< used entries published (--crash-in-completion)
  bool last_state_ok_ = false;  ///< CHECK_DEVICE_STATE: the last transfer succeeded
  std::unique_ptr<Session> s_;
};

}  // namespace vufront::backend
