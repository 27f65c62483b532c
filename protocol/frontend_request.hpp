#pragma once
// The front-end request codec: decoding and validation of what a front-end
// sends on the main channel (vhost-user spec: "Message specification", "Front-end message types", REPLY_ACK), and encoding of the
// replies a back-end gives. Pure functions, no I/O and no CAF: a server
// receives a Message with Connection::receive(frontend_request_max_body,
// frontend_request_max_fds, ...), hands it to decode_frontend_request() with
// what has been negotiated so far, applies the typed request, and answers
// with send_reply() (or Connection::send on an encode_*_reply() result).
// Used by the reference back-end (backend/) and by a VMM-facing socket where
// vufront serves a front-end itself. Fuzzed (tests/fuzz/fuzz_frontend_request.cpp).

#include <cstddef>
#include <cstdint>
#include <variant>
#include <vector>

#include "base/unique_fd.hpp"
#include "protocol/connection.hpp"
#include "base/error.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront {

/// What has been negotiated on one connection so far: the context a request
/// is validated in. A server updates it after applying SET_FEATURES and
/// SET_PROTOCOL_FEATURES (and resets `acked_features` on a device reset).
struct Negotiated {
  uint64_t offered_features = 0;           ///< virtio features GET_FEATURES answers
  uint64_t acked_features = 0;             ///< the last SET_FEATURES
  uint64_t offered_protocol_features = 0;  ///< what GET_PROTOCOL_FEATURES answers
  uint64_t acked_protocol_features = 0;    ///< the last SET_PROTOCOL_FEATURES
  uint32_t num_queues = 0;                 ///< ring indices must be below this
  uint32_t max_mem_slots = wire::max_mem_table_regions;  ///< SET_MEM_TABLE bound (also <= 8)
};

/// SET_VRING_KICK/CALL/ERR: the ring and whether an fd came (NOFD clear).
struct VringFd {
  uint32_t index = 0;
  bool has_fd = false;  ///< the fd is FrontendRequest::fds[0]
};

/// SET_MEM_TABLE: the regions; region i's fd is FrontendRequest::fds[i].
struct MemoryTable {
  std::vector<wire::MemoryRegion> regions;
};

/// GET/SET_CONFIG: the header and its `size` data bytes (GET_CONFIG's are
/// placeholders whose contents carry no meaning).
struct ConfigRequest {
  wire::ConfigHeader header{};
  std::vector<uint8_t> data;
};

/// The typed payload of a request; which alternative each request carries:
/// * monostate: GET_FEATURES, SET_OWNER, RESET_OWNER, SET_LOG_FD,
///   GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_BACKEND_REQ_FD,
///   POSTCOPY_ADVISE/LISTEN/END, GPU_SET_SOCKET, RESET_DEVICE,
///   GET_MAX_MEM_SLOTS, GET_STATUS, CHECK_DEVICE_STATE, GET_SHMEM_CONFIG;
/// * wire::U64: SET_FEATURES, SET_PROTOCOL_FEATURES, SEND_RARP, NET_SET_MTU,
///   CLOSE_CRYPTO_SESSION, SET_STATUS;
/// * wire::VringState: SET_VRING_NUM/BASE/ENABLE/ENDIAN, GET_VRING_BASE,
///   GET_VRING_BASE_SKIP_DRAIN, VRING_KICK;
/// * VringFd: SET_VRING_KICK/CALL/ERR; wire::VringAddr: SET_VRING_ADDR;
/// * MemoryTable: SET_MEM_TABLE; wire::MemoryRegion: ADD_MEM_REG, REM_MEM_REG;
/// * wire::Log: SET_LOG_BASE; wire::Iotlb: IOTLB_MSG; ConfigRequest:
///   GET/SET_CONFIG; wire::InflightDesc: GET/SET_INFLIGHT_FD;
///   wire::SharedObject: GET_SHARED_OBJECT; wire::DeviceStateTransfer:
///   SET_DEVICE_STATE_FD.
using FrontendPayload =
    std::variant<std::monostate, wire::U64, wire::VringState, VringFd, wire::VringAddr,
                 MemoryTable, wire::MemoryRegion, wire::Log, wire::Iotlb, ConfigRequest,
                 wire::InflightDesc, wire::SharedObject, wire::DeviceStateTransfer>;

