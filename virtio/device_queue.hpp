#pragma once
// The device side of a virtqueue, for vufront's reference back-end: reads
// available chains and writes used entries, split or packed. The driver is
// untrusted: every index, length and address it wrote is checked, every
// descriptor is copied out of shared memory once before it is validated and
// used, and a malformed ring yields an invalid_payload error, never a crash
// or an access outside the translated buffers. After such an error the queue
// is broken (every later pop/push fails with bad_state), as a device would
// set DEVICE_NEEDS_RESET.
//
// Indirect tables: split ones are struct virtq_desc chained by `next`;
// packed ones are struct pvirtq_desc read in table order, their WRITE flag
// the only one used, the other flags and the buffer id ignored (virtio 1.2
// 2.8.19; Linux's packed driver puts every multi-buffer request in one).
//
// Limits on top of the spec: an indirect descriptor must be the only
// descriptor of its chain (the spec forbids INDIRECT|NEXT, Linux never puts
// direct descriptors before one); packed buffer ids must be < queue size.
// Event suppression: none; needs_notify() is always true.

#include <cstdint>
#include <functional>
#include <string>
#include <optional>
#include <vector>

#include "base/error.hpp"
#include "virtio/ring_layout.hpp"

namespace vufront::virtio {

/// Translates `[addr, addr+len)` to a host pointer, nullptr unless the whole
/// range is mapped.
using Translate = std::function<uint8_t*(uint64_t addr, uint64_t len)>;

struct DeviceQueueConfig {
  RingKind kind = RingKind::split;
  uint16_t size = 0;
  uint64_t desc_addr = 0;    ///< SET_VRING_ADDR desc (ring address space)
  uint64_t driver_addr = 0;  ///< avail (split) / driver event area (packed)
  uint64_t device_addr = 0;  ///< used (split) / device event area (packed)
  uint32_t base = 0;         ///< SET_VRING_BASE num (for packed rings: vhost-user spec, packed vring indices)
};

/// One buffer of a popped chain, already translated and bounds-checked.
struct Segment {
  uint8_t* ptr = nullptr;
  uint32_t len = 0;
  bool writable = false;
};

struct Chain {
  uint16_t id = 0;  ///< head index (split) / buffer id (packed): what push() takes
  std::vector<Segment> segments;  ///< readable ones first
  /// Packed: the ring descriptors as read (what an in-flight region records).
  std::vector<PackedDesc> descs;
  /// It came from resubmit()/resubmit_packed(), not from the ring.
  bool resubmitted = false;

  [[nodiscard]] uint64_t readable_bytes() const noexcept;
  [[nodiscard]] uint64_t writable_bytes() const noexcept;
};

/// Move-only: exactly one owner serves a ring.
class DeviceQueue {
public:
  DeviceQueue(DeviceQueue&&) noexcept = default;
  DeviceQueue& operator=(DeviceQueue&&) noexcept = default;
  DeviceQueue(const DeviceQueue&) = delete;
  DeviceQueue& operator=(const DeviceQueue&) = delete;
  ~DeviceQueue() = default;

  /// `ring` translates the ring addresses (user addresses in vhost-user),
  /// `buffer` translates descriptor addresses (GPAs). Both must stay valid
  /// while the queue lives. Split: the used idx is read from the used ring.
  /// Errors: invalid_argument (queue size, misaligned or unmapped ring area,
  /// base out of range for the kind/size).
  [[nodiscard]] static Result<DeviceQueue> create(Translate ring, Translate buffer,
                                                  const DeviceQueueConfig& config);

  /// The next available chain, nullopt if none. Errors: invalid_payload
  /// (malformed ring: index out of range, loop, bad indirect table, unmapped
  /// buffer, readable after writable, head/id already in flight), bad_state
  /// (queue broken by an earlier error).
  [[nodiscard]] Result<std::optional<Chain>> pop();

  /// Completes the chain `id` with `written` bytes. Errors: invalid_argument
  /// (id not in flight), bad_state (queue broken).
  [[nodiscard]] Result<void> push(uint16_t id, uint32_t written);

  /// Gives the most recently popped chain `id` back unused, as if it had
  /// never been popped: the next pop() reads it again (re-validating it).
  /// Only allowed right after that pop, before any other pop() or push().
  /// Errors: invalid_argument (`id` is not the chain just popped), bad_state
  /// (queue broken).
  [[nodiscard]] Result<void> unpop(uint16_t id);

