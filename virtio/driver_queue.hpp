#pragma once
// The guest side of a virtqueue: what a guest OS driver does, so vufront's
// tools and tests can push real I/O through real back-ends. Lays out the
// rings in GuestMemory, adds descriptor chains (direct or through an indirect
// table), kicks, and collects used entries. Split and packed rings, one class.
// Event suppression is not implemented: the driver always kicks and always
// asks for interrupts (avail.flags = 0, packed driver event flags = ENABLE).
// Not thread-safe: one owner drives one queue.

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "memory/guest_memory.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"
#include "virtio/ring_layout.hpp"

namespace vufront::virtio {

using Deadline = std::chrono::steady_clock::time_point;  // same type as protocol's Deadline

/// Guest-physical placement of one queue.
struct RingAreas {
  uint64_t desc = 0;          ///< descriptor table GPA
  uint64_t driver = 0;        ///< avail ring (split) / driver event area (packed) GPA
  uint64_t device = 0;        ///< used ring (split) / device event area (packed) GPA
  uint64_t indirect = 0;      ///< indirect tables GPA: `size` slots of indirect_max entries; 0 = none
  uint16_t indirect_max = 0;  ///< descriptors per indirect table (0 = no indirect chains)
};

/// Bytes place_rings() needs (worst case, including alignment padding).
[[nodiscard]] uint64_t rings_footprint(RingKind kind, uint16_t size, uint16_t indirect_max = 0);

/// Places the three ring areas (and `size` indirect tables of `indirect_max`
/// entries when non-zero) inside `[gpa, gpa+len)` with the required
/// alignments. Errors: invalid_argument (bad queue size, indirect_max > size,
/// the range too small or not inside one region of `mem`).
[[nodiscard]] Result<RingAreas> place_rings(const GuestMemory& mem, uint64_t gpa, uint64_t len,
                                            RingKind kind, uint16_t size,
                                            uint16_t indirect_max = 0);

/// The SET_VRING_ADDR payload for `areas` (synthetic user addresses from
/// GuestMemory::user_addr_of). Errors: invalid_argument if an area is unmapped.
[[nodiscard]] Result<wire::VringAddr> vring_addr(const GuestMemory& mem, uint32_t index,
                                                 const RingAreas& areas);

/// One buffer of a chain, in guest-physical terms.
struct Buffer {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool device_writable = false;
};

/// One completion: the chain's head id (split) / buffer id (packed) and the
/// number of bytes the device wrote.
struct Used {
  uint16_t id = 0;
  uint32_t len = 0;
};

/// Move-only: exactly one owner drives a ring.
class DriverQueue {
public:
  DriverQueue(DriverQueue&&) noexcept = default;
  DriverQueue& operator=(DriverQueue&&) noexcept = default;
  DriverQueue(const DriverQueue&) = delete;
  DriverQueue& operator=(const DriverQueue&) = delete;
  ~DriverQueue() = default;

  /// A fresh queue: zeroes the ring areas; base 0 (split) / 0x8000_8000 (packed).
  /// `mem` must outlive the queue and keep the areas mapped.
  /// Errors: invalid_argument (queue size, unmapped/misaligned areas).
  [[nodiscard]] static Result<DriverQueue> create(const GuestMemory& mem, RingKind kind,
                                                  uint16_t size, const RingAreas& areas);

  /// Continues a stopped queue from the base GET_VRING_BASE returned, without
  /// touching ring memory; no chain is in flight afterwards. Split: next
  /// avail idx = base and the used idx is read from the used ring (they must
  /// match: the back-end drained). Packed: both positions from the base (they
  /// must match). Errors: invalid_argument (as create, base out of range),
  /// bad_state (chains were still in flight at the base).
  [[nodiscard]] static Result<DriverQueue> resume(const GuestMemory& mem, RingKind kind,
                                                  uint16_t size, const RingAreas& areas,
                                                  uint32_t base);

