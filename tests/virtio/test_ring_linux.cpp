// Packed rings as Linux drives them: the descriptors Linux 6.1's packed-ring
// driver (drivers/virtio/virtio_ring.c, virtqueue_add_indirect_packed) put in
// guest memory for vufront-backend under QEMU 7.2 (vhost-user-blk-pci,
// packed=on; tests/integration/test_qemu_guest.py), byte for byte: queue size
// 128, every request of more than one buffer one ring element (INDIRECT, the
// buffer id in the element) pointing at a table of packed descriptors
// (virtio 1.2 2.8.19: struct pvirtq_desc, flags at byte 14 holding WRITE
// only, the reserved id at byte 12 zero). The device once read those tables
// as split descriptors (flags at byte 12): every buffer looked readable, so
// the write had no status byte and was never executed, and the guest's
// writes and reads silently did nothing.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/virtio/ring_rig.hpp"
#include "virtio/ring_layout.hpp"

using namespace vufront;
using namespace vufront::virtio;
using vufront::test::RingRig;

namespace {

/// One table entry as Linux wrote it (its id word was 0).
struct Entry {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
};

/// One request as the guest made it available: the ring element's slot
/// (wrap counter 1 throughout), the table's address and entries.
struct LinuxRequest {
  const char* what;
  uint16_t slot;
  uint64_t table;
  std::vector<Entry> entries;
};

constexpr uint16_t kQueueSize = 128;

std::vector<LinuxRequest> linux_requests() {
  const uint16_t w = desc_f_write;
  return {
      // dd of=/dev/vda bs=512 seek=2048 conv=fsync of 64 KiB, written back
      // from the page cache: VIRTIO_BLK_T_OUT header, 65536 bytes, status
      {"64 KiB write",
       21,
       0x29f'6400,
       {{0x2b1'8090, 16, 0},    {0x29c'1000, 4096, 0}, {0x293'a000, 4096, 0},
        {0x29f'1000, 4096, 0},  {0x296'7000, 4096, 0}, {0x296'5000, 4096, 0},
        {0x29f'0000, 4096, 0},  {0x29e'f000, 4096, 0}, {0x296'6000, 4096, 0},
        {0x29f'7000, 4096, 0},  {0x296'c000, 4096, 0}, {0x29e'e000, 4096, 0},
        {0x2b3'c000, 8192, 0},  {0x2b3'b000, 4096, 0}, {0x2b3'a000, 4096, 0},
        {0x2b4'0000, 4096, 0},  {0x2b1'80a0, 1, w}}},
      // conv=fsync: VIRTIO_BLK_T_FLUSH header, status
      {"flush", 22, 0x297'7d20, {{0x196'7110, 16, 0}, {0x196'7120, 1, w}}},
      // dd if=/dev/vda bs=65536 skip=16 count=1 iflag=direct: VIRTIO_BLK_T_IN
      // header, 16 pages, status
      {"64 KiB read",
       23,
       0x29f'6400,
       {{0x2b1'8390, 16, 0},   {0x9c0'2000, 4096, w}, {0xa7f'4000, 4096, w},
        {0xb0a'0000, 4096, w}, {0xa7f'c000, 4096, w}, {0xa62'7000, 4096, w},
        {0xa7f'6000, 4096, w}, {0x9c0'3000, 4096, w}, {0xb40'6000, 4096, w},
        {0xae1'd000, 4096, w}, {0xae1'c000, 4096, w}, {0xb40'3000, 4096, w},
        {0xa7f'0000, 4096, w}, {0xb0a'3000, 4096, w}, {0xb0a'2000, 4096, w},
        {0xa7f'2000, 4096, w}, {0xb77'7000, 4096, w}, {0x2b1'83a0, 1, w}}},
  };
}

/// A rig whose guest memory also holds the guest-physical ranges Linux used.
struct LinuxRig : RingRig {
  LinuxRig() : RingRig(RingKind::packed, kQueueSize) {
    REQUIRE(mem.add_region(0x190'0000, 1 << 20).ok());
    REQUIRE(mem.add_region(0x290'0000, 3 << 20).ok());
    REQUIRE(mem.add_region(0x9c0'0000, 0x1c0'0000).ok());
  }

  /// Writes the table, then the ring element, its flags last (AVAIL, wrap 1).
  void make_available(const LinuxRequest& r) const {
    for (size_t i = 0; i < r.entries.size(); ++i) {
      const Entry& e = r.entries[i];
      const PackedDesc d{e.addr, e.len, 0, e.flags};
      std::memcpy(host(r.table + 16 * i, 16), &d, sizeof d);
    }
    const PackedDesc element{r.table, static_cast<uint32_t>(16 * r.entries.size()), 0,
                             static_cast<uint16_t>(desc_f_indirect | packed_desc_f_avail)};
    uint8_t* slot = host(areas.desc + 16ull * r.slot, 16);
    std::memcpy(slot, &element, offsetof(PackedDesc, flags));
    ring_store(u16_at(slot, offsetof(PackedDesc, flags)), element.flags);
  }
};

}  // namespace

TEST_CASE("ring packed: the indirect tables Linux wrote for a 64 KiB write, a flush and a 64 KiB read") {
  LinuxRig rig;
  // The device stands where the guest's 22nd request starts: 21 earlier
  // requests took one ring element each.
  auto dev = rig.device(encode_packed_base({21, true}, {21, true}));
  for (const LinuxRequest& r : linux_requests()) {
    CAPTURE(r.what);
    rig.make_available(r);
    auto c = dev.pop();
    REQUIRE(c.ok());
    REQUIRE(c->has_value());
    const Chain& chain = **c;
    CHECK(chain.id == 0);
    REQUIRE(chain.segments.size() == r.entries.size());
    uint64_t readable = 0, writable = 0;
    for (size_t i = 0; i < r.entries.size(); ++i) {
      const Entry& e = r.entries[i];
      CAPTURE(i);
      CHECK(chain.segments[i].ptr == rig.host(e.addr, e.len));
      CHECK(chain.segments[i].len == e.len);
      CHECK(chain.segments[i].writable == (e.flags == desc_f_write));
      (e.flags == desc_f_write ? writable : readable) += e.len;
    }
    CHECK(chain.readable_bytes() == readable);
    CHECK(chain.writable_bytes() == writable);
    CHECK(chain.segments.back().writable);  // the status byte

    // The used element goes where the request was, as Linux reads it
    // (detach_buf_packed, is_used_desc_packed): id, len, then AVAIL and
    // USED both equal to the device's wrap counter; one element per request.
    const auto written = static_cast<uint32_t>(writable);
    REQUIRE(dev.push(chain.id, written).ok());
    PackedDesc used{};
    std::memcpy(&used, rig.host(rig.areas.desc + 16ull * r.slot, 16), sizeof used);
    CHECK(used.id == 0);
    CHECK(used.len == written);
    CHECK(used.flags == (packed_desc_f_avail | packed_desc_f_used));
    const PackedPos next{static_cast<uint16_t>(r.slot + 1), true};
    CHECK(dev.base() == encode_packed_base(next, next));
  }
  auto none = dev.pop();
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("ring packed: the driver writes indirect tables as Linux does") {
  // Our guest-side driver (vufront check, the data-path tests) must write the
  // layout real devices read: pvirtq_desc entries, WRITE their only flag.
  RingRig rig(RingKind::packed, 8, 4);
  auto drv = rig.driver();
  const uint64_t data = vufront::test::rig_data_gpa;
  const std::vector<Buffer> chain = {{data, 16, false}, {data + 0x1000, 4096, true},
                                     {data + 0x2000, 1, true}};
  auto id = drv.add_chain(chain, true);
  REQUIRE(id.ok());
  PackedDesc element{};
  std::memcpy(&element, rig.host(rig.areas.desc, 16), sizeof element);
  CHECK(element.id == *id);
  CHECK(element.len == 48);
  CHECK(element.flags == (desc_f_indirect | packed_desc_f_avail));
  for (size_t i = 0; i < chain.size(); ++i) {
    CAPTURE(i);
    PackedDesc e{};
    std::memcpy(&e, rig.host(element.addr + 16 * i, 16), sizeof e);
    CHECK(e.addr == chain[i].gpa);
    CHECK(e.len == chain[i].len);
    CHECK(e.id == 0);
    CHECK(e.flags == (chain[i].device_writable ? desc_f_write : 0));
  }
  auto dev = rig.device();
  auto c = dev.pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->readable_bytes() == 16);
  CHECK((*c)->writable_bytes() == 4097);
}
