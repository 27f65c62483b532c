// Snapshot and restore of back-end state through the device actor, end to
// end against vufront-backend: data written through the rings and the ring
// indices survive into a fresh back-end; bad files and unfit back-ends are
// refused before anything is sent; a 1 GiB state moves with bounded memory.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/error.hpp"
#include "actors/session.hpp"
#include "actors/system.hpp"
#include "snapshot/format.hpp"
#include "snapshot/reader.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"
#include "virtio/guest_driver.hpp"

using namespace vufront;
using namespace vufront::test;
using actors::DeviceState;

namespace {

constexpr uint16_t queues = 2;
namespace blk_bit {
constexpr unsigned flush = 9, mq = 12;  // virtio-blk feature bits
}
constexpr uint16_t queue_size = 64;

actors::NegotiateOptions blk_options() {
  actors::NegotiateOptions o;
  o.kind = DeviceKind::blk;
  o.queues = queues;
  o.max_queue_size = queue_size;
  return o;
}

std::unique_ptr<virtio::GuestDriver> make_guest(bool packed) {
  virtio::GuestDriverOptions g;
  g.queues = queues;
  g.queue_size = queue_size;
  g.ring = packed ? virtio::RingKind::packed : virtio::RingKind::split;
  return must(virtio::GuestDriver::create(g), "guest driver");
}

/// The driver features a blk guest acks of what the back-end offers.
uint64_t driver_features(const actors::DeviceInfo& info, bool packed) {
  uint64_t want = bit(feature::version_1) | bit(blk_bit::flush) | bit(blk_bit::mq);
  if (packed)
    want |= bit(feature::ring_packed);
  return info.backend_features & want;
}

actors::DeviceConfig config_for(const std::string& socket) {
  actors::DeviceConfig c;
  c.socket = socket;
  return c;
}

bool exists(const std::string& path) {
  struct stat sb {};
  return ::stat(path.c_str(), &sb) == 0;
}

/// Flips one byte of a file at `offset`.
void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

void copy_file(const std::string& from, const std::string& to, uint64_t limit = UINT64_MAX) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  std::vector<char> buf(1 << 16);
  uint64_t left = limit;
  while (left > 0 && in) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(buf.size(), left)));
    out.write(buf.data(), in.gcount());
    left -= static_cast<uint64_t>(in.gcount());
  }
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

/// The names in a directory.
std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != ".." &&
          std::string(e->d_name).find(".sock") == std::string::npos)
        out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

/// Bytes in the directory's temporary snapshot files ("*.tmp.*").
uint64_t temp_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& name : entries_of(dir)) {
    struct stat sb {};
    if (name.find(".tmp.") != std::string::npos && ::stat((dir + "/" + name).c_str(), &sb) == 0)
      n += static_cast<uint64_t>(sb.st_size);
  }
  return n;
}

/// Whether `path` is a complete, verified snapshot file.
bool state_of_file_ok(const std::string& path) {
  auto r = snapshot::SnapshotReader::open(path);
  return r.ok() && r->verify().ok();
}

/// A device on `socket` negotiated, snapshotted as it is (never activated).
actors::SnapshotInfo snapshot_negotiated(caf::actor_system& sys, const std::string& socket,
                                         const std::string& path, uint32_t timeout_ms = 60000) {
  actors::DeviceSession s(sys, config_for(socket));
  must(s.negotiate(blk_options()), "negotiate");
  actors::SnapshotOptions o;
  o.path = path;
  o.timeout_ms = timeout_ms;
  return must(s.snapshot(o), "snapshot");
}

}  // namespace

