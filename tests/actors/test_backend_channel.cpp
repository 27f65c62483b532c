// The back-end channel actor: the test plays the back-end on one end of a
// socketpair and the "device" with its scoped actor. Threaded tests run the
// reader thread; deterministic ones inject requests with no thread.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_cast.hpp>
#include <caf/after.hpp>
#include <caf/system_messages.hpp>
#include <caf/send.hpp>

#include "actors/backend_channel.hpp"
#include "memory/shmem_window.hpp"
#include "protocol/backend_request.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/support.hpp"

using namespace std::chrono_literals;
using namespace vufront;
using namespace vufront::actors;
namespace pf = vufront::protocol_feature;

namespace {

const uint64_t kPage = ShmemWindow::page_size();
constexpr uint32_t kV = flag_version;
constexpr uint32_t kNeed = flag_version | flag_need_reply;
constexpr uint32_t kConfigChange = 2, kVringCall = 4, kVringErr = 5, kMap = 9, kUnmap = 10;
constexpr uint64_t kAcked = bit(pf::backend_req) | bit(pf::reply_ack) | bit(pf::config) |
                            bit(pf::inband_notifications) | bit(pf::shmem) |
                            bit(pf::backend_send_fd);
constexpr auto kWait = 5s;

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  std::vector<uint8_t> out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  return out;
}

wire::ShmemMap shmem(uint8_t shmid, uint64_t fd_offset, uint64_t shm_offset, uint64_t len,
                     bool rw = false) {
  wire::ShmemMap m{};
  m.shmid = shmid;
  m.fd_offset = fd_offset;
  m.shm_offset = shm_offset;
  m.len = len;
  m.flags = rw ? wire::shmem_map_flag_rw : 0;
  return m;
}

/// Permissions ("r--s", "---p") of the mapping holding `addr`; looks at
/// PROT_NONE holes without touching them.
std::string perms_at(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms;
    in >> range >> perms;
    auto dash = range.find('-');
    if (a >= std::stoull(range.substr(0, dash), nullptr, 16) &&
        a < std::stoull(range.substr(dash + 1), nullptr, 16))
      return perms;
  }
  return "";
}

