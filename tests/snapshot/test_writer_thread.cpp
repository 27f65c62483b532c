// The snapshot writer on its own thread (snapshot/writer_thread.hpp): the
// buffers are written in order and the checksum is of the file's bytes; a
// write that fails mid-stream (a file-size limit: the short write, then
// EFBIG, as a full disk gives ENOSPC) is returned to the reader at its next
// call and the temporary goes; the cap; a writer dropped mid-stream (a
// cancel) joins its thread and leaves no file and no fd.
#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "snapshot/reader.hpp"
#include "snapshot/writer.hpp"
#include "snapshot/writer_thread.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::snapshot;
using namespace std::chrono_literals;
using vufront::test::FdCount;
using vufront::test::TempDir;

namespace {

std::vector<uint8_t> state_of(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(i * 31 + (i >> 11));
  return v;
}

std::unique_ptr<WriterThread> started(const std::string& path, uint64_t cap, size_t buffers,
                                      size_t bytes) {
  auto w = SnapshotWriter::create(path, cap);
  REQUIRE_MESSAGE(w.ok(), w.error().message());
  auto t = WriterThread::start(std::move(w).value(), buffers, bytes);
  REQUIRE_MESSAGE(t.ok(), t.error().message());
  return std::move(t).value();
}

/// Feeds `data` in pieces of at most `piece` bytes, as the snapshot actor
/// does; returns the first error the thread reports (none: empty).
std::optional<Error> feed(WriterThread& t, const std::vector<uint8_t>& data, size_t piece) {
  size_t off = 0;
  while (off < data.size()) {
    auto slot = t.acquire(WriterThread::Clock::now() + vufront::test::scaled(10s));
    if (!slot)
      return slot.error();
    REQUIRE_MESSAGE(slot->data != nullptr, "no buffer came free in 10 s");
    size_t n = std::min({piece, slot->size, data.size() - off});
    std::copy(data.begin() + static_cast<std::ptrdiff_t>(off),
              data.begin() + static_cast<std::ptrdiff_t>(off + n), slot->data);
    if (auto r = t.submit(*slot, n); !r)
      return r.error();
    off += n;
  }
  return std::nullopt;
}

/// RLIMIT_FSIZE at `bytes` for this process, SIGXFSZ ignored (a write past
/// the limit is cut short, then fails EFBIG); both restored at the end.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int) = nullptr;
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit lim = old;
    lim.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  }
  ~FileSizeLimit() {
    (void)::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
};

Manifest a_manifest() {
  Manifest m;
  m.kind = DeviceKind::blk;
  m.created = utc_now();
  return m;
}

}  // namespace

