#pragma once
// Decoding of back-end -> front-end requests (the back-end channel; vhost-user spec,
// "Back-end message types"). Pure functions, no I/O: the channel's owner receives a Message with
// Connection::receive(backend_request_max_body, backend_request_max_fds, ...)
// and hands it to decode_backend_request(); the answer goes back as the bytes
// of encode_backend_reply(). Checked as strictly as main-channel replies.

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

/// A validated back-end request.
struct BackendRequest {
  BackendReq type{};
  uint32_t flags = 0;       ///< the header flags as received
  /// The back-end waits for a u64 reply: NEED_REPLY was set, or the request
  /// is SHARED_OBJECT_LOOKUP (always answered).
  bool need_reply = false;
  /// monostate: CONFIG_CHANGE_MSG; Iotlb: IOTLB_MSG; VringArea:
  /// VRING_HOST_NOTIFIER_MSG; VringState: VRING_CALL/ERR; SharedObject:
  /// SHARED_OBJECT_*; ShmemMap: SHMEM_MAP/UNMAP.
  std::variant<std::monostate, wire::Iotlb, wire::VringArea, wire::VringState,
               wire::SharedObject, wire::ShmemMap>
      payload;
  std::vector<UniqueFd> fds;  ///< owned: SHMEM_MAP's fd, HOST_NOTIFIER's fd unless NOFD
};

/// Largest body any back-end request may carry (40, SHMEM_MAP/UNMAP) — the
/// max_body for Connection::receive on the back-end channel.
inline constexpr size_t backend_request_max_body = sizeof(wire::ShmemMap);
/// Most fds a back-end channel message may carry (vhost-user spec, "Communication") — its max_fds.
inline constexpr size_t backend_request_max_fds = 8;
static_assert(backend_request_max_fds <= max_fds_per_message);

/// Validates one back-end request and takes it apart. Consumes `m`: on any
/// error all its fds are closed before returning. `acked_protocol_features`
/// is the set acked with SET_PROTOCOL_FEATURES.
///
/// Errors (Error::request is the spec name, or "UNKNOWN(<code>)"):
/// * bad_flags: version != 1, REPLY set, or any bit other than NEED_REPLY set;
/// * unknown_request: a code outside 1..10;
/// * bad_size: body size differs from the request's payload size (0 for
///   CONFIG_CHANGE_MSG, 8 VRING_CALL/ERR, 16 SHARED_OBJECT_*, 24
///   HOST_NOTIFIER, 32 IOTLB, 40 SHMEM_MAP/UNMAP);
/// * bad_fds: SHMEM_MAP without exactly 1 fd; HOST_NOTIFIER without exactly 1
///   fd (0 with its NOFD bit); any fd on any other request;
/// * not_negotiated: BACKEND_REQ or the request's gating feature not acked
///   (CONFIG, HOST_NOTIFIER, INBAND_NOTIFICATIONS, SHARED_OBJECT, SHMEM);
///   IOTLB_MSG always (vufront never negotiates ACCESS_PLATFORM);
/// * invalid_payload: VRING_CALL/ERR index > 0xff; HOST_NOTIFIER with bits
///   other than index/NOFD, or (with an fd) size != page size, an unaligned
///   offset or offset+size overflowing; SHMEM_MAP flags other than bit 0;
///   SHMEM_MAP/UNMAP len 0 or shm_offset+len (MAP also fd_offset+len)
///   overflowing. SHMEM padding and UNMAP's fd_offset/flags are ignored.
[[nodiscard]] Result<BackendRequest> decode_backend_request(Message&& m,
                                                            uint64_t acked_protocol_features);

/// The 20-byte reply to a back-end request: header {request_code,
/// VERSION|REPLY, 8} followed by the u64 `status` (0 success).
[[nodiscard]] std::vector<uint8_t> encode_backend_reply(uint32_t request_code, uint64_t status);

}  // namespace vufront
