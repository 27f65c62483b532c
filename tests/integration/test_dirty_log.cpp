// Dirty logging (issue 25, stage 1) against real back-ends: vufront-backend
// and qemu-storage-daemon (libvhost-user) write guest memory (read data,
// status bytes, used rings) and those pages must be in the log the device
// hands out, whichever order logging and the device started in; nothing is
// logged after a stop; a bigger memory gets a bigger log (an event with its
// fd); a back-end lost while logging gets the same log back and every page
// is marked once; and a back-end that forgets to log (--forget-log) fails
// the check, which names the pages.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <csignal>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "memory/dirty_log.hpp"
#include "ops/checker.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/integration/reconnect_support.hpp"
#include "tests/support.hpp"
#include "virtio/requests.hpp"

using namespace vufront;
using namespace vufront::test;
using actors::DeviceEvent;

namespace {

/// The log as a VMM maps it (fd and size from dirty_log_start).
class VmmLog {
public:
  VmmLog(const SharedFd& fd, uint64_t size) : fd_(fd), size_(size) {
    REQUIRE(fd);
    REQUIRE(size % 8 == 0);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
    REQUIRE(p != MAP_FAILED);
    words_ = static_cast<uint64_t*>(p);
  }
  VmmLog(const VmmLog&) = delete;
  VmmLog& operator=(const VmmLog&) = delete;
  ~VmmLog() { ::munmap(words_, size_); }

  /// The marked pages, read and cleared with an atomic exchange per word (as QEMU does).
  std::set<uint64_t> take() {
    std::set<uint64_t> out;
    for (uint64_t i = 0; i < size_ / 8; ++i) {
      uint64_t w = __atomic_exchange_n(&words_[i], uint64_t{0}, __ATOMIC_SEQ_CST);
      for (unsigned b = 0; b < 64; ++b)
        if (w >> b & 1u)
          out.insert(i * 64 + b);
    }
    return out;
  }
  [[nodiscard]] uint64_t pages() const { return size_ * 8; }

private:
  SharedFd fd_;
  uint64_t size_;
  uint64_t* words_ = nullptr;
};

std::string hex_page(uint64_t p) {
  std::ostringstream o;
  o << "0x" << std::hex << p;
  return o.str();
}

/// The check a migration makes: every page the back-end wrote is in the
/// log. Fails naming the pages that are not.
Result<void> logged(const std::set<uint64_t>& marked, const std::set<uint64_t>& written) {
  std::string missing;
  for (auto p : written)
    if (marked.count(p) == 0)
      missing += (missing.empty() ? "" : ", ") + hex_page(p);
  if (missing.empty())
    return ok();
  return make_error(errc::invalid_argument, "dirty log check",
                    "pages written by the back-end but not in the dirty log: " + missing);
}

void add_pages(std::set<uint64_t>& out, uint64_t gpa, uint64_t len) {
  for (uint64_t p = gpa / DirtyLog::page_size; p <= (gpa + len - 1) / DirtyLog::page_size; ++p)
    out.insert(p);
}

/// One blk read on queue 0 through the device: the pages the back-end
/// writes (data, status, the used ring).
std::set<uint64_t> read_once(ops::Checker& c, uint64_t sector) {
  virtio::GuestDriver& g = *c.guest();
  g.scratch(0).reset();
  auto req = must(virtio::blk_read(g.scratch(0), sector, 8192), "blk_read request");
  auto used = must(g.submit(0, req.chain), "submit");
  must(virtio::blk_status(g.scratch(0), req, used.len), "status");
  std::set<uint64_t> written;
  add_pages(written, req.data_gpa, req.data_len);
  add_pages(written, req.status_gpa, 1);
  add_pages(written, g.areas(0).device + 2, 2);  // the used index
  return written;
}

ops::CheckOptions options(const std::string& sock) {
  ops::CheckOptions o;
  o.socket = sock;
  o.reconnect = fast_policy();
  return o;
}

/// Both orders and the stop against the back-end on `sock`.
void both_orders(caf::actor_system& sys, const std::string& sock) {
  {
    INFO("started on a running device");
    ops::Checker c(sys, options(sock));
    REQUIRE_MESSAGE((c.negotiate() && c.set_memory() && c.activate() && c.io("I/O")), failure(c));
    auto [fd, size] = must(c.session().dirty_log_start(), "dirty_log_start");
    VmmLog log(fd, size);
    CHECK(log.pages() * DirtyLog::page_size >= c.guest()->guest_base);  // covers guest RAM
    (void)log.take();
    auto written = read_once(c, 64);
    auto r = logged(log.take(), written);
    CHECK_MESSAGE(r.ok(), r.error().message());
    // the same log again when asked twice
    auto again = must(c.session().dirty_log_start(), "dirty_log_start again");
    CHECK(again.first == fd);
    // stopped: the back-end no longer logs
    must(c.session().dirty_log_stop(), "dirty_log_stop");
    (void)log.take();
    (void)read_once(c, 64);
    CHECK(log.take().empty());
    CHECK_MESSAGE((c.sleep() && c.wake() && c.io("I/O after the stop")), failure(c));
    CHECK(log.take().empty());  // no stale log replayed at wake
  }
  {
    INFO("a device started while logging");
    ops::Checker c(sys, options(sock));
    REQUIRE_MESSAGE((c.negotiate() && c.set_memory()), failure(c));
    auto [fd, size] = must(c.session().dirty_log_start(), "dirty_log_start");
    VmmLog log(fd, size);
    REQUIRE_MESSAGE((c.activate() && c.io("I/O")), failure(c));
    (void)log.take();
    auto written = read_once(c, 128);
    auto r = logged(log.take(), written);
    CHECK_MESSAGE(r.ok(), r.error().message());
    // sleep and wake keep logging (the rings come back with the LOG flag)
    REQUIRE_MESSAGE((c.sleep() && c.wake()), failure(c));
    (void)log.take();
    auto written2 = read_once(c, 256);
    auto r2 = logged(log.take(), written2);
    CHECK_MESSAGE(r2.ok(), r2.error().message());
  }
}

}  // namespace

