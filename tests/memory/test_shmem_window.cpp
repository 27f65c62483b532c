// ShmemWindow: reservations per shmid, fd mappings placed inside them, holes
// put back on unmap, and every argument re-checked.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "memory/shmem_window.hpp"
#include "base/unique_fd.hpp"
#include "tests/support.hpp"

using vufront::errc;
using vufront::ShmemWindow;
using vufront::UniqueFd;
using vufront::test::FdCount;

namespace {

const uint64_t kPage = ShmemWindow::page_size();

/// The permission string ("r--s", "---p") of the mapping holding `addr`, ""
/// if nothing is mapped there. Lets the tests look at PROT_NONE holes
/// without touching them.
std::string perms_at(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms;
    in >> range >> perms;
    auto dash = range.find('-');
    uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (a >= lo && a < hi)
      return perms;
  }
  return "";
}

/// A memfd of `pages` pages, page i filled with byte (seed + i).
UniqueFd patterned_memfd(uint64_t pages, uint8_t seed) {
  auto fd = vufront::make_memfd("shmem-window-test", pages * kPage);
  REQUIRE(fd.valid());
  std::vector<uint8_t> page(kPage);
  for (uint64_t i = 0; i < pages; ++i) {
    std::memset(page.data(), static_cast<uint8_t>(seed + i), page.size());
    REQUIRE(::pwrite(fd.get(), page.data(), page.size(), static_cast<off_t>(i * kPage)) ==
            static_cast<ssize_t>(page.size()));
  }
  return fd;
}

std::unique_ptr<ShmemWindow> make_window(std::vector<uint64_t> sizes) {
  auto w = ShmemWindow::create(sizes);
  REQUIRE(w.ok());
  return std::move(w).value();
}

}  // namespace

TEST_CASE("ShmemWindow: create reserves inaccessible regions per non-zero size") {
  auto w = make_window({4 * kPage, 0, 2 * kPage});
  CHECK(w->regions() == 3);
  CHECK(w->size(0) == 4 * kPage);
  CHECK(w->size(1) == 0);
  CHECK(w->size(2) == 2 * kPage);
  CHECK(w->size(3) == 0);
  REQUIRE(w->data(0) != nullptr);
  CHECK(w->data(1) == nullptr);
  CHECK(w->data(3) == nullptr);
  CHECK(perms_at(w->data(0)) == "---p");
  CHECK(perms_at(w->data(0) + 3 * kPage) == "---p");
  CHECK(perms_at(w->data(2)) == "---p");
}

TEST_CASE("ShmemWindow: create refuses bad sizes") {
  auto unaligned = ShmemWindow::create({kPage + 1});
  REQUIRE_FALSE(unaligned.ok());
  CHECK(unaligned.error().code == errc::invalid_argument);
  auto too_many = ShmemWindow::create(std::vector<uint64_t>(257, kPage));
  REQUIRE_FALSE(too_many.ok());
  CHECK(too_many.error().code == errc::invalid_argument);
  auto huge = ShmemWindow::create({uint64_t{1} << 62});
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.error().code == errc::io_error);
  auto none = ShmemWindow::create({});
  REQUIRE(none.ok());
  CHECK(none.value()->regions() == 0);
}

