#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/format.hpp"
#include "snapshot/manifest.hpp"
#include "snapshot/reader.hpp"
#include "snapshot/writer.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::snapshot;
using vufront::test::FdCount;
using vufront::test::TempDir;

namespace {

constexpr uint64_t kCap = 64ull << 20;

Manifest sample_manifest() {
  Manifest m;
  m.kind = DeviceKind::blk;
  m.features = bit(32) | bit(9) | bit(6);  // VERSION_1, FLUSH, BLK_SIZE
  m.protocol_features = bit(protocol_feature::mq) | bit(protocol_feature::device_state);
  m.queues = {{0, 256, 17}, {1, 128, 0x8005}};
  m.config = {0x00, 0x10, 0, 0, 0, 0, 0, 0, 0xab, 0xcd};
  m.shmem = {{0, 0x200000}, {3, 4096}};
  m.created = "2024-05-01T12:34:56Z";
  return m;
}

// Deterministic pseudo-random bytes.
std::vector<uint8_t> make_state(size_t n, uint32_t seed = 1) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

// Streams `state` in odd chunk sizes (1, 7, 4093, 65537, ...).
void write_chunked(SnapshotWriter& w, const std::vector<uint8_t>& state) {
  static const size_t sizes[] = {1, 7, 4093, 65537, 3, 1 << 20, 999};
  size_t at = 0, i = 0;
  while (at < state.size()) {
    size_t n = std::min(sizes[i++ % std::size(sizes)], state.size() - at);
    auto r = w.write_state(state.data() + at, n);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    at += n;
  }
}

Manifest write_snapshot(const std::string& path, const std::vector<uint8_t>& state,
                        Manifest m = sample_manifest()) {
  auto w = SnapshotWriter::create(path, kCap);
  REQUIRE_MESSAGE(w.ok(), w.error().message());
  write_chunked(*w, state);
  auto c = w->commit(m);
  REQUIRE_MESSAGE(c.ok(), c.error().message());
  return *c;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void put_u32le(std::vector<uint8_t>& f, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    f[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (8 * i));
}

// Replaces the manifest text of a written file (keeps the head size).
void replace_manifest(const std::string& path, const std::string& text) {
  auto f = read_file(path);
  REQUIRE(text.size() <= kHeadSize - kHeaderSize);
  std::fill(f.begin() + kHeaderSize, f.begin() + kHeadSize, 0);
  std::memcpy(f.data() + kHeaderSize, text.data(), text.size());
  put_u32le(f, 12, static_cast<uint32_t>(text.size()));
  write_file(path, f);
}

std::string manifest_text(const std::string& path) {
  auto f = read_file(path);
  uint32_t len = f[12] | f[13] << 8 | f[14] << 16 | static_cast<uint32_t>(f[15]) << 24;
  return std::string(reinterpret_cast<const char*>(f.data() + kHeaderSize), len);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

size_t entries_in(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      ++n;
  ::closedir(d);
  return n;
}

Error open_error(const std::string& path) {
  auto r = SnapshotReader::open(path);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("snapshot: round trip of manifest and a few MiB of state in odd chunks") {
  FdCount fds;
  TempDir dir;
  const std::string path = dir.file("dev.snap");
  auto state = make_state((3u << 20) + 12345);
  Manifest written = write_snapshot(path, state);
  CHECK(written.state_length == state.size());
  CHECK(written.state_checksum == StateHasher::of(state.data(), state.size()));
  CHECK(entries_in(dir.path()) == 1);  // no temporary left
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(static_cast<uint64_t>(st.st_size) == kHeadSize + state.size());

  {
    auto r = SnapshotReader::open(path);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(r->manifest() == written);
    CHECK(r->manifest().queues == sample_manifest().queues);
    CHECK(r->manifest().config == sample_manifest().config);
    CHECK(r->state_offset() == kHeadSize);
    auto v = r->verify();
    CHECK_MESSAGE(v.ok(), v.error().message());

    std::vector<uint8_t> back;
    std::vector<uint8_t> buf(70001);
    size_t chunk = 1;
    for (;;) {
      auto n = r->read_state(buf.data(), std::min(chunk, buf.size()));
      REQUIRE_MESSAGE(n.ok(), n.error().message());
      if (*n == 0)
        break;
      back.insert(back.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(*n));
      chunk = chunk * 3 + 1;
    }
    CHECK(back == state);
    CHECK(r->state_remaining() == 0);
    auto again = r->read_state(buf.data(), buf.size());
    REQUIRE(again.ok());
    CHECK(*again == 0);

    r->rewind();
    auto first = r->read_state(buf.data(), 10);
    REQUIRE(first.ok());
    CHECK(std::equal(buf.begin(), buf.begin() + 10, state.begin()));
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("snapshot: empty state round trips") {
  TempDir dir;
  const std::string path = dir.file("empty.snap");
  Manifest m = sample_manifest();
  m.queues.clear();
  m.shmem.clear();
  m.config.clear();
  m.created.clear();  // commit fills it in
  Manifest written = write_snapshot(path, {}, m);
  CHECK(written.state_length == 0);
  CHECK(written.created.size() == 20);
  auto r = SnapshotReader::open(path);
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->verify().ok());
  uint8_t b = 0;
  auto n = r->read_state(&b, 1);
  REQUIRE(n.ok());
  CHECK(*n == 0);
}

TEST_CASE("snapshot: wrong magic, wrong version, bad header fields") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  write_snapshot(path, make_state(1000));
  const auto good = read_file(path);

  auto f = good;
  f[3] = 'X';
  write_file(path, f);
  Error e = open_error(path);
  CHECK(e.code == errc::invalid_payload);
  CHECK(contains(e.detail, "bad magic"));

  f = good;
  put_u32le(f, 8, 2);
  write_file(path, f);
  e = open_error(path);
  CHECK(e.code == errc::invalid_payload);
  CHECK(contains(e.detail, "format version 2"));

  f = good;
  put_u32le(f, 20, 1);
  write_file(path, f);
  CHECK(contains(open_error(path).detail, "reserved"));

  f = good;
  put_u32le(f, 12, kHeadSize);  // manifest longer than the head
  write_file(path, f);
  CHECK(contains(open_error(path).detail, "does not fit"));

  f = good;
  f[kHeadSize - 1] = 1;  // padding must be zero
  write_file(path, f);
  CHECK(contains(open_error(path).detail, "padding"));

  write_file(path, {'V', 'U', 'F'});
  CHECK(contains(open_error(path).detail, "bad magic"));
  write_file(path, std::vector<uint8_t>(good.begin(), good.begin() + 16));
  CHECK(open_error(path).code == errc::bad_size);
  write_file(path, std::vector<uint8_t>(good.begin(), good.begin() + 4096));
  CHECK(contains(open_error(path).detail, "truncated head"));

  CHECK(open_error(dir.file("absent.snap")).code == errc::io_error);
}

TEST_CASE("snapshot: truncated state and extra bytes are refused at open") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  write_snapshot(path, make_state(5000));
  const auto good = read_file(path);

  write_file(path, std::vector<uint8_t>(good.begin(), good.end() - 1));
  Error e = open_error(path);
  CHECK(e.code == errc::bad_size);
  CHECK(contains(e.detail, "truncated state: 4999 bytes"));

  auto f = good;
  f.push_back(0);
  f.push_back(0);
  write_file(path, f);
  e = open_error(path);
  CHECK(e.code == errc::bad_size);
  CHECK(contains(e.detail, "2 extra bytes"));
}

TEST_CASE("snapshot: a flipped state byte is a checksum mismatch") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  auto state = make_state(300000);
  write_snapshot(path, state);
  auto f = read_file(path);
  f[kHeadSize + 123456] ^= 0x20;
  write_file(path, f);

  auto r = SnapshotReader::open(path);  // the head is intact
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  auto v = r->verify();
  REQUIRE_FALSE(v.ok());
  CHECK(v.error().code == errc::invalid_payload);
  CHECK(contains(v.error().detail, "checksum mismatch"));

  std::vector<uint8_t> buf(65536);
  Result<size_t> n = size_t{0};
  do
    n = r->read_state(buf.data(), buf.size());
  while (n.ok() && *n != 0);
  REQUIRE_FALSE(n.ok());
  CHECK(contains(n.error().detail, "checksum mismatch"));
  auto after = r->read_state(buf.data(), buf.size());
  REQUIRE_FALSE(after.ok());
  CHECK(after.error().code == errc::bad_state);
}

TEST_CASE("snapshot: corrupted manifest, missing fields, wrong types") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  write_snapshot(path, make_state(100));
  const std::string good = manifest_text(path);
  auto good_json = nlohmann::json::parse(good);

  auto expect = [&](const std::string& text, const std::string& part) {
    replace_manifest(path, text);
    Error e = open_error(path);
    CHECK(e.code == errc::invalid_payload);
    const std::string what = e.message() + " / expected: " + part;
    CHECK_MESSAGE(contains(e.detail, part), what);
  };
  expect(good.substr(0, good.size() - 1), "not valid JSON");
  expect("[1,2]", "expected an object");

  auto without = [&](const char* key) {
    auto j = good_json;
    j.erase(key);
    return j.dump();
  };
  expect(without("state_checksum"), "state_checksum: missing");
  expect(without("features"), "features: missing");
  expect(without("queues"), "queues: missing");

  auto with = [&](const nlohmann::json::json_pointer& p, nlohmann::json v) {
    auto j = good_json;
    j[p] = std::move(v);
    return j.dump();
  };
  using ptr = nlohmann::json::json_pointer;
  expect(with(ptr("/state_length"), "100"), "state_length: expected an unsigned integer");
  expect(with(ptr("/state_length"), -1), "state_length: expected an unsigned integer");
  expect(with(ptr("/features"), 5), "features: expected a string");
  expect(with(ptr("/features"), "0xzz"), "features:");
  expect(with(ptr("/device"), "gpu"), "device:");
  expect(with(ptr("/format_version"), 2), "format_version: 2 is not supported");
  expect(with(ptr("/queues/1/size"), 0), "queues[1].size: 0 is not in 1..32768");
  expect(with(ptr("/queues/1/size"), 65536), "queues[1].size");
  expect(with(ptr("/queues/1/index"), 0), "queues[1].index: queue 0 appears twice");
  expect(with(ptr("/queues/0/extra"), 1), "queues[0].extra: unknown key");
  expect(with(ptr("/shmem/1/shmid"), 256), "shmem[1].shmid");
  expect(with(ptr("/shmem/1/shmid"), 0), "appears twice");
  expect(with(ptr("/config"), "abc"), "config: odd number");
  expect(with(ptr("/config"), "zz"), "config: not a hex digit");
  expect(with(ptr("/state_checksum"), "1234"), "state_checksum: expected 16 hex digits");
  expect(with(ptr("/created"), "yesterday"), "created:");
  expect(with(ptr("/comment"), "hi"), "comment: unknown key");

  // A manifest whose length disagrees with the file is a size error.
  replace_manifest(path, with(ptr("/state_length"), 99));
  CHECK(contains(open_error(path).detail, "1 extra bytes"));
  // A changed checksum field opens, then fails verification.
  replace_manifest(path, with(ptr("/state_checksum"), "0000000000000000"));
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  CHECK(contains(r->verify().error().detail, "checksum mismatch"));
}

TEST_CASE("snapshot: state over the cap is oversized and leaves nothing") {
  FdCount fds;
  TempDir dir;
  const std::string path = dir.file("s.snap");
  auto state = make_state(10000);
  {
    auto w = SnapshotWriter::create(path, 9999);
    REQUIRE(w.ok());
    REQUIRE(w->write_state(state.data(), 9000).ok());
    auto r = w->write_state(state.data() + 9000, 1000);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::oversized);
    CHECK(entries_in(dir.path()) == 0);  // temporary removed at once
    CHECK(w->write_state(state.data(), 1).error().code == errc::bad_state);
    auto c = w->commit(sample_manifest());
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::bad_state);
  }
  CHECK_FALSE(exists(path));
  CHECK(entries_in(dir.path()) == 0);
  CHECK(fds.leaked() == 0);
}

