#pragma once
// BackendClient: one typed call per request the front-end sends to a
// back-end (crosvm's naming: we are the client of the back-end).
//
// Rules every call follows:
// * the request is refused locally (errc::not_negotiated) when it needs a
//   protocol feature that was not acked with set_protocol_features();
// * with REPLY_ACK negotiated, requests without a native reply carry
//   NEED_REPLY and their u64 ack is awaited (non-zero -> backend_failure);
// * a reply is accepted only if it answers the pending request (same code),
//   has flags == VERSION|REPLY exactly, the right body size and exactly the
//   fds that reply may carry, and its values validate;
// * every wait has a deadline (Timeouts); any violation or timeout marks the
//   connection broken and the Error names the request.
// A back-end's documented refusal (GET_CONFIG answered with size 0, a
// failure ack, a non-zero CHECK_DEVICE_STATE) is errc::backend_failure and
// leaves the stream in sync: the connection stays usable.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "protocol/connection.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront {

/// The deadlines of the requests to a back-end. Every request follows
/// `request` (`--timeout`), except a ring stop (GET_VRING_BASE), which follows
/// `drain` (`--drain-timeout`): the back-end answers only once the ring's
/// in-flight I/O has completed, which on a busy or slow disk may take as long
/// as the storage's own I/O timeout. Each request has its own deadline; a
/// step of several requests is bounded by them, not by a sum of its own.
struct Timeouts {
  /// The default `--timeout`.
  static constexpr std::chrono::milliseconds default_request{5000};
  /// The default `--drain-timeout`: 30 s, Linux's default block-request
  /// timeout (blk-mq and SCSI disks), i.e. how long an in-flight disk request
  /// may legitimately take before the storage below the back-end gives up.
  static constexpr std::chrono::milliseconds default_drain{30000};

  /// One request/reply round trip (SET_MEM_TABLE and ADD_MEM_REG included).
  std::chrono::milliseconds request{default_request};
  /// GET_VRING_BASE: the back-end drains the ring's in-flight I/O first.
  std::chrono::milliseconds drain{default_drain};
};

/// Reply of GET_INFLIGHT_FD: the description plus the back-end's fd (empty
/// when mmap_size == 0, i.e. the back-end declined).
struct InflightRegion {
  wire::InflightDesc desc{};
  UniqueFd fd;
};

/// Reply of SET_DEVICE_STATE_FD: the back-end's own fd when it returned one
/// (then the front-end must use it instead of its pipe end).
struct DeviceStateReply {
  std::optional<UniqueFd> backend_fd;
};

/// A packed ring's GET_VRING_BASE answer after normalise_packed_base().
struct PackedVringBase {
  uint32_t base = 0;        ///< the full form (vhost-user spec, packed vring indices): used half in bits 16-31
  bool short_form = false;  ///< the back-end sent only bits 0-15 (avail half)
};

/// The one normalisation of a packed ring's GET_VRING_BASE answer. The full
/// form (vhost-user spec, "Vring descriptor indices for packed virtqueues") is avail index + wrap counter in bits 0-15 and used
/// index + wrap counter in bits 16-31. DPDK's librte_vhost (22.11: OVS-DPDK,
/// testpmd's net_vhost, ...) answers with bits 0-15 only and 0 above: the
/// short form. A stopped ring is drained, so used == avail, which DPDK itself
/// assumes (its SET_VRING_BASE sets last_used = last_avail); QEMU stores the
/// upper half verbatim, which would record a wrong used index. So:
/// * upper half 0, lower half not 0: the short form; used := avail;
/// * upper half not 0: the full form, unchanged;
/// * both 0: the same in either form, unchanged (not counted as short).
/// No other guessing.
[[nodiscard]] constexpr PackedVringBase normalise_packed_base(uint32_t num) noexcept {
  const uint32_t avail = num & 0xffffu;
  if ((num >> 16) == 0 && avail != 0)
    return {avail | (avail << 16), true};
  return {num, false};
}

class BackendClient {
public:
  explicit BackendClient(Connection conn, Timeouts timeouts = {});

  /// Connects to a listening back-end (retrying until the deadline as `wait`
  /// says, see Connection::connect).
  [[nodiscard]] static Result<BackendClient> connect(const std::string& path,
                                                     std::chrono::milliseconds timeout,
                                                     Timeouts timeouts = {},
                                                     const std::atomic<bool>* stop = nullptr,
                                                     ConnectWait wait = ConnectWait::socket);

  // ---- session and features
  [[nodiscard]] Result<void> set_owner();
  /// Deprecated by the spec (back-ends may drop all state); offered for completeness.
  [[nodiscard]] Result<void> reset_owner();
  [[nodiscard]] Result<uint64_t> get_features();
  [[nodiscard]] Result<void> set_features(uint64_t features);
  /// Needs bit 30 (PROTOCOL_FEATURES) in the last get_features() answer.
  [[nodiscard]] Result<uint64_t> get_protocol_features();
  /// Records the acked set; it gates every later call (and REPLY_ACK use).
  [[nodiscard]] Result<void> set_protocol_features(uint64_t features);
  /// MQ. Validates 1 <= n <= 0x8000.
  [[nodiscard]] Result<uint64_t> get_queue_num();
  /// CONFIGURE_MEM_SLOTS. Validates 1 <= n <= 512 (QEMU's cap).
  [[nodiscard]] Result<uint64_t> get_max_mem_slots();

