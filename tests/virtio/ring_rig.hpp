#pragma once
// Test rig: one GuestMemory holding a queue's rings plus scratch space, a
// DriverQueue and a DeviceQueue over the same rings (device side translating
// ring addresses through the synthetic user addresses, as a back-end would).

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>

#include "memory/guest_memory.hpp"
#include "virtio/device_queue.hpp"
#include "virtio/driver_queue.hpp"

namespace vufront::test {

inline constexpr uint64_t rig_gpa = 0x10'0000;
inline constexpr uint64_t rig_size = 4ull << 20;
inline constexpr uint64_t rig_ring_bytes = 1ull << 20;  ///< rings at rig_gpa
inline constexpr uint64_t rig_data_gpa = rig_gpa + rig_ring_bytes;  ///< scratch after them

struct RingRig {
  GuestMemory mem;
  virtio::RingKind kind;
  uint16_t size;
  virtio::RingAreas areas;

  RingRig(virtio::RingKind k, uint16_t n, uint16_t indirect_max = 0) : kind(k), size(n) {
    REQUIRE(mem.add_region(rig_gpa, rig_size).ok());
    auto a = virtio::place_rings(mem, rig_gpa, rig_ring_bytes, k, n, indirect_max);
    REQUIRE(a.ok());
    areas = *a;
  }

  [[nodiscard]] virtio::Translate ring_translate() const {
    return [m = &mem](uint64_t uaddr, uint64_t len) -> uint8_t* {
      const auto gpa = m->gpa_of_user(uaddr);
      return gpa ? m->host_ptr(*gpa, len) : nullptr;
    };
  }
  [[nodiscard]] virtio::Translate buffer_translate() const {
    return [m = &mem](uint64_t gpa, uint64_t len) { return m->host_ptr(gpa, len); };
  }

  [[nodiscard]] virtio::DriverQueue driver() const {
    auto q = virtio::DriverQueue::create(mem, kind, size, areas);
    REQUIRE(q.ok());
    return std::move(q).value();
  }

  [[nodiscard]] Result<virtio::DeviceQueue> try_device(uint32_t base) const {
    auto addr = virtio::vring_addr(mem, 0, areas);
    REQUIRE(addr.ok());
    virtio::DeviceQueueConfig c;
    c.kind = kind;
    c.size = size;
    c.desc_addr = addr->desc;
    c.driver_addr = addr->avail;
    c.device_addr = addr->used;
    c.base = base;
    return virtio::DeviceQueue::create(ring_translate(), buffer_translate(), c);
  }
  [[nodiscard]] virtio::DeviceQueue device(std::optional<uint32_t> base = std::nullopt) const {
    auto q = try_device(base ? *base
                             : (kind == virtio::RingKind::split ? 0u : virtio::packed_fresh_base));
    REQUIRE(q.ok());
    return std::move(q).value();
  }

  [[nodiscard]] uint8_t* host(uint64_t gpa, uint64_t len = 1) const {
    uint8_t* p = mem.host_ptr(gpa, len);
    REQUIRE(p != nullptr);
    return p;
  }
};

}  // namespace vufront::test