  /// Split rings after a back-end restart (INFLIGHT_SHMFD): `heads` were
  /// taken off the ring by the previous back-end and never completed; pop()
  /// returns them first, in this order, and the ring continues at used idx
  /// + heads.size() (every avail entry before that was taken). Call before
  /// the first pop(). Errors: invalid_argument (packed, more heads than the
  /// queue size, head out of range).
  [[nodiscard]] Result<void> resubmit(const std::vector<uint16_t>& heads);

  /// Packed rings after a back-end restart (INFLIGHT_SHMFD, packed layout:
  /// virtio/inflight_packed.hpp): the ring continues at `avail`/`used`, and
  /// pop() first returns `chains` (ring descriptors a previous back-end took
  /// and never completed), in this order, validated as if read from the
  /// ring. Call before the first pop(). Errors: invalid_argument (split, a
  /// position beyond the queue, an empty chain, more descriptors than the
  /// queue size).
  [[nodiscard]] Result<void> resubmit_packed(PackedPos avail, PackedPos used,
                                             std::vector<std::vector<PackedDesc>> chains);
  /// Packed: the flags word of descriptor ring slot `idx` (< size), as the
  /// driver or device last published it.
  [[nodiscard]] uint16_t ring_flags(uint16_t idx) const noexcept;

  /// GET_VRING_BASE value: split = next avail idx; packed = the vhost-user spec's packed vring indices.
  [[nodiscard]] uint32_t base() const noexcept;
  /// Whether the driver wants an interrupt after push(): always (no EVENT_IDX).
  [[nodiscard]] bool needs_notify() const noexcept { return true; }
  [[nodiscard]] uint16_t in_flight() const noexcept { return in_flight_count_; }
  /// Split: the requests the driver has made available and the device has
  /// not completed yet (avail idx - used idx, read now); packed: in_flight().
  [[nodiscard]] uint16_t outstanding() const noexcept;
  [[nodiscard]] bool broken() const noexcept { return broken_; }

private:
  DeviceQueue() = default;
  [[nodiscard]] Error fail(std::string detail);
  [[nodiscard]] Result<void> add_segment(Chain& chain, uint64_t addr, uint32_t len,
                                         uint16_t flags, bool& seen_writable);
  [[nodiscard]] Result<void> walk_indirect(Chain& chain, uint64_t addr, uint32_t len);
  [[nodiscard]] Result<std::optional<Chain>> pop_split();
  /// The split chain starting at descriptor `head`, marked in flight.
  [[nodiscard]] Result<std::optional<Chain>> walk_split(uint16_t head);
  [[nodiscard]] Result<std::optional<Chain>> pop_packed();
  /// The packed chain of ring descriptors `descs`, marked in flight.
  [[nodiscard]] Result<std::optional<Chain>> packed_chain(std::vector<PackedDesc> descs);

  Translate buffer_;
  RingKind kind_ = RingKind::split;
  uint16_t size_ = 0;
  uint8_t* desc_ = nullptr;
  uint8_t* driver_ = nullptr;
  uint8_t* device_ = nullptr;
  bool broken_ = false;

  uint16_t in_flight_count_ = 0;
  std::vector<uint16_t> chain_len_;  ///< ring descriptors per in-flight id
  std::vector<bool> in_flight_;

  uint16_t last_avail_ = 0;  ///< split, free-running
  uint16_t used_idx_ = 0;    ///< split, free-running
  PackedPos next_avail_;     ///< packed
  PackedPos next_used_;      ///< packed

  std::vector<uint16_t> resubmit_;  ///< split: heads pop() returns first
  std::vector<std::vector<PackedDesc>> resubmit_packed_;  ///< packed: chains pop() returns first
  bool resubmitted_ = false;         ///< the last pop() came from resubmit_
  bool can_unpop_ = false;   ///< the last operation was a pop of unpop_id_
  uint16_t unpop_id_ = 0;
  PackedPos unpop_avail_;    ///< packed: next_avail_ before that pop
  std::vector<PackedDesc> unpop_descs_;  ///< packed: that chain's, if it was resubmitted
};

}  // namespace vufront::virtio