TEST_CASE("ShmemWindow: map shows the fd's bytes, unmap puts the hole back") {
  FdCount count;
  {
    auto w = make_window({8 * kPage});
    auto fd = patterned_memfd(4, 0x10);
    // fd pages 1..2 at window pages 3..4, read-only.
    REQUIRE(w->map(0, 3 * kPage, fd.get(), kPage, 2 * kPage, false).ok());
    const uint8_t* base = w->data(0);
    CHECK(perms_at(base + 3 * kPage) == "r--s");
    CHECK(perms_at(base + 2 * kPage) == "---p");
    CHECK(perms_at(base + 5 * kPage) == "---p");
    CHECK(base[3 * kPage] == 0x11);
    CHECK(base[4 * kPage + kPage - 1] == 0x12);

    // The mapping keeps the file alive: closing our fd changes nothing.
    fd.reset();
    CHECK(base[3 * kPage + 7] == 0x11);

    REQUIRE(w->unmap(0, 3 * kPage, kPage).ok());
    CHECK(perms_at(base + 3 * kPage) == "---p");
    CHECK(perms_at(base + 4 * kPage) == "r--s");
    CHECK(base[4 * kPage] == 0x12);
    REQUIRE(w->unmap(0, 0, 8 * kPage).ok());
    CHECK(perms_at(base + 4 * kPage) == "---p");
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("ShmemWindow: a writable mapping writes through to the fd") {
  auto w = make_window({2 * kPage});
  auto fd = patterned_memfd(2, 0);
  REQUIRE(w->map(0, kPage, fd.get(), 0, kPage, true).ok());
  CHECK(perms_at(w->data(0) + kPage) == "rw-s");
  std::memcpy(w->data(0) + kPage + 100, "hello", 5);
  char back[5] = {};
  REQUIRE(::pread(fd.get(), back, sizeof back, 100) == 5);
  CHECK(std::string(back, 5) == "hello");
}

TEST_CASE("ShmemWindow: map and unmap re-check every argument") {
  auto w = make_window({4 * kPage, 0});
  auto fd = patterned_memfd(4, 1);
  auto refused = [&](vufront::Result<void> r) {
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::invalid_argument);
  };
  SUBCASE("unknown or empty shmid") {
    refused(w->map(1, 0, fd.get(), 0, kPage, false));
    refused(w->map(2, 0, fd.get(), 0, kPage, false));
    refused(w->map(255, 0, fd.get(), 0, kPage, false));
    refused(w->unmap(1, 0, kPage));
  }
  SUBCASE("alignment and zero length") {
    refused(w->map(0, 1, fd.get(), 0, kPage, false));
    refused(w->map(0, 0, fd.get(), 1, kPage, false));
    refused(w->map(0, 0, fd.get(), 0, kPage + 1, false));
    refused(w->map(0, 0, fd.get(), 0, 0, false));
    refused(w->unmap(0, kPage / 2, kPage));
    refused(w->unmap(0, 0, 0));
  }
  SUBCASE("outside the region, with and without overflow") {
    refused(w->map(0, 3 * kPage, fd.get(), 0, 2 * kPage, false));
    refused(w->map(0, 0, fd.get(), 0, 5 * kPage, false));
    refused(w->map(0, UINT64_MAX - kPage + 1, fd.get(), 0, 2 * kPage, false));
    refused(w->unmap(0, 4 * kPage, kPage));
    refused(w->unmap(0, UINT64_MAX - kPage + 1, 2 * kPage));
  }
  SUBCASE("the fd is shorter than the range, or fd_offset overflows") {
    refused(w->map(0, 0, fd.get(), 2 * kPage, 3 * kPage, false));
    refused(w->map(0, 0, fd.get(), UINT64_MAX - kPage + 1, kPage, false));
  }
  // Nothing was mapped by any refusal.
  for (uint64_t off = 0; off < 4 * kPage; off += kPage)
    CHECK(perms_at(w->data(0) + off) == "---p");
}

TEST_CASE("ShmemWindow: a failing mmap leaves an inaccessible hole") {
  auto w = make_window({2 * kPage});
  auto good = patterned_memfd(1, 7);
  REQUIRE(w->map(0, 0, good.get(), 0, kPage, false).ok());
  // A read-only open of a memfd cannot be mapped writable: EACCES.
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", good.get());
  auto ro = UniqueFd::adopt(::open(path, O_RDONLY | O_CLOEXEC));
  REQUIRE(ro.valid());
  auto r = w->map(0, 0, ro.get(), 0, kPage, true);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::io_error);
  CHECK(perms_at(w->data(0)) != "rw-s");
  // A non-mappable fd (a pipe): ENODEV.
  auto p = vufront::make_pipe();
  auto r2 = w->map(0, kPage, p.read_end.get(), 0, kPage, false);
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().code == errc::io_error);
  CHECK(perms_at(w->data(0) + kPage) == "---p");
}

TEST_CASE("ShmemWindow: the destructor releases the whole window") {
  FdCount count;
  const uint8_t* base = nullptr;
  {
    auto w = make_window({2 * kPage});
    auto fd = patterned_memfd(2, 3);
    REQUIRE(w->map(0, 0, fd.get(), 0, 2 * kPage, true).ok());
    base = w->data(0);
    CHECK(perms_at(base) == "rw-s");
  }
  CHECK(perms_at(base) == "");
  CHECK(count.leaked() == 0);
}
