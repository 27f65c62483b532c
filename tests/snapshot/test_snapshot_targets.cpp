// Snapshot files by target (snapshot/file_target.hpp): a file the VMM opened
// and passed (written in place, read through a duplicate with pread), and a
// name in a directory already opened (temporary + renameat beneath it).
#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
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
using vufront::test::FdCount;
using vufront::test::TempDir;

namespace {

Manifest a_manifest() {
  Manifest m;
  m.kind = DeviceKind::blk;
  m.features = uint64_t{1} << 32;
  m.created = utc_now();
  return m;
}

std::vector<uint8_t> state_of(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(i * 13 + (i >> 10));
  return v;
}

SharedFd opened(const std::string& path, int flags) {
  return share(UniqueFd::adopt(::open(path.c_str(), flags | O_CLOEXEC, 0600)));
}

std::vector<uint8_t> read_back(SnapshotReader& r) {
  std::vector<uint8_t> out, buf(65536);
  for (;;) {
    auto n = r.read_state(buf.data(), buf.size());
    REQUIRE_MESSAGE(n.ok(), n.error().message());
    if (*n == 0)
      return out;
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
  }
}

off_t size_of(const std::string& path) {
  struct stat sb {};
  REQUIRE(::stat(path.c_str(), &sb) == 0);
  return sb.st_size;
}

}  // namespace

TEST_CASE("snapshot targets: into a passed fd in place and back from a passed fd") {
  FdCount fds;
  {
    TempDir dir;
    const std::string path = dir.file("vmm.vfsnap");
    {
      std::ofstream(path) << std::string(300000, 'x');  // old content: truncated first
    }
    auto state = state_of(700000);
    FileTarget t;
    t.file = opened(path, O_RDWR);
    REQUIRE(::lseek(t.file->get(), 5, SEEK_SET) == 5);
    auto w = SnapshotWriter::create("", t, 1 << 30);
    REQUIRE_MESSAGE(w.ok(), w.error().message());
    CHECK(w->temp_path().empty());
    REQUIRE(w->write_state(state.data(), state.size()).ok());
    REQUIRE(w->commit(a_manifest()).ok());
    CHECK(::lseek(t.file->get(), 0, SEEK_CUR) == 5);  // the VMM's offset is left alone
    CHECK(size_of(path) == static_cast<off_t>(kHeadSize + state.size()));
    CHECK(test::dir_entries(dir.path()) == 1);  // no temporary, no rename

    FileTarget in;
    in.file = opened(path, O_RDONLY);
    auto r = SnapshotReader::open("", in);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(read_back(*r) == state);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot targets: a passed fd must be a regular file open the right way") {
  TempDir dir;
  const std::string path = dir.file("f");
  { std::ofstream(path) << "x"; }
  FileTarget ro, ap, wo, pipe_t;
  ro.file = opened(path, O_RDONLY);
  ap.file = opened(path, O_WRONLY | O_APPEND);
  wo.file = opened(path, O_WRONLY);
  Pipe p = make_pipe();
  pipe_t.file = share(std::move(p.write_end));
  for (const FileTarget* t : {&ro, &ap, &pipe_t}) {
    auto w = SnapshotWriter::create("f", *t, 1 << 20);
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().code == errc::bad_fds);
  }
  auto r = SnapshotReader::open("f", wo);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::bad_fds);
}

TEST_CASE("snapshot targets: an in-place writer dropped without commit leaves an empty file") {
  TempDir dir;
  const std::string path = dir.file("vmm.vfsnap");
  FileTarget t;
  t.file = opened(path, O_WRONLY | O_CREAT);
  {
    auto w = SnapshotWriter::create("", t, 1 << 30);
    REQUIRE(w.ok());
    auto state = state_of(100000);
    REQUIRE(w->write_state(state.data(), state.size()).ok());
  }
  CHECK(size_of(path) == 0);
  CHECK_FALSE(SnapshotReader::open(path).ok());
}

TEST_CASE("snapshot targets: a name in an opened directory: temporary there, renamed there") {
  FdCount fds;
  {
    TempDir dir;
    ::mkdir(dir.file("sub").c_str(), 0700);
    FileTarget t;
    t.dir = opened(dir.file("sub"), O_RDONLY | O_DIRECTORY);
    t.leaf = "s.vfsnap";
    auto state = state_of(200000);
    {
      auto dropped = SnapshotWriter::create("sub/s.vfsnap", t, 1 << 30);
      REQUIRE(dropped.ok());
      CHECK(dropped->temp_path().rfind("sub/s.vfsnap.tmp.", 0) == 0);
      CHECK(test::dir_entries(dir.file("sub")) == 1);
    }
    CHECK(test::dir_entries(dir.file("sub")) == 0);  // removed relative to the directory
    auto w = SnapshotWriter::create("sub/s.vfsnap", t, 1 << 30);
    REQUIRE(w.ok());
    REQUIRE(w->write_state(state.data(), state.size()).ok());
    REQUIRE(w->commit(a_manifest()).ok());
    CHECK(test::dir_entries(dir.file("sub")) == 1);
    auto r = SnapshotReader::open("sub/s.vfsnap", t);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(read_back(*r) == state);
    // a symbolic link as the name is not followed on read
    REQUIRE(::symlink(dir.file("sub/s.vfsnap").c_str(), dir.file("sub/link").c_str()) == 0);
    t.leaf = "link";
    auto l = SnapshotReader::open("sub/link", t);
    REQUIRE_FALSE(l.ok());
    CHECK(l.error().code == errc::permission_denied);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot targets: the checksum is of the bytes read_state returned") {
  // The reader hashes each byte in the caller's buffer as it returns it: a
  // change to the file after open() shows in the bytes returned and fails
  // the check at the end (never a second read of the file).
  TempDir dir;
  const std::string path = dir.file("s.vfsnap");
  auto state = state_of(300000);
  {
    auto w = SnapshotWriter::create(path, 1 << 30);
    REQUIRE(w.ok());
    REQUIRE(w->write_state(state.data(), state.size()).ok());
    REQUIRE(w->commit(a_manifest()).ok());
  }
  FileTarget t;
  t.file = opened(path, O_RDONLY);
  auto r = SnapshotReader::open("", t);
  REQUIRE(r.ok());
  REQUIRE(r->verify().ok());
  std::vector<uint8_t> first(100000);
  REQUIRE(r->read_state(first.data(), first.size()).ok());
  {
    UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    uint8_t b = static_cast<uint8_t>(state[150000] ^ 0x5a);
    REQUIRE(::pwrite(rw.get(), &b, 1, static_cast<off_t>(kHeadSize + 150000)) == 1);
  }
  std::vector<uint8_t> rest(300000);
  auto n = r->read_state(rest.data(), rest.size());
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().code == errc::invalid_payload);
  CHECK(n.error().detail.find("checksum mismatch") != std::string::npos);
  CHECK(rest[50000] == static_cast<uint8_t>(state[150000] ^ 0x5a));  // the changed byte, as returned
}
