// A snapshot file read through a mapping (SnapshotReader::map): checked on
// the mapping, the same bytes as the file; a file truncated while it is
// checked (SIGBUS under the guard) or changed after open fails with a clear
// error; a file the VMM passed as an fd is never mapped.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/reader.hpp"
#include "snapshot/writer.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::snapshot;
using vufront::test::TempDir;

namespace {

std::vector<uint8_t> state_of(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(i * 29 + (i >> 9) + 1);
  return v;
}

/// A committed snapshot of `state` at `path`, its times set an hour back
/// (a snapshot saved earlier: any later change moves its modification time).
void write_snapshot(const std::string& path, const std::vector<uint8_t>& state) {
  auto w = SnapshotWriter::create(path, 1 << 30);
  REQUIRE(w.ok());
  REQUIRE(w->write_state(state.data(), state.size()).ok());
  Manifest m;
  m.kind = DeviceKind::blk;
  m.created = utc_now();
  REQUIRE(w->commit(m).ok());
  timespec past[2];
  REQUIRE(::clock_gettime(CLOCK_REALTIME, &past[0]) == 0);
  past[0].tv_sec -= 3600;
  past[1] = past[0];
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), past, 0) == 0);
}

/// verify_mapped to the end: the first error, or the bytes hashed.
Result<uint64_t> verify_all(SnapshotReader& r) {
  uint64_t total = 0;
  for (;;) {
    auto n = r.verify_mapped(1 << 16);
    if (!n)
      return std::move(n).error();
    if (*n == 0)
      return total;
    total += *n;
  }
}

}  // namespace

TEST_CASE("snapshot mapped: checked on the mapping, the mapping holds the file's state") {
  TempDir tmp;
  const std::string path = tmp.file("s.vfsnap");
  auto state = state_of(300000);
  write_snapshot(path, state);
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  CHECK(r->mappable());
  CHECK_FALSE(r->mapped());
  CHECK(r->mapped_state() == nullptr);
  REQUIRE(r->map().ok());
  REQUIRE(r->mapped());
  auto again = r->map();
  CHECK_FALSE(again.ok());
  auto n = verify_all(*r);
  REQUIRE_MESSAGE(n.ok(), n.error().message());
  CHECK(*n == state.size());
  CHECK(std::memcmp(r->mapped_state(), state.data(), state.size()) == 0);
  CHECK(r->check_unchanged().ok());
}

TEST_CASE("snapshot mapped: a corrupt state fails the check on the mapping") {
  TempDir tmp;
  const std::string path = tmp.file("s.vfsnap");
  auto state = state_of(100000);
  write_snapshot(path, state);
  {
    UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    uint8_t b = 0x5a;
    REQUIRE(::pwrite(rw.get(), &b, 1, kHeadSize + 777) == 1);
  }
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  REQUIRE(r->map().ok());
  auto n = verify_all(*r);
  REQUIRE_FALSE(n.ok());
  CHECK_MESSAGE(n.error().message().find("checksum mismatch") != std::string::npos,
                n.error().message());
}

TEST_CASE("snapshot mapped: a file truncated while checked fails clearly, and the process lives") {
  TempDir tmp;
  const std::string path = tmp.file("s.vfsnap");
  auto state = state_of(1 << 20);
  write_snapshot(path, state);
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  REQUIRE(r->map().ok());
  // Half checked, then another process cuts the file.
  auto first = r->verify_mapped(1 << 19);
  REQUIRE(first.ok());
  REQUIRE(::truncate(path.c_str(), kHeadSize + 4096) == 0);
  auto n = verify_all(*r);
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().code == errc::bad_size);
  CHECK_MESSAGE(n.error().message().find("snapshot file changed during restore (truncated)") !=
                    std::string::npos,
                n.error().message());
  auto u = r->check_unchanged();
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().message().find("(truncated)") != std::string::npos);
}

TEST_CASE("snapshot mapped: a change after open is seen by check_unchanged") {
  TempDir tmp;
  const std::string path = tmp.file("s.vfsnap");
  auto state = state_of(200000);
  write_snapshot(path, state);
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  REQUIRE(r->map().ok());
  REQUIRE(verify_all(*r).ok());
  std::string expect;
  SUBCASE("a byte rewritten") {
    UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    uint8_t b = 0;
    REQUIRE(::pwrite(rw.get(), &b, 1, kHeadSize + 5) == 1);
    expect = "(modified)";
  }
  SUBCASE("truncated") {
    REQUIRE(::truncate(path.c_str(), kHeadSize) == 0);
    expect = "(truncated)";
  }
  SUBCASE("grown") {
    UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(::ftruncate(rw.get(), static_cast<off_t>(kHeadSize + state.size() + 1)) == 0);
    expect = "(modified)";
  }
  auto u = r->check_unchanged();
  REQUIRE_FALSE(u.ok());
  CHECK_MESSAGE(u.error().message().find("snapshot file changed during restore " + expect) !=
                    std::string::npos,
                u.error().message());
}

TEST_CASE("snapshot mapped: a file the VMM passed as an fd is never mapped") {
  TempDir tmp;
  const std::string path = tmp.file("s.vfsnap");
  write_snapshot(path, state_of(5000));
  FileTarget t;
  t.file = share(UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC)));
  auto r = SnapshotReader::open(path, t);
  REQUIRE(r.ok());
  CHECK_FALSE(r->mappable());
  auto m = r->map();
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().code == errc::bad_state);
  CHECK_FALSE(r->mapped());
}
