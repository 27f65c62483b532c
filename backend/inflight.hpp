#pragma once
// INFLIGHT_SHMFD (vhost-user spec, "Inflight I/O tracking"): the shared buffer in which the
// back-end records which descriptors it has taken but not yet completed, so
// that a restarted back-end can resubmit them (and, for packed rings, find
// where the ring stands: virtio/inflight_packed.hpp).
//
// Queue regions back to back, each sized for the larger, packed, layout
// (GET_INFLIGHT_FD may come before the features say which kind the rings
// are) and padded to a multiple of 64 bytes. Split layout (the spec's):
//   0  u64 features   8 u16 version (=1)   10 u16 desc_num
//   12 u16 last_batch_head   14 u16 used_idx
//   16 desc_num x { u8 inflight, u8 pad[5], u16 next, u64 counter }
// Packed layout: virtio/inflight_packed.hpp (32-byte header and entries).

#include <cstdint>
#include <optional>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"
#include "virtio/inflight_packed.hpp"

namespace vufront::backend {

class Inflight {
public:
  Inflight() = default;
  Inflight(const Inflight&) = delete;
  Inflight& operator=(const Inflight&) = delete;
  ~Inflight() { unmap(); }

  /// Bytes of one queue's region for a queue size.
  [[nodiscard]] static uint64_t queue_bytes(uint16_t queue_size) noexcept;

  /// GET_INFLIGHT_FD: a zeroed memfd sized for the request; `reply` gets
  /// mmap_size/offset and echoes num_queues/queue_size.
  /// Errors: invalid_payload (0 queues, bad queue size), io_error.
  [[nodiscard]] static Result<UniqueFd> allocate(const wire::InflightDesc& request,
                                                 wire::InflightDesc& reply);

  /// SET_INFLIGHT_FD: maps the buffer. Errors: invalid_payload (sizes
  /// inconsistent or beyond the fd), io_error.
  [[nodiscard]] Result<void> set(const wire::InflightDesc& desc, UniqueFd fd);
  void unmap() noexcept;
  [[nodiscard]] bool active() const noexcept { return base_ != nullptr; }

  /// Prepares queue `q` of size `size` for tracking, the ring's used idx
  /// being `used_idx`; returns the heads a previous back-end left in flight,
  /// oldest first (to resubmit), or nullopt if q is not covered.
  [[nodiscard]] std::optional<std::vector<uint16_t>> start_queue(uint16_t q, uint16_t size,
                                                               uint16_t used_idx);
  /// Packed: prepares queue `q` of size `size` for tracking (see
  /// PackedInflight::start); nullopt if q is not covered.
  /// Errors: invalid_payload (an inconsistent region).
  [[nodiscard]] std::optional<Result<virtio::PackedResume>> start_packed(
      uint16_t q, uint16_t size, uint32_t base, const virtio::PackedInflight::RingFlags& ring_flags);
  /// Packed: the tracker of queue `q` once started, else nullptr.
  [[nodiscard]] virtio::PackedInflight* packed(uint16_t q) noexcept;

  /// Marks head `head` of queue `q` in flight (before processing it).
  void begin(uint16_t q, uint16_t head);
  /// Before `head`'s used entry is published: it is the batch (of one) a
  /// restarted back-end finishes if the ring's used idx is ahead of the
  /// region's (the spec's last_batch_head, set before the used ring moves).
  void prepare_end(uint16_t q, uint16_t head);
  /// Marks `head` completed after its used entry was published with used idx `used_idx`.
  void end(uint16_t q, uint16_t head, uint16_t used_idx);
  /// Clears `head` of queue `q` without a completion (the chain went back to
  /// the ring unused).
  void abort(uint16_t q, uint16_t head);

private:
  [[nodiscard]] uint8_t* queue_base(uint16_t q) const noexcept;

  uint8_t* base_ = nullptr;
  uint64_t map_size_ = 0;
  uint16_t num_queues_ = 0;
  uint16_t queue_size_ = 0;
  std::vector<uint64_t> counter_;
  std::vector<std::optional<virtio::PackedInflight>> packed_;
};

}  // namespace vufront::backend
