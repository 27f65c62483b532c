// The VMM socket's pure parts (proxy/): what a VMM is offered, and the shadow
// of its set-up (address translation, ring states, the teardown).
#include <doctest/doctest.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "proxy/log_base.hpp"
#include "proxy/offer.hpp"
#include "proxy/shadow.hpp"
#include "virtio/inflight_packed.hpp"

using namespace vufront;
using proxy::BackendOffer;
using proxy::Shadow;
namespace pf = protocol_feature;

namespace {

BackendOffer qsd_like() {
  BackendOffer b;
  b.kind = DeviceKind::blk;
  b.features = bit(feature::version_1) | bit(feature::protocol_features) | bit(feature::log_all) |
               bit(feature::access_platform) | bit(feature::event_idx);
  b.protocol_features = bit(pf::mq) | bit(pf::reply_ack) | bit(pf::config) | bit(pf::log_shmfd) |
                        bit(pf::configure_mem_slots) | bit(pf::host_notifier) | bit(pf::backend_req);
  b.queue_num = 2;
  b.max_mem_slots = 32;
  b.backend_channel = true;
  return b;
}

FrontendRequest request(FrontendReq req, FrontendPayload payload) {
  FrontendRequest r;
  r.req = req;
  r.payload = std::move(payload);
  return r;
}

/// A 1 MiB memfd region at guest address `gpa`, mapped by the "VMM" at `uaddr`.
FrontendRequest mem_table(uint64_t gpa, uint64_t uaddr, UniqueFd& fd_out) {
  MemoryTable t;
  t.regions.push_back(wire::MemoryRegion{gpa, 1 << 20, uaddr, 0});
  auto r = request(FrontendReq::set_mem_table, t);
  auto fd = make_memfd("guest", 1 << 20);
  REQUIRE(fd);
  fd_out = UniqueFd::adopt(::dup(fd.get()));
  r.fds.push_back(std::move(fd));
  return r;
}

/// prepare + commit, as if the back-end accepted it.
Shadow::Prepared apply(Shadow& s, FrontendRequest r, proxy::ForwardResult answer = {}) {
  auto p = s.prepare(std::move(r));
  REQUIRE(p);
  s.commit(*p, answer);
  return std::move(p).value();
}

}  // namespace

TEST_CASE("proxy offer: the back-end's offer less what vufront cannot proxy") {
  auto n = proxy::vmm_offer(qsd_like());
  REQUIRE(n);
  CHECK(has_bit(n->offered_features, feature::log_all));  // live migration of the VMM
  CHECK_FALSE(has_bit(n->offered_features, feature::access_platform));
  CHECK(has_bit(n->offered_features, feature::event_idx));
  CHECK(has_bit(n->offered_features, feature::protocol_features));
  CHECK(n->offered_protocol_features ==
        (bit(pf::mq) | bit(pf::reply_ack) | bit(pf::config) | bit(pf::configure_mem_slots) |
         bit(pf::backend_req) | bit(pf::log_shmfd)));
  CHECK(n->num_queues == 2);
  CHECK(n->max_mem_slots == 32);
  CHECK(n->acked_features == 0);

  auto no_channel = qsd_like();
  no_channel.backend_channel = false;
  CHECK_FALSE(has_bit(proxy::vmm_offer(no_channel)->offered_protocol_features, pf::backend_req));
}

TEST_CASE("proxy offer: LOG_ALL and LOG_SHMFD are offered both or neither") {
  // without the shared log QEMU would send SET_LOG_BASE with no fd and no reply
  auto no_shmfd = qsd_like();
  no_shmfd.protocol_features &= ~bit(pf::log_shmfd);
  auto a = proxy::vmm_offer(no_shmfd);
  REQUIRE(a);
  CHECK_FALSE(has_bit(a->offered_features, feature::log_all));
  CHECK_FALSE(has_bit(a->offered_protocol_features, pf::log_shmfd));
  // a log without LOG_ALL is of no use: QEMU refuses `migrate` itself
  auto no_log_all = qsd_like();
  no_log_all.features &= ~bit(feature::log_all);
  auto b = proxy::vmm_offer(no_log_all);
  REQUIRE(b);
  CHECK_FALSE(has_bit(b->offered_features, feature::log_all));
  CHECK_FALSE(has_bit(b->offered_protocol_features, pf::log_shmfd));
}

