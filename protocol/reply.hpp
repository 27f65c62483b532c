#pragma once
// Pure validation of back-end replies on the main channel: no I/O, so it is
// unit-tested table by table and fuzzed (tests/fuzz/). BackendClient receives
// a Message with Connection::receive(reply_max_body(...), reply_max_fds(...))
// and hands it to the matching parse_* function. Every function returns an
// Error naming the pending request; fds in a rejected Message are closed
// when the Message is destroyed.

#include <cstdint>
#include <optional>
#include <vector>

#include "protocol/backend_client.hpp"
#include "protocol/connection.hpp"
#include "base/error.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront::reply {

/// Largest body a reply to `req` may legally carry; a header announcing more
/// is refused before the body is read. `config_size` is the size asked for
/// in GET_CONFIG (ignored otherwise). 8 for acks.
[[nodiscard]] size_t max_body(FrontendReq req, uint32_t config_size = 0) noexcept;

/// Most fds a reply to `req` may carry (1 for GET_INFLIGHT_FD and
/// SET_DEVICE_STATE_FD, 0 otherwise).
[[nodiscard]] size_t max_fds(FrontendReq req) noexcept;

/// Header checks shared by every reply: request code equals `pending`
/// (unexpected_reply), flags == VERSION|REPLY exactly (bad_flags: wrong
/// version, missing REPLY bit, NEED_REPLY or reserved bits set).
[[nodiscard]] Result<void> check_header(FrontendReq pending, const wire::Header& h);

/// A u64-bodied reply (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
/// GET_MAX_MEM_SLOTS, GET_STATUS, CHECK_DEVICE_STATE): header
/// checked, body exactly 8 bytes, no fds.
[[nodiscard]] Result<uint64_t> parse_u64(FrontendReq pending, const Message& m);

/// SET_LOG_BASE's reply: header checked, no fds, body 8 bytes (a u64, as
/// libvhost-user) or 16 (the Log echoed, as rust-vmm); the value is ignored.
[[nodiscard]] Result<void> parse_log_base(const Message& m);

/// A REPLY_ACK ack: parse_u64 and value 0 (non-zero -> backend_failure).
[[nodiscard]] Result<void> parse_ack(FrontendReq pending, const Message& m);

/// GET_QUEUE_NUM: 1..0x8000 (invalid_payload otherwise).
[[nodiscard]] Result<uint64_t> parse_queue_num(const Message& m);
/// GET_MAX_MEM_SLOTS: 1..512.
[[nodiscard]] Result<uint64_t> parse_max_mem_slots(const Message& m);
/// GET_STATUS: fits a byte.
[[nodiscard]] Result<uint8_t> parse_status(const Message& m);

/// GET_VRING_BASE: 8-byte VringState, echoed index == `index`, and for a
/// split ring (`packed` false) num <= 0xffff (invalid_payload "too big").
[[nodiscard]] Result<uint32_t> parse_vring_base(const Message& m, uint32_t index, bool packed);

/// GET_CONFIG: body == 12 + size; echoed offset/size equal the request's.
/// A refusal (header size 0, or config size 0 with a 12-byte body) is
/// backend_failure and not a protocol violation (see is_refusal).
[[nodiscard]] Result<std::vector<uint8_t>> parse_config(const Message& m, uint32_t offset,
                                                        uint32_t size);

/// GET_INFLIGHT_FD: 24-byte InflightDesc; exactly one fd when mmap_size != 0,
/// none when 0; num_queues/queue_size echo the request; mmap_offset+mmap_size
/// does not overflow. A declined reply (mmap_size 0) is accepted whatever its
/// other fields say (as QEMU does). Takes the fd out of `m`.
[[nodiscard]] Result<InflightRegion> parse_inflight(Message& m, uint16_t num_queues,
                                                    uint16_t queue_size);

/// GET_SHMEM_CONFIG: 2056-byte body; nregions == number of non-zero sizes.
[[nodiscard]] Result<wire::ShmemConfig> parse_shmem_config(const Message& m);

/// SET_DEVICE_STATE_FD: 8-byte u64; error bits != 0 -> backend_failure (and no
/// fd allowed); bit 8 set -> no fd allowed; bit 8 clear -> exactly one fd,
/// which is taken out of `m`; other bits set -> invalid_payload.
[[nodiscard]] Result<DeviceStateReply> parse_device_state(Message& m);

/// Whether `e` is a back-end's in-band refusal that leaves the stream in sync
/// (the connection stays usable) rather than a protocol violation.
[[nodiscard]] bool is_refusal(const Error& e) noexcept;

}  // namespace vufront::reply