/// A memfd of `pages` pages; byte i holds (seed + i) & 0xff.
UniqueFd patterned_memfd(uint64_t pages, uint8_t seed) {
  auto fd = make_memfd("channel-test", pages * kPage);
  REQUIRE(fd.valid());
  std::vector<uint8_t> data(pages * kPage);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(seed + i);
  REQUIRE(::pwrite(fd.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  return fd;
}

/// Writes all of `data` to a non-blocking socket, waiting (bounded) for room.
void write_all(int fd, const std::vector<uint8_t>& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    REQUIRE((n < 0 && (errno == EAGAIN || errno == EINTR)));
    pollfd p{fd, POLLOUT, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);  // the reader stalled for 10 s: fail
  }
}

/// Records what the actor asks of the mapper (deterministic tests).
struct RecordingMapper : SharedMemoryMapper {
  struct Call {
    bool map;
    uint8_t shmid;
    uint64_t offset;
    uint64_t len;
    bool operator==(const Call& o) const {
      return map == o.map && shmid == o.shmid && offset == o.offset && len == o.len;
    }
  };
  std::vector<Call> calls;
  bool fail = false;
  Result<void> map(uint8_t shmid, uint64_t off, int, uint64_t, uint64_t len, bool) override {
    calls.push_back({true, shmid, off, len});
    return fail ? Result<void>(make_error(errc::io_error, "fake map", "refused", EIO)) : ok();
  }
  Result<void> unmap(uint8_t shmid, uint64_t off, uint64_t len) override {
    calls.push_back({false, shmid, off, len});
    return ok();
  }
};

/// What both fixtures share: the back-end's end of the channel.
struct BackendEnd {
  std::optional<Connection> be;

  SharedFd open() {
    auto sp = make_socketpair();
    REQUIRE(sp.first.valid());
    be.emplace(std::move(sp.first));
    return share(std::move(sp.second));
  }
  void send(uint32_t code, uint32_t flags, const std::vector<uint8_t>& body = {},
            std::vector<int> fds = {}) {
    auto r = be->send(code, flags, body.data(), body.size(), fds.data(), fds.size(),
                      deadline_in(kWait), "test request");
    REQUIRE_MESSAGE(r.ok(), r.error().message());
  }
  /// The u64 status of the next reply, which must answer `code`.
  uint64_t ack(uint32_t code, std::chrono::milliseconds wait = kWait) {
    auto m = be->receive(64, 0, deadline_in(wait), "ack");
    REQUIRE_MESSAGE(m.ok(), m.error().message());
    CHECK(m->header.request == code);
    CHECK(m->header.flags == (flag_version | flag_reply));
    REQUIRE(m->body.size() == 8);
    uint64_t v = 0;
    std::memcpy(&v, m->body.data(), sizeof v);
    return v;
  }
  /// No reply is waiting on the back-end's end.
  bool no_reply_pending() {
    pollfd p{be->fd(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }
};

struct ChannelTest : test::RtFixture, BackendEnd {
  test::FdCount count;  // taken after the actor system exists
  channel_actor chan;

  void start(uint64_t acked = kAcked) {
    chan = spawn<caf::detached>(channel_impl, open(), acked, self->address(), true);
  }
  void set_mapper(std::shared_ptr<SharedMemoryMapper> m, std::vector<uint64_t> sizes) {
    CHECK(ask_ok(chan, kWait, mapper_atom_v, std::move(m), std::move(sizes)) == "");
  }
  uint64_t served() {
    auto [n, err] = ask<uint64_t>(chan, kWait, caf::get_atom_v);
    REQUIRE_MESSAGE(n.has_value(), err);
    return *n;
  }
  void expect_cfg_change() {
    self->receive([](cfg_change_atom) {}, caf::after(kWait) >> [] { FAIL("no cfg_change"); });
  }
  DeviceEvent expect_event() {
    DeviceEvent ev;
    self->receive([&](event_atom, DeviceEvent& e) { ev = std::move(e); },
                  caf::after(kWait) >> [] { FAIL("no event"); });
    return ev;
  }
  std::string expect_lost() {
    std::string why;
    self->receive([&](lost_atom, const caf::actor_addr&, std::string& s) { why = std::move(s); },
                  caf::after(kWait) >> [] { FAIL("no lost"); });
    return why;
  }
  /// How many (lost_atom) messages are already waiting (never blocks).
  int lost_pending() {
    int n = 0;
    bool more = true;
    while (more)
      self->receive([&](lost_atom, const caf::actor_addr&, std::string&) { ++n; }, caf::after(0ms) >> [&] { more = false; });
    return n;
  }
  /// Exits the actor, waits for it, closes our end: nothing may be left.
  void stop_and_check() {
    self->monitor(chan);
    caf::anon_send_exit(chan, caf::exit_reason::user_shutdown);
    bool down = false;
    self->receive([&](caf::down_msg&) { down = true; },
                  caf::after(kWait) >> [] { FAIL("the channel actor did not exit"); });
    CHECK(down);
    chan = nullptr;
    be.reset();
    CHECK(live_channel_readers() == 0);
    CHECK(count.leaked() == 0);
  }
};

}  // namespace

TEST_CASE_FIXTURE(ChannelTest, "channel: CONFIG_CHANGE and VRING_CALL/ERR reach the device") {
  start();
  send(kConfigChange, kNeed);
  CHECK(ack(kConfigChange) == 0);
  expect_cfg_change();

  send(kConfigChange, kV);  // no NEED_REPLY: delivered, not answered
  expect_cfg_change();

  send(kVringCall, kNeed, bytes(wire::VringState{3, 0}));
  CHECK(ack(kVringCall) == 0);
  self->receive([](vring_call_atom, uint16_t index) { CHECK(index == 3); },
                caf::after(kWait) >> [] { FAIL("no vring_call"); });

  send(kVringErr, kNeed, bytes(wire::VringState{200, 0}));
  CHECK(ack(kVringErr) == 0);  // also proves the un-acked request got no reply
  self->receive([](vring_err_atom, uint16_t index) { CHECK(index == 200); },
                caf::after(kWait) >> [] { FAIL("no vring_err"); });

  CHECK(served() == 4);
  auto counters = channel_counters(chan);
  REQUIRE(counters);
  CHECK(counters->received.load() == 4);
  CHECK(counters->refused.load() == 0);
  CHECK(lost_pending() == 0);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: SHMEM_MAP of a memfd into a ShmemWindow, then UNMAP") {
  auto window = ShmemWindow::create({8 * kPage});
  REQUIRE(window.ok());
  std::shared_ptr<ShmemWindow> w = std::move(window).value();
  start();
  set_mapper(w, {8 * kPage});
  {
    auto fd = patterned_memfd(4, 0x40);
    send(kMap, kNeed, bytes(shmem(0, kPage, 2 * kPage, 3 * kPage, true)), {fd.get()});
    CHECK(ack(kMap) == 0);
    auto ev = expect_event();
    CHECK(ev.kind == DeviceEvent::Kind::shmem_mapped);
    CHECK(ev.detail == "shmid=0 offset=0x" + [] {
      std::ostringstream s;
      s << std::hex << 2 * kPage << " len=0x" << 3 * kPage;
      return s.str();
    }());

    std::vector<uint8_t> want(3 * kPage);
    REQUIRE(::pread(fd.get(), want.data(), want.size(), static_cast<off_t>(kPage)) ==
            static_cast<ssize_t>(want.size()));
    CHECK(std::memcmp(w->data(0) + 2 * kPage, want.data(), want.size()) == 0);
    // Read-write: the back-end sees what the VMM writes.
    w->data(0)[2 * kPage] = 0xab;
    uint8_t back = 0;
    REQUIRE(::pread(fd.get(), &back, 1, static_cast<off_t>(kPage)) == 1);
    CHECK(back == 0xab);
  }
  // Unmap the middle page of the three.
  send(kUnmap, kNeed, bytes(shmem(0, 0, 3 * kPage, kPage)));
  CHECK(ack(kUnmap) == 0);
  CHECK(expect_event().kind == DeviceEvent::Kind::shmem_unmapped);
  CHECK(perms_at(w->data(0) + 3 * kPage) == "---p");
  CHECK(perms_at(w->data(0) + 2 * kPage) == "rw-s");
  CHECK(perms_at(w->data(0) + 4 * kPage) == "rw-s");
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: bad SHMEM_MAP requests get a failure and map nothing") {
  auto window = ShmemWindow::create({4 * kPage, 0});
  REQUIRE(window.ok());
  std::shared_ptr<ShmemWindow> w = std::move(window).value();
  start();
  auto fd = patterned_memfd(4, 1);
  auto refused = [&](const wire::ShmemMap& m) {
    send(kMap, kNeed, bytes(m), {fd.get()});
    CHECK(ack(kMap) != 0);
  };
  SUBCASE("no mapper yet") { refused(shmem(0, 0, 0, kPage)); }
  SUBCASE("with a mapper") {
    set_mapper(w, {4 * kPage, 0});
    refused(shmem(1, 0, 0, kPage));                  // size 0: no region 1
    refused(shmem(7, 0, 0, kPage));                  // unknown shmid
    refused(shmem(0, 0, 3 * kPage, 2 * kPage));      // past the end
    refused(shmem(0, 0, UINT64_MAX - kPage + 1, kPage));  // overflow (decode refuses)
    refused(shmem(0, 0, kPage / 2, kPage));          // unaligned shm_offset
    refused(shmem(0, 1, 0, kPage));                  // unaligned fd_offset
    refused(shmem(0, 0, 0, kPage + 1));              // unaligned len
    refused(shmem(0, 3 * kPage, 0, 2 * kPage));      // the memfd is too short (mapper)
    // Overlap: the first map succeeds, each overlapping one is refused.
    send(kMap, kNeed, bytes(shmem(0, 0, kPage, 2 * kPage)), {fd.get()});
    CHECK(ack(kMap) == 0);
    CHECK(expect_event().kind == DeviceEvent::Kind::shmem_mapped);
    refused(shmem(0, 0, 0, 2 * kPage));
    refused(shmem(0, 0, 2 * kPage, kPage));
    refused(shmem(0, 0, 2 * kPage, 2 * kPage));
    refused(shmem(0, 0, 0, 4 * kPage));
    CHECK(perms_at(w->data(0)) == "---p");
    CHECK(perms_at(w->data(0) + kPage) == "r--s");
    CHECK(perms_at(w->data(0) + 3 * kPage) == "---p");
    // Adjacent ranges are fine.
    send(kMap, kNeed, bytes(shmem(0, 0, 3 * kPage, kPage)), {fd.get()});
    CHECK(ack(kMap) == 0);
    CHECK(expect_event().kind == DeviceEvent::Kind::shmem_mapped);
  }
  CHECK(perms_at(w->data(0)) == "---p");
  auto counters = channel_counters(chan);
  REQUIRE(counters);
  CHECK(counters->refused.load() > 0);
  fd.reset();
  stop_and_check();  // includes: every fd that came with a request was closed
}

TEST_CASE_FIXTURE(ChannelTest, "channel: refused requests are answered and the channel goes on") {
  start(kAcked & ~bit(pf::shmem));  // SHMEM not negotiated
  {
    auto fd = patterned_memfd(1, 0);
    send(kMap, kNeed, bytes(shmem(0, 0, 0, kPage)), {fd.get()});
  }
  CHECK(ack(kMap) != 0);
  send(kConfigChange, kNeed);
  CHECK(ack(kConfigChange) == 0);
  expect_cfg_change();

  send(77, kNeed);  // unknown request
  CHECK(ack(77) != 0);
  send(kConfigChange, kNeed, bytes(wire::VringState{1, 0}));  // wrong size
  CHECK(ack(kConfigChange) != 0);
  send(kConfigChange, kV, {}, {STDERR_FILENO});  // an fd where none belongs, no reply wanted
  send(1, kNeed, bytes(wire::Iotlb{}));  // IOTLB: never negotiated
  CHECK(ack(1) != 0);

  send(kVringCall, kNeed, bytes(wire::VringState{9, 0}));
  CHECK(ack(kVringCall) == 0);
  self->receive([](vring_call_atom, uint16_t index) { CHECK(index == 9); },
                caf::after(kWait) >> [] { FAIL("no vring_call"); });
  auto counters = channel_counters(chan);
  REQUIRE(counters);
  CHECK(counters->refused.load() == 5);
  CHECK(counters->received.load() == 7);
  CHECK(served() == 2);
  CHECK(lost_pending() == 0);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: broken framing is a loss, reported once") {
  start();
  SUBCASE("garbage header") {
    const uint32_t garbage[3] = {0xdeadbeef, 0xffffffff, 0x7fffffff};
    REQUIRE(::write(be->fd(), garbage, sizeof garbage) == static_cast<ssize_t>(sizeof garbage));
  }
  SUBCASE("bad flags with a fitting size") { send(kConfigChange, 0x2); }
  SUBCASE("truncated body, then the peer closes") {
    const uint32_t head[3] = {kVringCall, kNeed, 8};
    REQUIRE(::write(be->fd(), head, sizeof head) == static_cast<ssize_t>(sizeof head));
    be.reset();
  }
  auto why = expect_lost();
  CHECK(why.rfind("back-end channel: ", 0) == 0);
  // A second eof (and a request to sync with) produces no second loss.
  caf::anon_send(chan, channel_eof_atom_v, std::string("again"));
  served();
  CHECK(lost_pending() == 0);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: an oversized request is a loss naming it, and the "
                                "channel is closed at once") {
  start();
  const uint32_t head[3] = {kConfigChange, kNeed, 0x10000};
  REQUIRE(::write(be->fd(), head, sizeof head) == static_cast<ssize_t>(sizeof head));
  auto why = expect_lost();
  INFO(why);
  CHECK(why.rfind("back-end channel: BACKEND_CONFIG_CHANGE_MSG", 0) == 0);
  CHECK(why.find("65536") != std::string::npos);
  CHECK(why.find("oversized") != std::string::npos);
  // The actor lives on (nobody stopped it), yet the back-end sees EOF now
  // and the actor holds no fd of the channel any more.
  pollfd p{be->fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  uint8_t byte = 0;
  CHECK(::recv(be->fd(), &byte, 1, MSG_DONTWAIT) == 0);
  be.reset();
  CHECK(count.leaked() == 0);
  CHECK(live_channel_readers() == 0);
  served();  // still answers
  CHECK(lost_pending() == 0);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: the peer closing is a loss") {
  start();
  send(kConfigChange, kNeed);
  CHECK(ack(kConfigChange) == 0);
  expect_cfg_change();
  be.reset();
  auto why = expect_lost();
  CHECK(why.find("closed") != std::string::npos);
  served();
  CHECK(lost_pending() == 0);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: a flood is delivered completely with a bounded queue") {
  start();
  constexpr size_t kFlood = 20000;
  std::vector<uint8_t> flood;
  flood.reserve(kFlood * sizeof(wire::Header));
  const wire::Header h{kConfigChange, kV, 0};
  for (size_t i = 0; i < kFlood; ++i) {
    const auto* p = reinterpret_cast<const uint8_t*>(&h);
    flood.insert(flood.end(), p, p + sizeof h);
  }
  write_all(be->fd(), flood);
  size_t delivered = 0;
  bool timed_out = false;
  while (delivered < kFlood && !timed_out)
    self->receive([&](cfg_change_atom) { ++delivered; },
                  caf::after(kWait) >> [&] { timed_out = true; });
  CHECK(delivered == kFlood);
  send(kConfigChange, kNeed);
  CHECK(ack(kConfigChange) == 0);
  expect_cfg_change();
  CHECK(served() == kFlood + 1);
  auto counters = channel_counters(chan);
  REQUIRE(counters);
  CHECK(counters->received.load() == kFlood + 1);
  CHECK(counters->high_water.load() >= 1);
  CHECK(counters->high_water.load() <= channel_credits);
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: reset unmaps every mapping") {
  auto window = ShmemWindow::create({4 * kPage});
  REQUIRE(window.ok());
  std::shared_ptr<ShmemWindow> w = std::move(window).value();
  start();
  set_mapper(w, {4 * kPage});
  {
    auto fd = patterned_memfd(4, 9);
    send(kMap, kNeed, bytes(shmem(0, 0, 0, kPage)), {fd.get()});
    CHECK(ack(kMap) == 0);
    send(kMap, kNeed, bytes(shmem(0, kPage, 2 * kPage, 2 * kPage)), {fd.get()});
    CHECK(ack(kMap) == 0);
  }
  CHECK(perms_at(w->data(0)) == "r--s");
  CHECK(perms_at(w->data(0) + 3 * kPage) == "r--s");
  CHECK(ask_ok(chan, kWait, caf::reset_atom_v) == "");
  for (uint64_t off = 0; off < 4 * kPage; off += kPage)
    CHECK(perms_at(w->data(0) + off) == "---p");
  // Nothing is tracked any more: the same range maps again.
  auto fd = patterned_memfd(1, 9);
  send(kMap, kNeed, bytes(shmem(0, 0, 0, kPage)), {fd.get()});
  CHECK(ack(kMap) == 0);
  fd.reset();
  stop_and_check();
}

TEST_CASE_FIXTURE(ChannelTest, "channel: dropping the last handle ends the actor and its reader") {
  start();
  send(kConfigChange, kNeed);
  CHECK(ack(kConfigChange) == 0);
  expect_cfg_change();
  // A refusal is answered by the reader itself in a later iteration, so once
  // its ack is here the reader no longer holds the strong handle it briefly
  // took to deliver the CONFIG_CHANGE: our handle is the last one.
  send(77, kNeed);
  CHECK(ack(77) != 0);
  self->monitor(chan);
  chan = nullptr;  // the reader holds only a weak handle
  self->receive([](caf::down_msg&) {},
                caf::after(kWait) >> [] { FAIL("the channel actor outlived its handles"); });
  be.reset();
  CHECK(live_channel_readers() == 0);
  CHECK(count.leaked() == 0);
}

// ---- deterministic: no reader, requests injected ---------------------------------

namespace {

struct DetChannelTest : test::DetFixture, BackendEnd {
  channel_actor chan;
  std::shared_ptr<RecordingMapper> mapper = std::make_shared<RecordingMapper>();

  DetChannelTest() {
    chan = spawn(channel_impl, open(), kAcked, self->address(), false);
    sched.run();
    auto h = self->request(chan, caf::infinite, mapper_atom_v,
                           std::shared_ptr<SharedMemoryMapper>(mapper),
                           std::vector<uint64_t>{0, 16 * kPage});
    sched.run();
    h.receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("mapper refused"); });
  }
  /// Injects one request and runs the actor; the reply status.
  uint64_t inject(BackendReq type, std::variant<std::monostate, wire::Iotlb, wire::VringArea,
                                               wire::VringState, wire::SharedObject,
                                               wire::ShmemMap>
                                      payload,
                  bool with_fd = false) {
    auto req = std::make_shared<BackendRequest>();
    req->type = type;
    req->flags = kNeed;
    req->need_reply = true;
    req->payload = payload;
    if (with_fd)
      req->fds.push_back(make_memfd("det", kPage));
    caf::anon_send(chan, backend_req_atom_v, std::move(req));
    sched.run();
    return ack(static_cast<uint32_t>(type), 100ms);  // already written by now
  }
  uint64_t map(uint64_t off, uint64_t len) {
    return inject(BackendReq::shmem_map, shmem(1, 0, off, len), true);
  }
  uint64_t unmap(uint64_t off, uint64_t len) {
    return inject(BackendReq::shmem_unmap, shmem(1, 0, off, len));
  }
};

using Call = RecordingMapper::Call;

}  // namespace

TEST_CASE_FIXTURE(DetChannelTest, "channel (det): UNMAP trims the tracked mappings, reset "
                                  "unmaps what is left") {
  CHECK(map(0, 4 * kPage) == 0);
  CHECK(map(8 * kPage, 2 * kPage) == 0);
  CHECK(unmap(kPage, kPage) == 0);  // splits [0,4) into [0,1) and [2,4)
  CHECK(map(kPage, kPage) == 0);    // the hole is free again
  CHECK(map(3 * kPage, 2 * kPage) != 0);  // still overlaps [2,4)
  CHECK(unmap(3 * kPage, 6 * kPage) == 0);  // trims [2,4) to [2,3), [8,10) to [9,10)
  CHECK(map(4 * kPage, 5 * kPage) == 0);
  mapper->calls.clear();
  auto h = self->request(chan, caf::infinite, caf::reset_atom_v);
  sched.run();
  h.receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("reset failed"); });
  std::vector<Call> want = {{false, 1, 0, kPage},         {false, 1, kPage, kPage},
                            {false, 1, 2 * kPage, kPage}, {false, 1, 4 * kPage, 5 * kPage},
                            {false, 1, 9 * kPage, kPage}};
  CHECK(mapper->calls == want);
  mapper->calls.clear();
  auto h2 = self->request(chan, caf::infinite, caf::reset_atom_v);
  sched.run();
  h2.receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("reset failed"); });
  CHECK(mapper->calls.empty());
}

