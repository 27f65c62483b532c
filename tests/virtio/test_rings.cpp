// Driver and device sides of split and packed virtqueues against each other,
// in-process over one GuestMemory.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include <unistd.h>

#include "tests/support.hpp"
#include "tests/virtio/ring_rig.hpp"
#include "virtio/ring_layout.hpp"

using namespace vufront;
using namespace vufront::virtio;
using vufront::test::RingRig;
using vufront::test::rig_data_gpa;

namespace {

/// A 3-buffer request: 16 readable bytes (pattern from `seq`), 64 + 1 writable.
std::vector<Buffer> request_chain(const RingRig& rig, uint32_t seq, uint16_t slot) {
  const uint64_t base = rig_data_gpa + uint64_t{slot} * 256;
  uint8_t* in = rig.host(base, 16);
  for (uint32_t i = 0; i < 16; ++i)
    in[i] = static_cast<uint8_t>(seq + i);
  std::memset(rig.host(base + 64, 65), 0, 65);
  return {{base, 16, false}, {base + 64, 64, true}, {base + 128, 1, true}};
}

/// Device: checks the readable bytes, writes seq-derived output, completes.
void serve(DeviceQueue& dev, uint32_t seq) {
  auto c = dev.pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  const Chain& chain = **c;
  REQUIRE(chain.segments.size() == 3);
  CHECK_FALSE(chain.segments[0].writable);
  CHECK(chain.segments[1].writable);
  CHECK(chain.segments[2].writable);
  CHECK(chain.readable_bytes() == 16);
  CHECK(chain.writable_bytes() == 65);
  CHECK(chain.segments[0].ptr[0] == static_cast<uint8_t>(seq));
  CHECK(chain.segments[0].ptr[15] == static_cast<uint8_t>(seq + 15));
  std::memset(chain.segments[1].ptr, static_cast<int>(seq & 0xff), 64);
  chain.segments[2].ptr[0] = 0x5a;
  REQUIRE(dev.push(chain.id, 65).ok());
}

void run_requests(RingRig& rig, DriverQueue& drv, DeviceQueue& dev, uint32_t first,
                  uint32_t count) {
  for (uint32_t seq = first; seq < first + count; ++seq) {
    const bool indirect = rig.areas.indirect_max != 0 && seq % 2 == 1;
    auto id = drv.add_chain(request_chain(rig, seq, 0), indirect);
    REQUIRE(id.ok());
    serve(dev, seq);
    auto u = drv.poll_used();
    REQUIRE(u.ok());
    REQUIRE(u->has_value());
    CHECK((*u)->id == *id);
    CHECK((*u)->len == 65);
    CHECK(*rig.host(rig_data_gpa + 64) == static_cast<uint8_t>(seq & 0xff));
    CHECK(*rig.host(rig_data_gpa + 128) == 0x5a);
    auto none = drv.poll_used();
    REQUIRE(none.ok());
    CHECK_FALSE(none->has_value());
  }
  CHECK(drv.in_flight() == 0);
  CHECK(dev.in_flight() == 0);
  CHECK(drv.free_descriptors() == rig.size);
  CHECK(drv.next_avail_base() == dev.base());
}

}  // namespace