TEST_CASE("snapshot: data and ring indices survive into a fresh back-end (split and packed)") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  for (bool packed : {false, true}) {
    CAPTURE(packed);
    TempDir tmp;
    const std::string file = tmp.file("dev.vfsnap");
    auto guest = make_guest(packed);
    uint64_t features = 0;
    std::vector<actors::QueueStatus> saved;
    FdCount fds;
    {
      PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), {"--queues", "2"}));
      actors::DeviceSession s(sys, config_for(a.socket()));
      auto info = must(s.negotiate(blk_options()), "negotiate");
      features = driver_features(info, packed);
      must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
      must(s.activate(actors::activate_spec(*guest, features, false)), "activate");
      for (uint16_t q = 0; q < queues; ++q)
        for (uint64_t i = 0; i < 3; ++i)
          must(guest->blk_write(q, 8 * (q * 3 + i), pattern(4096, static_cast<uint8_t>(q * 3 + i))),
               "write");
      // A snapshot needs a stopped device.
      actors::SnapshotOptions so;
      so.path = file;
      auto refused = s.snapshot(so);
      REQUIRE_FALSE(refused.ok());
      CHECK(refused.error().code == errc::bad_state);
      CHECK_FALSE(exists(file));
      must(s.sleep(), "sleep");
      auto info_saved = must(s.snapshot(so), "snapshot");
      CHECK(info_saved.state_bytes > 64u << 20);
      saved = must(s.status(), "status").queues;
      REQUIRE(saved.size() == queues);
      for (const auto& q : saved)
        CHECK(q.base == guest->queue(q.index).next_avail_base());
      REQUIRE(info_saved.queues.size() == queues);
      CHECK(state_of_file_ok(file));
      a.stop();  // the old back-end is gone for good
    }
    {
      PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"), {"--queues", "2"}));
      actors::DeviceSession s(sys, config_for(b.socket()));
      must(s.negotiate(blk_options()), "negotiate");
      must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
      actors::RestoreOptions ro;
      ro.path = file;
      ro.activation = actors::activate_spec(*guest, features, false);
      auto restored = must(s.restore(ro), "restore");
      CHECK(restored.path == file);
      CHECK(restored.features == must(s.status(), "status").acked_features);
      auto st = must(s.status(), "status");
      CHECK(st.state == DeviceState::sleeping);
      for (size_t i = 0; i < saved.size(); ++i)
        CHECK(st.queues[i].base == saved[i].base);
      must(s.wake(), "wake");
      // The data written before the snapshot, read through the same rings,
      // which resume at the driver's next index.
      for (uint16_t q = 0; q < queues; ++q)
        for (uint64_t i = 0; i < 3; ++i) {
          auto data = must(guest->blk_read(q, 8 * (q * 3 + i), 4096), "read");
          CHECK(data == pattern(4096, static_cast<uint8_t>(q * 3 + i)));
        }
      must(guest->blk_write(0, 1000, pattern(512, 99)), "write after restore");
      CHECK(must(guest->blk_read(1, 1000, 512), "read after restore") == pattern(512, 99));
      must(s.sleep(), "sleep");
      auto after = must(s.status(), "status").queues;
      for (const auto& q : after)
        CHECK(q.base == guest->queue(q.index).next_avail_base());
    }
    CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
  }
}

