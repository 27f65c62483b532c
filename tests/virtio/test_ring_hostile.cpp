// The device side against a hostile driver: malformed rings written straight
// into guest memory make pop() fail with invalid_payload (then bad_state),
// never crash or touch memory outside the guest.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tests/virtio/ring_rig.hpp"
#include "virtio/ring_layout.hpp"

using namespace vufront;
using namespace vufront::virtio;
using vufront::test::RingRig;
using vufront::test::rig_data_gpa;
using vufront::test::rig_gpa;
using vufront::test::rig_size;

namespace {

constexpr uint16_t kSize = 8;
constexpr uint64_t kTable = rig_data_gpa + 0x1000;  // an indirect table the driver fills

void put_split(const RingRig& rig, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
               uint16_t next = 0) {
  const SplitDesc d{addr, len, flags, next};
  std::memcpy(rig.host(rig.areas.desc + 16ull * i, 16), &d, sizeof d);
}

void put_table(const RingRig& rig, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
               uint16_t next = 0) {
  const SplitDesc d{addr, len, flags, next};
  std::memcpy(rig.host(kTable + 16ull * i, 16), &d, sizeof d);
}

/// Writes entry `i` of the indirect table at kTable as a packed table holds
/// it (struct pvirtq_desc: id at byte 12, flags at byte 14).
void put_packed_table(const RingRig& rig, uint16_t i, uint64_t addr, uint32_t len,
                      uint16_t flags, uint16_t id = 0) {
  const PackedDesc d{addr, len, id, flags};
  std::memcpy(rig.host(kTable + 16ull * i, 16), &d, sizeof d);
}

/// Publishes `head` as the next split avail entry (avail idx starts at 0).
void publish_split(const RingRig& rig, uint16_t head, uint16_t new_idx = 1) {
  std::memcpy(rig.host(rig.areas.driver + 4, 2), &head, 2);
  std::memcpy(rig.host(rig.areas.driver + 2, 2), &new_idx, 2);
}

/// Writes packed descriptor `i` as available in the first lap (wrap 1).
void put_packed(const RingRig& rig, uint16_t i, uint64_t addr, uint32_t len, uint16_t id,
                uint16_t flags) {
  const PackedDesc d{addr, len, id, static_cast<uint16_t>(flags | packed_desc_f_avail)};
  std::memcpy(rig.host(rig.areas.desc + 16ull * i, 16), &d, sizeof d);
}

struct Case {
  const char* name;
  std::function<void(const RingRig&)> setup;
};

void expect_rejected(RingKind kind, const Case& c) {
  CAPTURE(c.name);
  RingRig rig(kind, kSize);
  auto dev = rig.device();
  c.setup(rig);
  auto r = dev.pop();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::invalid_payload);
  CHECK_FALSE(r.error().message().empty());
  CHECK(dev.broken());
  CHECK(dev.pop().error().code == errc::bad_state);
  CHECK(dev.push(0, 0).error().code == errc::bad_state);
}

const uint64_t kOut = rig_gpa + rig_size;  // first byte past guest memory

}  // namespace

