// Live migration (issue 25, Checker::migrate, ops/migration.hpp) against real
// back-ends, with the guest-side driver's I/O running during the copy:
// vufront-backend (DEVICE_STATE: its state is saved and restored into the
// destination back-end) and qemu-storage-daemon (no DEVICE_STATE: a second
// daemon on the same image takes over at the rings' bases). The memories are
// equal at the switch (checked inside the migration), the second round
// copies pages the I/O dirtied during the first, and I/O afterwards reads
// back every write made before and during the migration. A source that
// forgets to log its writes (--forget-log) fails the check, naming the page.
//
// The migrate part of the fault matrix (test_reconnect_matrix.cpp has the
// rest): the requests a migration sends are recorded from healthy -v
// back-ends, then the source, and then the destination, dies at each of
// them (--crash-at REQ:N) and in the middle of the state stream; the device
// does not reconnect (as a job with "reconnect": false), so the migration
// fails naming the loss, and no fd leaks.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "actors/system.hpp"
#include "memory/dirty_log.hpp"
#include "ops/checker.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/integration/reconnect_support.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

ops::CheckOptions options(const std::string& sock) {
  ops::CheckOptions o;
  o.socket = sock;  // no reconnect: a lost back-end fails the migration
  return o;
}

ops::MigrateOptions migrate_to(const std::string& sock, const TempDir& tmp) {
  ops::MigrateOptions o;
  o.socket = sock;
  o.chunk_pages = 32;  // 2 MiB of guest memory: 16 I/O requests in the first round
  o.state_dir = tmp.path();
  return o;
}

bool up(ops::Checker& c) {
  return c.negotiate() && c.set_memory() && c.activate() && c.io("I/O before");
}

/// A migration of `c` to `dest` with I/O running, and I/O afterwards reading
/// back every write.
void migrates(ops::Checker& c, const std::string& dest, const TempDir& tmp, const std::string& how) {
  REQUIRE_MESSAGE(up(c), failure(c));
  REQUIRE_MESSAGE(c.migrate(migrate_to(dest, tmp)), failure(c));
  const auto& m = c.last_migration();
  MESSAGE(c.steps().back().detail);
  CHECK(m.how == how);
  REQUIRE(m.round_pages.size() >= 2);
  CHECK(m.round_pages[0] * DirtyLog::page_size == m.memory_bytes);  // the first round: all of it
  CHECK(m.round_pages[1] > 0);  // what the I/O dirtied during the first round
  CHECK(m.io_requests >= m.round_pages[0] / 32);
  CHECK(c.steps().back().detail.find("memory equal") != std::string::npos);
  // every write before and during the migration, read back at the destination
  REQUIRE_MESSAGE(c.io("I/O after"), failure(c));
  CHECK(c.steps().back().detail.find("earlier write(s) per queue intact") != std::string::npos);
  REQUIRE_MESSAGE((c.sleep() && c.wake() && c.io("I/O after a sleep")), failure(c));
  // the state file between the two back-ends is gone
  for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
    CHECK_MESSAGE(e.path().filename().string().rfind("vufront-migrate-", 0) != 0, e.path());
}

}  // namespace

TEST_CASE("migrate: vufront-backend moves with its state and memory while I/O runs, every write read back") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string a = tmp.file("a.sock"), b = tmp.file("b.sock");
  FdCount fds;
  {
    PeerProcess src(a, disk_backend(a, tmp.file("a.img")));
    PeerProcess dst(b, disk_backend(b, tmp.file("b.img"), {"-v"}));
    ops::Checker c(sys, options(a));
    migrates(c, b, tmp, "device state");
    CHECK(c.last_migration().state_bytes > uint64_t{16} << 20);  // the whole disk and a header
    // the destination got the state and runs the rings
    CHECK(dst.log().find("SET_DEVICE_STATE_FD") != std::string::npos);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("migrate: qemu-storage-daemon hands over to a second daemon on the same image at the rings' bases") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string a = tmp.file("qa.sock"), b = tmp.file("qb.sock"), img = tmp.file("shared.img");
  FdCount fds;
  {
    PeerProcess src(a, qsd_command(a, img), {"QSD_LOCKING=off"});
    PeerProcess dst(b, qsd_command(b, img), {"QSD_LOCKING=off"});
    ops::Checker c(sys, options(a));
    migrates(c, b, tmp, "shared storage");
    CHECK(c.last_migration().state_bytes == 0);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("migrate: a source that forgets to log its writes fails the memory check, naming the page") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string a = tmp.file("fa.sock"), b = tmp.file("fb.sock");
  PeerProcess src(a, disk_backend(a, tmp.file("a.img"), {"--forget-log"}));
  PeerProcess dst(b, disk_backend(b, tmp.file("b.img")));
  ops::Checker c(sys, options(a));
  REQUIRE_MESSAGE(up(c), failure(c));
  REQUIRE_FALSE(c.migrate(migrate_to(b, tmp)));
  const std::string err = failure(c);
  CHECK_MESSAGE(err.find("differs from the source") != std::string::npos, err);
  // the page the migration's reads land in: only the back-end writes it
  auto& s = c.guest()->scratch(0);
  CHECK_MESSAGE(err.find(hex(s.gpa() + s.size() - DirtyLog::page_size)) != std::string::npos, err);
  // and the page the writes come from is not named: the driver's own log has it
  CHECK_MESSAGE(err.find(hex(s.gpa() + s.size() - 2 * DirtyLog::page_size)) == std::string::npos, err);
  // nothing reached the destination
  CHECK(dst.log().find("SET_DEVICE_STATE_FD") == std::string::npos);
}

namespace {

/// Every request in a -v back-end's log, as --crash-at counts them ("NAME:N").
std::vector<std::string> arrivals(const std::string& log) {
  static const std::string mark = "vufront-backend: <- ";
  std::vector<std::string> out;
  std::map<std::string, unsigned> seen;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(mark, 0) != 0)
      continue;
    std::string name = line.substr(mark.size(), line.find(' ', mark.size()) - mark.size());
    out.push_back(name + ":" + std::to_string(++seen[name]));
  }
  return out;
}