TEST_CASE("snapshot: DPDK's short-form packed ring bases are saved normalised and restored") {
  // vufront-backend --short-vring-base answers a packed GET_VRING_BASE as
  // DPDK 22.11 does (bits 0-15 only); the device keeps the full form, so the
  // manifest holds it and a restore resumes both halves of every ring.
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string file = tmp.file("dev.vfsnap");
  const std::vector<std::string> short_base = {"--queues", "2", "--short-vring-base"};
  auto guest = make_guest(true);
  uint64_t features = 0;
  FdCount fds;
  {
    PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), short_base));
    actors::DeviceSession s(sys, config_for(a.socket()));
    auto info = must(s.negotiate(blk_options()), "negotiate");
    features = driver_features(info, true);
    REQUIRE(has_bit(features, feature::ring_packed));
    must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
    must(s.activate(actors::activate_spec(*guest, features, false)), "activate");
    for (uint16_t q = 0; q < queues; ++q)
      must(guest->blk_write(q, 8 * q, pattern(4096, static_cast<uint8_t>(q))), "write");
    must(s.sleep(), "sleep");
    auto st = must(s.status(), "status");
    REQUIRE(st.notices.size() == 1);
    CHECK(st.notices[0].find("short form") != std::string::npos);
    for (const auto& q : st.queues) {
      CAPTURE(q.index);
      CHECK(q.base == guest->queue(q.index).next_avail_base());
      CHECK((q.base >> 16) == (q.base & 0xffffu));  // drained: used = avail
      CHECK(q.base != virtio::packed_fresh_base);    // I/O moved every ring
    }
    actors::SnapshotOptions so;
    so.path = file;
    auto saved = must(s.snapshot(so), "snapshot");
    auto reader = must(snapshot::SnapshotReader::open(file), "open the snapshot");
    REQUIRE(reader.manifest().queues.size() == queues);
    for (const auto& q : reader.manifest().queues) {
      CAPTURE(q.index);
      CHECK(q.base == guest->queue(q.index).next_avail_base());
    }
    REQUIRE(saved.queues.size() == queues);
    a.stop();
  }
  {
    PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"), short_base));
    actors::DeviceSession s(sys, config_for(b.socket()));
    must(s.negotiate(blk_options()), "negotiate");
    must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
    actors::RestoreOptions ro;
    ro.path = file;
    ro.activation = actors::activate_spec(*guest, features, false);
    must(s.restore(ro), "restore");
    must(s.wake(), "wake");
    for (uint16_t q = 0; q < queues; ++q)
      CHECK(must(guest->blk_read(q, 8 * q, 4096), "read") == pattern(4096, static_cast<uint8_t>(q)));
    must(s.sleep(), "sleep");
    for (const auto& q : must(s.status(), "status").queues)
      CHECK(q.base == guest->queue(q.index).next_avail_base());
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot: a never-activated device's state round trip (what the CLI does)") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), {"--queues", "2", "--size", "8M"}));
  PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"), {"--queues", "2", "--size", "8M"}));
  auto first = snapshot_negotiated(sys, a.socket(), tmp.file("a.vfsnap"));
  CHECK(first.queues.empty());
  CHECK(first.features == 0);
  {
    actors::DeviceSession s(sys, config_for(b.socket()));
    must(s.negotiate(blk_options()), "negotiate");
    actors::RestoreOptions ro;
    ro.path = tmp.file("a.vfsnap");
    auto r = must(s.restore(ro), "restore");
    CHECK(r.checksum == first.checksum);
    CHECK(must(s.status(), "status").state == DeviceState::negotiated);
  }
  // The restored back-end saves the same state again.
  auto second = snapshot_negotiated(sys, b.socket(), tmp.file("b.vfsnap"));
  CHECK(second.state_bytes == first.state_bytes);
  CHECK(second.checksum == first.checksum);
}

TEST_CASE("snapshot: bad files are refused before anything reaches the back-end") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), {"--queues", "2", "--size", "4M"}));
  const std::string good = tmp.file("good.vfsnap");
  auto saved = snapshot_negotiated(sys, a.socket(), good);
  const uint64_t head = snapshot::kHeadSize;
  struct Case {
    const char* name;
    std::function<void(const std::string&)> spoil;
    const char* expect;  // part of the message
  };
  const std::vector<Case> cases = {
      {"state byte flipped", [&](const std::string& p) { copy_file(good, p); flip_byte(p, head + 12345); },
       "checksum mismatch"},
      {"truncated", [&](const std::string& p) { copy_file(good, p, head + saved.state_bytes - 1); },
       "truncated"},
      {"bad magic", [&](const std::string& p) { copy_file(good, p); flip_byte(p, 0); }, "magic"},
      {"wrong version", [&](const std::string& p) { copy_file(good, p); flip_byte(p, 8); },
       "version"},
      {"manifest damaged", [&](const std::string& p) { copy_file(good, p); flip_byte(p, 30); },
       "manifest"},
      {"missing", [](const std::string&) {}, "No such file"},
  };
  // This back-end dies on the first SET_FEATURES or SET_DEVICE_STATE_FD it
  // sees: a refused file must leave it alive.
  PeerProcess b(tmp.file("b.sock"),
                backend_command(tmp.file("b.sock"), {"--queues", "2", "--size", "4M", "--crash-at", "SET_FEATURES",
                                                     "--crash-at", "SET_DEVICE_STATE_FD"}));
  actors::DeviceSession s(sys, config_for(b.socket()));
  must(s.negotiate(blk_options()), "negotiate");
  FdCount fds;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const std::string bad = tmp.file(std::string("bad-") + std::to_string(&c - cases.data()));
    c.spoil(bad);
    actors::RestoreOptions ro;
    ro.path = bad;
    auto r = s.restore(ro);
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(r.error().message().find(c.expect) != std::string::npos, r.error().message());
    CHECK(r.error().message().rfind("restore", 0) == 0);
    CHECK(must(s.status(), "status").state == DeviceState::negotiated);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
  CHECK(b.alive());
}