/// A validated front-end request.
struct FrontendRequest {
  FrontendReq req{};
  uint32_t flags = 0;  ///< the header flags as received
  /// The front-end waits for a REPLY_ACK ack (a u64 status from
  /// encode_ack()): NEED_REPLY set, REPLY_ACK acked, and the request has no
  /// reply of its own (has_native_reply() false).
  bool need_reply = false;
  FrontendPayload payload;
  /// Owned, exactly as many as the request carries: one per region for
  /// SET_MEM_TABLE; one for SET_VRING_KICK/CALL/ERR without NOFD,
  /// SET_LOG_BASE, SET_LOG_FD, SET_BACKEND_REQ_FD, SET_INFLIGHT_FD,
  /// GPU_SET_SOCKET, ADD_MEM_REG, SET_DEVICE_STATE_FD; none otherwise.
  std::vector<UniqueFd> fds;
};

/// Largest body any front-end request may carry (a SET_CONFIG at the wire
/// bound, 4096) — the max_body for Connection::receive on a served socket.
inline constexpr size_t frontend_request_max_body = wire::max_payload_size;
/// Most fds a front-end request may carry (SET_MEM_TABLE's 8) — its max_fds.
inline constexpr size_t frontend_request_max_fds = wire::max_mem_table_regions;
static_assert(frontend_request_max_fds <= max_fds_per_message);

/// Largest config data GET/SET_CONFIG may carry (QEMU's VHOST_USER_MAX_CONFIG_SIZE).
inline constexpr uint32_t frontend_max_config_size = 256;
/// Largest queue size SET_VRING_NUM may set (virtio's 32768).
inline constexpr uint32_t frontend_max_queue_size = 32768;

/// Whether `req` has a reply of its own, so NEED_REPLY adds no ack (vhost-user spec, REPLY_ACK):
/// every GET_*, CHECK_DEVICE_STATE, SET_DEVICE_STATE_FD, IOTLB_MSG,
/// POSTCOPY_ADVISE/END, CREATE_CRYPTO_SESSION, and SET_LOG_BASE when
/// LOG_SHMFD is in `acked_protocol_features`.
[[nodiscard]] bool has_native_reply(FrontendReq req, uint64_t acked_protocol_features) noexcept;

/// Validates one front-end request and takes it apart. Consumes `m`: on any
/// error all its fds are closed before returning. Checks, in this order:
///
/// * bad_flags: version != 1, REPLY set, or any bit but NEED_REPLY set;
/// * unknown_request: a code that is no front-end request (Error::request
///   is then "UNKNOWN(<code>)"; otherwise always the spec name);
/// * bad_size: the body differs from the request's payload size ("payload is
///   4 bytes, expected 8"); SET_MEM_TABLE: 8 + 32 * nregions; GET/SET_CONFIG:
///   12 + size; a body shorter than such a header;
/// * invalid_payload: SET_MEM_TABLE with nregions 0 or above
///   min(8, max_mem_slots) (checked before its size);
/// * bad_fds: a different fd count than the request carries (see
///   FrontendRequest::fds); REM_MEM_REG may carry one fd, which is closed;
/// * not_negotiated: the request's gate is missing — PROTOCOL_FEATURES
///   (bit 30) offered for GET/SET_PROTOCOL_FEATURES, acked for
///   SET_VRING_ENABLE; ACCESS_PLATFORM acked for IOTLB_MSG; protocol
///   features MQ, LOG_SHMFD (SET_LOG_BASE), RARP, MTU, BACKEND_REQ,
///   CROSS_ENDIAN, CRYPTO_SESSION, PAGEFAULT (POSTCOPY_ADVISE also refused
///   with CONFIGURE_MEM_SLOTS), CONFIG, INFLIGHT_SHMFD, RESET_DEVICE,
///   INBAND_NOTIFICATIONS (VRING_KICK), CONFIGURE_MEM_SLOTS, STATUS,
///   SHARED_OBJECT, DEVICE_STATE, SHMEM, GET_VRING_BASE_SKIP_DRAIN.
///   CREATE_CRYPTO_SESSION is always refused (its payload is not modelled);
/// * invalid_payload: a ring index >= num_queues; reserved bits in a vring
///   fd word; SET_VRING_NUM num 0 or above 32768; GET_VRING_BASE(_SKIP_DRAIN)
///   and VRING_KICK num != 0; SET_VRING_ENABLE/ENDIAN num > 1;
///   SET_VRING_ADDR flags other than LOG, or LOG without LOG_ALL acked;
///   SET_FEATURES / SET_PROTOCOL_FEATURES acking bits not offered;
///   SET_STATUS above 0xff; a memory region of size 0 or whose guest,
///   user or mmap range wraps; GET/SET_CONFIG size above 256; SET_CONFIG
///   flags other than 0/1; SET_LOG_BASE or SET_INFLIGHT_FD range wrapping;
///   GET_INFLIGHT_FD with num_queues or queue_size 0; SET_DEVICE_STATE_FD
///   direction above LOAD or phase not STOPPED.
[[nodiscard]] Result<FrontendRequest> decode_frontend_request(Message&& m,
                                                              const Negotiated& ctx);