TEST_CASE("dirty log: vufront-backend's writes land in the log, both orders of start, none after a stop") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("d.sock"), img = tmp.file("disk.img");
  PeerProcess be(sock, disk_backend(sock, img));
  both_orders(sys, sock);
}

TEST_CASE("dirty log: qemu-storage-daemon's writes land in the log, both orders of start, none after a stop") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("q.sock"), img = tmp.file("disk.img");
  PeerProcess qsd(sock, qsd_command(sock, img));
  both_orders(sys, sock);
}

TEST_CASE("dirty log: a back-end that forgets to log fails the check, which names the pages") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("f.sock"), img = tmp.file("disk.img");
  PeerProcess be(sock, disk_backend(sock, img, {"--forget-log"}));
  ops::Checker c(sys, options(sock));
  REQUIRE_MESSAGE((c.negotiate() && c.set_memory() && c.activate()), failure(c));
  auto [fd, size] = must(c.session().dirty_log_start(), "dirty_log_start");
  VmmLog log(fd, size);
  auto written = read_once(c, 64);
  auto r = logged(log.take(), written);
  REQUIRE_FALSE(r.ok());
  for (auto p : written)
    CHECK_MESSAGE(r.error().message().find(hex_page(p)) != std::string::npos, r.error().message());
}

TEST_CASE("dirty log: memory that grows gets a bigger log (an event with its fd), the bits kept") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("g.sock"), img = tmp.file("disk.img");
  PeerProcess be(sock, disk_backend(sock, img));
  ops::Checker c(sys, options(sock));
  REQUIRE_MESSAGE((c.negotiate() && c.set_memory() && c.activate()), failure(c));
  auto [fd, size] = must(c.session().dirty_log_start(), "dirty_log_start");
  VmmLog old_log(fd, size);
  (void)old_log.take();
  auto written = read_once(c, 64);
  // guest RAM beyond what the log covers
  const uint64_t far = uint64_t{1} << 36;
  REQUIRE(far > old_log.pages() * DirtyLog::page_size);
  auto ram = make_memfd("more-ram", 1 << 20);
  REQUIRE(ram);
  must(c.session().add_memory_region({far, 1 << 20, 0, share(std::move(ram))}), "add_memory_region");
  auto ev = expect_event(c.session(), DeviceEvent::Kind::dirty_log_resized);
  REQUIRE(ev.fd);
  CHECK(ev.size == DirtyLog::bytes_for(far + (1 << 20)));
  VmmLog new_log(ev.fd, ev.size);
  // what was logged before the resize moved into the new log
  auto r = logged(new_log.take(), written);
  CHECK_MESSAGE(r.ok(), r.error().message());
  CHECK(old_log.take().empty());
  // and the back-end logs into the new one
  auto written2 = read_once(c, 128);
  auto r2 = logged(new_log.take(), written2);
  CHECK_MESSAGE(r2.ok(), r2.error().message());
  // the same log from dirty_log_start now
  CHECK(must(c.session().dirty_log_start(), "dirty_log_start").first == ev.fd);
}

TEST_CASE("dirty log: a back-end lost while logging gets the same log back, every page marked once") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("l.sock"), img = tmp.file("disk.img");
  FdCount fds;
  {
    PeerProcess be(sock, disk_backend(sock, img));
    ops::Checker c(sys, options(sock));
    REQUIRE_MESSAGE((c.negotiate() && c.set_memory() && c.activate() && c.io("I/O")), failure(c));
    auto [fd, size] = must(c.session().dirty_log_start(), "dirty_log_start");
    VmmLog log(fd, size);
    (void)log.take();
    REQUIRE(be.signal(SIGKILL));
    expect_event(c.session(), DeviceEvent::Kind::backend_lost);
    PeerProcess again(sock, disk_backend(sock, img, {"-v"}));
    auto res = expect_event(c.session(), DeviceEvent::Kind::resumed);
    CHECK(res.detail.find("every page marked dirty once") != std::string::npos);
    CHECK(log.take().size() == log.pages());  // all of them, once
    CHECK(log.take().empty());
    auto written = read_once(c, 64);
    auto r = logged(log.take(), written);
    CHECK_MESSAGE(r.ok(), r.error().message());
    // the replay sent SET_LOG_BASE before any ring started
    const std::string trace = again.log();
    const auto base = trace.find("SET_LOG_BASE"), kick = trace.find("SET_VRING_KICK");
    CHECK_MESSAGE(base != std::string::npos, trace);
    CHECK_MESSAGE(base < kick, trace);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}