TEST_CASE("snapshot: a back-end without the snapshot's features is refused by name") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), {"--queues", "2", "--size", "4M"}));
  auto guest = make_guest(false);
  uint64_t features = 0;
  {
    actors::DeviceSession s(sys, config_for(a.socket()));
    features = driver_features(must(s.negotiate(blk_options()), "negotiate"), false);
    REQUIRE(has_bit(features, blk_bit::flush));
    must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
    must(s.activate(actors::activate_spec(*guest, features, false)), "activate");
    must(s.sleep(), "sleep");
    actors::SnapshotOptions so;
    so.path = tmp.file("s.vfsnap");
    must(s.snapshot(so), "snapshot");
    must(s.wake(), "wake after a snapshot");
  }
  PeerProcess b(tmp.file("b.sock"),
                backend_command(tmp.file("b.sock"),
                                {"--queues", "2", "--size", "4M", "--refuse-feature", "FLUSH", "--crash-at",
                                 "SET_FEATURES"}));
  actors::DeviceSession s(sys, config_for(b.socket()));
  must(s.negotiate(blk_options()), "negotiate");
  must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
  actors::RestoreOptions ro;
  ro.path = tmp.file("s.vfsnap");
  auto r = s.restore(ro);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.error().message().find("FLUSH") != std::string::npos, r.error().message());
  // A VMM whose queues differ from the snapshot's is refused too.
  PeerProcess c(tmp.file("c.sock"),
                backend_command(tmp.file("c.sock"), {"--queues", "2", "--size", "4M", "--crash-at", "SET_FEATURES"}));
  actors::DeviceSession sc(sys, config_for(c.socket()));
  must(sc.negotiate(blk_options()), "negotiate");
  must(sc.set_memory(actors::memory_spec(guest->memory())), "set_memory");
  ro.activation = actors::activate_spec(*guest, features, false);
  ro.activation->queues.pop_back();
  r = sc.restore(ro);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.error().message().find("queues") != std::string::npos, r.error().message());
  ro.activation = actors::activate_spec(*guest, features & ~bit(blk_bit::flush), false);
  r = sc.restore(ro);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.error().message().find("not the snapshot's") != std::string::npos,
                r.error().message());
  CHECK(must(sc.status(), "status").state == DeviceState::negotiated);
  CHECK(b.alive());
  CHECK(c.alive());
}

TEST_CASE("snapshot: a 1 GiB state is saved and restored with bounded memory growth") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string file = tmp.file("big.vfsnap");
  // 64 MiB: buffers, not the state. ThreadSanitizer adds its own per-thread
  // traces and shadow pages to every new thread and buffer (a restore starts
  // several), so it gets four times that: still far below the 1 GiB state.
  constexpr uint64_t bound_kib = (kThreadSanitizer ? 4 : 1) * 64 * 1024;
  actors::SnapshotInfo saved;
  {
    PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"), {"--queues", "2", "--size", "1G"}));
    reset_peak_rss();
    uint64_t before = status_kib("VmRSS:");
    saved = snapshot_negotiated(sys, a.socket(), file, 600000);
    uint64_t peak = status_kib("VmHWM:");
    CHECK(saved.state_bytes > (uint64_t{1} << 30));
    CHECK_MESSAGE(peak < before + bound_kib, "peak " << peak << " KiB, before " << before);
  }
  PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"), {"--queues", "2", "--size", "1G"}));
  actors::DeviceSession s(sys, config_for(b.socket()));
  must(s.negotiate(blk_options()), "negotiate");
  reset_peak_rss();
  uint64_t before = status_kib("VmRSS:");
  actors::RestoreOptions ro;
  ro.path = file;
  ro.timeout_ms = 600000;
  auto r = must(s.restore(ro), "restore");
  uint64_t peak = status_kib("VmHWM:");
  CHECK(r.state_bytes == saved.state_bytes);
  CHECK_MESSAGE(peak < before + bound_kib, "peak " << peak << " KiB, before " << before);
}

