#pragma once
// INFLIGHT_SHMFD (vhost-user spec, "Inflight I/O tracking"): the shared buffer in which the
// back-end records which split-ring descriptors it has taken but not yet
// completed, so that a restarted back-end can resubmit them.
//
// Layout per queue (split, as in the vhost-user spec), queue regions
// back to back, each padded to a multiple of 64 bytes:
//   0  u64 features   8 u16 version (=1)   10 u16 desc_num
//   12 u16 last_batch_head   14 u16 used_idx
//   16 desc_num x { u8 inflight, u8 pad[5], u16 next, u64 counter }
// Packed rings are not tracked (the region is still allocated).

#include <cstdint>
#include <optional>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"

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
  /// Marks head `head` of queue `q` in flight (before processing it).
  void begin(uint16_t q, uint16_t head);
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
};

}  // namespace vufront::backend