  /// Publishes a chain: readable buffers first, then device-writable ones.
  /// With `indirect`, the buffers go into this chain's indirect table and the
  /// ring gets one descriptor. Returns the id that poll_used() will report.
  /// Errors: invalid_argument (empty, readable after writable, buffer not in
  /// guest memory, indirect without tables or longer than indirect_max, more
  /// buffers than the queue size), bad_state (not enough free descriptors).
  [[nodiscard]] Result<uint16_t> add_chain(const std::vector<Buffer>& buffers,
                                           bool indirect = false);

  /// Notifies the device (writes 1 to the kick eventfd). Errors: io_error.
  [[nodiscard]] Result<void> kick(int kick_fd) const;

  /// The next completion, if any, freeing its descriptors. Errors:
  /// invalid_payload if the device wrote an id that is not in flight or moved
  /// the used index by more than the queue size.
  [[nodiscard]] Result<std::optional<Used>> poll_used();

  /// Waits for the next completion: checks the ring, then polls `call_fd`
  /// (an eventfd, counter drained on wake-ups) until `deadline`. Works with
  /// coalesced or missing interrupts (the ring is re-checked every wake-up).
  /// Errors: timeout, io_error (poll/read), as poll_used.
  [[nodiscard]] Result<Used> wait_used(int call_fd, Deadline deadline);

  /// SET_VRING_BASE value for this ring. Meaningful when no chain is in
  /// flight: split = next avail idx; packed = the vhost-user packed vring indices of next avail
  /// and next used positions.
  [[nodiscard]] uint32_t next_avail_base() const noexcept;

  [[nodiscard]] RingKind kind() const noexcept { return kind_; }
  [[nodiscard]] uint16_t size() const noexcept { return size_; }
  [[nodiscard]] const RingAreas& areas() const noexcept { return areas_; }
  /// Chains added and not yet collected.
  [[nodiscard]] uint16_t in_flight() const noexcept { return in_flight_count_; }
  /// Ring descriptors currently free.
  [[nodiscard]] uint16_t free_descriptors() const noexcept { return num_free_; }

private:
  DriverQueue() = default;
  [[nodiscard]] static Result<DriverQueue> make(const GuestMemory& mem, RingKind kind,
                                                uint16_t size, const RingAreas& areas,
                                                const char* op);
  [[nodiscard]] uint64_t write_indirect(uint16_t slot, const std::vector<Buffer>& buffers);
  [[nodiscard]] Result<uint16_t> add_split(const std::vector<Buffer>& buffers, bool indirect);
  [[nodiscard]] Result<uint16_t> add_packed(const std::vector<Buffer>& buffers, bool indirect);
  [[nodiscard]] Result<std::optional<Used>> poll_split();
  [[nodiscard]] Result<std::optional<Used>> poll_packed();

  const GuestMemory* mem_ = nullptr;
  RingKind kind_ = RingKind::split;
  uint16_t size_ = 0;
  RingAreas areas_;
  uint8_t* desc_ = nullptr;
  uint8_t* driver_ = nullptr;
  uint8_t* device_ = nullptr;
  uint8_t* indirect_ = nullptr;

  uint16_t num_free_ = 0;
  uint16_t in_flight_count_ = 0;
  std::vector<uint16_t> chain_len_;  ///< ring descriptors per in-flight id
  std::vector<bool> in_flight_;      ///< per id

  // split: free descriptor list threaded through free_next_, tail per head.
  uint16_t free_head_ = 0;
  std::vector<uint16_t> free_next_;
  std::vector<uint16_t> chain_tail_;
  uint16_t avail_idx_ = 0;  ///< free-running
  uint16_t last_used_ = 0;  ///< free-running

  // packed: free buffer ids, ring positions with wrap counters.
  std::vector<uint16_t> free_ids_;
  PackedPos next_avail_;
  PackedPos next_used_;
};

}  // namespace vufront::virtio