namespace {

/// A device on a fresh vufront-backend (8 MiB disk, `faults` added),
/// activated with some I/O and asleep: ready for a snapshot.
struct Asleep {
  Asleep(caf::actor_system& sys, const TempDir& tmp, const std::string& name,
         std::vector<std::string> faults)
      : peer(tmp.file(name + ".sock"), backend_command(tmp.file(name + ".sock"), with_disk(faults))),
        guest(make_guest(false)),
        session(sys, config_for(peer.socket())) {
    features = driver_features(must(session.negotiate(blk_options()), "negotiate"), false);
    must(session.set_memory(actors::memory_spec(guest->memory())), "set_memory");
    must(session.activate(actors::activate_spec(*guest, features, false)), "activate");
    must(guest->blk_write(0, 0, pattern(4096, 7)), "write");
    must(session.sleep(), "sleep");
  }
  static std::vector<std::string> with_disk(std::vector<std::string> v) {
    v.insert(v.end(), {"--queues", "2", "--size", "8M"});
    return v;
  }
  PeerProcess peer;
  std::unique_ptr<virtio::GuestDriver> guest;
  actors::DeviceSession session;
  uint64_t features = 0;
};

actors::SnapshotOptions to_file(const std::string& path, uint32_t timeout_ms = 60000) {
  actors::SnapshotOptions o;
  o.path = path;
  o.timeout_ms = timeout_ms;
  return o;
}

}  // namespace

TEST_CASE("snapshot: a back-end killed during the save fails it, nothing is left at the path") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  FdCount fds;
  {
    Asleep d(sys, tmp, "a", {"--state-crash-after", "1M"});
    auto r = d.session.snapshot(to_file(tmp.file("s.vfsnap")));
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(r.error().message().rfind("snapshot: ", 0) == 0, r.error().message());
    CHECK(d.session.wait_event(actors::DeviceEvent::Kind::backend_lost, std::chrono::seconds(10)));
    CHECK(must(d.session.status(), "status").state == DeviceState::broken);
  }
  CHECK(entries_of(tmp.path()) == std::vector<std::string>{});
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot: a back-end killed during the restore fails it") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string file = tmp.file("s.vfsnap");
  {
    Asleep d(sys, tmp, "a", {});
    must(d.session.snapshot(to_file(file)), "snapshot");
  }
  PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"),
                                                    {"--queues", "2", "--size", "8M",
                                                     "--state-crash-after", "1M"}));
  actors::DeviceSession s(sys, config_for(b.socket()));
  must(s.negotiate(blk_options()), "negotiate");
  actors::RestoreOptions ro;
  ro.path = file;
  auto r = s.restore(ro);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.error().message().rfind("restore: ", 0) == 0, r.error().message());
  CHECK(s.wait_event(actors::DeviceEvent::Kind::backend_lost, std::chrono::seconds(10)));
  CHECK(state_of_file_ok(file));  // the file is untouched by a failed restore
}

