// protocol/mem_table.hpp: the memory-table payloads of guest memory.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include <unistd.h>

#include "memory/guest_memory.hpp"
#include "protocol/mem_table.hpp"
#include "tests/support.hpp"

using namespace vufront;
using vufront::test::FdCount;

namespace {

const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));

const GuestRegion* add(GuestMemory& mem, uint64_t gpa, uint64_t size,
                       Backing b = Backing::memfd) {
  auto r = mem.add_region(gpa, size, b);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  return *r;
}

}  // namespace

TEST_CASE("mem_table: the table and single-region payloads of guest memory") {
  FdCount count;
  {
    GuestMemory mem;
    CHECK(mem_table(mem).empty());
    CHECK(mem.fds().empty());
    const GuestRegion* hi = add(mem, 0x100000000, 2 * kPage);
    const GuestRegion* lo = add(mem, 0, 4 * kPage, Backing::posix_shm);
    const auto table = mem_table(mem);
    const auto fds = mem.fds();
    REQUIRE(table.size() == 2);
    REQUIRE(fds.size() == 2);
    // Ascending GPA order; fds in the same order.
    CHECK(table[0].guest_phys_addr == 0);
    CHECK(table[0].memory_size == 4 * kPage);
    CHECK(table[0].user_addr == lo->user_addr());
    CHECK(table[0].mmap_offset == 0);
    CHECK(fds[0] == lo->fd());
    CHECK(table[1].guest_phys_addr == 0x100000000);
    CHECK(table[1].memory_size == 2 * kPage);
    CHECK(table[1].user_addr == hi->user_addr());
    CHECK(fds[1] == hi->fd());

    auto single = region_payload(mem, 0x100000000);
    REQUIRE(single.ok());
    CHECK(std::memcmp(&*single, &table[1], sizeof table[1]) == 0);
    CHECK(count.open_now() == 2);
    REQUIRE(mem.remove_region(0x100000000).ok());
    CHECK(count.open_now() == 1);
    CHECK(mem_table(mem).size() == 1);
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("mem_table: region_payload needs a region's exact start, fd offsets are mmap offsets") {
  GuestMemory mem;
  add(mem, 0, 4 * kPage);
  auto none = region_payload(mem, kPage);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == errc::invalid_argument);
  CHECK(none.error().message() == "region_payload: invalid_argument: no region starts at " + hex(kPage));

  UniqueFd fd = make_memfd("offset", 4 * kPage);
  REQUIRE(fd);
  REQUIRE(mem.add_region_from_fd(0x40000000, 2 * kPage, std::move(fd), kPage).ok());
  auto p = region_payload(mem, 0x40000000);
  REQUIRE(p.ok());
  CHECK(p->mmap_offset == kPage);
  CHECK(p->user_addr == mem.region(0x40000000)->user_addr());
  CHECK(mem_table(mem).at(1).mmap_offset == kPage);
}