  // ---- memory
  /// 1..8 regions, one fd each (fds[i] backs regions[i]).
  [[nodiscard]] Result<void> set_mem_table(const std::vector<wire::MemoryRegion>& regions,
                                           const std::vector<int>& fds);
  [[nodiscard]] Result<void> add_mem_reg(const wire::MemoryRegion& region, int fd);
  [[nodiscard]] Result<void> rem_mem_reg(const wire::MemoryRegion& region);
  /// LOG_SHMFD: sends the log memfd and waits for the back-end's reply.
  [[nodiscard]] Result<void> set_log_base(const wire::Log& log, int fd);

  // ---- virtqueues
  [[nodiscard]] Result<void> set_vring_num(uint32_t index, uint32_t num);
  [[nodiscard]] Result<void> set_vring_addr(const wire::VringAddr& addr);
  [[nodiscard]] Result<void> set_vring_base(uint32_t index, uint32_t base);
  /// Stops the ring; returns its base. Validates the echoed index, and that a
  /// split-ring base fits 16 bits unless `packed`; a packed ring's base is
  /// get_packed_vring_base()'s, normalised.
  [[nodiscard]] Result<uint32_t> get_vring_base(uint32_t index, bool packed = false);
  /// GET_VRING_BASE of a packed ring: its answer normalised to the full form
  /// (normalise_packed_base), and whether the back-end sent the short form.
  [[nodiscard]] Result<PackedVringBase> get_packed_vring_base(uint32_t index);
  /// fd < 0 sends the NOFD flag. index <= 255 (the fd word has 8 index bits).
  [[nodiscard]] Result<void> set_vring_kick(uint32_t index, int fd);
  [[nodiscard]] Result<void> set_vring_call(uint32_t index, int fd);
  [[nodiscard]] Result<void> set_vring_err(uint32_t index, int fd);
  /// Needs bit 30 negotiated (set_features with PROTOCOL_FEATURES).
  [[nodiscard]] Result<void> set_vring_enable(uint32_t index, bool enable);

  // ---- device config (CONFIG)
  /// Validates the reply's offset/size equal the request's and size != 0.
  [[nodiscard]] Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size,
                                                         uint32_t flags = 0);
  [[nodiscard]] Result<void> set_config(uint32_t offset, const std::vector<uint8_t>& data,
                                        uint32_t flags = 0);

  // ---- channels, inflight, status, reset
  /// BACKEND_REQ: hands one end of a socketpair to the back-end.
  [[nodiscard]] Result<void> set_backend_req_fd(int fd);
  [[nodiscard]] Result<InflightRegion> get_inflight_fd(uint16_t num_queues, uint16_t queue_size);
  [[nodiscard]] Result<void> set_inflight_fd(const wire::InflightDesc& desc, int fd);
  [[nodiscard]] Result<void> set_status(uint8_t status);
  /// Validates the reply fits a status byte.
  [[nodiscard]] Result<uint8_t> get_status();
  [[nodiscard]] Result<void> reset_device();

  // ---- shared memory and device state
  /// SHMEM. Validates nregions equals the count of non-zero sizes.
  [[nodiscard]] Result<wire::ShmemConfig> get_shmem_config();
  /// DEVICE_STATE. `fd` is the pipe end handed over (write end for save).
  [[nodiscard]] Result<DeviceStateReply> set_device_state_fd(uint32_t direction, uint32_t phase,
                                                             int fd);
  [[nodiscard]] Result<void> check_device_state();

  // ---- state
  /// Features answered by the last get_features() (0 before).
  [[nodiscard]] uint64_t backend_features() const noexcept { return backend_features_; }
  /// Features sent with the last set_features() (0 before).
  [[nodiscard]] uint64_t acked_features() const noexcept { return acked_features_; }
  [[nodiscard]] uint64_t acked_protocol_features() const noexcept { return acked_protocol_; }
  [[nodiscard]] bool protocol_feature(unsigned b) const noexcept { return has_bit(acked_protocol_, b); }
  [[nodiscard]] bool broken() const noexcept { return conn_.broken(); }
  [[nodiscard]] Connection& connection() noexcept { return conn_; }
  [[nodiscard]] const Timeouts& timeouts() const noexcept { return timeouts_; }
  void set_timeouts(const Timeouts& t) { timeouts_ = t; }

private:
  // (private helpers for send/ack/reply handling live in backend_client.cpp)
  /// not_negotiated unless protocol feature `b` was acked.
  [[nodiscard]] Result<void> require_protocol(FrontendReq req, unsigned b) const;
  /// Sends a request without a native reply; with REPLY_ACK it carries
  /// NEED_REPLY and the ack is awaited.
  [[nodiscard]] Result<void> call_no_reply(FrontendReq req, const std::vector<uint8_t>& body,
                                           const std::vector<int>& fds, Deadline deadline);
  /// Sends a request with a native reply and receives that reply (framing
  /// checked by Connection; the caller parses it and passes errors to
  /// reply_error()).
  [[nodiscard]] Result<Message> call_with_reply(FrontendReq req, const std::vector<uint8_t>& body,
                                                const std::vector<int>& fds, Deadline deadline,
                                                uint32_t config_size = 0);
  /// Marks the connection broken unless `e` is a refusal; returns `e`.
  [[nodiscard]] Error reply_error(Error e);
  /// Parses a u64 reply of `req` (marking the connection broken on violation).
  [[nodiscard]] Result<uint64_t> call_u64(FrontendReq req, Deadline deadline);

  Connection conn_;
  Timeouts timeouts_;
  uint64_t backend_features_ = 0;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_ = 0;
};

}  // namespace vufront
