#pragma once
// Virtqueue ring layouts (virtio 1.2 §2.7 split, §2.8 packed) shared by the
// guest-side driver (DriverQueue) and the device side (DeviceQueue): wire
// structs with layout proofs, flag bits, the size/alignment of each ring area
// for a queue size, the vring base encoding (vhost-user spec, "Vring descriptor indices for packed virtqueues"), and the ordered
// accessors used for every index/flags word that the other side polls.
//
// Ring memory is shared with another process. Rule used on both sides:
// everything a peer will read is written first with plain stores, then the
// publishing word (avail idx, used idx, packed head flags) is written with
// ring_store() (release fence + atomic store); the polling side reads that
// word with ring_load() (atomic load + acquire fence) before anything else.

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "protocol/wire.hpp"

namespace vufront::virtio {

enum class RingKind : uint8_t { split, packed };

[[nodiscard]] constexpr const char* to_string(RingKind k) noexcept {
  return k == RingKind::split ? "split" : "packed";
}

/// Largest queue size of either ring kind.
inline constexpr uint32_t max_queue_size = 32768;

// ---- descriptor flags ------------------------------------------------------
inline constexpr uint16_t desc_f_next = 1;      ///< chain continues (split: in `next`)
inline constexpr uint16_t desc_f_write = 2;     ///< device-writable buffer
inline constexpr uint16_t desc_f_indirect = 4;  ///< buffer is an indirect descriptor table
inline constexpr uint16_t packed_desc_f_avail = 1u << 7;
inline constexpr uint16_t packed_desc_f_used = 1u << 15;

/// split avail.flags: driver does not want interrupts (we never set it).
inline constexpr uint16_t avail_f_no_interrupt = 1;
/// split used.flags: device does not want kicks (we never set it).
inline constexpr uint16_t used_f_no_notify = 1;
/// packed event suppression flags (virtio 1.2 §2.8.10).
inline constexpr uint16_t ring_event_flags_enable = 0;
inline constexpr uint16_t ring_event_flags_disable = 1;
inline constexpr uint16_t ring_event_flags_desc = 2;

// ---- split ring ------------------------------------------------------------

/// struct virtq_desc.
struct SplitDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

/// struct virtq_avail header; followed by `uint16_t ring[size]` and
/// `uint16_t used_event`.
struct SplitAvailHeader {
  uint16_t flags;
  uint16_t idx;
};

/// struct virtq_used_elem.
struct SplitUsedElem {
  uint32_t id;  ///< head descriptor index of the chain
  uint32_t len; ///< bytes written into the device-writable buffers
};

/// struct virtq_used header; followed by `SplitUsedElem ring[size]` and
/// `uint16_t avail_event`.
struct SplitUsedHeader {
  uint16_t flags;
  uint16_t idx;
};

// ---- packed ring -----------------------------------------------------------

/// struct pvirtq_desc.
struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};

/// struct pvirtq_event_suppress (driver and device areas).
struct PackedEvent {
  uint16_t off_wrap;  ///< bits 0-14 offset, bit 15 wrap counter
  uint16_t flags;     ///< ring_event_flags_*
};

VUFRONT_LAYOUT_SIZE(SplitDesc, 16);
VUFRONT_LAYOUT_AT(SplitDesc, addr, 0);
VUFRONT_LAYOUT_AT(SplitDesc, len, 8);
VUFRONT_LAYOUT_AT(SplitDesc, flags, 12);
VUFRONT_LAYOUT_AT(SplitDesc, next, 14);
VUFRONT_LAYOUT_SIZE(SplitAvailHeader, 4);
VUFRONT_LAYOUT_AT(SplitAvailHeader, flags, 0);
VUFRONT_LAYOUT_AT(SplitAvailHeader, idx, 2);
VUFRONT_LAYOUT_SIZE(SplitUsedElem, 8);
VUFRONT_LAYOUT_AT(SplitUsedElem, id, 0);
VUFRONT_LAYOUT_AT(SplitUsedElem, len, 4);
VUFRONT_LAYOUT_SIZE(SplitUsedHeader, 4);
VUFRONT_LAYOUT_AT(SplitUsedHeader, flags, 0);
VUFRONT_LAYOUT_AT(SplitUsedHeader, idx, 2);
VUFRONT_LAYOUT_SIZE(PackedDesc, 16);
VUFRONT_LAYOUT_AT(PackedDesc, addr, 0);
VUFRONT_LAYOUT_AT(PackedDesc, len, 8);
VUFRONT_LAYOUT_AT(PackedDesc, id, 12);
VUFRONT_LAYOUT_AT(PackedDesc, flags, 14);
VUFRONT_LAYOUT_SIZE(PackedEvent, 4);
VUFRONT_LAYOUT_AT(PackedEvent, off_wrap, 0);
VUFRONT_LAYOUT_AT(PackedEvent, flags, 2);