TEST_CASE("proxy offer: back-ends that cannot be proxied are named") {
  auto no_config = qsd_like();
  no_config.protocol_features &= ~bit(pf::config);
  auto r = proxy::vmm_offer(no_config);
  REQUIRE_FALSE(r);
  CHECK(r.error().detail.find("CONFIG") != std::string::npos);
  no_config.kind = DeviceKind::net;  // net needs no CONFIG
  CHECK(proxy::vmm_offer(no_config));

  auto no_protocol = qsd_like();
  no_protocol.features &= ~bit(feature::protocol_features);
  CHECK_FALSE(proxy::vmm_offer(no_protocol));
}

TEST_CASE("proxy shadow: user addresses become synthetic, guest addresses stay") {
  Shadow s(*proxy::vmm_offer(qsd_like()));
  UniqueFd keep;
  const uint64_t vmm_base = 0x7f12'3400'0000;
  auto p = apply(s, mem_table(0x10'0000, vmm_base, keep));
  const auto& sent = std::get<MemoryTable>(p.forward.payload).regions.at(0);
  CHECK(sent.guest_phys_addr == 0x10'0000);
  CHECK(sent.user_addr == proxy::proxy_user_base + 0x10'0000);
  CHECK(sent.mmap_offset == 0);
  REQUIRE(p.forward.fds.size() == 1);

  wire::VringAddr a{1, 0, vmm_base + 0x1000, vmm_base + 0x3000, vmm_base + 0x2000, 0x55'0000};
  auto ring = s.prepare(request(FrontendReq::set_vring_addr, a));
  REQUIRE(ring);
  const auto& t = std::get<wire::VringAddr>(ring->forward.payload);
  CHECK(t.desc == proxy::proxy_user_base + 0x10'0000 + 0x1000);
  CHECK(t.used == proxy::proxy_user_base + 0x10'0000 + 0x3000);
  CHECK(t.avail == proxy::proxy_user_base + 0x10'0000 + 0x2000);
  CHECK(t.log == 0x55'0000);  // log_guest_addr is a guest address: unchanged
  CHECK(std::get<wire::VringAddr>(ring->original).desc == vmm_base + 0x1000);
}

TEST_CASE("proxy shadow: the VMM's mistakes are refused before anything is forwarded") {
  Shadow s(*proxy::vmm_offer(qsd_like()));
  UniqueFd keep;
  apply(s, mem_table(0, 0x7f00'0000'0000, keep));
  // a ring outside every region, or straddling its end, waits for memory
  // (deferred) and cannot start while it waits
  auto outside = s.prepare(request(FrontendReq::set_vring_addr, wire::VringAddr{0, 0, 0x1000, 0x2000, 0x3000, 0}));
  REQUIRE(outside);
  CHECK(outside->deferred);
  s.commit(*outside, {});
  auto kick = request(FrontendReq::set_vring_kick, VringFd{0, true});
  kick.fds.push_back(make_eventfd());
  auto k = s.prepare(std::move(kick));
  REQUIRE_FALSE(k);
  CHECK(k.error().detail.find("no memory region") != std::string::npos);
  auto straddle = s.prepare(request(FrontendReq::set_vring_addr,
                                    wire::VringAddr{1, 0, 0x7f00'0000'0000 + (1 << 20) - 8, 0x7f00'0000'0000,
                                                    0x7f00'0000'0000, 0}));
  REQUIRE(straddle);
  CHECK(straddle->deferred);
  // a region overlapping one already there, in guest or VMM space
  auto overlap = request(FrontendReq::add_mem_reg, wire::MemoryRegion{0x8'0000, 1 << 20, 0x7e00'0000'0000, 0});
  overlap.fds.push_back(make_eventfd());
  auto o = s.prepare(std::move(overlap));
  REQUIRE_FALSE(o);
  CHECK(o.error().code == errc::invalid_payload);
  // removing a region that is not there
  CHECK_FALSE(s.prepare(request(FrontendReq::rem_mem_reg, wire::MemoryRegion{0x4000'0000, 1 << 20, 0, 0})));
}

TEST_CASE("proxy shadow: rings, teardown and the used index read from guest memory") {
  auto offer = *proxy::vmm_offer(qsd_like());
  Shadow s(offer);
  apply(s, request(FrontendReq::set_features, wire::U64{bit(feature::version_1) | bit(feature::protocol_features)}));
  UniqueFd guest;
  const uint64_t vmm_base = 0x7f00'0000'0000;
  apply(s, mem_table(0, vmm_base, guest));
  for (uint32_t q = 0; q < 2; ++q) {
    apply(s, request(FrontendReq::set_vring_num, wire::VringState{q, 256}));
    apply(s, request(FrontendReq::set_vring_addr,
                     wire::VringAddr{q, 0, vmm_base + q * 0x10000, vmm_base + q * 0x10000 + 0x2000,
                                     vmm_base + q * 0x10000 + 0x1000, 0}));
    auto kick = request(FrontendReq::set_vring_kick, VringFd{q, true});
    kick.fds.push_back(make_eventfd());
    apply(s, std::move(kick));
  }
  CHECK(s.rings().at(0).started);
  CHECK(s.rings().at(1).started);

  // the back-end moved ring 1's used index to 7 (struct vring_used: flags, idx)
  const uint16_t idx = 7;
  REQUIRE(::pwrite(guest.get(), &idx, sizeof idx, 0x10000 + 0x2000 + 2) == sizeof idx);
  CHECK(s.used_index(1) == std::optional<uint16_t>(7));
  CHECK(s.used_index(0) == std::optional<uint16_t>(0));
  CHECK(s.to_json()["queues"].size() == 2);

  // QEMU stops ring 0 itself: GET_VRING_BASE records its base, it is no longer started
  proxy::ForwardResult base;
  base.has_reply = true;
  base.vring_base = 42;
  apply(s, request(FrontendReq::get_vring_base, wire::VringState{0, 0}), base);
  CHECK_FALSE(s.rings().at(0).started);
  CHECK(s.rings().at(0).base == 42);

  // the VMM dies: ring 1 is stopped (enable 0, then GET_VRING_BASE), then a new connection
  auto t = s.teardown();
  REQUIRE(t.requests.size() == 2);
  CHECK(t.requests[0].req == FrontendReq::set_vring_enable);
  CHECK(std::get<wire::VringState>(t.requests[0].payload).index == 1);
  CHECK(t.requests[1].req == FrontendReq::get_vring_base);
  CHECK(t.renew);

  s.clear();
  CHECK(s.regions().empty());
  CHECK_FALSE(s.rings().at(1).kick);
  CHECK(s.context().acked_features == 0);
  CHECK_FALSE(s.teardown().renew);  // nothing left to forget
}

TEST_CASE("proxy shadow: rings sent before their memory go to the back-end once it is there") {
  // QEMU 7.2 reconnecting to a stopped VM: SET_VRING_NUM/BASE/ADDR, then the memory
  Shadow s(*proxy::vmm_offer(qsd_like()));
  const uint64_t vmm_base = 0x7f00'0000'0000;
  auto early = s.prepare(request(FrontendReq::set_vring_addr,
                                 wire::VringAddr{0, 0, vmm_base + 0x1000, vmm_base + 0x3000, vmm_base + 0x2000, 0}));
  REQUIRE(early);
  CHECK(early->deferred);
  s.commit(*early, {});
  CHECK(s.take_ready().empty());  // still no memory
  UniqueFd keep;
  apply(s, mem_table(0x10'0000, vmm_base, keep));
  auto ready = s.take_ready();
  REQUIRE(ready.size() == 1);
  const auto& a = std::get<wire::VringAddr>(ready[0].forward.payload);
  CHECK(a.desc == proxy::proxy_user_base + 0x10'0000 + 0x1000);
  CHECK(a.used == proxy::proxy_user_base + 0x10'0000 + 0x3000);
  s.commit(ready[0], {});
  CHECK(s.take_ready().empty());  // each once
  auto kick = request(FrontendReq::set_vring_kick, VringFd{0, true});
  kick.fds.push_back(make_eventfd());
  CHECK(s.prepare(std::move(kick)));  // it may start now
}

TEST_CASE("proxy shadow: a VMM that only asked questions needs no teardown") {
  Shadow s(*proxy::vmm_offer(qsd_like()));
  proxy::ForwardResult cfg;
  cfg.has_reply = true;
  apply(s, request(FrontendReq::get_config, ConfigRequest{wire::ConfigHeader{0, 8, 0}, std::vector<uint8_t>(8)}),
        cfg);
  auto t = s.teardown();
  CHECK(t.requests.empty());
  CHECK_FALSE(t.renew);
}

TEST_CASE("proxy shadow: a region whose synthetic address would wrap is refused") {
  // proxy_user_base + a guest address near 2^64 wraps to a low address the
  // back-end would take for an ordinary one (found by tests/fuzz/fuzz_vmm_session).
  Shadow s(*proxy::vmm_offer(qsd_like()));
  const uint64_t top = ~uint64_t{0} - proxy::proxy_user_base;  // the last guest address that fits
  for (uint64_t gpa : {uint64_t{0xFFFF'F000'0000'0000}, top + 1, top - 0xfff}) {
    UniqueFd keep;
    auto r = s.prepare(mem_table(gpa, 0x7f00'0000'0000, keep));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid_payload);
    auto add = request(FrontendReq::add_mem_reg, wire::MemoryRegion{gpa, 0x1000, 0x7f00'0000'0000, 0});
    add.fds.push_back(make_eventfd());
    CHECK_FALSE(s.prepare(std::move(add)));
  }
  // the highest region that fits is taken, its synthetic range ends at 2^64 - 1
  UniqueFd keep;
  auto p = s.prepare(mem_table(top - (1 << 20), 0x7f00'0000'0000, keep));
  REQUIRE(p);
  CHECK(std::get<MemoryTable>(p->forward.payload).regions[0].user_addr == ~uint64_t{0} - (1 << 20));
}

TEST_CASE("proxy shadow: regions that overlap at the top of the VMM's address space are refused") {
  // A range may end exactly at 2^64 (the decoder allows it), where start +
  // size is 0: the overlap test compares last bytes (found by
  // tests/fuzz/fuzz_vmm_session).
  Shadow s(*proxy::vmm_offer(qsd_like()));
  MemoryTable t;
  t.regions.push_back(wire::MemoryRegion{0, 0x2000, 0xFFFF'FFFF'FFFF'E000, 0});
  t.regions.push_back(wire::MemoryRegion{0x10000, 0x1000, 0xFFFF'FFFF'FFFF'F000, 0});
  auto table = request(FrontendReq::set_mem_table, t);
  table.fds.push_back(make_eventfd());
  table.fds.push_back(make_eventfd());
  auto r = s.prepare(std::move(table));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_payload);

  UniqueFd keep;
  apply(s, mem_table(0, 0xFFFF'FFFF'FFF0'0000, keep));  // 1 MiB ending at 2^64
  auto add = request(FrontendReq::add_mem_reg, wire::MemoryRegion{0x100000, 0x1000, 0xFFFF'FFFF'FFFF'F000, 0});
  add.fds.push_back(make_eventfd());
  CHECK_FALSE(s.prepare(std::move(add)));
  // next to it, below, is fine
  auto below = request(FrontendReq::add_mem_reg, wire::MemoryRegion{0x100000, 0x1000, 0xFFFF'FFFF'FFEF'F000, 0});
  below.fds.push_back(make_eventfd());
  CHECK(s.prepare(std::move(below)));
}

namespace {

/// A shadow with memory, features and ring 0 set up and started (ring 1
/// only sized), as QEMU leaves it once the guest's driver runs; `guest`
/// gets the memory's fd.
Shadow running_shadow(UniqueFd& guest, uint64_t features = bit(feature::version_1) |
                                                           bit(feature::protocol_features)) {
  Shadow s(*proxy::vmm_offer(qsd_like()));
  s.set_protocol_features(bit(pf::reply_ack) | bit(pf::config));
  apply(s, request(FrontendReq::set_features, wire::U64{features}));
  const uint64_t vmm_base = 0x7f00'0000'0000;
  apply(s, mem_table(0, vmm_base, guest));
  apply(s, request(FrontendReq::set_vring_num, wire::VringState{0, 256}));
  apply(s, request(FrontendReq::set_vring_addr,
                   wire::VringAddr{0, 0, vmm_base, vmm_base + 0x2000, vmm_base + 0x1000, 0}));
  apply(s, request(FrontendReq::set_vring_base, wire::VringState{0, 3}));
  auto call = request(FrontendReq::set_vring_call, VringFd{0, true});
  call.fds.push_back(make_eventfd());
  apply(s, std::move(call));
  auto kick = request(FrontendReq::set_vring_kick, VringFd{0, true});
  kick.fds.push_back(make_eventfd());
  apply(s, std::move(kick));
  apply(s, request(FrontendReq::set_vring_enable, wire::VringState{0, 1}));
  apply(s, request(FrontendReq::set_vring_num, wire::VringState{1, 128}));
  return s;
}

Shadow::Prepared prepared(const Shadow& s, FrontendRequest r) {
  auto p = s.prepare(std::move(r));
  REQUIRE(p);
  return std::move(p).value();
}

}  // namespace

TEST_CASE("proxy shadow: a back-end that is away is stood in for from the shadow") {
  UniqueFd guest;
  Shadow s = running_shadow(guest);
  const uint16_t used = 9;  // what the lost back-end completed
  REQUIRE(::pwrite(guest.get(), &used, sizeof used, 0x2000 + 2) == sizeof used);

  // GET_VRING_BASE of the running ring: the used index, only once fenced
  auto base = s.stand_in(prepared(s, request(FrontendReq::get_vring_base, wire::VringState{0, 0})));
  CHECK(base.kind == Shadow::StandIn::Kind::answer);
  CHECK(base.fence);
  CHECK(base.result.vring_base == 9);
  CHECK(base.result.has_reply);
  // of a ring never started: its base as set, nothing to fence
  auto idle = s.stand_in(prepared(s, request(FrontendReq::get_vring_base, wire::VringState{1, 0})));
  CHECK(idle.kind == Shadow::StandIn::Kind::answer);
  CHECK_FALSE(idle.fence);
  CHECK(idle.result.vring_base == 0);

  // set-up is recorded and acked (after the fence); only a back-end answers these
  auto call = request(FrontendReq::set_vring_call, VringFd{0, true});
  call.fds.push_back(make_eventfd());
  auto set = s.stand_in(prepared(s, std::move(call)));
  CHECK(set.kind == Shadow::StandIn::Kind::answer);
  CHECK(set.fence);
  CHECK(s.stand_in(prepared(s, request(FrontendReq::get_inflight_fd, wire::InflightDesc{0, 0, 1, 256, {}})))
            .kind == Shadow::StandIn::Kind::hold);

  // GET_CONFIG: what the back-end answered last, else held
  ConfigRequest cr;
  cr.header = wire::ConfigHeader{0, 8, 0};
  cr.data.resize(8);
  auto get_config = [&cr] { return request(FrontendReq::get_config, cr); };
  CHECK(s.stand_in(prepared(s, get_config())).kind == Shadow::StandIn::Kind::hold);
  proxy::ForwardResult answered;
  answered.has_reply = true;
  answered.body = {1, 2, 3};
  apply(s, get_config(), answered);
  auto cached = s.stand_in(prepared(s, get_config()));
  CHECK(cached.kind == Shadow::StandIn::Kind::answer);
  CHECK_FALSE(cached.fence);
  CHECK(cached.result.body == answered.body);
  s.config_changed();
  CHECK(s.stand_in(prepared(s, get_config())).kind == Shadow::StandIn::Kind::hold);

  // the answer is committed like the back-end's: the ring is stopped at 9
  s.commit(prepared(s, request(FrontendReq::get_vring_base, wire::VringState{0, 0})), base.result);
  CHECK_FALSE(s.rings().at(0).started);
  CHECK(s.rings().at(0).base == 9);
}

TEST_CASE("proxy shadow: a running packed ring is stood in for only from its in-flight region") {
  UniqueFd guest;
  Shadow s = running_shadow(guest, bit(feature::version_1) | bit(feature::protocol_features) |
                                       bit(feature::ring_packed));
  auto get_base = [] { return request(FrontendReq::get_vring_base, wire::VringState{0, 0}); };
  auto r = s.stand_in(prepared(s, get_base()));
  CHECK(r.kind == Shadow::StandIn::Kind::refuse);  // no region: nothing says where it stopped
  CHECK(r.why.find("packed") != std::string::npos);
  CHECK(s.any_started());

  // the back-end's region (GET_INFLIGHT_FD): two queues of 4096 bytes; queue 0
  // committed used position 5 with wrap counter 0
  auto region = make_memfd("inflight", 8192);
  REQUIRE(region);
  virtio::PackedInflightHeader h{};
  h.version = 1;
  h.desc_num = 256;
  h.used_idx = h.old_used_idx = 5;
  h.used_wrap_counter = h.old_used_wrap_counter = 0;
  REQUIRE(::pwrite(region.get(), &h, sizeof h, 0) == sizeof h);
  proxy::ForwardResult got;
  got.has_reply = true;
  got.inflight = wire::InflightDesc{8192, 0, 2, 256, {}};
  got.fd = share(std::move(region));
  s.commit(prepared(s, request(FrontendReq::get_inflight_fd, wire::InflightDesc{0, 0, 2, 256, {}})), got);
  auto from_region = s.stand_in(prepared(s, get_base()));
  REQUIRE(from_region.kind == Shadow::StandIn::Kind::answer);
  CHECK(from_region.fence);
  CHECK(from_region.result.vring_base == (5u | (5u << 16)));

  h.version = 0;  // a region the back-end never initialised is no answer
  REQUIRE(::pwrite(got.fd->get(), &h, sizeof h, 0) == sizeof h);
  CHECK(s.stand_in(prepared(s, get_base())).kind == Shadow::StandIn::Kind::refuse);
}

namespace {

/// A sealed-size memfd of `size` bytes as QEMU's vhost log is.
UniqueFd log_file(uint64_t size) {
  auto fd = make_memfd("vmm-log", size);
  REQUIRE(fd);
  return fd;
}

FrontendRequest log_base(uint64_t size, uint64_t offset, UniqueFd fd) {
  auto r = request(FrontendReq::set_log_base, wire::Log{size, offset});
  r.fds.push_back(std::move(fd));
  return r;
}

}  // namespace

TEST_CASE("proxy shadow: the VMM's SET_LOG_BASE is checked against its fd and its memory") {
  Shadow s(*proxy::vmm_offer(qsd_like()));
  s.set_protocol_features(bit(pf::reply_ack) | bit(pf::log_shmfd));
  UniqueFd guest;
  apply(s, mem_table(0, 0x7f00'0000'0000, guest));  // 1 MiB: 256 pages, 32 bytes of log
  CHECK(proxy::log_bytes_for(1 << 20) == 32);
  CHECK(proxy::log_bytes_for((1 << 20) + 1) == 33);
  auto refused = [&s](FrontendRequest r, const char* why) {
    auto p = s.prepare(std::move(r));
    REQUIRE_FALSE(p);
    CHECK(p.error().code == errc::invalid_payload);
    CHECK(p.error().request == "SET_LOG_BASE");
    CHECK_MESSAGE(p.error().detail.find(why) != std::string::npos, p.error().detail);
  };
  refused(log_base(0, 0, log_file(4096)), "mmap_size is 0");
  refused(log_base(8192, 0, log_file(4096)), "past the end of its file");
  refused(log_base(4096, 4096, log_file(4096)), "past the end of its file");
  refused(log_base(16, 0, log_file(4096)), "does not cover guest memory");
  refused(log_base(4096, 0, make_eventfd()), "not a memory file");
  CHECK(s.to_json()["log_bases"] == 0);
  CHECK_FALSE(s.log_fd());

  // QEMU's: a whole number of 64-bit words covering the memory, offset 0
  auto p = s.prepare(log_base(32, 0, log_file(32)));
  REQUIRE(p);
  REQUIRE(p->forward.fds.size() == 1);  // goes to the back-end with its fd
  CHECK(s.answer_due(*p));              // a reply of its own with LOG_SHMFD
  CHECK(s.prepare(log_base(64, 4032, log_file(4096))));  // an offset inside the file is fine
}

TEST_CASE("proxy shadow: a VMM's dirty log is kept while it logs and dropped when it stops") {
  UniqueFd guest;
  Shadow s = running_shadow(guest);
  s.set_protocol_features(bit(pf::reply_ack) | bit(pf::config) | bit(pf::log_shmfd));
  const uint64_t vmm_base = 0x7f00'0000'0000;
  // QEMU's order when migration starts: SET_LOG_BASE, SET_FEATURES + LOG_ALL,
  // SET_VRING_ADDR with the LOG flag for every ring
  auto log = log_file(4096);
  const int log_ino_fd = ::dup(log.get());
  proxy::ForwardResult reply;
  reply.has_reply = true;
  apply(s, log_base(4096, 0, std::move(log)), reply);
  CHECK_FALSE(s.logging());  // no LOG_ALL yet
  const uint64_t features = bit(feature::version_1) | bit(feature::protocol_features) | bit(feature::log_all);
  apply(s, request(FrontendReq::set_features, wire::U64{features}));
  CHECK(s.logging());
  REQUIRE(s.log_fd());
  CHECK(s.log().mmap_size == 4096);
  struct stat a {}, b {};
  REQUIRE(::fstat(s.log_fd()->get(), &a) == 0);
  REQUIRE(::fstat(log_ino_fd, &b) == 0);
  CHECK(a.st_ino == b.st_ino);  // the VMM's own log, kept for a replay
  ::close(log_ino_fd);
  // log_guest_addr is a guest-physical address: it passes unchanged while
  // the ring's user addresses are translated
  wire::VringAddr a0{0, wire::vring_addr_flag_log, vmm_base, vmm_base + 0x2000, vmm_base + 0x1000, 0x2000};
  auto ring = apply(s, request(FrontendReq::set_vring_addr, a0));
  const auto& sent = std::get<wire::VringAddr>(ring.forward.payload);
  CHECK(sent.flags == wire::vring_addr_flag_log);
  CHECK(sent.log == 0x2000);
  CHECK(sent.used == proxy::proxy_user_base + 0x2000);
  CHECK(s.backend_addr(0)->log == 0x2000);  // a snapshot's restart sends the same
  CHECK(s.backend_addr(0)->flags == wire::vring_addr_flag_log);
  auto j = s.to_json();
  CHECK(j["logging"] == true);
  CHECK(j["log"] == 4096);
  CHECK(j["log_bases"] == 1);

  // the back-end away: SET_LOG_BASE is answered (its own reply) once fenced
  auto away = s.stand_in(s.prepare(log_base(4096, 0, log_file(4096))).value());
  CHECK(away.kind == Shadow::StandIn::Kind::answer);
  CHECK(away.fence);
  CHECK(away.result.has_reply);
  CHECK(away.result.body.size() == 8);

  // migration over or cancelled: features without LOG_ALL; nothing stale is kept
  apply(s, request(FrontendReq::set_features, wire::U64{features & ~bit(feature::log_all)}));
  CHECK_FALSE(s.logging());
  CHECK_FALSE(s.log_fd());
  CHECK(s.to_json()["log"].is_null());
}

TEST_CASE("proxy log: marking a VMM's log dirty sets every bit of its range and nothing else") {
  auto fd = log_file(4096);
  REQUIRE(proxy::mark_all_dirty(wire::Log{100, 7}, fd.get()));
  std::vector<uint8_t> back(4096);
  REQUIRE(::pread(fd.get(), back.data(), back.size(), 0) == 4096);
  for (size_t i = 0; i < back.size(); ++i) {
    CAPTURE(i);
    CHECK(back[i] == (i >= 7 && i < 107 ? 0xff : 0));
  }
}
