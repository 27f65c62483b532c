// What a migration needs of the guest-side driver (virtio/guest_driver.hpp):
// with a write log set, every page the driver writes (descriptors, the avail
// ring, request buffers) is marked and no other; and move_to() continues the
// rings on a copy of the memory, refusing while a request is in flight.
#include <doctest/doctest.h>

#include <cstring>
#include <set>
#include <vector>

#include "memory/dirty_log.hpp"
#include "virtio/guest_driver.hpp"

using namespace vufront;
using namespace vufront::virtio;

namespace {

std::set<uint64_t> pages_of(uint64_t gpa, uint64_t len) {
  std::set<uint64_t> out;
  for (uint64_t p = gpa / DirtyLog::page_size; p <= (gpa + len - 1) / DirtyLog::page_size; ++p)
    out.insert(p);
  return out;
}

GuestMemory copy_of(const GuestMemory& src) {
  GuestMemory dest;
  for (const GuestRegion* r : src.regions()) {
    REQUIRE(dest.add_region(r->gpa(), r->size()));
    std::memcpy(dest.host_ptr(r->gpa(), r->size()), r->host_base(), r->size());
  }
  return dest;
}

}  // namespace

TEST_CASE("guest driver: with a write log, the pages it writes are marked, none else, and none without") {
  GuestDriverOptions o;
  o.ram_bytes = 1 << 20;
  auto g = GuestDriver::create(o);
  REQUIRE(g);
  GuestDriver& d = **g;
  CHECK(d.ram_gpa() == GuestDriver::guest_base + (2 << 20));
  CHECK(d.memory().host_ptr(d.ram_gpa(), 1 << 20) != nullptr);
  auto log = DirtyLog::create(GuestDriver::guest_base + (4 << 20));
  REQUIRE(log);
  // not logging: nothing marked
  GuestScratch& s = d.scratch(0);
  REQUIRE(s.alloc(64));
  CHECK(log->read_and_clear().empty());
  d.log_writes(&*log);
  s.reset();
  auto a = s.alloc(16);
  auto b = s.alloc(8192, 4096);  // a buffer of two pages
  REQUIRE((a && b));
  auto id = d.queue(0).add_chain({{*a, 16, false}, {*b, 8192, true}});
  REQUIRE(id);
  std::set<uint64_t> want = pages_of(*a, 16);
  want.merge(pages_of(*b, 8192));
  const RingAreas& ar = d.areas(0);
  want.merge(pages_of(ar.desc, 2 * 16));  // two descriptors
  want.merge(pages_of(ar.driver, 4));     // the avail ring's header and entry
  auto got = log->read_and_clear();
  CHECK(std::set<uint64_t>(got.begin(), got.end()) == want);
  d.log_writes(nullptr);
  REQUIRE(s.alloc(64));
  CHECK(log->read_and_clear().empty());
}

TEST_CASE("guest driver: move_to continues the rings on a copy of the memory, not while a request is in flight") {
  auto g = GuestDriver::create({});
  REQUIRE(g);
  GuestDriver& d = **g;
  GuestScratch& s = d.scratch(0);
  auto buf = s.alloc(16);
  REQUIRE(buf);
  REQUIRE(d.queue(0).add_chain({{*buf, 16, false}}));
  // a request in flight: refused, nothing changed
  auto refused = d.move_to(copy_of(d.memory()));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::bad_state);
  // the "device" completes it: used ring entry and index
  uint8_t* used = d.memory().host_ptr(d.areas(0).device, 4 + 8);
  const uint32_t elem[2] = {0, 0};
  std::memcpy(used + 4, elem, sizeof elem);
  const uint16_t one = 1;
  std::memcpy(used + 2, &one, 2);
  auto done = d.queue(0).poll_used();
  REQUIRE((done && done->has_value()));
  const uint8_t* before = d.memory().host_ptr(GuestDriver::guest_base, 1);
  GuestMemory missing;
  REQUIRE(missing.add_region(GuestDriver::guest_base, 4096));
  CHECK_FALSE(d.move_to(std::move(missing)));  // not the same layout
  auto old = d.move_to(copy_of(d.memory()));
  REQUIRE_MESSAGE(old, old.error().message());
  CHECK(old->host_ptr(GuestDriver::guest_base, 1) == before);
  CHECK(d.memory().host_ptr(GuestDriver::guest_base, 1) != before);
  CHECK(d.queue(0).next_avail_base() == 1);  // where the ring was
  CHECK(d.scratch(0).gpa() == s.gpa());
  // the next request goes into the new memory's rings
  auto next = d.scratch(0).alloc(16);
  REQUIRE(next);
  REQUIRE(d.queue(0).add_chain({{*next, 16, false}}));
  uint16_t avail_idx = 0;
  std::memcpy(&avail_idx, d.memory().host_ptr(d.areas(0).driver + 2, 2), 2);
  CHECK(avail_idx == 2);
  std::memcpy(&avail_idx, old->host_ptr(d.areas(0).driver + 2, 2), 2);
  CHECK(avail_idx == 1);
}