// ---- area sizes and alignments (virtio 1.2 §2.7 table, §2.8.10) -------------------------

/// Size and required alignment of one ring area.
struct AreaSpec {
  uint64_t size;
  uint64_t align;
};

/// Descriptor table: 16 bytes per entry, 16-aligned (both kinds).
[[nodiscard]] constexpr AreaSpec desc_area(RingKind, uint32_t size) noexcept {
  return {16ull * size, 16};
}
/// Driver area: split avail ring (flags, idx, ring[size], used_event), packed
/// driver event suppression.
[[nodiscard]] constexpr AreaSpec driver_area(RingKind k, uint32_t size) noexcept {
  return k == RingKind::split ? AreaSpec{6ull + 2ull * size, 2} : AreaSpec{4, 4};
}
/// Device area: split used ring (flags, idx, ring[size], avail_event), packed
/// device event suppression.
[[nodiscard]] constexpr AreaSpec device_area(RingKind k, uint32_t size) noexcept {
  return k == RingKind::split ? AreaSpec{6ull + 8ull * size, 4} : AreaSpec{4, 4};
}

/// Whether `size` is a queue size this project accepts for `k`: 1..32768;
/// split rings must be a power of two (virtio 1.2 §2.7), packed ones may be any size.
[[nodiscard]] constexpr bool valid_queue_size(RingKind k, uint32_t size) noexcept {
  if (size == 0 || size > max_queue_size)
    return false;
  return k == RingKind::packed || (size & (size - 1)) == 0;
}

[[nodiscard]] constexpr uint64_t align_up(uint64_t v, uint64_t a) noexcept {
  return (v + a - 1) & ~(a - 1);
}

// ---- vring base (SET/GET_VRING_BASE num; vhost-user spec) -------------------------

/// A packed ring position: index 0..size-1 plus wrap counter.
struct PackedPos {
  uint16_t idx = 0;
  bool wrap = true;
};

/// Moves a packed-ring position `n` slots on in a ring of `size`, flipping the
/// wrap counter when it passes the end (n <= size).
inline void advance(PackedPos& p, uint16_t n, uint16_t size) noexcept {
  uint32_t idx = uint32_t{p.idx} + n;
  if (idx >= size) {
    idx -= size;
    p.wrap = !p.wrap;
  }
  p.idx = static_cast<uint16_t>(idx);
}

/// The u16 ring word at byte offset `off` of a ring area (ring memory is
/// 2-aligned; access it with ring_load/ring_store).
[[nodiscard]] inline uint16_t* u16_at(uint8_t* base, uint64_t off) noexcept {
  return reinterpret_cast<uint16_t*>(base + off);
}

/// Fresh packed queue: both wrap counters 1, both indices 0.
inline constexpr uint32_t packed_fresh_base = 0x8000'8000u;

[[nodiscard]] constexpr uint32_t encode_packed_base(PackedPos avail, PackedPos used) noexcept {
  return (uint32_t{avail.idx} & 0x7fff) | (avail.wrap ? 0x8000u : 0u) |
         ((uint32_t{used.idx} & 0x7fff) << 16) | (used.wrap ? 0x8000'0000u : 0u);
}
[[nodiscard]] constexpr PackedPos packed_base_avail(uint32_t base) noexcept {
  return {static_cast<uint16_t>(base & 0x7fff), (base & 0x8000u) != 0};
}
[[nodiscard]] constexpr PackedPos packed_base_used(uint32_t base) noexcept {
  return {static_cast<uint16_t>((base >> 16) & 0x7fff), (base & 0x8000'0000u) != 0};
}

// ---- ordered access to shared words -------------------------------------------

/// Reads a word the peer publishes; everything the peer wrote before
/// publishing it is visible after this returns. `p` must be naturally aligned.
[[nodiscard]] inline uint16_t ring_load(const uint16_t* p) noexcept {
  const uint16_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
  std::atomic_thread_fence(std::memory_order_acquire);
  return v;
}

/// Publishes a word: every earlier store is visible to a peer that reads it
/// with ring_load(). `p` must be naturally aligned.
inline void ring_store(uint16_t* p, uint16_t v) noexcept {
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

}  // namespace vufront::virtio