TEST_CASE("snapshot: a writer dropped without commit leaves nothing") {
  FdCount fds;
  TempDir dir;
  const std::string path = dir.file("s.snap");
  {
    auto w = SnapshotWriter::create(path, kCap);
    REQUIRE(w.ok());
    auto state = make_state(100000);
    write_chunked(*w, state);
    CHECK(exists(w->temp_path()));
    CHECK(w->temp_path().rfind(path + ".tmp.", 0) == 0);
    CHECK_FALSE(exists(path));
    SnapshotWriter moved = std::move(*w);  // ownership of the temporary moves
    CHECK(exists(moved.temp_path()));
  }
  CHECK_FALSE(exists(path));
  CHECK(entries_in(dir.path()) == 0);
  CHECK(fds.leaked() == 0);
}

TEST_CASE("snapshot: commit replaces an existing file, old content intact until then") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  auto old_state = make_state(20000, 7);
  write_snapshot(path, old_state);
  const auto old_bytes = read_file(path);

  {  // A new snapshot that never commits: the old file is untouched.
    auto w = SnapshotWriter::create(path, kCap);
    REQUIRE(w.ok());
    write_chunked(*w, make_state(50000, 8));
    CHECK(read_file(path) == old_bytes);
  }
  CHECK(read_file(path) == old_bytes);
  CHECK(entries_in(dir.path()) == 1);

  {  // A commit refused by validation: the old file is untouched too.
    auto w = SnapshotWriter::create(path, kCap);
    REQUIRE(w.ok());
    Manifest bad = sample_manifest();
    bad.queues.push_back({0, 64, 0});  // duplicate index
    auto c = w->commit(bad);
    REQUIRE_FALSE(c.ok());
    CHECK(contains(c.error().detail, "appears twice"));
  }
  CHECK(read_file(path) == old_bytes);
  CHECK(entries_in(dir.path()) == 1);

  auto new_state = make_state(30000, 9);
  write_snapshot(path, new_state);
  CHECK(entries_in(dir.path()) == 1);
  auto r = SnapshotReader::open(path);
  REQUIRE(r.ok());
  CHECK(r->manifest().state_length == new_state.size());
  std::vector<uint8_t> back(new_state.size() + 1);
  auto n = r->read_state(back.data(), back.size());
  REQUIRE(n.ok());
  CHECK(*n == new_state.size());
  back.resize(*n);
  CHECK(back == new_state);
}

