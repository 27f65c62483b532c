// The one builder of "the requests that bring a device to where it was"
// (actors/replay.*), as a pure function of DeviceData: what each target
// includes, in which state it leaves the device, and that nothing the device
// set up is left out of a replay.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include "actors/device_checks.hpp"
#include "actors/replay.hpp"
#include "actors/replay_memory.hpp"
#include "base/unique_fd.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::actors;

namespace {

constexpr uint64_t gpa = 0x1'0000'0000;
constexpr uint64_t acked = 0x140001244;

SharedFd eventfd() { return share(make_eventfd()); }

/// A VMM's request, prepared and committed into its shadow `s` as if the
/// back-end had taken it (each fd dup'ed, as the VMM's reader hands them).
void commit_to(proxy::Shadow& s, FrontendReq req, FrontendPayload payload,
               const std::vector<SharedFd>& fds = {}) {
  FrontendRequest r;
  r.req = req;
  r.payload = std::move(payload);
  for (const auto& f : fds)
    r.fds.push_back(UniqueFd::adopt(::dup(f->get())));  // OWNERSHIP: a new fd from dup
  auto p = s.prepare(std::move(r));
  REQUIRE(p);
  s.commit(*p, proxy::ForwardResult{});
}

/// A device as activate leaves it: one 1 MiB region, two queues (the second
/// stopped at base 7), an in-flight region.
DeviceData active_device() {
  DeviceData st;
  auto fd = make_memfd("replay-test", 1 << 20);
  REQUIRE(fd);
  st.memory = {{gpa, 1 << 20, 0, share(std::move(fd))}};
  auto table = check_memory(st.memory, 8);
  REQUIRE(table);
  st.mem_table = *table;
  for (uint16_t i = 0; i < 2; ++i) {
    DeviceData::Queue q;
    q.spec.index = i;
    q.spec.size = 128;
    q.spec.desc = gpa + 0x10000 * (i + 1);
    q.spec.driver = q.spec.desc + 0x1000;
    q.spec.device = q.spec.desc + 0x2000;
    q.spec.kick = eventfd();
    q.call = eventfd();
    q.base = i == 0 ? 0 : 7;
    st.queues.push_back(q);
  }
  st.acked_features = acked;
  st.inflight = wire::InflightDesc{4096, 0, 2, 128, {}};
  st.inflight_fd = share(make_memfd("inflight", 4096));
  return st;
}

constexpr uint8_t features_ok = status_bit::acknowledge | status_bit::driver | status_bit::features_ok;

}  // namespace

TEST_CASE("replay: running brings every setting, the rings at their bases, DRIVER_OK") {
  const DeviceData st = active_device();
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.features == acked);
  CHECK(r.features_ok_status == features_ok);
  CHECK(r.driver_ok_status == (features_ok | status_bit::driver_ok));
  CHECK(replayed_status(ReplayTo::running) == r.driver_ok_status);
  REQUIRE(r.mem_table.size() == 1);
  CHECK(r.mem_table[0].guest_phys_addr == gpa);
  REQUIRE(r.mem_fds.size() == 1);
  CHECK(r.mem_fds[0] == st.memory[0].fd);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.inflight.num_queues == 2);
  REQUIRE(r.queues.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(r.queues[i].addr.index == i);
    CHECK(r.queues[i].num == 128);
    CHECK(r.queues[i].base == st.queues[i].base);
    CHECK(r.queues[i].kick == st.queues[i].spec.kick);
    CHECK(r.queues[i].call == st.queues[i].call);
    // user addresses: the device's synthetic ones, never the guest's GPA
    CHECK(r.queues[i].addr.desc == st.queues[i].spec.desc + user_addr_bias);
  }
}

TEST_CASE("replay: rings stopped keeps memory and the in-flight region, leaves rings and DRIVER_OK to wake") {
  const DeviceData st = active_device();
  const ActivateRequest r = replay_request(st, ReplayTo::rings_stopped, st.acked_features);
  CHECK(r.features == acked);
  CHECK(r.features_ok_status == features_ok);
  CHECK(r.driver_ok_status == 0);
  CHECK(replayed_status(ReplayTo::rings_stopped) == features_ok);
  CHECK(r.mem_table.size() == 1);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.queues.empty());
}

