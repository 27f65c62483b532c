// DirtyLog: the bitmap's size and layout as a back-end sees it through the
// fd, the seals, read-and-clear with a writer running concurrently (no bit
// lost, none read twice), mark_all, and fold_into (a resize).
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "memory/dirty_log.hpp"

using vufront::DirtyLog;

TEST_CASE("dirty log: one bit per 4 KiB page from GPA 0, rounded up to 64-bit words") {
  CHECK(DirtyLog::bytes_for(0) == 8);
  CHECK(DirtyLog::bytes_for(1) == 8);
  CHECK(DirtyLog::bytes_for(64 * 4096) == 8);
  CHECK(DirtyLog::bytes_for(64 * 4096 + 1) == 16);
  CHECK(DirtyLog::bytes_for(uint64_t{1} << 30) == (uint64_t{1} << 30) / 4096 / 8);
  auto log = DirtyLog::create(65 * 4096);
  REQUIRE(log);
  CHECK(log->size() == 16);
  CHECK(log->pages() == 128);
  CHECK(log->covers() == 128 * 4096);
  CHECK_FALSE(DirtyLog::create(uint64_t{1} << 53));
}

TEST_CASE("dirty log: page p is bit p % 8 of byte p / 8 in the shared memfd, which is sealed") {
  auto log = DirtyLog::create(1 << 20);
  REQUIRE(log);
  const int fd = log->fd()->get();
  auto* bytes = static_cast<uint8_t*>(::mmap(nullptr, log->size(), PROT_READ | PROT_WRITE,
                                             MAP_SHARED, fd, 0));
  REQUIRE(bytes != MAP_FAILED);
  CHECK(log->mark(13 * 4096 + 100));
  CHECK(bytes[1] == (1u << 5));
  // a back-end's write through its own mapping (libvhost-user's vu_log_page)
  __atomic_fetch_or(&bytes[30], uint8_t{1u << 2}, __ATOMIC_SEQ_CST);  // page 242
  CHECK(log->test(242));
  CHECK_FALSE(log->mark(log->covers()));  // beyond the log
  CHECK(log->read_and_clear() == std::vector<uint64_t>{13, 242});
  CHECK(bytes[1] == 0);
  CHECK(bytes[30] == 0);
  CHECK(log->read_and_clear().empty());
  // the size cannot change under the peers' mappings
  CHECK(::ftruncate(fd, static_cast<off_t>(log->size() * 2)) != 0);
  CHECK(::ftruncate(fd, 0) != 0);
  ::munmap(bytes, log->size());
}

TEST_CASE("dirty log: read-and-clear while a writer sets bits loses none and reads none twice") {
  auto log = DirtyLog::create(uint64_t{64} * 4096 * 4);  // 4 words: the writer keeps hitting them
  REQUIRE(log);
  const uint64_t pages = log->pages();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    // every page once per round, 200 rounds; each mark a word's read-modify-write
    for (int round = 0; round < 200; ++round)
      for (uint64_t p = 0; p < pages; ++p)
        log->mark(p * 4096);
    done = true;
  });
  std::vector<uint64_t> counts(pages, 0);
  while (!done.load())
    for (auto p : log->read_and_clear())
      ++counts[p];
  writer.join();
  for (auto p : log->read_and_clear())
    ++counts[p];
  uint64_t total = 0;
  for (uint64_t p = 0; p < pages; ++p) {
    CAPTURE(p);
    CHECK(counts[p] >= 1);    // a mark is never lost
    CHECK(counts[p] <= 200);  // and never read twice
    total += counts[p];
  }
  CHECK(total >= pages);
}

TEST_CASE("dirty log: mark_all marks every page once, fold_into moves the bits to a bigger log") {
  auto small = DirtyLog::create(128 * 4096);
  REQUIRE(small);
  small->mark_all();
  auto all = small->read_and_clear();
  REQUIRE(all.size() == 128);
  CHECK(all.front() == 0);
  CHECK(all.back() == 127);

  small->mark(5 * 4096);
  small->mark(127 * 4096);
  auto big = DirtyLog::create(uint64_t{1} << 24);
  REQUIRE(big);
  big->mark(4000 * 4096);
  CHECK(small->fold_into(*big));
  CHECK(small->read_and_clear().empty());  // taken out of the old one
  CHECK(big->read_and_clear() == std::vector<uint64_t>{5, 127, 4000});

  // a smaller target keeps what it covers and says it did not take all
  auto tiny = DirtyLog::create(64 * 4096);
  REQUIRE(tiny);
  big->mark(3 * 4096);
  big->mark(4000 * 4096);
  CHECK_FALSE(big->fold_into(*tiny));
  CHECK(tiny->read_and_clear() == std::vector<uint64_t>{3});
}

TEST_CASE("dirty log: map() shares another's log and its bits both ways, refuses a bad size or no fd") {
  auto log = DirtyLog::create(256 * 4096);
  REQUIRE(log);
  auto view = DirtyLog::map(log->fd(), log->size());
  REQUIRE(view);
  CHECK(view->pages() == log->pages());
  log->mark(7 * 4096);
  CHECK(view->read_and_clear() == std::vector<uint64_t>{7});
  CHECK(log->read_and_clear().empty());  // taken through the other mapping
  view->mark(9 * 4096);
  CHECK(log->test(9));
  CHECK_FALSE(DirtyLog::map(log->fd(), 12));
  CHECK_FALSE(DirtyLog::map(log->fd(), 0));
  CHECK_FALSE(DirtyLog::map(nullptr, 8));
}
