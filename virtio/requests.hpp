#pragma once
// Request builders for the tools and tests: they lay out device requests in a
// caller-provided scratch area of guest memory and return the chain to hand
// to DriverQueue::add_chain, plus the parsers of the replies.
//   virtio-blk (virtio 1.2 §5.2.6): header {type, reserved, sector} readable, data, status byte writable.
//   virtio-net (virtio 1.2 §5.1.6): 12-byte virtio_net_hdr_v1 + frame, one buffer each way (no MRG_RXBUF).
// virtio-fs (FUSE) requests are in virtio/fuse.hpp.

#include <cstdint>
#include <vector>

#include "memory/guest_memory.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"
#include "virtio/driver_queue.hpp"

namespace vufront::virtio {

/// Bump allocator over `[gpa, gpa+len)` of guest memory (one region). Requests
/// built from it stay valid until reset().
class GuestScratch {
public:
  /// Errors: invalid_argument unless the range lies inside one region.
  [[nodiscard]] static Result<GuestScratch> create(const GuestMemory& mem, uint64_t gpa,
                                                   uint64_t len);
  /// `len` bytes aligned to `align` (a power of two), zero-filled. Errors:
  /// invalid_argument (bad align), bad_state (scratch exhausted).
  [[nodiscard]] Result<uint64_t> alloc(uint64_t len, uint64_t align = 8);
  /// Host pointer of an allocation (or any range inside the scratch area).
  [[nodiscard]] uint8_t* ptr(uint64_t gpa, uint64_t len) const noexcept;
  void reset() noexcept { used_ = 0; }
  /// The area: its first GPA and its length.
  [[nodiscard]] uint64_t gpa() const noexcept { return gpa_; }
  [[nodiscard]] uint64_t size() const noexcept { return len_; }
  [[nodiscard]] const GuestMemory& memory() const noexcept { return *mem_; }

private:
  GuestScratch() = default;
  const GuestMemory* mem_ = nullptr;
  uint64_t gpa_ = 0;
  uint64_t len_ = 0;
  uint64_t used_ = 0;
};

// ---- virtio-blk -------------------------------------------------------------------

inline constexpr uint32_t blk_t_in = 0;       ///< read
inline constexpr uint32_t blk_t_out = 1;      ///< write
inline constexpr uint32_t blk_t_flush = 4;
inline constexpr uint32_t blk_t_get_id = 8;
inline constexpr uint8_t blk_s_ok = 0;
inline constexpr uint8_t blk_s_ioerr = 1;
inline constexpr uint8_t blk_s_unsupp = 2;
inline constexpr uint32_t blk_id_bytes = 20;
inline constexpr uint32_t blk_sector_size = 512;

/// struct virtio_blk_outhdr.
struct BlkReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
VUFRONT_LAYOUT_SIZE(BlkReqHeader, 16);
VUFRONT_LAYOUT_AT(BlkReqHeader, type, 0);
VUFRONT_LAYOUT_AT(BlkReqHeader, reserved, 4);
VUFRONT_LAYOUT_AT(BlkReqHeader, sector, 8);

struct BlkRequest {
  std::vector<Buffer> chain;
  uint64_t header_gpa = 0;
  uint64_t data_gpa = 0;  ///< 0 when the request has no data buffer
  uint32_t data_len = 0;
  uint64_t status_gpa = 0;
};

/// Errors for all builders: as GuestScratch::alloc; invalid_argument for a
/// zero or non-sector-multiple length.
[[nodiscard]] Result<BlkRequest> blk_read(GuestScratch& s, uint64_t sector, uint32_t len);
[[nodiscard]] Result<BlkRequest> blk_write(GuestScratch& s, uint64_t sector,
                                           const std::vector<uint8_t>& data);
[[nodiscard]] Result<BlkRequest> blk_flush(GuestScratch& s);
[[nodiscard]] Result<BlkRequest> blk_get_id(GuestScratch& s);

/// The status byte the device wrote (blk_s_*). The status is poisoned with
/// 0xff when built, so an untouched one is reported. Errors: backend_failure
/// if the status is not 0 (detail names the status), invalid_payload if
/// `used_len` is smaller than the status byte.
[[nodiscard]] Result<void> blk_status(const GuestScratch& s, const BlkRequest& r,
                                      uint32_t used_len);
/// The data buffer bytes (read result, GET_ID serial).
[[nodiscard]] std::vector<uint8_t> blk_data(const GuestScratch& s, const BlkRequest& r);

// ---- virtio-net -------------------------------------------------------------------

/// struct virtio_net_hdr_v1 (12 bytes: VERSION_1 or MRG_RXBUF negotiated).
struct NetHdrV1 {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;
};
VUFRONT_LAYOUT_SIZE(NetHdrV1, 12);
VUFRONT_LAYOUT_AT(NetHdrV1, flags, 0);
VUFRONT_LAYOUT_AT(NetHdrV1, gso_type, 1);
VUFRONT_LAYOUT_AT(NetHdrV1, hdr_len, 2);
VUFRONT_LAYOUT_AT(NetHdrV1, gso_size, 4);
VUFRONT_LAYOUT_AT(NetHdrV1, csum_start, 6);
VUFRONT_LAYOUT_AT(NetHdrV1, csum_offset, 8);
VUFRONT_LAYOUT_AT(NetHdrV1, num_buffers, 10);

struct NetBuffer {
  std::vector<Buffer> chain;
  uint64_t gpa = 0;
  uint32_t len = 0;
};

/// One readable buffer: a zero header (no offloads, num_buffers 0) + `frame`.
/// Errors: as alloc; invalid_argument for an empty frame.
[[nodiscard]] Result<NetBuffer> net_tx_frame(GuestScratch& s, const std::vector<uint8_t>& frame);
/// One writable receive buffer of `len` bytes (header included).
[[nodiscard]] Result<NetBuffer> net_rx_buffer(GuestScratch& s, uint32_t len = 2048);

struct NetFrame {
  NetHdrV1 header{};
  std::vector<uint8_t> frame;
};
/// Parses a received buffer. Errors: invalid_payload (used_len shorter than
/// the header or longer than the buffer, num_buffers > 1: we post single
/// buffers; 0 is accepted as some back-ends leave it unset).
[[nodiscard]] Result<NetFrame> net_rx_frame(const GuestScratch& s, const NetBuffer& b,
                                            uint32_t used_len);

}  // namespace vufront::virtio