/// The same from the parts of a received message (header, body, fds); the
/// header's size field is not trusted, the body's length is.
[[nodiscard]] Result<FrontendRequest> decode_frontend_request(const wire::Header& header,
                                                              std::vector<uint8_t> body,
                                                              std::vector<UniqueFd> fds,
                                                              const Negotiated& ctx);

// ---- replies ---------------------------------------------------------------

/// A reply ready to send: header {request, VERSION|REPLY, body.size()} and
/// the body, with at most one fd to attach (borrowed: its owner keeps it
/// open until the reply is sent).
struct FrontendReply {
  FrontendReq req{};
  std::vector<uint8_t> body;
  int fd = -1;  ///< attached with SCM_RIGHTS when >= 0; not owned

  /// VERSION|REPLY: the only flags a reply carries.
  [[nodiscard]] static constexpr uint32_t flags() noexcept { return flag_version | flag_reply; }
  /// Header + body exactly as they go on the wire.
  [[nodiscard]] std::vector<uint8_t> bytes() const;
};

/// A u64 reply (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
/// GET_MAX_MEM_SLOTS, GET_STATUS, CHECK_DEVICE_STATE, SET_LOG_BASE, ...).
[[nodiscard]] FrontendReply encode_u64_reply(FrontendReq req, uint64_t value);
/// The REPLY_ACK ack to `req`: a u64 status, 0 success (vhost-user spec, REPLY_ACK).
[[nodiscard]] FrontendReply encode_ack(FrontendReq req, uint64_t status);
/// GET_MAX_MEM_SLOTS: the number of memory slots.
[[nodiscard]] FrontendReply encode_mem_slots_reply(uint64_t slots);
/// GET_VRING_BASE (or GET_VRING_BASE_SKIP_DRAIN with `skip_drain`): {index, base}.
[[nodiscard]] FrontendReply encode_vring_base_reply(uint32_t index, uint32_t base,
                                                    bool skip_drain = false);
/// GET_CONFIG: the request's header echoed with `data` (whose size must be
/// the header's size; invalid_argument otherwise).
[[nodiscard]] Result<FrontendReply> encode_config_reply(const wire::ConfigHeader& request,
                                                        const std::vector<uint8_t>& data);
/// GET_CONFIG refused: an empty body (a front-end takes size 0 as failure).
[[nodiscard]] FrontendReply encode_config_refusal();
/// GET_INFLIGHT_FD: the description and its memfd (`fd` < 0 only when
/// `desc.mmap_size` is 0, the back-end declining).
[[nodiscard]] FrontendReply encode_inflight_reply(const wire::InflightDesc& desc, int fd);
/// GET_SHMEM_CONFIG: the 2056-byte table.
[[nodiscard]] FrontendReply encode_shmem_config_reply(const wire::ShmemConfig& config);
/// SET_DEVICE_STATE_FD: status (bits 0-7 error); with `fd` >= 0 the reply
/// carries the back-end's own end, otherwise bit 8 (NOFD) is set.
[[nodiscard]] FrontendReply encode_device_state_reply(uint8_t error, int fd = -1);

/// Sends `reply` on `conn` (Connection::send with its header, body and fd).
/// Errors: those of Connection::send.
[[nodiscard]] Result<void> send_reply(Connection& conn, const FrontendReply& reply,
                                      Deadline deadline);

}  // namespace vufront