TEST_CASE("ring hostile driver: split ring errors") {
  const std::vector<Case> cases = {
      {"head index out of range", [](const RingRig& r) { publish_split(r, kSize + 3); }},
      {"avail idx jumps past the queue size",
       [](const RingRig& r) {
         put_split(r, 0, rig_data_gpa, 4, 0);
         publish_split(r, 0, kSize + 1);
       }},
      {"descriptor loop",
       [](const RingRig& r) {
         put_split(r, 0, rig_data_gpa, 4, desc_f_next, 1);
         put_split(r, 1, rig_data_gpa, 4, desc_f_next, 0);
         publish_split(r, 0);
       }},
      {"self loop",
       [](const RingRig& r) {
         put_split(r, 2, rig_data_gpa, 4, desc_f_next, 2);
         publish_split(r, 2);
       }},
      {"next out of range",
       [](const RingRig& r) {
         put_split(r, 0, rig_data_gpa, 4, desc_f_next, 0xffff);
         publish_split(r, 0);
       }},
      {"buffer outside guest memory",
       [](const RingRig& r) {
         put_split(r, 0, 0x10, 4, 0);
         publish_split(r, 0);
       }},
      {"buffer straddling the end of guest memory",
       [](const RingRig& r) {
         put_split(r, 0, kOut - 8, 16, desc_f_write);
         publish_split(r, 0);
       }},
      {"buffer address wrapping",
       [](const RingRig& r) {
         put_split(r, 0, ~uint64_t{0} - 4, 0xffff'ffff, 0);
         publish_split(r, 0);
       }},
      {"readable after writable",
       [](const RingRig& r) {
         put_split(r, 0, rig_data_gpa, 4, desc_f_write | desc_f_next, 1);
         put_split(r, 1, rig_data_gpa, 4, 0);
         publish_split(r, 0);
       }},
      {"indirect with next",
       [](const RingRig& r) {
         put_table(r, 0, rig_data_gpa, 4, 0);
         put_split(r, 0, kTable, 16, desc_f_indirect | desc_f_next, 1);
         put_split(r, 1, rig_data_gpa, 4, 0);
         publish_split(r, 0);
       }},
      {"indirect after a direct descriptor",
       [](const RingRig& r) {
         put_table(r, 0, rig_data_gpa, 4, 0);
         put_split(r, 0, rig_data_gpa, 4, desc_f_next, 1);
         put_split(r, 1, kTable, 16, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect length not a multiple of 16",
       [](const RingRig& r) {
         put_split(r, 0, kTable, 24, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect length zero",
       [](const RingRig& r) {
         put_split(r, 0, kTable, 0, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"huge indirect length",
       [](const RingRig& r) {
         put_split(r, 0, kTable, 0xffff'fff0, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect table longer than 16 * size",
       [](const RingRig& r) {
         put_split(r, 0, kTable, 16 * (kSize + 1), desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect table outside guest memory",
       [](const RingRig& r) {
         put_split(r, 0, kOut - 16, 32, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"nested indirect",
       [](const RingRig& r) {
         put_table(r, 0, kTable, 16, desc_f_indirect);
         put_split(r, 0, kTable, 16, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect loop",
       [](const RingRig& r) {
         put_table(r, 0, rig_data_gpa, 4, desc_f_next, 1);
         put_table(r, 1, rig_data_gpa, 4, desc_f_next, 0);
         put_split(r, 0, kTable, 32, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect next beyond the table",
       [](const RingRig& r) {
         put_table(r, 0, rig_data_gpa, 4, desc_f_next, 2);
         put_split(r, 0, kTable, 32, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect entry outside guest memory",
       [](const RingRig& r) {
         put_table(r, 0, kOut, 4, 0);
         put_split(r, 0, kTable, 16, desc_f_indirect);
         publish_split(r, 0);
       }},
      {"indirect readable after writable",
       [](const RingRig& r) {
         put_table(r, 0, rig_data_gpa, 4, desc_f_write | desc_f_next, 1);
         put_table(r, 1, rig_data_gpa, 4, 0);
         put_split(r, 0, kTable, 32, desc_f_indirect);
         publish_split(r, 0);
       }},
  };
  for (const Case& c : cases)
    expect_rejected(RingKind::split, c);
}

TEST_CASE("ring hostile driver: split head reused while in flight") {
  RingRig rig(RingKind::split, kSize);
  auto dev = rig.device();
  put_split(rig, 0, rig_data_gpa, 4, 0);
  const uint16_t heads[2] = {0, 0};
  std::memcpy(rig.host(rig.areas.driver + 4, 4), heads, 4);
  const uint16_t idx = 2;
  std::memcpy(rig.host(rig.areas.driver + 2, 2), &idx, 2);
  auto first = dev.pop();
  REQUIRE(first.ok());
  REQUIRE(first->has_value());
  CHECK(dev.pop().error().code == errc::invalid_payload);
}

TEST_CASE("ring hostile driver: packed ring errors") {
  const std::vector<Case> cases = {
      {"chain longer than the queue",
       [](const RingRig& r) {
         for (uint16_t i = 0; i < kSize; ++i)
           put_packed(r, i, rig_data_gpa, 4, 0, desc_f_next);
       }},
      {"buffer id out of range",
       [](const RingRig& r) { put_packed(r, 0, rig_data_gpa, 4, kSize, 0); }},
      {"buffer outside guest memory",
       [](const RingRig& r) { put_packed(r, 0, kOut + 0x1000, 4, 0, 0); }},
      {"readable after writable",
       [](const RingRig& r) {
         put_packed(r, 0, rig_data_gpa, 4, 0, desc_f_write | desc_f_next);
         put_packed(r, 1, rig_data_gpa, 4, 0, 0);
       }},
      {"indirect with next",
       [](const RingRig& r) {
         put_packed_table(r, 0, rig_data_gpa, 4, 0);
         put_packed(r, 0, kTable, 16, 0, desc_f_indirect | desc_f_next);
         put_packed(r, 1, rig_data_gpa, 4, 0, 0);
       }},
      {"huge indirect length",
       [](const RingRig& r) { put_packed(r, 0, kTable, 0xffff'fff0, 0, desc_f_indirect); }},
      {"indirect length not a multiple of 16",
       [](const RingRig& r) { put_packed(r, 0, kTable, 17, 0, desc_f_indirect); }},
      {"indirect entry outside guest memory",
       [](const RingRig& r) {
         put_packed_table(r, 0, rig_data_gpa, 4, 0);
         put_packed_table(r, 1, kOut - 2, 4, desc_f_write);
         put_packed(r, 0, kTable, 32, 0, desc_f_indirect);
       }},
      {"indirect readable after writable",
       [](const RingRig& r) {
         put_packed_table(r, 0, rig_data_gpa, 4, desc_f_write);
         put_packed_table(r, 1, rig_data_gpa, 4, 0);
         put_packed(r, 0, kTable, 32, 0, desc_f_indirect);
       }},
  };
  for (const Case& c : cases)
    expect_rejected(RingKind::packed, c);
}

TEST_CASE("ring hostile driver: packed indirect tables, reserved flags and ids ignored") {
  // virtio 1.2 2.8.19: in a packed table WRITE is the only valid flag; NEXT,
  // INDIRECT, the ring's AVAIL/USED bits and the buffer id are reserved and
  // ignored by the device (no nested table, no chaining: entries in order).
  RingRig rig(RingKind::packed, kSize);
  auto dev = rig.device();
  put_packed_table(rig, 0, rig_data_gpa, 16, desc_f_next | desc_f_indirect, 0xbeef);
  put_packed_table(rig, 1, rig_data_gpa + 0x100, 32,
                   desc_f_write | desc_f_next | packed_desc_f_avail, 7);
  put_packed_table(rig, 2, rig_data_gpa + 0x200, 1, desc_f_write | packed_desc_f_used, 0xffff);
  put_packed(rig, 0, kTable, 48, 5, desc_f_indirect);
  auto c = dev.pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK((*c)->id == 5);
  REQUIRE((*c)->segments.size() == 3);
  CHECK((*c)->segments[0].ptr == rig.host(rig_data_gpa, 16));
  CHECK_FALSE((*c)->segments[0].writable);
  CHECK((*c)->segments[1].ptr == rig.host(rig_data_gpa + 0x100, 32));
  CHECK((*c)->segments[1].writable);
  CHECK((*c)->segments[2].len == 1);
  CHECK((*c)->segments[2].writable);
  REQUIRE(dev.push(5, 33).ok());
  CHECK(dev.base() == encode_packed_base({1, true}, {1, true}));
}

TEST_CASE("ring hostile driver: packed id reused while in flight, stale descriptors ignored") {
  RingRig rig(RingKind::packed, kSize);
  auto dev = rig.device();
  // Wrong-lap descriptor (avail bit clear, used bit set): not available.
  const PackedDesc stale{rig_data_gpa, 4, 0, packed_desc_f_used};
  std::memcpy(rig.host(rig.areas.desc, 16), &stale, 16);
  auto none = dev.pop();
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  put_packed(rig, 0, rig_data_gpa, 4, 3, 0);
  put_packed(rig, 1, rig_data_gpa, 4, 3, 0);
  auto first = dev.pop();
  REQUIRE(first.ok());
  REQUIRE(first->has_value());
  CHECK((*first)->id == 3);
  CHECK(dev.pop().error().code == errc::invalid_payload);
}

TEST_CASE("ring device: bad configurations are refused") {
  RingRig rig(RingKind::split, kSize);
  auto addr = vring_addr(rig.mem, 0, rig.areas);
  REQUIRE(addr.ok());
  DeviceQueueConfig c;
  c.kind = RingKind::split;
  c.size = kSize;
  c.desc_addr = addr->desc;
  c.driver_addr = addr->avail;
  c.device_addr = addr->used;
  CHECK(DeviceQueue::create(rig.ring_translate(), rig.buffer_translate(), c).ok());
  auto bad = c;
  bad.size = 6;
  CHECK(DeviceQueue::create(rig.ring_translate(), rig.buffer_translate(), bad).error().code ==
        errc::invalid_argument);
  bad = c;
  bad.desc_addr += 8;
  CHECK(DeviceQueue::create(rig.ring_translate(), rig.buffer_translate(), bad).error().code ==
        errc::invalid_argument);
  bad = c;
  bad.device_addr = 0x1234'0000;  // not a user address the memory table knows
  CHECK(DeviceQueue::create(rig.ring_translate(), rig.buffer_translate(), bad).error().code ==
        errc::invalid_argument);
  CHECK(DeviceQueue::create(nullptr, rig.buffer_translate(), c).error().code ==
        errc::invalid_argument);
}