TEST_CASE("snapshot: Existing::refuse leaves a file that appeared meanwhile as it is") {
  TempDir dir;
  const std::string path = dir.file("s.snap");
  FdCount fds;
  {  // Nothing there at commit: the snapshot lands as with replace.
    auto w = SnapshotWriter::create(path, kCap, Existing::refuse);
    REQUIRE(w.ok());
    write_chunked(*w, make_state(10000, 3));
    auto c = w->commit(sample_manifest());
    REQUIRE_MESSAGE(c.ok(), c.error().message());
  }
  const auto first = read_file(path);
  {  // A file there by commit time (another writer, or one made meanwhile).
    auto w = SnapshotWriter::create(path, kCap, Existing::refuse);
    REQUIRE(w.ok());
    write_chunked(*w, make_state(20000, 4));
    auto c = w->commit(sample_manifest());
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::invalid_argument);
    CHECK(contains(c.error().detail, "exists"));
    CHECK(contains(c.error().detail, "not replaced"));
  }
  CHECK(read_file(path) == first);
  CHECK(entries_in(dir.path()) == 1);  // no temporary left
  CHECK(fds.leaked() == 0);
}

TEST_CASE("snapshot: check_compatible names what the back-end lacks") {
  Manifest m = sample_manifest();
  const uint64_t pf = m.protocol_features;
  CHECK(check_compatible(m, DeviceKind::blk, m.features | bit(1), pf | bit(0), 2).ok());

  auto e = check_compatible(m, DeviceKind::blk, m.features & ~bit(9), pf);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().code == errc::not_negotiated);
  CHECK(contains(e.error().detail, "features 0x200"));
  CHECK(contains(e.error().detail, "FLUSH"));

  e = check_compatible(m, DeviceKind::blk, m.features, pf & ~bit(protocol_feature::device_state));
  REQUIRE_FALSE(e.ok());
  CHECK(contains(e.error().detail, "protocol features " + hex(bit(protocol_feature::device_state))));

  e = check_compatible(m, DeviceKind::net, m.features, pf);
  REQUIRE_FALSE(e.ok());
  CHECK(contains(e.error().detail, "blk device"));

  e = check_compatible(m, DeviceKind::blk, m.features, pf, 1);
  REQUIRE_FALSE(e.ok());
  CHECK(contains(e.error().detail, "queue 1"));
}

TEST_CASE("snapshot: a manifest at every bound fits the head") {
  Manifest m;
  m.kind = DeviceKind::generic;
  m.features = UINT64_MAX;
  m.protocol_features = UINT64_MAX;
  for (size_t i = 0; i < max_queues; ++i)
    m.queues.push_back({static_cast<uint16_t>(i), 32768, UINT32_MAX});
  m.config.assign(max_config_bytes, 0xff);
  for (size_t i = 0; i < max_shmem_regions; ++i)
    m.shmem.push_back({static_cast<uint8_t>(i), UINT64_MAX});
  m.state_length = UINT64_MAX;
  m.state_checksum = UINT64_MAX;
  m.created = "2024-12-31T23:59:59Z";
  REQUIRE(validate(m).ok());
  std::string text = to_json(m).dump();
  CHECK(text.size() <= kHeadSize - kHeaderSize);
  auto back = manifest_from_text(text);
  REQUIRE_MESSAGE(back.ok(), back.error().message());
  CHECK(*back == m);

  m.queues.push_back({0, 1, 0});  // one over
  CHECK(contains(validate(m).error().detail, "queues: 1025 entries"));
}
