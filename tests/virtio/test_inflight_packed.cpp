// The packed layout of the INFLIGHT_SHMFD region (virtio/inflight_packed.hpp)
// with an in-process ring: a device records what it takes, "dies" (its
// DeviceQueue and tracker dropped, the region and the ring kept), and a new
// one resumes from the region alone, given a stale base as vufront sends.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "tests/virtio/ring_rig.hpp"
#include "virtio/inflight_packed.hpp"

using namespace vufront;
using namespace vufront::virtio;
using vufront::test::RingRig;
using vufront::test::rig_data_gpa;

namespace {

constexpr uint16_t qsize = 8;

/// One queue's region (of `qsize` unless resized), 8-aligned, zeroed as
/// GET_INFLIGHT_FD hands it out.
struct Region {
  std::vector<uint64_t> words = std::vector<uint64_t>(PackedInflight::region_bytes(qsize) / 8, 0);
  uint8_t* bytes() { return reinterpret_cast<uint8_t*>(words.data()); }
  PackedInflightHeader& header() { return *reinterpret_cast<PackedInflightHeader*>(bytes()); }
  PackedInflightDesc& desc(uint16_t i) {
    return reinterpret_cast<PackedInflightDesc*>(bytes() + sizeof(PackedInflightHeader))[i];
  }
};

/// A request of 3 buffers (16 readable bytes from `seq`, 64 + 1 writable)
/// in its own data slot, so requests in flight together do not overlap.
std::vector<Buffer> request(const RingRig& rig, uint32_t seq) {
  const uint64_t base = rig_data_gpa + uint64_t{seq % 64} * 256;
  uint8_t* in = rig.host(base, 16);
  for (uint32_t i = 0; i < 16; ++i)
    in[i] = static_cast<uint8_t>(seq + i);
  std::memset(rig.host(base + 64, 65), 0, 65);
  return {{base, 16, false}, {base + 64, 64, true}, {base + 128, 1, true}};
}

PackedInflight::RingFlags flags_of(const DeviceQueue& q) {
  return [&q](uint16_t idx) { return q.ring_flags(idx); };
}

/// Takes the next chain, recording it unless it was resubmitted (then the
/// region has it already); checks it is request `seq`.
Chain take(DeviceQueue& dev, PackedInflight& t, uint32_t seq) {
  auto c = dev.pop();
  REQUIRE(c.ok());
  REQUIRE(c->has_value());
  Chain chain = std::move(**c);
  if (!chain.resubmitted)
    t.begin(chain.descs);
  REQUIRE(chain.segments.size() == 3);
  CHECK(chain.segments[0].ptr[0] == static_cast<uint8_t>(seq));
  CHECK(chain.segments[0].ptr[15] == static_cast<uint8_t>(seq + 15));
  return chain;
}

/// Completes a chain as the back-end does: region, ring, region.
void complete(DeviceQueue& dev, PackedInflight& t, const Chain& c, uint32_t seq) {
  std::memset(c.segments[1].ptr, static_cast<int>(seq & 0xff), 64);
  t.complete_begin(c.id);
  REQUIRE(dev.push(c.id, 65).ok());
  t.complete_end(c.id);
}

/// Every completion the driver has, by id.
std::vector<uint16_t> collect(DriverQueue& drv) {
  std::vector<uint16_t> out;
  for (;;) {
    auto u = drv.poll_used();
    REQUIRE(u.ok());
    if (!u->has_value())
      return out;
    CHECK((*u)->len == 65);
    out.push_back((*u)->id);
  }
}

}  // namespace