TEST_CASE("snapshot writer thread: the buffers are written in order and the checksum is the file's") {
  FdCount fds;
  {
    TempDir dir;
    const std::string path = dir.file("s.vfsnap");
    auto data = state_of((5 << 20) + 12345);
    auto t = started(path, 1 << 30, 2, 64 << 10);
    // Pieces smaller than a buffer too: a partly filled buffer is written as it is.
    CHECK_FALSE(feed(*t, data, 50000));
    auto w = t->finish();
    REQUIRE_MESSAGE(w.ok(), w.error().message());
    CHECK(w->state_bytes() == data.size());
    auto m = w->commit(a_manifest());
    REQUIRE_MESSAGE(m.ok(), m.error().message());
    CHECK(m->state_checksum == StateHasher::of(data.data(), data.size()));
    auto r = SnapshotReader::open(path);
    REQUIRE(r.ok());
    CHECK(r->verify().ok());
    CHECK(test::dir_entries(dir.path()) == 1);
    // finish() is once; the thread is gone.
    CHECK(t->finish().error().code == errc::bad_state);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot writer thread: no free buffer in time is no error, an empty submit frees one") {
  TempDir dir;
  auto t = started(dir.file("s.vfsnap"), 1 << 30, 2, 4096);
  auto a = t->acquire(WriterThread::Clock::now());
  auto b = t->acquire(WriterThread::Clock::now());
  REQUIRE((a.ok() && b.ok() && a->data && b->data));
  auto none = t->acquire(WriterThread::Clock::now() + 10ms);
  REQUIRE(none.ok());
  CHECK(none->data == nullptr);
  REQUIRE(t->submit(*a, 0).ok());
  auto again = t->acquire(WriterThread::Clock::now());
  REQUIRE(again.ok());
  CHECK(again->data == a->data);
  CHECK(t->submit(WriterThread::Slot{}, 1).error().code == errc::invalid_argument);
}

TEST_CASE("snapshot writer thread: a write that fails mid-stream stops the reader, the file goes") {
  FdCount fds;
  {
    TempDir dir;
    const std::string path = dir.file("s.vfsnap");
    auto data = state_of(8 << 20);
    bool finish_it = false;
    SUBCASE("then finished") { finish_it = true; }
    SUBCASE("then dropped") {}
    FileSizeLimit limit(kHeadSize + (1 << 20) + 4096);
    auto t = started(path, 1 << 30, 2, 64 << 10);
    // Two buffers: the reader is never more than two ahead of the failed
    // write, so the error reaches it long before the 8 MiB are fed.
    auto err = feed(*t, data, 64 << 10);
    REQUIRE(err.has_value());
    CHECK(err->code == errc::io_error);
    CHECK(err->sys_errno == EFBIG);
    CHECK_MESSAGE(err->message().find("write to " + path + ".tmp.") != std::string::npos, err->message());
    CHECK_FALSE(t->status().ok());  // and every later call says so
    CHECK(t->acquire(WriterThread::Clock::now()).error().sys_errno == EFBIG);
    if (finish_it) {
      auto w = t->finish();
      REQUIRE_FALSE(w.ok());
      CHECK(w.error().sys_errno == EFBIG);
    } else {
      t.reset();
    }
    CHECK(test::dir_entries(dir.path()) == 0);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot writer thread: a state over the cap fails, at the latest at finish") {
  TempDir dir;
  auto t = started(dir.file("s.vfsnap"), 1 << 20, 3, 256 << 10);
  auto err = feed(*t, state_of(2 << 20), 256 << 10);
  auto w = t->finish();
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == errc::oversized);
  if (err)
    CHECK(err->code == errc::oversized);
  CHECK(test::dir_entries(dir.path()) == 0);
}

TEST_CASE("snapshot writer thread: dropped mid-stream (a cancel), the thread is joined, no file, no fd") {
  FdCount fds;
  {
    TempDir dir;
    auto t = started(dir.file("s.vfsnap"), 1 << 30, 3, 1 << 20);
    CHECK_FALSE(feed(*t, state_of(5 << 20), 1 << 20));
    auto held = t->acquire(WriterThread::Clock::now() + vufront::test::scaled(10s));
    REQUIRE(held.ok());  // a buffer the reader still holds when it is dropped
    t.reset();
    CHECK(test::dir_entries(dir.path()) == 0);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot state checksum: XXH3-64 as the plain function gives it, one-shot and streamed") {
  // Values of the library's plain (SSE2) XXH3_64bits: the run-time dispatch
  // (AVX2, AVX-512) must give the same, short, medium and long inputs alike,
  // or files written before would no longer verify.
  const std::pair<size_t, uint64_t> known[] = {
      {0, 0x2d06800538d394c2ull},    {3, 0x3698b80191e625f9ull},
      {200, 0xc56a3bc977e096fbull},  {1000, 0x2a7a65d13a1450ebull},
      {1048583, 0x7fda0e8f7713c31full},
  };
  for (const auto& [n, sum] : known) {
    auto data = state_of(n);
    CHECK(StateHasher::of(data.data(), n) == sum);
    StateHasher h;
    for (size_t off = 0; off < n; off += 4099)
      h.update(data.data() + off, std::min<size_t>(4099, n - off));
    CHECK(h.digest() == sum);
  }
}