TEST_CASE("replay: a state load sends the snapshot's features, memory only into a guest") {
  const DeviceData st = active_device();
  const uint64_t snap_features = 0x100000000;
  const ActivateRequest bare = replay_request(st, ReplayTo::state_load, snap_features);
  CHECK(bare.features == snap_features);
  CHECK(bare.features_ok_status == features_ok);
  CHECK(bare.driver_ok_status == 0);
  CHECK(bare.mem_table.empty());
  CHECK(bare.mem_fds.empty());
  CHECK_FALSE(bare.inflight_fd);
  CHECK(bare.queues.empty());
  const ActivateRequest guest = replay_request(st, ReplayTo::state_load_with_memory, snap_features);
  CHECK(guest.mem_table.size() == 1);
  CHECK(guest.mem_fds.size() == 1);
  CHECK_FALSE(guest.inflight_fd);  // a restored device has no in-flight region yet
  CHECK(guest.queues.empty());
}

TEST_CASE("replay: a device without an in-flight region or memory replays none") {
  DeviceData st;
  st.acked_features = acked;
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.mem_table.empty());
  CHECK_FALSE(r.inflight_fd);
  CHECK(r.queues.empty());
}

TEST_CASE("replay: packed rings lost while running go back at their last known bases, the in-flight region first") {
  // The new back-end takes their position from the region (docs/lifecycle.md,
  // "reconnect"): the replay hands it the region and the bases vufront has.
  DeviceData st = active_device();
  st.packed = true;
  st.queues[0].base = 0x8000'8000;
  st.queues[1].base = 0x8008'8008;  // where the last wake started it
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.inflight.mmap_size == 4096);
  REQUIRE(r.queues.size() == 2);
  CHECK(r.queues[0].base == 0x8000'8000);
  CHECK(r.queues[1].base == 0x8008'8008);
  // packed: the device and driver areas are the event suppression structures
  CHECK(r.queues[1].addr.avail == st.queues[1].spec.driver + user_addr_bias);
}

TEST_CASE("actors:replay: a VMM's shadow is replayed as the VMM left it, running rings at the used index") {
  Negotiated offer;
  offer.offered_features = acked;
  offer.offered_protocol_features = bit(protocol_feature::reply_ack) | bit(protocol_feature::status);
  offer.num_queues = 2;
  offer.max_mem_slots = 8;
  proxy::Shadow s(offer);
  s.set_protocol_features(offer.offered_protocol_features);
  auto commit = [&s](FrontendReq req, FrontendPayload payload, std::vector<SharedFd> fds = {}) {
    commit_to(s, req, std::move(payload), std::move(fds));
  };
  const uint64_t features = bit(feature::version_1) | bit(feature::protocol_features);
  commit(FrontendReq::set_features, wire::U64{features});
  commit(FrontendReq::set_status, wire::U64{0x0b});  // ACKNOWLEDGE | DRIVER | FEATURES_OK
  auto mem = make_memfd("shadow-replay", 1 << 20);
  REQUIRE(mem);
  SharedFd guest = share(std::move(mem));
  const uint64_t vmm = 0x7f00'0000'0000;
  MemoryTable t;
  t.regions.push_back(wire::MemoryRegion{0, 1 << 20, vmm, 0});
  commit(FrontendReq::set_mem_table, t, {guest});
  for (uint32_t i = 0; i < 2; ++i) {
    commit(FrontendReq::set_vring_num, wire::VringState{i, 128});
    commit(FrontendReq::set_vring_addr,
           wire::VringAddr{i, 0, vmm + 0x10000 * i, vmm + 0x10000 * i + 0x2000, vmm + 0x10000 * i + 0x1000, 0});
    commit(FrontendReq::set_vring_base, wire::VringState{i, 5});
    commit(FrontendReq::set_vring_call, VringFd{i, true}, {eventfd()});
  }
  commit(FrontendReq::set_vring_kick, VringFd{0, true}, {eventfd()});  // ring 1 never starts
  commit(FrontendReq::set_vring_enable, wire::VringState{0, 1});
  commit(FrontendReq::set_status, wire::U64{0x0f});  // + DRIVER_OK
  const uint16_t used = 11;  // the lost back-end completed up to 11 on ring 0
  REQUIRE(::pwrite(guest->get(), &used, sizeof used, 0x2000 + 2) == sizeof used);

  ActivateRequest req = replay_shadow(s);
  CHECK(req.features == features);
  CHECK(req.features_ok_status == 0x0b);
  CHECK(req.driver_ok_status == 0x0f);
  REQUIRE(req.mem_table.size() == 1);
  CHECK(req.mem_table[0].user_addr == proxy::proxy_user_base);  // synthetic, never the VMM's
  REQUIRE(req.mem_fds.at(0));  // the fd the VMM passed (kept by the shadow)
  CHECK_FALSE(req.inflight_fd);
  REQUIRE(req.queues.size() == 2);
  CHECK(req.queues[0].start);
  CHECK(req.queues[0].enable);
  CHECK(req.queues[0].base == 11);  // resumed where the guest is
  CHECK(req.queues[0].addr.desc == proxy::proxy_user_base);
  CHECK(req.queues[0].kick);
  CHECK_FALSE(req.queues[1].start);  // set up, not started
  CHECK(req.queues[1].base == 5);
  CHECK(req.queues[1].call);
}

TEST_CASE("replay: every ring's log_guest_addr is its used ring's guest-physical address") {
  const DeviceData st = active_device();
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  REQUIRE(r.queues.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    // libvhost-user logs used-ring writes at this address whenever LOG_ALL is on
    CHECK(r.queues[i].addr.log == st.queues[i].spec.device);
    CHECK(r.queues[i].addr.flags == 0);  // not logging
  }
  CHECK(r.log_fd == nullptr);
  CHECK_FALSE(has_bit(r.features, feature::log_all));
}

TEST_CASE("replay: a logging device replays the same log, LOG_ALL and each ring's LOG flag") {
  DeviceData st = active_device();
  auto log = DirtyLog::create(gpa + (1 << 20));
  REQUIRE(log);
  st.dirty_log = std::make_shared<DirtyLog>(std::move(log).value());
  for (auto to : {ReplayTo::running, ReplayTo::rings_stopped}) {
    const ActivateRequest r = replay_request(st, to, st.acked_features);
    CHECK(r.features == (acked | bit(feature::log_all)));
    CHECK(r.log_fd == st.dirty_log->fd());
    CHECK(r.log.mmap_size == st.dirty_log->size());
    CHECK(r.log.mmap_offset == 0);
  }
  for (const auto& q : queue_starts(st))
    CHECK(q.addr.flags == wire::vring_addr_flag_log);
  // a restore's state load is never logged
  const ActivateRequest load = replay_request(st, ReplayTo::state_load, acked);
  CHECK(load.log_fd == nullptr);
  CHECK(load.features == acked);
  // stopped: nothing of the log is replayed any more
  st.dirty_log.reset();
  const ActivateRequest after = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(after.log_fd == nullptr);
  CHECK(after.features == acked);
  for (const auto& q : after.queues)
    CHECK(q.addr.flags == 0);
}

TEST_CASE("replay: a VMM that logs gets its own log replayed before its rings, with LOG_ALL and the flag") {
  Negotiated offer;
  offer.offered_features = acked | bit(feature::log_all);
  offer.offered_protocol_features = bit(protocol_feature::reply_ack) | bit(protocol_feature::log_shmfd);
  offer.num_queues = 1;
  offer.max_mem_slots = 8;
  proxy::Shadow s(offer);
  s.set_protocol_features(offer.offered_protocol_features);
  auto commit = [&s](FrontendReq req, FrontendPayload payload, std::vector<SharedFd> fds = {}) {
    commit_to(s, req, std::move(payload), std::move(fds));
  };
  auto mem = make_memfd("shadow-log-replay", 1 << 20);
  REQUIRE(mem);
  SharedFd guest = share(std::move(mem));
  const uint64_t vmm = 0x7f00'0000'0000;
  MemoryTable t;
  t.regions.push_back(wire::MemoryRegion{0, 1 << 20, vmm, 0});
  commit(FrontendReq::set_features, wire::U64{acked});
  commit(FrontendReq::set_mem_table, t, {guest});
  commit(FrontendReq::set_vring_num, wire::VringState{0, 128});
  commit(FrontendReq::set_vring_addr, wire::VringAddr{0, 0, vmm, vmm + 0x2000, vmm + 0x1000, 0x2000});
  commit(FrontendReq::set_vring_kick, VringFd{0, true}, {eventfd()});
  // migration starts: the log, LOG_ALL, the ring again with the LOG flag
  auto logfd = make_memfd("vmm-log", 32);
  REQUIRE(logfd);
  SharedFd log = share(std::move(logfd));
  commit(FrontendReq::set_log_base, wire::Log{32, 0}, {log});
  commit(FrontendReq::set_features, wire::U64{acked | bit(feature::log_all)});
  commit(FrontendReq::set_vring_addr,
         wire::VringAddr{0, wire::vring_addr_flag_log, vmm, vmm + 0x2000, vmm + 0x1000, 0x2000});

  ActivateRequest req = replay_shadow(s);
  CHECK(req.features == (acked | bit(feature::log_all)));
  REQUIRE(req.log_fd);  // activate sends SET_LOG_BASE after the memory, before any ring
  CHECK(req.log.mmap_size == 32);
  CHECK(req.log.mmap_offset == 0);
  struct stat a {}, b {};
  REQUIRE(::fstat(req.log_fd->get(), &a) == 0);
  REQUIRE(::fstat(log->get(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);  // the VMM's own log, not a copy
  REQUIRE(req.queues.size() == 1);
  CHECK(req.queues[0].addr.flags == wire::vring_addr_flag_log);
  CHECK(req.queues[0].addr.log == 0x2000);  // guest-physical, as the VMM sent it
  CHECK(req.queues[0].addr.used == proxy::proxy_user_base + 0x2000);

  // logging stopped: no stale SET_LOG_BASE in a later replay
  commit(FrontendReq::set_features, wire::U64{acked});
  commit(FrontendReq::set_vring_addr, wire::VringAddr{0, 0, vmm, vmm + 0x2000, vmm + 0x1000, 0x2000});
  ActivateRequest after = replay_shadow(s);
  CHECK_FALSE(after.log_fd);
  CHECK(after.features == acked);
  CHECK(after.queues.at(0).addr.flags == 0);
}

namespace {

constexpr uint64_t slot_features = bit(feature::protocol_features) | bit(feature::version_1);

/// What replay_shadow() makes of a VMM that negotiated CONFIGURE_MEM_SLOTS
/// (32 slots offered) and added `n` 1 MiB regions with ADD_MEM_REG: a
/// table SET_MEM_TABLE carries only up to 8 of.
ActivateRequest shadow_with_regions(uint32_t n) {
  Negotiated offer;
  offer.offered_features = slot_features;
  offer.offered_protocol_features = bit(protocol_feature::configure_mem_slots);
  offer.num_queues = 1;
  offer.max_mem_slots = 32;
  proxy::Shadow s(offer);
  s.set_protocol_features(offer.offered_protocol_features);
  for (uint32_t i = 0; i < n; ++i) {
    auto mem = make_memfd("shadow-slot", 1 << 20);
    REQUIRE(mem);
    commit_to(s, FrontendReq::add_mem_reg,
              wire::MemoryRegion{uint64_t{i} << 21, 1 << 20, 0x7f00'0000'0000 + (uint64_t{i} << 21), 0},
              {share(std::move(mem))});
  }
  ActivateRequest req = replay_shadow(s);
  REQUIRE(req.mem_table.size() == n);
  return req;
}

/// The fake's negotiation of `protocol` (no REPLY_ACK: nothing acked).
void script_slots_negotiation(test::FakeBackend& f, uint64_t protocol) {
  f.answer_u64(FrontendReq::get_features, slot_features);
  f.answer_u64(FrontendReq::get_protocol_features, protocol);
  f.expect(FrontendReq::set_protocol_features);
  f.expect(FrontendReq::set_features);
}

void negotiate_slots(BackendClient& c, uint64_t protocol) {
  REQUIRE(c.get_features().ok());
  REQUIRE(c.get_protocol_features().ok());
  REQUIRE(c.set_protocol_features(protocol).ok());
  REQUIRE(c.set_features(slot_features).ok());
}

test::FakeBackend::Expect one_region(const wire::MemoryRegion& r) {
  test::FakeBackend::Expect e;
  e.body = wire::bytes_of(wire::SingleMemoryRegion{0, r});
  e.nfds = 1;
  return e;
}

Timeouts quick() {
  Timeouts t;
  t.request = t.drain = std::chrono::milliseconds(3000);
  return t;
}

}  // namespace

TEST_CASE("replay: a VMM's more than 8 regions go as one ADD_MEM_REG each within the back-end's slots") {
  const ActivateRequest r = shadow_with_regions(10);
  const uint64_t protocol = bit(protocol_feature::configure_mem_slots);
  test::FakeBackend f;
  script_slots_negotiation(f, protocol);
  f.answer_u64(FrontendReq::get_max_mem_slots, 32);
  for (const auto& region : r.mem_table)
    f.expect(FrontendReq::add_mem_reg, one_region(region));
  auto c = f.client(quick());
  negotiate_slots(c, protocol);
  CHECK(send_memory(c, r.mem_table, r.mem_fds).ok());
  CHECK(f.finish() == "");
  size_t added = 0;
  for (const auto& m : f.received())
    added += m.header.request == static_cast<uint32_t>(FrontendReq::add_mem_reg);
  CHECK(added == 10);
  CHECK(f.unread_bytes() == 0);  // no SET_MEM_TABLE besides
}

TEST_CASE("replay: a table larger than the back-end's slots fails naming both counts, nothing sent") {
  const ActivateRequest r = shadow_with_regions(9);
  const uint64_t protocol = bit(protocol_feature::configure_mem_slots);
  test::FakeBackend f;
  script_slots_negotiation(f, protocol);
  f.answer_u64(FrontendReq::get_max_mem_slots, 8);
  auto c = f.client(quick());
  negotiate_slots(c, protocol);
  auto sent = send_memory(c, r.mem_table, r.mem_fds);
  REQUIRE(!sent);
  CHECK(sent.error().code == errc::backend_failure);
  CHECK(sent.error().message().find("9 regions") != std::string::npos);
  CHECK(sent.error().message().find("8 slots") != std::string::npos);
  CHECK(f.finish() == "");
  CHECK(f.unread_bytes() == 0);
  CHECK(!c.broken());
}

TEST_CASE("replay: more than 8 regions without CONFIGURE_MEM_SLOTS fail naming the count") {
  const ActivateRequest r = shadow_with_regions(9);
  test::FakeBackend f;
  script_slots_negotiation(f, 0);
  auto c = f.client(quick());
  negotiate_slots(c, 0);
  auto sent = send_memory(c, r.mem_table, r.mem_fds);
  REQUIRE(!sent);
  CHECK(sent.error().message().find("9 regions") != std::string::npos);
  CHECK(f.finish() == "");
  CHECK(f.unread_bytes() == 0);
}

TEST_CASE("replay: up to 8 regions stay one SET_MEM_TABLE, also with CONFIGURE_MEM_SLOTS") {
  const ActivateRequest r = shadow_with_regions(8);
  const uint64_t protocol = bit(protocol_feature::configure_mem_slots);
  test::FakeBackend f;
  script_slots_negotiation(f, protocol);
  test::FakeBackend::Expect e;
  e.nfds = 8;
  f.expect(FrontendReq::set_mem_table, e);
  auto c = f.client(quick());
  negotiate_slots(c, protocol);
  CHECK(send_memory(c, r.mem_table, r.mem_fds).ok());
  CHECK(f.finish() == "");
  CHECK(f.unread_bytes() == 0);
}