TEST_CASE_FIXTURE(DetChannelTest, "channel (det): mapper failures and unserved requests") {
  mapper->fail = true;
  CHECK(map(0, kPage) != 0);
  mapper->fail = false;
  CHECK(map(0, kPage) == 0);  // the failed one was not tracked
  CHECK(inject(BackendReq::iotlb_msg, wire::Iotlb{}) != 0);
  CHECK(inject(BackendReq::vring_host_notifier_msg, wire::VringArea{0x100, 0, 0}) != 0);
  CHECK(inject(BackendReq::shared_object_add, wire::SharedObject{}) != 0);
  CHECK(inject(BackendReq::shmem_map, shmem(1, 0, kPage, kPage), false) != 0);  // no fd
  CHECK(inject(BackendReq::vring_err, wire::VringState{5, 0}) == 0);
  self->receive([](vring_err_atom, uint16_t index) { CHECK(index == 5); },
                caf::after(0ms) >> [] { FAIL("no vring_err"); });
  // A new mapper drops the mappings made through the old one.
  auto other = std::make_shared<RecordingMapper>();
  mapper->calls.clear();
  auto h = self->request(chan, caf::infinite, mapper_atom_v,
                         std::shared_ptr<SharedMemoryMapper>(other), std::vector<uint64_t>{kPage});
  sched.run();
  h.receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("mapper refused"); });
  CHECK(mapper->calls == std::vector<Call>{{false, 1, 0, kPage}});
  auto g = self->request(chan, caf::infinite, caf::get_atom_v);
  sched.run();
  g.receive([](uint64_t n) { CHECK(n == 7); }, [](caf::error&) { FAIL("get failed"); });
  CHECK(no_reply_pending());
}
