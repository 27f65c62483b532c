#pragma once
// The packed-ring layout of one queue's INFLIGHT_SHMFD region and the
// device side's bookkeeping in it (vhost-user spec, "Inflight I/O
// tracking", packed virtqueue), as DPDK's librte_vhost keeps it: the device
// copies every descriptor it takes off the ring into an entry of the
// region (a packed ring's slots are overwritten by used descriptors, so the
// ring alone cannot say what was in flight), and records where its used
// ring stands. A back-end started on the same region after a crash finds
// there the position the dead one had reached and the chains to resubmit.
//
// Layout (the spec's QueueRegionPacked; every field little-endian):
//   0 u64 features  8 u16 version (1; 0 = not yet initialised)
//  10 u16 desc_num  12 u16 free_head  14 u16 old_free_head
//  16 u16 used_idx  18 u16 old_used_idx
//  20 u8 used_wrap_counter  21 u8 old_used_wrap_counter  22 pad (to 32)
//  32 desc_num x DescStatePacked (32 bytes):
//     0 u8 inflight  1 pad  2 u16 next  4 u16 last  6 u16 num
//     8 u64 counter  16 u16 id  18 u16 flags  20 u32 len  24 u64 addr
// The entries form a free list (`next`); a chain taken off the ring holds
// one entry per ring descriptor, its head entry says `inflight`, `num`,
// `last` and `counter` (the order chains were taken in). The `old_*` fields
// are the last committed state: an update in progress when the back-end
// died is committed or rolled back at the next start.
//
// The region is shared memory another process can write: every index read
// from it is checked before it is used, and an inconsistent region fails the
// start with invalid_payload instead of resubmitting nonsense.

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/error.hpp"
#include "virtio/ring_layout.hpp"

namespace vufront::virtio {

/// struct QueueRegionPacked's header (the spec's `padding[7]` plus the 3
/// bytes the 8-aligned entries that follow leave: entries start at 32).
struct PackedInflightHeader {
  uint64_t features;
  uint16_t version;
  uint16_t desc_num;
  uint16_t free_head;
  uint16_t old_free_head;
  uint16_t used_idx;
  uint16_t old_used_idx;
  uint8_t used_wrap_counter;
  uint8_t old_used_wrap_counter;
  uint8_t padding[10];
};

/// struct DescStatePacked.
struct PackedInflightDesc {
  uint8_t inflight;
  uint8_t padding;
  uint16_t next;
  uint16_t last;
  uint16_t num;
  uint64_t counter;
  uint16_t id;
  uint16_t flags;
  uint32_t len;
  uint64_t addr;
};

VUFRONT_LAYOUT_SIZE(PackedInflightHeader, 32);
VUFRONT_LAYOUT_AT(PackedInflightHeader, features, 0);
VUFRONT_LAYOUT_AT(PackedInflightHeader, version, 8);
VUFRONT_LAYOUT_AT(PackedInflightHeader, desc_num, 10);
VUFRONT_LAYOUT_AT(PackedInflightHeader, free_head, 12);
VUFRONT_LAYOUT_AT(PackedInflightHeader, old_free_head, 14);
VUFRONT_LAYOUT_AT(PackedInflightHeader, used_idx, 16);
VUFRONT_LAYOUT_AT(PackedInflightHeader, old_used_idx, 18);
VUFRONT_LAYOUT_AT(PackedInflightHeader, used_wrap_counter, 20);
VUFRONT_LAYOUT_AT(PackedInflightHeader, old_used_wrap_counter, 21);
VUFRONT_LAYOUT_AT(PackedInflightHeader, padding, 22);
VUFRONT_LAYOUT_SIZE(PackedInflightDesc, 32);
VUFRONT_LAYOUT_AT(PackedInflightDesc, inflight, 0);
VUFRONT_LAYOUT_AT(PackedInflightDesc, next, 2);
VUFRONT_LAYOUT_AT(PackedInflightDesc, last, 4);
VUFRONT_LAYOUT_AT(PackedInflightDesc, num, 6);
VUFRONT_LAYOUT_AT(PackedInflightDesc, counter, 8);
VUFRONT_LAYOUT_AT(PackedInflightDesc, id, 16);
VUFRONT_LAYOUT_AT(PackedInflightDesc, flags, 18);
VUFRONT_LAYOUT_AT(PackedInflightDesc, len, 20);
VUFRONT_LAYOUT_AT(PackedInflightDesc, addr, 24);

/// Where a packed queue starts, from its in-flight region.
struct PackedResume {
  bool recovered = false;  ///< the region was live: positions and chains come from it
  PackedPos avail;         ///< the device's next available slot
  PackedPos used;          ///< the device's next used slot
  /// Chains a previous back-end took and never completed, oldest first:
  /// their ring descriptors as it read them (DeviceQueue::resubmit_packed).
  std::vector<std::vector<PackedDesc>> chains;
};

/// One queue's packed region. Not owning: the region must outlive it.
class PackedInflight {
public:
  /// Bytes of one queue's packed region for `size` descriptors.
  [[nodiscard]] static constexpr uint64_t region_bytes(uint16_t size) noexcept {
    return sizeof(PackedInflightHeader) + sizeof(PackedInflightDesc) * uint64_t{size};
  }

  /// `region`: region_bytes(size) bytes, 8-aligned.
  PackedInflight(uint8_t* region, uint16_t size) noexcept;

  /// Reads the flags word of descriptor ring slot `idx` (ring_load).
  using RingFlags = std::function<uint16_t(uint16_t idx)>;

  /// The queue starts. A region never used (version 0) is initialised for
  /// `base` (SET_VRING_BASE, packed encoding) and `recovered` is false. A
  /// live one is recovered (the spec's "When reconnecting"): an update the
  /// dead back-end was making is committed if the ring shows its used
  /// descriptor, else rolled back; the chains still marked in flight are
  /// returned oldest first, and the position is the region's used one with
  /// the available one as many slots further as those chains hold.
  /// Errors: invalid_payload (desc_num not the queue size, an index, count
  /// or id out of range, a chain in two places).
  [[nodiscard]] Result<PackedResume> start(uint32_t base, const RingFlags& ring_flags);

  /// Records the chain just taken off the ring: `descs` its ring
  /// descriptors as read (the buffer id in the last one).
  void begin(const std::vector<PackedDesc>& descs);
  /// The chain just recorded went back to the ring unused (DeviceQueue::unpop).
  void abort(uint16_t id);
  /// Before the used descriptor of `id` is published: its entries go back to
  /// the free list and the used position moves on by its length.
  void complete_begin(uint16_t id);
  /// After it was published: the update is committed.
  void complete_end(uint16_t id);

private:
  [[nodiscard]] PackedInflightDesc& entry(uint16_t i) const noexcept { return desc_[i]; }
  [[nodiscard]] Result<void> recover_chains(PackedResume& out);

  PackedInflightHeader* head_;
  PackedInflightDesc* desc_;
  uint16_t size_;
  uint64_t counter_ = 1;
  std::vector<uint16_t> entry_of_id_;  ///< head entry of each buffer id in flight
  uint16_t last_begun_ = 0;            ///< head entry of the chain begin() recorded last
};

}  // namespace vufront::virtio