/// The requests the source (from its activation on) and the destination
/// take in a healthy migration.
std::pair<std::vector<std::string>, std::vector<std::string>> record(caf::actor_system& sys) {
  TempDir tmp;
  const std::string a = tmp.file("a.sock"), b = tmp.file("b.sock");
  PeerProcess src(a, disk_backend(a, tmp.file("a.img"), {"-v"}));
  PeerProcess dst(b, disk_backend(b, tmp.file("b.img"), {"-v"}));
  size_t from = 0;
  {
    ops::Checker c(sys, options(a));
    REQUIRE_MESSAGE(up(c), failure(c));
    from = arrivals(src.log()).size();
    REQUIRE_MESSAGE(c.migrate(migrate_to(b, tmp)), failure(c));
  }
  auto s = arrivals(src.log());
  s.erase(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(from));
  return {s, arrivals(dst.log())};
}

/// The source (or the destination) dies with `faults` during a migration.
void dies_in_migration(caf::actor_system& sys, bool source, const std::vector<std::string>& faults) {
  TempDir tmp;
  const std::string a = tmp.file("a.sock"), b = tmp.file("b.sock");
  FdCount fds;
  {
    const std::vector<std::string> none;
    PeerProcess src(a, disk_backend(a, tmp.file("a.img"), source ? faults : none));
    PeerProcess dst(b, disk_backend(b, tmp.file("b.img"), source ? none : faults));
    ops::Checker c(sys, options(a));
    REQUIRE_MESSAGE(up(c), failure(c));
    REQUIRE_FALSE_MESSAGE(c.migrate(migrate_to(b, tmp)), "the back-end did not die in the migration");
    const PeerProcess& dead = source ? src : dst;
    REQUIRE(dead.wait_exit(event_wait));
    const std::string err = failure(c);
    CAPTURE(err);
    // the loss is named: the connection that went, or the device it broke
    const bool named = err.find("closed") != std::string::npos ||
                       err.find("lost") != std::string::npos ||
                       err.find("broken") != std::string::npos ||
                       err.find("EOF") != std::string::npos ||
                       err.find("disconnected") != std::string::npos ||
                       err.find("hung up") != std::string::npos;
    CHECK_MESSAGE(named, err);
    for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
      CHECK_MESSAGE(e.path().filename().string().rfind("vufront-migrate-", 0) != 0, e.path());
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

}  // namespace

TEST_CASE("migrate fault matrix: the source or the destination killed at each request of a migration, and mid-stream") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  const auto [from_source, from_dest] = record(sys);
  std::string listed;
  for (const auto& r : from_source)
    listed += " " + r;
  MESSAGE("source:" << listed);
  REQUIRE(std::find(from_source.begin(), from_source.end(), "SET_LOG_BASE:1") != from_source.end());
  for (const auto& at : from_source) {
    CAPTURE(at);
    dies_in_migration(sys, true, {"--crash-at", at});
  }
  for (const auto& at : from_dest) {
    CAPTURE(at);
    dies_in_migration(sys, false, {"--crash-at", at});
  }
  dies_in_migration(sys, true, {"--state-crash-after", "64K"});
  dies_in_migration(sys, false, {"--state-crash-after", "64K"});
}