TEST_CASE("snapshot: a back-end that sends state forever or stalls fails the transfer, wake still works") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  SUBCASE("forever, over the size cap") {
    Asleep d(sys, tmp, "a", {"--state-endless"});
    auto o = to_file(tmp.file("s.vfsnap"));
    o.max_bytes = 32u << 20;
    auto r = d.session.snapshot(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::oversized);
    CHECK(must(d.session.status(), "status").state == DeviceState::sleeping);
    must(d.session.wake(), "wake");
    CHECK(must(d.guest->blk_read(1, 0, 4096), "read") == pattern(4096, 7));
  }
  SUBCASE("stalled: no byte moved for the timeout") {
    Asleep d(sys, tmp, "a", {"--state-stall-after", "1M"});
    auto r = d.session.snapshot(to_file(tmp.file("s.vfsnap"), 500));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::timeout);
    CHECK_MESSAGE(r.error().message().find("no byte moved for 0.5 s") != std::string::npos,
                  r.error().message());
    must(d.session.wake(), "wake");
    CHECK(must(d.guest->blk_read(0, 0, 4096), "read") == pattern(4096, 7));
  }
  SUBCASE("stalled, cancelled from another thread") {
    Asleep d(sys, tmp, "a", {"--state-stall-after", "1M"});
    std::thread canceller([&] {
      // Once the temporary file has grown (the bytes flow), cancel.
      auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (temp_bytes(tmp.path()) < (1u << 20) && std::chrono::steady_clock::now() < give_up)
        std::this_thread::yield();
      d.session.cancel();
    });
    auto r = d.session.snapshot(to_file(tmp.file("s.vfsnap")));
    canceller.join();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::cancelled);
    must(d.session.wake(), "wake");
  }
  SUBCASE("cancelled while the device reads the config, before the transfer") {
    Asleep d(sys, tmp, "a", {"--delay-reply", "GET_CONFIG:1000"});
    caf::scoped_actor self{sys};
    auto pending = self->request(d.session.device(), std::chrono::seconds(30),
                                 actors::snapshot_atom_v, to_file(tmp.file("s.vfsnap")));
    // Behind the request: the device is waiting for GET_CONFIG's reply.
    caf::anon_send(d.session.device(), actors::cancel_atom_v);
    std::string err = "no error";
    pending.receive([](actors::SnapshotInfo&) {},
                    [&](caf::error& e) { err = actors::from_caf(e, "snapshot").message(); });
    CHECK_MESSAGE(err.find("cancelled: cancelled before it began") != std::string::npos, err);
    must(d.session.wake(), "wake");
  }
  SUBCASE("a cancel with nothing in progress does not cancel the next snapshot") {
    Asleep d(sys, tmp, "a", {});
    caf::anon_send(d.session.device(), actors::cancel_atom_v);  // the VMM's cancel
    must(d.session.snapshot(to_file(tmp.file("s.vfsnap"))), "snapshot");
    ::unlink(tmp.file("s.vfsnap").c_str());
    must(d.session.wake(), "wake");
  }
  SUBCASE("cancelled before it began (the cancel is sticky)") {
    Asleep d(sys, tmp, "a", {});
    d.session.cancel();  // no transfer yet: the next one fails at once
    auto r = d.session.snapshot(to_file(tmp.file("s.vfsnap")));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::cancelled);
    CHECK_MESSAGE(r.error().message().find("before the transfer began") != std::string::npos,
                  r.error().message());
    must(d.session.wake(), "wake");
    CHECK(must(d.guest->blk_read(0, 0, 4096), "read") == pattern(4096, 7));
  }
  CHECK(entries_of(tmp.path()).empty());  // no snapshot, no temporary
}

TEST_CASE("snapshot: back-ends that hand over their own fd") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string file = tmp.file("s.vfsnap");
  std::vector<actors::QueueStatus> saved;
  auto guest = make_guest(false);
  uint64_t features = 0;
  {
    PeerProcess a(tmp.file("a.sock"), backend_command(tmp.file("a.sock"),
                                                      {"--queues", "2", "--size", "8M",
                                                       "--state-own-fd"}));
    actors::DeviceSession s(sys, config_for(a.socket()));
    features = driver_features(must(s.negotiate(blk_options()), "negotiate"), false);
    must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
    must(s.activate(actors::activate_spec(*guest, features, false)), "activate");
    must(guest->blk_write(1, 64, pattern(8192, 3)), "write");
    must(s.sleep(), "sleep");
    must(s.snapshot(to_file(file)), "snapshot");
  }
  PeerProcess b(tmp.file("b.sock"), backend_command(tmp.file("b.sock"),
                                                    {"--queues", "2", "--size", "8M",
                                                     "--state-own-fd"}));
  actors::DeviceSession s(sys, config_for(b.socket()));
  must(s.negotiate(blk_options()), "negotiate");
  must(s.set_memory(actors::memory_spec(guest->memory())), "set_memory");
  actors::RestoreOptions ro;
  ro.path = file;
  ro.activation = actors::activate_spec(*guest, features, false);
  must(s.restore(ro), "restore");
  must(s.wake(), "wake");
  CHECK(must(guest->blk_read(0, 64, 8192), "read") == pattern(8192, 3));
}