TEST_CASE("packed in-flight region: layout and the first start") {
  static_assert(PackedInflight::region_bytes(qsize) == 32 + 32 * qsize);
  static_assert(sizeof(PackedInflightHeader) == 32 && sizeof(PackedInflightDesc) == 32);
  RingRig rig(RingKind::packed, qsize, 4);
  auto dev = rig.device(0x0005'8005);  // a restored queue: both positions at 5, wrap 0 for used
  Region r;
  PackedInflight t(r.bytes(), qsize);
  auto s = t.start(0x0005'8005, flags_of(dev));
  REQUIRE(s.ok());
  CHECK_FALSE(s->recovered);
  CHECK(s->chains.empty());
  CHECK((s->avail.idx == 5 && s->avail.wrap));
  CHECK((s->used.idx == 5 && !s->used.wrap));
  CHECK(r.header().version == 1);
  CHECK(r.header().desc_num == qsize);
  CHECK(r.header().free_head == 0);
  CHECK(r.header().used_idx == 5);
  CHECK(r.header().old_used_idx == 5);
  CHECK(r.header().used_wrap_counter == 0);
  for (uint16_t i = 0; i < qsize; ++i)
    CHECK(r.desc(i).next == i + 1);
}

TEST_CASE("packed in-flight region: out-of-order completions, a crash, and the resume from the region") {
  RingRig rig(RingKind::packed, qsize, 4);
  auto drv = rig.driver();
  Region r;
  std::vector<uint16_t> ids;
  {
    auto dev = rig.device();
    PackedInflight t(r.bytes(), qsize);
    REQUIRE(t.start(packed_fresh_base, flags_of(dev)).ok());
    // 3 + 1 + 3 + 1 descriptors: the ring is full
    for (uint32_t seq = 0; seq < 4; ++seq) {
      auto id = drv.add_chain(request(rig, seq), seq % 2 == 1);
      REQUIRE(id.ok());
      ids.push_back(*id);
    }
    std::vector<Chain> taken;
    for (uint32_t seq = 0; seq < 4; ++seq)
      taken.push_back(take(dev, t, seq));
    complete(dev, t, taken[3], 3);  // out of order: 3 and 1 finish first
    complete(dev, t, taken[1], 1);
    CHECK(r.header().used_idx == 2);
    CHECK(r.header().old_used_idx == 2);
    // the device starts completing 0 and dies before its used descriptor is out
    t.complete_begin(taken[0].id);
    CHECK(r.header().used_idx == 5);
    CHECK(r.header().old_used_idx == 2);
  }
  CHECK(collect(drv) == std::vector<uint16_t>{ids[3], ids[1]});
  auto extra = drv.add_chain(request(rig, 4), true);  // made while it was gone
  REQUIRE(extra.ok());
  // vufront only knows the base of the activation: the region knows better
  auto dev = rig.device(packed_fresh_base);
  PackedInflight t(r.bytes(), qsize);
  auto s = t.start(packed_fresh_base, flags_of(dev));
  REQUIRE(s.ok());
  CHECK(s->recovered);
  REQUIRE(s->chains.size() == 2);  // 0 rolled back to in flight, 2 still there; oldest first
  CHECK(s->chains[0].back().id == ids[0]);
  CHECK(s->chains[1].back().id == ids[2]);
  CHECK((s->used.idx == 2 && s->used.wrap));
  CHECK((s->avail.idx == 0 && !s->avail.wrap));  // 2 + 3 + 3 slots in flight: past the end
  REQUIRE(dev.resubmit_packed(s->avail, s->used, s->chains).ok());
  CHECK(dev.base() == encode_packed_base({0, false}, {2, true}));
  Chain first = take(dev, t, 0);
  CHECK(first.resubmitted);
  REQUIRE(dev.unpop(first.id).ok());  // given back (net RX): it comes again
  first = take(dev, t, 0);
  CHECK(first.resubmitted);
  Chain second = take(dev, t, 2);
  Chain third = take(dev, t, 4);  // then the ring
  CHECK_FALSE(third.resubmitted);
  CHECK(third.id == *extra);
  complete(dev, t, second, 2);
  complete(dev, t, first, 0);
  complete(dev, t, third, 4);
  CHECK(collect(drv) == std::vector<uint16_t>{ids[2], ids[0], *extra});  // each exactly once
  CHECK(*rig.host(rig_data_gpa + 4 * 256 + 64) == 4);
  CHECK(*rig.host(rig_data_gpa + 2 * 256 + 64) == 2);
  CHECK(drv.in_flight() == 0);
  CHECK(drv.next_avail_base() == dev.base());
  // and the ring goes on, across wraps, with the region following it
  for (uint32_t seq = 5; seq < 30; ++seq) {
    auto id = drv.add_chain(request(rig, seq), seq % 3 == 0);
    REQUIRE(id.ok());
    complete(dev, t, take(dev, t, seq), seq);
    CHECK(collect(drv) == std::vector<uint16_t>{*id});
  }
  const PackedPos used = packed_base_used(dev.base());
  CHECK(r.header().used_idx == used.idx);
  CHECK((r.header().used_wrap_counter != 0) == used.wrap);
  // a crash with nothing in flight: the same position, nothing resubmitted
  auto again = rig.device(packed_fresh_base);
  PackedInflight t2(r.bytes(), qsize);
  auto s2 = t2.start(packed_fresh_base, flags_of(again));
  REQUIRE(s2.ok());
  CHECK(s2->chains.empty());
  CHECK(encode_packed_base(s2->avail, s2->used) == dev.base());
}

TEST_CASE("packed in-flight region: a used descriptor published before the crash is committed") {
  RingRig rig(RingKind::packed, qsize, 4);
  auto drv = rig.driver();
  Region r;
  std::vector<uint16_t> ids;
  {
    auto dev = rig.device();
    PackedInflight t(r.bytes(), qsize);
    REQUIRE(t.start(packed_fresh_base, flags_of(dev)).ok());
    for (uint32_t seq = 0; seq < 2; ++seq)
      ids.push_back(drv.add_chain(request(rig, seq)).value());
    Chain a = take(dev, t, 0);
    Chain b = take(dev, t, 1);
    (void)b;
    t.complete_begin(a.id);
    REQUIRE(dev.push(a.id, 65).ok());  // published; the device dies before committing
  }
  CHECK(collect(drv) == std::vector<uint16_t>{ids[0]});
  auto dev = rig.device(packed_fresh_base);
  PackedInflight t(r.bytes(), qsize);
  auto s = t.start(packed_fresh_base, flags_of(dev));
  REQUIRE(s.ok());
  REQUIRE(s->chains.size() == 1);
  CHECK(s->chains[0].back().id == ids[1]);
  CHECK((s->used.idx == 3 && s->avail.idx == 6));
  CHECK(r.header().old_used_idx == 3);
  REQUIRE(dev.resubmit_packed(s->avail, s->used, s->chains).ok());
  complete(dev, t, take(dev, t, 1), 1);
  CHECK(collect(drv) == std::vector<uint16_t>{ids[1]});
  CHECK(drv.next_avail_base() == dev.base());
}

TEST_CASE("packed in-flight region: a chain not fully recorded, or given back, is taken from the ring again") {
  RingRig rig(RingKind::packed, qsize, 4);
  auto drv = rig.driver();
  Region r;
  std::vector<uint16_t> ids;
  {
    auto dev = rig.device();
    PackedInflight t(r.bytes(), qsize);
    REQUIRE(t.start(packed_fresh_base, flags_of(dev)).ok());
    for (uint32_t seq = 0; seq < 2; ++seq)
      ids.push_back(drv.add_chain(request(rig, seq)).value());
    Chain a = take(dev, t, 0);
    REQUIRE(dev.unpop(a.id).ok());  // given back unused: the record goes too
    t.abort(a.id);
    CHECK(r.header().free_head == 0);
    a = take(dev, t, 0);
    const uint16_t committed = r.header().old_free_head;
    Chain b = take(dev, t, 1);
    (void)b;
    r.header().old_free_head = committed;  // as if it died before the record's commit
  }
  auto dev = rig.device(packed_fresh_base);
  PackedInflight t(r.bytes(), qsize);
  auto s = t.start(packed_fresh_base, flags_of(dev));
  REQUIRE(s.ok());
  REQUIRE(s->chains.size() == 1);  // only request 0; 1 is read from the ring again
  CHECK(s->chains[0].back().id == ids[0]);
  CHECK(s->avail.idx == 3);
  REQUIRE(dev.resubmit_packed(s->avail, s->used, s->chains).ok());
  Chain a = take(dev, t, 0);
  CHECK(a.resubmitted);
  Chain b = take(dev, t, 1);
  CHECK_FALSE(b.resubmitted);
  complete(dev, t, b, 1);
  complete(dev, t, a, 0);
  CHECK(collect(drv) == std::vector<uint16_t>{ids[1], ids[0]});
  CHECK(drv.next_avail_base() == dev.base());
}

TEST_CASE("packed in-flight region: an inconsistent region fails the start, naming what is wrong") {
  RingRig rig(RingKind::packed, qsize, 4);
  auto drv = rig.driver();
  auto dev = rig.device();
  Region r;
  {
    PackedInflight t(r.bytes(), qsize);
    REQUIRE(t.start(packed_fresh_base, flags_of(dev)).ok());
    REQUIRE(drv.add_chain(request(rig, 0)).ok());
    (void)take(dev, t, 0);
  }
  auto fails = [&](const char* what) {
    PackedInflight t(r.bytes(), qsize);
    auto s = t.start(packed_fresh_base, flags_of(dev));
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == errc::invalid_payload);
    CHECK_MESSAGE(s.error().message().find(what) != std::string::npos, s.error().message());
  };
  const Region good = r;
  r.header().desc_num = 16;
  fails("desc_num 16 for a queue of 8");
  r = good;
  r.header().version = 7;
  fails("version 7");
  r = good;
  r.desc(0).num = 9;
  fails("has 9 descriptors");
  r = good;
  r.desc(0).num = 2;  // ends early: not at its last entry
  fails("does not end at its last entry");
  r = good;
  r.desc(2).id = 200;
  fails("buffer id 200");
  r = good;
  r.header().used_idx = r.header().old_used_idx = 8;
  fails("used index beyond the queue size");
}

namespace {

/// A device process that can die: its queue, its tracker and the chains it
/// holds die with it; the ring and the region stay.
struct Device {
  std::optional<DeviceQueue> q;
  std::optional<PackedInflight> t;
  std::vector<Chain> held;
};

/// Starts a device on the region with the stale fresh base, as vufront
/// sends after a crash; returns how many chains it resubmits.
size_t start_device(const RingRig& rig, Region& r, uint16_t n, Device& d) {
  d.held.clear();
  d.q.emplace(rig.device(packed_fresh_base));
  d.t.emplace(r.bytes(), n);
  auto s = d.t->start(packed_fresh_base, flags_of(*d.q));
  REQUIRE(s.ok());
  if (s->recovered)
    REQUIRE(d.q->resubmit_packed(s->avail, s->used, s->chains).ok());
  return s->chains.size();
}

}  // namespace

TEST_CASE("packed in-flight region: random requests and crashes at every step, rings of any size: each request completes once") {
  for (uint16_t n : {3, 5, 8, 13}) {
    CAPTURE(n);
    RingRig rig(RingKind::packed, n, 3);  // indirect tables of a request's 3 buffers
    auto drv = rig.driver();
    Region r;
    r.words.assign(PackedInflight::region_bytes(n) / 8, 0);
    std::mt19937 rnd(1234 + n);
    Device d;
    start_device(rig, r, n, d);
    std::map<uint16_t, uint32_t> seq_of;   // driver id in flight -> request
    std::map<uint32_t, int> completions;   // request -> times completed
    std::vector<bool> slot_busy(64, false);
    std::map<uint32_t, uint16_t> slot_of;  // request -> data slot
    uint32_t next_seq = 0;
    size_t crashes = 0, resubmitted = 0;
    auto poll = [&] {
      for (;;) {
        auto u = drv.poll_used();
        REQUIRE(u.ok());
        if (!u->has_value())
          return;
        REQUIRE(seq_of.count((*u)->id) == 1);
        const uint32_t seq = seq_of[(*u)->id];
        ++completions[seq];
        slot_busy[slot_of[seq]] = false;
        seq_of.erase((*u)->id);
      }
    };
    auto serve_one = [&](size_t i) {
      Chain c = std::move(d.held[i]);
      d.held.erase(d.held.begin() + static_cast<std::ptrdiff_t>(i));
      d.t->complete_begin(c.id);
      REQUIRE(d.q->push(c.id, 65).ok());
      d.t->complete_end(c.id);
    };
    for (int step = 0; step < 600; ++step) {
      const unsigned what = rnd() % 10;
      if (what < 3 && drv.free_descriptors() >= 3) {  // the driver posts a request
        uint16_t slot = 0;
        while (slot_busy[slot])
          ++slot;
        slot_busy[slot] = true;
        const uint32_t seq = next_seq++;
        slot_of[seq] = slot;
        auto bufs = request(rig, slot);
        *rig.host(rig_data_gpa + uint64_t{slot} * 256) = static_cast<uint8_t>(seq);
        auto id = drv.add_chain(bufs, rnd() % 2 == 0);
        REQUIRE(id.ok());
        seq_of[*id] = seq;
        completions[seq] = 0;
      } else if (what < 6) {  // the device takes one
        auto c = d.q->pop();
        REQUIRE(c.ok());
        if (c->has_value()) {
          REQUIRE(seq_of.count((**c).id) == 1);
          CHECK((**c).segments[0].ptr[0] == static_cast<uint8_t>(seq_of[(**c).id]));
          if (!(**c).resubmitted)
            d.t->begin((**c).descs);
          d.held.push_back(std::move(**c));
        }
      } else if (what < 9 && !d.held.empty()) {  // completes one, in any order
        serve_one(rnd() % d.held.size());
      } else if (what == 9) {  // dies, at a random point of its bookkeeping
        const unsigned where = rnd() % 3;
        if (where == 1 && !d.held.empty()) {
          d.t->complete_begin(d.held.front().id);  // before the used descriptor is out
        } else if (where == 2 && !d.held.empty()) {
          d.t->complete_begin(d.held.front().id);  // after it, before the commit
          REQUIRE(d.q->push(d.held.front().id, 65).ok());
        }
        ++crashes;
        resubmitted += start_device(rig, r, n, d);
      }
      poll();
    }
    // no more crashes: everything posted completes
    for (;;) {
      auto c = d.q->pop();
      REQUIRE(c.ok());
      if (!c->has_value())
        break;
      if (!(**c).resubmitted)
        d.t->begin((**c).descs);
      d.held.push_back(std::move(**c));
    }
    while (!d.held.empty())
      serve_one(0);
    poll();
    CHECK(seq_of.empty());
    CHECK(drv.in_flight() == 0);
    for (const auto& [seq, times] : completions) {
      CAPTURE(seq);
      CHECK(times == 1);
    }
    CHECK(completions.size() == next_seq);
    CHECK(drv.next_avail_base() == d.q->base());
    CHECK(crashes > 20);
    CHECK(resubmitted > 10);
  }
}
