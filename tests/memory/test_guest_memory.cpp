#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <type_traits>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory/guest_memory.hpp"
#include "tests/support.hpp"

using vufront::Backing;
using vufront::GuestMemory;
using vufront::GuestRegion;
using vufront::test::FdCount;

namespace {

const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
constexpr uint64_t kMax = ~uint64_t{0};

/// An independent MAP_SHARED view of an fd range, unmapped on scope exit.
class Mapping {
public:
  Mapping(int fd, uint64_t offset, uint64_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     static_cast<off_t>(offset));
    base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Mapping() {
    if (base_ != nullptr)
      ::munmap(base_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  [[nodiscard]] uint8_t* get() const { return base_; }

private:
  uint8_t* base_ = nullptr;
  uint64_t size_;
};

const GuestRegion* add(GuestMemory& mem, uint64_t gpa, uint64_t size,
                       Backing b = Backing::memfd) {
  auto r = mem.add_region(gpa, size, b);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
  return *r;
}

void check_shared_both_ways(GuestMemory& mem, const GuestRegion& r) {
  uint8_t* p = mem.host_ptr(r.gpa() + 16, 5);
  REQUIRE(p != nullptr);
  std::memcpy(p, "hello", 5);
  Mapping other(r.fd(), r.fd_offset(), r.size());
  REQUIRE(other.get() != nullptr);
  CHECK(other.get() != r.host_base());
  CHECK(std::memcmp(other.get() + 16, "hello", 5) == 0);
  std::memcpy(other.get() + r.size() - 3, "abc", 3);
  CHECK(std::memcmp(mem.host_ptr(r.gpa() + r.size() - 3, 3), "abc", 3) == 0);
}

std::string error_detail(const vufront::Result<const GuestRegion*>& r) {
  return r.ok() ? std::string("(accepted)") : r.error().detail;
}

}  // namespace

static_assert(!std::is_copy_constructible_v<GuestMemory>);
static_assert(std::is_move_constructible_v<GuestMemory>);

TEST_CASE("GuestMemory: memfd backing is shared with an independent mapping of its fd") {
  FdCount count;
  {
    GuestMemory mem;
    const GuestRegion* r = add(mem, 0, 16 * kPage);
    CHECK(r->gpa() == 0);
    CHECK(r->size() == 16 * kPage);
    CHECK(r->fd_offset() == 0);
    check_shared_both_ways(mem, *r);
    CHECK(count.open_now() == 1);
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("GuestMemory: Boost.Interprocess shm backing leaves no name and is shared") {
  FdCount count;
  {
    GuestMemory mem;
    const GuestRegion* r = add(mem, 0x100000, 4 * kPage, Backing::posix_shm);
    check_shared_both_ways(mem, *r);
    const std::string prefix = "vufront-guest-" + std::to_string(::getpid()) + "-";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
      CHECK(e.path().filename().string().rfind(prefix, 0) == std::string::npos);
    CHECK(count.open_now() == 1);
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("GuestMemory: a forked child's writes show in the parent's mapping") {
  GuestMemory mem;
  add(mem, 0x200000, 2 * kPage, Backing::posix_shm);
  add(mem, 0, 2 * kPage);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: map the fds itself (as a back-end would) and write.
    for (uint64_t gpa : {uint64_t{0}, uint64_t{0x200000}}) {
      const GuestRegion* r = mem.region(gpa);
      void* p = ::mmap(nullptr, r->size(), PROT_READ | PROT_WRITE, MAP_SHARED, r->fd(), 0);
      if (p == MAP_FAILED)
        ::_exit(1);
      std::memcpy(static_cast<uint8_t*>(p) + kPage, "child", 5);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(std::memcmp(mem.host_ptr(kPage, 5), "child", 5) == 0);
  CHECK(std::memcmp(mem.host_ptr(0x200000 + kPage, 5), "child", 5) == 0);
}

TEST_CASE("GuestMemory: adopting a caller's fd at an offset") {
  FdCount count;
  {
    GuestMemory mem;
    auto fd = vufront::make_memfd("caller", 4 * kPage);
    REQUIRE(fd);
    Mapping whole(fd.get(), 0, 4 * kPage);
    REQUIRE(whole.get() != nullptr);
    std::memcpy(whole.get() + kPage, "offset", 6);
    auto r = mem.add_region_from_fd(0x40000000, 2 * kPage, std::move(fd), kPage);
    REQUIRE(r.ok());
    CHECK((*r)->fd_offset() == kPage);
    CHECK(std::memcmp(mem.host_ptr(0x40000000, 6), "offset", 6) == 0);
    CHECK(mem.regions().at(0)->fd_offset() == kPage);

    // A shared fd stays open as long as the caller keeps a copy.
    vufront::SharedFd shared = vufront::share(vufront::make_memfd("shared", kPage));
    REQUIRE(mem.add_region_from_fd(0, kPage, shared, 0).ok());
    REQUIRE(mem.remove_region(0).ok());
    CHECK(shared->valid());
    CHECK(count.open_now() == 2);
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("GuestMemory: every invalid region is refused before anything is mapped") {
  FdCount count;
  GuestMemory mem(3);
  add(mem, 0, 4 * kPage);

  struct Bad {
    const char* what;
    uint64_t gpa;
    uint64_t size;
    const char* detail_part;
  };
  const Bad cases[] = {
      {"zero size", 0x100000, 0, "size 0"},
      {"unaligned gpa", 0x100001, kPage, "not aligned"},
      {"unaligned size", 0x100000, kPage + 1, "not aligned"},
      {"wrap", kMax - kPage + 1, 2 * kPage, "wraps"},
      {"overlap start", kPage, 2 * kPage, "overlaps region 0x0+0x4000"},
      {"overlap containing", 0, 8 * kPage, "overlaps"},
      {"overlap tail", 3 * kPage, 4 * kPage, "overlaps"},
  };
  for (const Bad& b : cases) {
    CAPTURE(b.what);
    auto r = mem.add_region(b.gpa, b.size);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == vufront::errc::invalid_argument);
    CHECK(r.error().request == "add_region");
    CHECK(error_detail(r).find(b.detail_part) != std::string::npos);
  }
  if (kPage == 0x1000) {
    auto r = mem.add_region(0x1000, 0x2000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().detail == "region 0x1000+0x2000 overlaps region 0x0+0x4000");
  }

  // Overlap with the region above.
  add(mem, 0x100000, 4 * kPage);
  auto below = mem.add_region(0x100000 - kPage, 2 * kPage);
  REQUIRE_FALSE(below.ok());
  CHECK(error_detail(below).find("overlaps region 0x100000+") != std::string::npos);
  // Adjacent on both sides is fine; then the slots run out.
  add(mem, 4 * kPage, 0x100000 - 4 * kPage);
  auto full = mem.add_region(0x200000, kPage);
  REQUIRE_FALSE(full.ok());
  CHECK(error_detail(full).find("slots") != std::string::npos);
  CHECK_FALSE(mem.set_max_regions(2).ok());
  REQUIRE(mem.set_max_regions(4).ok());
  CHECK(mem.add_region(0x200000, kPage).ok());
  CHECK(mem.region_count() == 4);

  // fd adoption: bad fds, offsets and short files; the adopted fd is closed.
  GuestMemory mem2;
  CHECK_FALSE(mem2.add_region_from_fd(0, kPage, vufront::UniqueFd{}, 0).ok());
  CHECK_FALSE(mem2.add_region_from_fd(0, kPage, vufront::SharedFd{}, 0).ok());
  auto unaligned = mem2.add_region_from_fd(0, kPage, vufront::make_memfd("x", 4 * kPage), 1);
  CHECK(error_detail(unaligned).find("not page-aligned") != std::string::npos);
  auto wrap = mem2.add_region_from_fd(0, 2 * kPage, vufront::make_memfd("x", kPage),
                                      kMax - kPage + 1);
  CHECK(error_detail(wrap).find("wraps") != std::string::npos);
  auto shorter = mem2.add_region_from_fd(0, 4 * kPage, vufront::make_memfd("x", kPage), 0);
  CHECK(error_detail(shorter).find("bytes, region needs") != std::string::npos);
  CHECK(mem2.region_count() == 0);

  // Removal needs an exact region start.
  CHECK_FALSE(mem.remove_region(kPage).ok());
  CHECK(mem.region(kPage) == nullptr);
  REQUIRE(mem.remove_region(0).ok());
  CHECK_FALSE(mem.remove_region(0).ok());
  CHECK(count.open_now() == 3);  // the three regions still in mem
}

TEST_CASE("GuestMemory: translation at region edges") {
  GuestMemory mem;
  const uint64_t a = 0x10000, size = 4 * kPage;
  const GuestRegion* ra = add(mem, a, size);
  const GuestRegion* rb = add(mem, a + size, size);  // adjacent
  uint8_t* base = ra->host_base();

  CHECK(mem.host_ptr(a, size) == base);
  CHECK(mem.host_ptr(a, 0) == base);
  CHECK(mem.host_ptr(a + size - 1, 1) == base + size - 1);
  CHECK(mem.host_ptr(a, size + 1) == nullptr);           // runs into the next region
  CHECK(mem.host_ptr(a + size - 1, 2) == nullptr);
  CHECK(mem.host_ptr(a + size, 1) == rb->host_base());
  CHECK(mem.host_ptr(a - 1, 1) == nullptr);              // below
  CHECK(mem.host_ptr(a + 2 * size, 1) == nullptr);       // above
  CHECK(mem.host_ptr(a + 8, kMax) == nullptr);            // gpa + len wraps
  CHECK(mem.host_ptr(kMax, 1) == nullptr);
  CHECK(mem.host_ptr(kMax, kMax) == nullptr);
  CHECK(mem.find(a + size - 1) == ra);
  CHECK(mem.find(a + size) == rb);
  CHECK(mem.find(0) == nullptr);

  CHECK(mem.user_addr_of(a) == ra->user_addr());
  CHECK(mem.user_addr_of(a + size - 1) == ra->user_addr() + size - 1);
  CHECK(mem.user_addr_of(a + size) == rb->user_addr());
  CHECK_FALSE(mem.user_addr_of(a - 1).has_value());
  CHECK_FALSE(mem.user_addr_of(a + 2 * size).has_value());

  CHECK(mem.gpa_of_user(ra->user_addr()) == a);
  CHECK(mem.gpa_of_user(ra->user_addr() + size - 1) == a + size - 1);
  CHECK_FALSE(mem.gpa_of_user(ra->user_addr() + size).has_value());  // the gap
  CHECK(mem.gpa_of_user(rb->user_addr() + 5) == a + size + 5);
  CHECK_FALSE(mem.gpa_of_user(a).has_value());  // a GPA is not a user address
  CHECK_FALSE(mem.gpa_of_user(reinterpret_cast<uintptr_t>(base)).has_value());
}

TEST_CASE("GuestMemory: synthetic user addresses are fake, aligned, disjoint and stable") {
  GuestMemory mem(8);
  const GuestRegion* r0 = add(mem, 0, 3 * kPage);
  const GuestRegion* r1 = add(mem, 0x100000000, 0x300000);
  const GuestRegion* r2 = add(mem, 0x80000000, kPage, Backing::posix_shm);
  for (const GuestRegion* r : {r0, r1, r2}) {
    CHECK(r->user_addr() >= vufront::synthetic_user_base);
    CHECK(r->user_addr() % vufront::synthetic_user_align == 0);
    CHECK(r->user_addr() != reinterpret_cast<uintptr_t>(r->host_base()));
    CHECK(r->user_addr() != r->gpa());
  }
  CHECK(r0->user_addr() == vufront::synthetic_user_base);
  // Disjoint with a gap: each base lies beyond the previous region's end.
  CHECK(r1->user_addr() > r0->user_addr() + r0->size());
  CHECK(r2->user_addr() > r1->user_addr() + r1->size());

  const uint64_t u1 = r1->user_addr();
  const uint64_t u2 = r2->user_addr();
  REQUIRE(mem.remove_region(0).ok());
  const GuestRegion* again = add(mem, 0, 3 * kPage);
  CHECK(again->user_addr() > u2);  // bases are never reused
  CHECK(mem.region(0x100000000)->user_addr() == u1);
  CHECK(mem.region(0x80000000)->user_addr() == u2);

  // Moving the GuestMemory keeps regions, mappings and addresses.
  std::memcpy(mem.host_ptr(0x100000000, 4), "move", 4);
  GuestMemory moved(std::move(mem));
  CHECK(moved.region(0x100000000)->user_addr() == u1);
  CHECK(std::memcmp(moved.host_ptr(0x100000000, 4), "move", 4) == 0);
  CHECK(moved.region_count() == 3);
}

TEST_CASE("GuestMemory: regions() in ascending GPA order, fds() in the same order") {
  GuestMemory mem;
  CHECK(mem.regions().empty());
  const GuestRegion* hi = add(mem, 0x100000000, 2 * kPage);
  const GuestRegion* lo = add(mem, 0, 4 * kPage);
  const auto regions = mem.regions();
  const auto fds = mem.fds();
  REQUIRE(regions.size() == 2);
  REQUIRE(fds.size() == 2);
  CHECK(regions[0] == lo);
  CHECK(regions[1] == hi);
  CHECK(fds[0] == lo->fd());
  CHECK(fds[1] == hi->fd());
}