TEST_CASE("ring layout: area sizes, alignments and base encoding") {
  CHECK(desc_area(RingKind::split, 256).size == 4096);
  CHECK(desc_area(RingKind::packed, 256).align == 16);
  CHECK(driver_area(RingKind::split, 256).size == 6 + 512);
  CHECK(driver_area(RingKind::split, 256).align == 2);
  CHECK(device_area(RingKind::split, 256).size == 6 + 2048);
  CHECK(device_area(RingKind::split, 256).align == 4);
  CHECK(driver_area(RingKind::packed, 256).size == 4);
  CHECK(device_area(RingKind::packed, 256).align == 4);
  CHECK(valid_queue_size(RingKind::split, 32768));
  CHECK_FALSE(valid_queue_size(RingKind::split, 65535));
  CHECK_FALSE(valid_queue_size(RingKind::split, 0));
  CHECK_FALSE(valid_queue_size(RingKind::split, 12));
  CHECK(valid_queue_size(RingKind::packed, 12));
  CHECK(encode_packed_base({0, true}, {0, true}) == packed_fresh_base);
  const uint32_t b = encode_packed_base({5, false}, {0x7ffe, true});
  CHECK(b == (5u | (0x7ffeu << 16) | 0x8000'0000u));
  CHECK(packed_base_avail(b).idx == 5);
  CHECK_FALSE(packed_base_avail(b).wrap);
  CHECK(packed_base_used(b).idx == 0x7ffe);
  CHECK(packed_base_used(b).wrap);
}

TEST_CASE("ring placement: aligned areas inside one region, user addresses for SET_VRING_ADDR") {
  GuestMemory mem;
  REQUIRE(mem.add_region(0x10'0000, 1 << 20).ok());
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    const uint64_t need = rings_footprint(k, 256, 4);
    auto a = place_rings(mem, 0x10'0001, need, k, 256, 4);
    REQUIRE(a.ok());
    CHECK(a->desc % 16 == 0);
    CHECK(a->desc >= 0x10'0001);
    CHECK(a->driver >= a->desc + 4096);
    CHECK(a->device >= a->driver + driver_area(k, 256).size);
    CHECK(a->device % 4 == 0);
    CHECK(a->indirect % 16 == 0);
    CHECK(a->indirect + 256ull * 4 * 16 <= 0x10'0001 + need);
    auto v = vring_addr(mem, 3, *a);
    REQUIRE(v.ok());
    CHECK(v->index == 3);
    CHECK(mem.gpa_of_user(v->desc) == a->desc);
    CHECK(mem.gpa_of_user(v->avail) == a->driver);
    CHECK(mem.gpa_of_user(v->used) == a->device);
    CHECK(v->flags == 0);

    CHECK(place_rings(mem, 0x10'0000, need - 64, k, 256, 4).error().code ==
          errc::invalid_argument);
    CHECK(place_rings(mem, 0x1F'F000, need, k, 256, 4).error().code == errc::invalid_argument);
    CHECK(place_rings(mem, 0x10'0000, 1 << 20, k, 256, 257).error().code ==
          errc::invalid_argument);
  }
  CHECK(place_rings(mem, 0x10'0000, 1 << 20, RingKind::split, 100).error().code ==
        errc::invalid_argument);
}

TEST_CASE("ring round trip: split and packed, direct and indirect, across wrap-around") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    for (uint16_t indirect_max : {uint16_t{0}, uint16_t{4}}) {
      CAPTURE(to_string(k));
      CAPTURE(indirect_max);
      RingRig rig(k, 8, indirect_max);
      auto drv = rig.driver();
      auto dev = rig.device();
      CHECK(drv.next_avail_base() == dev.base());
      // 3-descriptor chains on an 8-entry ring: positions are not multiples of
      // the size, so packed wraps mid-chain; > 2 * 65536 / 8 would be slow, so
      // split u16 wrap is covered in its own case below.
      run_requests(rig, drv, dev, 0, 8 * 2 * 3 + 5);
      if (k == RingKind::split)
        CHECK(dev.base() == 8 * 2 * 3 + 5);
    }
  }
}

TEST_CASE("ring round trip: split u16 index wrap-around") {
  RingRig rig(RingKind::split, 4, 4);
  auto drv = rig.driver();
  auto dev = rig.device();
  run_requests(rig, drv, dev, 0, 65536 + 10);
  CHECK(dev.base() == 10);
  CHECK(drv.next_avail_base() == 10);
}

TEST_CASE("ring: full queue, out-of-order completion") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    RingRig rig(k, 8, 8);
    auto drv = rig.driver();
    auto dev = rig.device();
    for (int round = 0; round < 5; ++round) {
      std::vector<uint16_t> ids;
      // 2 direct chains of 3 (6 descriptors) + 2 indirect (1 each) fill the ring.
      for (uint32_t i = 0; i < 4; ++i) {
        auto id = drv.add_chain(request_chain(rig, i, static_cast<uint16_t>(i)), i >= 2);
        REQUIRE(id.ok());
        ids.push_back(*id);
      }
      CHECK(drv.free_descriptors() == 0);
      auto full = drv.add_chain({{rig_data_gpa, 1, false}});
      CHECK(full.error().code == errc::bad_state);
      std::vector<Chain> chains;
      for (int i = 0; i < 4; ++i) {
        auto c = dev.pop();
        REQUIRE(c.ok());
        REQUIRE(c->has_value());
        CHECK((*c)->id == ids[static_cast<size_t>(i)]);
        chains.push_back(std::move(**c));
      }
      auto none = dev.pop();
      REQUIRE(none.ok());
      CHECK_FALSE(none->has_value());
      std::reverse(chains.begin(), chains.end());
      for (const Chain& c : chains)
        REQUIRE(dev.push(c.id, 7).ok());
      CHECK(dev.push(chains[0].id, 7).error().code == errc::invalid_argument);
      for (int i = 3; i >= 0; --i) {
        auto u = drv.poll_used();
        REQUIRE(u.ok());
        REQUIRE(u->has_value());
        CHECK((*u)->id == ids[static_cast<size_t>(i)]);
        CHECK((*u)->len == 7);
      }
      CHECK(drv.free_descriptors() == 8);
      CHECK(drv.next_avail_base() == dev.base());
    }
  }
}

TEST_CASE("ring unpop: a chain given back is popped again, only right after its pop") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    RingRig rig(k, 8, 4);
    auto drv = rig.driver();
    auto dev = rig.device();
    // 3-descriptor chains on 8 entries: the packed ring wraps mid-chain
    for (uint32_t seq = 0; seq < 20; ++seq) {
      CAPTURE(seq);
      auto id = drv.add_chain(request_chain(rig, seq, 0), seq % 3 == 2);
      REQUIRE(id.ok());
      const uint32_t base = dev.base();
      auto c = dev.pop();
      REQUIRE(c.ok());
      REQUIRE(c->has_value());
      CHECK(dev.unpop(static_cast<uint16_t>((*c)->id + 1)).error().code == errc::invalid_argument);
      REQUIRE(dev.unpop((*c)->id).ok());
      CHECK(dev.base() == base);
      CHECK(dev.in_flight() == 0);
      CHECK(dev.unpop((*c)->id).error().code == errc::invalid_argument);  // once only
      serve(dev, seq);  // pops the same chain again and completes it
      CHECK(dev.unpop(*id).error().code == errc::invalid_argument);  // not after a push
      auto u = drv.poll_used();
      REQUIRE(u.ok());
      REQUIRE(u->has_value());
      CHECK((*u)->id == *id);
      CHECK(drv.next_avail_base() == dev.base());
    }
    auto none = dev.pop();
    REQUIRE(none.ok());
    REQUIRE_FALSE(none->has_value());
    CHECK(dev.unpop(0).error().code == errc::invalid_argument);  // nothing was popped
  }
}

TEST_CASE("ring resubmit: a restarted device takes the chains left in flight first, then the ring") {
  RingRig rig(RingKind::split, 16, 4);
  auto drv = rig.driver();
  std::vector<uint16_t> ids;
  {
    auto dev = rig.device();
    for (uint32_t i = 0; i < 3; ++i) {
      auto id = drv.add_chain(request_chain(rig, i, static_cast<uint16_t>(i)), i == 1);
      REQUIRE(id.ok());
      ids.push_back(*id);
    }
    for (int i = 0; i < 3; ++i) {
      auto c = dev.pop();
      REQUIRE(c.ok());
      REQUIRE(c->has_value());
    }
    REQUIRE(dev.push(ids[1], 5).ok());  // only the middle one completes; the device dies
  }
  auto extra = drv.add_chain(request_chain(rig, 3, 3), false);  // made while it was gone
  REQUIRE(extra.ok());
  // the new device starts at the used idx (1) and resubmits heads 0 and 2
  auto dev = rig.device(1);
  CHECK(dev.resubmit({ids[2], 99}).error().code == errc::invalid_argument);  // 99 >= size
  REQUIRE(dev.resubmit({ids[0], ids[2]}).ok());
  CHECK(dev.base() == 3);  // used idx 1 + 2 in flight: every avail entry before 3 was taken
  std::vector<uint16_t> order;
  for (;;) {
    auto c = dev.pop();
    REQUIRE(c.ok());
    if (!c->has_value())
      break;
    if (order.empty()) {  // a resubmitted chain can be given back and comes again
      REQUIRE(dev.unpop((*c)->id).ok());
      c = dev.pop();
      REQUIRE(c.ok());
      REQUIRE(c->has_value());
    }
    order.push_back((*c)->id);
    REQUIRE(dev.push((*c)->id, 9).ok());
  }
  CHECK(order == std::vector<uint16_t>{ids[0], ids[2], *extra});
  CHECK(dev.base() == 4);
  std::vector<uint16_t> done;
  for (;;) {
    auto u = drv.poll_used();
    REQUIRE(u.ok());
    if (!u->has_value())
      break;
    done.push_back((*u)->id);
  }
  CHECK(done == std::vector<uint16_t>{ids[1], ids[0], ids[2], *extra});  // each exactly once
  CHECK(drv.next_avail_base() == dev.base());
  RingRig packed(RingKind::packed, 8, 4);
  auto pdev = packed.device();
  CHECK(pdev.resubmit({0}).error().code == errc::invalid_argument);
}

TEST_CASE("ring base: stop at a base, resume both sides from it, indices continue") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    RingRig rig(k, 8, 4);
    uint32_t base = 0;
    {
      auto drv = rig.driver();
      auto dev = rig.device();
      run_requests(rig, drv, dev, 0, 13);  // 13 * 3 or mixed: odd positions
      base = dev.base();
      CHECK(base == drv.next_avail_base());
    }
    if (k == RingKind::split)
      CHECK(base == 13);
    else
      CHECK(base != packed_fresh_base);
    auto drv = DriverQueue::resume(rig.mem, k, 8, rig.areas, base);
    REQUIRE(drv.ok());
    auto dev = rig.device(base);
    CHECK(drv->next_avail_base() == base);
    run_requests(rig, *drv, dev, 13, 29);
    // A base that says chains were in flight cannot be resumed as drained.
    if (k == RingKind::packed) {
      const uint32_t skewed = encode_packed_base({1, true}, {0, true});
      CHECK(DriverQueue::resume(rig.mem, k, 8, rig.areas, skewed).error().code ==
            errc::bad_state);
      CHECK(DriverQueue::resume(rig.mem, k, 8, rig.areas, encode_packed_base({9, true}, {9, true}))
                .error()
                .code == errc::invalid_argument);
      CHECK(rig.try_device(encode_packed_base({8, true}, {0, true})).error().code ==
            errc::invalid_argument);
    } else {
      CHECK(DriverQueue::resume(rig.mem, k, 8, rig.areas, base + 1).error().code ==
            errc::bad_state);
      CHECK(rig.try_device(0x1'0000).error().code == errc::invalid_argument);
    }
  }
}

TEST_CASE("ring wait_used: call eventfd, coalesced signals, deadline") {
  vufront::test::FdCount fds;
  {
    UniqueFd call = make_eventfd();
    UniqueFd kick = make_eventfd();
    REQUIRE(call.valid());
    REQUIRE(kick.valid());
    for (RingKind k : {RingKind::split, RingKind::packed}) {
      CAPTURE(to_string(k));
      RingRig rig(k, 8);
      auto drv = rig.driver();
      auto dev = rig.device();
      auto a = drv.add_chain(request_chain(rig, 1, 0));
      auto b = drv.add_chain(request_chain(rig, 2, 1));
      REQUIRE(a.ok());
      REQUIRE(b.ok());
      REQUIRE(drv.kick(kick.get()).ok());
      uint64_t kicks = 0;
      REQUIRE(::read(kick.get(), &kicks, sizeof kicks) == sizeof kicks);
      CHECK(kicks == 1);
      serve(dev, 1);
      serve(dev, 2);
      // Two completions, one (coalesced) interrupt.
      const uint64_t one = 1;
      REQUIRE(::write(call.get(), &one, sizeof one) == sizeof one);
      REQUIRE(::write(call.get(), &one, sizeof one) == sizeof one);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      auto u1 = drv.wait_used(call.get(), deadline);
      auto u2 = drv.wait_used(call.get(), deadline);
      REQUIRE(u1.ok());
      REQUIRE(u2.ok());
      CHECK(u1->id == *a);
      CHECK(u2->id == *b);
      const auto t0 = std::chrono::steady_clock::now();
      auto late = drv.wait_used(call.get(), t0 + std::chrono::milliseconds(30));
      CHECK(late.error().code == errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(30));
      // An interrupt without a completion is drained and the wait goes on.
      REQUIRE(::write(call.get(), &one, sizeof one) == sizeof one);
      late = drv.wait_used(call.get(), std::chrono::steady_clock::now() +
                                           std::chrono::milliseconds(20));
      CHECK(late.error().code == errc::timeout);
      uint64_t left = 0;
      CHECK(::read(call.get(), &left, sizeof left) < 0);  // counter was drained
      // A stalled ring says how many requests it still waits for.
      auto c = drv.add_chain(request_chain(rig, 3, 2));
      REQUIRE(c.ok());
      late = drv.wait_used(call.get(), std::chrono::steady_clock::now());
      REQUIRE_FALSE(late.ok());
      CHECK(late.error().message() ==
            "virtqueue used: timeout: no used entry before the deadline (1 request(s) outstanding)");
    }
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("ring driver: caller errors and a device writing bogus used entries") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    RingRig rig(k, 8);
    auto drv = rig.driver();
    CHECK(drv.add_chain({}).error().code == errc::invalid_argument);
    CHECK(drv.add_chain({{rig_data_gpa, 4, true}, {rig_data_gpa + 8, 4, false}}).error().code ==
          errc::invalid_argument);
    CHECK(drv.add_chain({{0x9000'0000, 4, false}}).error().code == errc::invalid_argument);
    CHECK(drv.add_chain({{rig_data_gpa, 4, false}}, true).error().code ==
          errc::invalid_argument);  // no indirect tables
    CHECK(drv.in_flight() == 0);

    // The device reports an id that is not in flight.
    auto id = drv.add_chain({{rig_data_gpa, 4, false}});
    REQUIRE(id.ok());
    if (k == RingKind::split) {
      const SplitUsedElem e{5, 0};
      std::memcpy(rig.host(rig.areas.device + 4, 8), &e, sizeof e);
      const uint16_t idx = 1;
      std::memcpy(rig.host(rig.areas.device + 2, 2), &idx, 2);
    } else {
      PackedDesc d{};
      d.id = 5;
      d.flags = packed_desc_f_avail | packed_desc_f_used;
      std::memcpy(rig.host(rig.areas.desc, 16), &d, sizeof d);
    }
    CHECK(drv.poll_used().error().code == errc::invalid_payload);
  }
  GuestMemory mem;
  REQUIRE(mem.add_region(0x10'0000, 1 << 20).ok());
  RingAreas bad{0x10'0008, 0x10'2000, 0x10'3000, 0, 0};
  CHECK(DriverQueue::create(mem, RingKind::split, 8, bad).error().code == errc::invalid_argument);
  CHECK(DriverQueue::create(mem, RingKind::split, 6, {}).error().code == errc::invalid_argument);
}

TEST_CASE("ring: outstanding counts what the driver made available and the device did not complete") {
  RingRig rig(RingKind::split, 16, 0);  // 3 descriptors a request
  auto drv = rig.driver();
  auto dev = rig.device();
  for (uint32_t seq = 0; seq < 3; ++seq)
    REQUIRE(drv.add_chain(request_chain(rig, seq, 0), false).ok());
  CHECK(dev.outstanding() == 3);  // none taken yet
  serve(dev, 2);  // the three share one buffer, which holds the last one's bytes
  CHECK(dev.outstanding() == 2);  // one completed
  auto c = dev.pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  CHECK(dev.outstanding() == 2);  // taken, not completed: still outstanding
  CHECK(dev.in_flight() == 1);
}
