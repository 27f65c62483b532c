#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "protocol/frontend_request.hpp"
#include "tests/support.hpp"

using vufront::errc;
using vufront::FrontendReq;
using vufront::FrontendRequest;
using vufront::Message;
using vufront::Negotiated;
using vufront::test::FdCount;
namespace wire = vufront::wire;
namespace pf = vufront::protocol_feature;
namespace ft = vufront::feature;

namespace {

constexpr uint32_t kV = vufront::flag_version;
constexpr uint32_t kNeedReply = vufront::flag_need_reply;
constexpr uint64_t kAllBits = ~uint64_t{0};

/// Everything offered and acked, 4 queues.
Negotiated full() {
  Negotiated n;
  n.offered_features = kAllBits;
  n.acked_features = kAllBits;
  n.offered_protocol_features = kAllBits;
  n.acked_protocol_features = kAllBits;
  n.num_queues = 4;
  n.max_mem_slots = 32;
  return n;
}

/// Nothing negotiated yet: what a server knows before SET_FEATURES.
Negotiated fresh() {
  Negotiated n;
  n.offered_features = vufront::bit(ft::version_1) | vufront::bit(ft::protocol_features);
  n.offered_protocol_features = vufront::bit(pf::mq) | vufront::bit(pf::reply_ack);
  n.num_queues = 2;
  return n;
}

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  std::vector<uint8_t> out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  return out;
}

std::vector<uint8_t> u64(uint64_t v) { return bytes(wire::U64{v}); }
std::vector<uint8_t> state(uint32_t index, uint32_t num) {
  return bytes(wire::VringState{index, num});
}

std::vector<uint8_t> operator+(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Message msg(uint32_t code, uint32_t flags, std::vector<uint8_t> body, size_t nfds = 0) {
  Message m;
  m.header = {code, flags, static_cast<uint32_t>(body.size())};
  m.body = std::move(body);
  for (size_t i = 0; i < nfds; ++i)
    m.fds.push_back(vufront::make_eventfd());
  return m;
}

wire::MemoryRegion region(uint64_t gpa, uint64_t size) {
  return wire::MemoryRegion{gpa, size, 0x7f0000000000 + gpa, 0};
}

std::vector<uint8_t> mem_table(uint32_t n) {
  std::vector<uint8_t> out = bytes(wire::MemoryTableHeader{n, 0});
  for (uint32_t i = 0; i < n; ++i)
    out = out + bytes(region(uint64_t{i} << 30, 1 << 20));
  return out;
}

std::vector<uint8_t> single(const wire::MemoryRegion& r) {
  return bytes(wire::SingleMemoryRegion{0, r});
}

std::vector<uint8_t> config(uint32_t offset, uint32_t size, uint32_t flags) {
  return bytes(wire::ConfigHeader{offset, size, flags}) + std::vector<uint8_t>(size, 0xab);
}

/// A well-formed message for each request (under full()), with its fds.
Message valid(FrontendReq r) {
  using R = FrontendReq;
  const auto c = static_cast<uint32_t>(r);
  switch (r) {
    case R::set_features:
    case R::set_protocol_features:
    case R::send_rarp:
    case R::net_set_mtu:
    case R::close_crypto_session: return msg(c, kV, u64(1500));
    case R::set_status: return msg(c, kV, u64(0x0f));
    case R::set_mem_table: return msg(c, kV, mem_table(2), 2);
    case R::set_log_base: return msg(c, kV, bytes(wire::Log{4096, 0}), 1);
    case R::set_log_fd:
    case R::set_backend_req_fd:
    case R::gpu_set_socket: return msg(c, kV, {}, 1);
    case R::set_vring_num: return msg(c, kV, state(3, 256));
    case R::set_vring_addr:
      return msg(c, kV, bytes(wire::VringAddr{1, 0, 0x1000, 0x2000, 0x3000, 0}));
    case R::set_vring_base: return msg(c, kV, state(2, 0x8000'8000));
    case R::get_vring_base:
    case R::vring_kick:
    case R::get_vring_base_skip_drain: return msg(c, kV, state(1, 0));
    case R::set_vring_kick:
    case R::set_vring_call:
    case R::set_vring_err: return msg(c, kV, u64(3), 1);
    case R::set_vring_enable:
    case R::set_vring_endian: return msg(c, kV, state(0, 1));
    case R::iotlb_msg: return msg(c, kV, bytes(wire::Iotlb{0x1000, 0x1000, 0x5000, 3, 2, {}}));
    case R::get_config: return msg(c, kV, config(0, 60, 1));
    case R::set_config: return msg(c, kV, config(4, 8, 0));
    case R::create_crypto_session: return msg(c, kV, std::vector<uint8_t>(40));
    case R::get_inflight_fd: return msg(c, kV, bytes(wire::InflightDesc{0, 0, 2, 256, {}}));
    case R::set_inflight_fd: return msg(c, kV, bytes(wire::InflightDesc{8192, 0, 2, 256, {}}), 1);
    case R::add_mem_reg: return msg(c, kV, single(region(1 << 30, 1 << 20)), 1);
    case R::rem_mem_reg: return msg(c, kV, single(region(1 << 30, 1 << 20)));
    case R::get_shared_object: return msg(c, kV, bytes(wire::SharedObject{{1, 2, 3}}));
    case R::set_device_state_fd: return msg(c, kV, bytes(wire::DeviceStateTransfer{1, 0}), 1);
    default: return msg(c, kV, {});
  }
}

}  // namespace

TEST_CASE("decode_frontend_request: the bounds for Connection::receive") {
  CHECK(vufront::frontend_request_max_body == 4096);
  CHECK(vufront::frontend_request_max_fds == 8);
}

TEST_CASE("decode_frontend_request: every request decodes, with its payload and fds") {
  FdCount count;
  for (uint32_t code = 1; code <= vufront::frontend_req_max; ++code) {
    const FrontendReq r = *vufront::frontend_req_from_code(code);
    CAPTURE(vufront::name(r));
    Negotiated ctx = full();
    if (r == FrontendReq::postcopy_advise)
      ctx.acked_protocol_features &= ~vufront::bit(pf::configure_mem_slots);
    Message m = valid(r);
    const size_t nfds = m.fds.size();
    auto d = vufront::decode_frontend_request(std::move(m), ctx);
    if (r == FrontendReq::create_crypto_session) {
      REQUIRE_FALSE(d.ok());
      CHECK(d.error().code == errc::not_negotiated);
      continue;
    }
    REQUIRE_MESSAGE(d.ok(), d.error().message());
    CHECK(d->req == r);
    CHECK(d->flags == kV);
    CHECK_FALSE(d->need_reply);
    CHECK(d->fds.size() == nfds);
    for (const auto& fd : d->fds)
      CHECK(fd.valid());
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("decode_frontend_request: typed payloads") {
  const Negotiated ctx = full();
  SUBCASE("SET_MEM_TABLE: regions in order, one fd each") {
    auto d = vufront::decode_frontend_request(valid(FrontendReq::set_mem_table), ctx);
    REQUIRE(d.ok());
    const auto& t = std::get<vufront::MemoryTable>(d->payload);
    REQUIRE(t.regions.size() == 2);
    CHECK(t.regions[1].guest_phys_addr == (uint64_t{1} << 30));
    CHECK(t.regions[1].memory_size == (1u << 20));
    CHECK(d->fds.size() == 2);
  }
  SUBCASE("SET_VRING_KICK with and without NOFD") {
    auto d = vufront::decode_frontend_request(msg(12, kV, u64(3), 1), ctx);
    REQUIRE(d.ok());
    CHECK(std::get<vufront::VringFd>(d->payload).index == 3);
    CHECK(std::get<vufront::VringFd>(d->payload).has_fd);
    auto n = vufront::decode_frontend_request(msg(13, kV, u64(0x102)), ctx);
    REQUIRE(n.ok());
    CHECK(std::get<vufront::VringFd>(n->payload).index == 2);
    CHECK_FALSE(std::get<vufront::VringFd>(n->payload).has_fd);
    CHECK(n->fds.empty());
  }
  SUBCASE("GET/SET_CONFIG keep header and data") {
    auto d = vufront::decode_frontend_request(valid(FrontendReq::set_config), ctx);
    REQUIRE(d.ok());
    const auto& c = std::get<vufront::ConfigRequest>(d->payload);
    CHECK(c.header.offset == 4);
    CHECK(c.header.size == 8);
    CHECK(c.data == std::vector<uint8_t>(8, 0xab));
  }
  SUBCASE("scalars and structs") {
    auto f = vufront::decode_frontend_request(msg(2, kV, u64(0x1'4000'0000)), ctx);
    REQUIRE(f.ok());
    CHECK(std::get<wire::U64>(f->payload).value == 0x1'4000'0000);
    auto s = vufront::decode_frontend_request(valid(FrontendReq::set_vring_base), ctx);
    REQUIRE(s.ok());
    CHECK(std::get<wire::VringState>(s->payload).num == 0x8000'8000);
    auto a = vufront::decode_frontend_request(valid(FrontendReq::set_vring_addr), ctx);
    REQUIRE(a.ok());
    CHECK(std::get<wire::VringAddr>(a->payload).used == 0x2000);
    auto r = vufront::decode_frontend_request(valid(FrontendReq::add_mem_reg), ctx);
    REQUIRE(r.ok());
    CHECK(std::get<wire::MemoryRegion>(r->payload).guest_phys_addr == (1u << 30));
    auto t = vufront::decode_frontend_request(valid(FrontendReq::set_device_state_fd), ctx);
    REQUIRE(t.ok());
    CHECK(std::get<wire::DeviceStateTransfer>(t->payload).direction == wire::device_state_load);
    auto i = vufront::decode_frontend_request(valid(FrontendReq::get_inflight_fd), ctx);
    REQUIRE(i.ok());
    CHECK(std::get<wire::InflightDesc>(i->payload).queue_size == 256);
  }
  SUBCASE("the parts overload takes the body's length, not the header's") {
    auto d = vufront::decode_frontend_request(wire::Header{8, kV, 999}, state(1, 128), {}, ctx);
    REQUIRE(d.ok());
    CHECK(std::get<wire::VringState>(d->payload).num == 128);
  }
}

TEST_CASE("decode_frontend_request: need_reply follows NEED_REPLY, REPLY_ACK and native replies") {
  Negotiated ctx = full();
  auto set = vufront::decode_frontend_request(msg(8, kV | kNeedReply, state(0, 64)), ctx);
  REQUIRE(set.ok());
  CHECK(set->need_reply);
  auto get = vufront::decode_frontend_request(msg(11, kV | kNeedReply, state(0, 0)), ctx);
  REQUIRE(get.ok());
  CHECK_FALSE(get->need_reply);  // GET_VRING_BASE answers anyway
  ctx.acked_protocol_features &= ~vufront::bit(pf::reply_ack);
  auto no_ack = vufront::decode_frontend_request(msg(8, kV | kNeedReply, state(0, 64)), ctx);
  REQUIRE(no_ack.ok());
  CHECK_FALSE(no_ack->need_reply);
  CHECK(vufront::has_native_reply(FrontendReq::set_log_base, vufront::bit(pf::log_shmfd)));
  CHECK_FALSE(vufront::has_native_reply(FrontendReq::set_log_base, 0));
  CHECK_FALSE(vufront::has_native_reply(FrontendReq::set_mem_table, kAllBits));
}

TEST_CASE("decode_frontend_request: REM_MEM_REG tolerates one fd and closes it") {
  FdCount count;
  {
    auto d = vufront::decode_frontend_request(
        msg(38, kV, single(region(0, 4096)), 1), full());
    REQUIRE(d.ok());
    CHECK(d->fds.empty());
    CHECK(count.open_now() == 0);
  }
  auto two = vufront::decode_frontend_request(msg(38, kV, single(region(0, 4096)), 2), full());
  REQUIRE_FALSE(two.ok());
  CHECK(two.error().message() == "REM_MEM_REG: bad_fds: carries 2 fds, expected 0");
  CHECK(count.leaked() == 0);
}

namespace {

struct Bad {
  const char* what;
  uint32_t code;
  uint32_t flags;
  std::vector<uint8_t> body;
  size_t nfds;
  Negotiated ctx;
  errc code_expected;
  const char* message;
};

/// Each case is refused with its code and exact message, its fds closed.
void check_refused(const std::vector<Bad>& cases) {
  for (const Bad& b : cases) {
    CAPTURE(b.what);
    FdCount count;
    auto d = vufront::decode_frontend_request(msg(b.code, b.flags, b.body, b.nfds), b.ctx);
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().code == b.code_expected);
    CHECK(d.error().message() == b.message);
    CHECK(count.leaked() == 0);
  }
}

/// Flags, codes, sizes and fd counts.
std::vector<Bad> framing_cases() {
  Negotiated few_slots = full();
  few_slots.max_mem_slots = 2;
  return {
      {"reply bit", 8, kV | vufront::flag_reply, state(0, 8), 0, full(), errc::bad_flags,
       "SET_VRING_NUM: bad_flags: flags 0x5 (want version 1, no REPLY, only NEED_REPLY)"},
      {"version 2", 1, 2, {}, 0, full(), errc::bad_flags,
       "GET_FEATURES: bad_flags: flags 0x2 (want version 1, no REPLY, only NEED_REPLY)"},
      {"reserved bit", 1, kV | 0x10, {}, 1, full(), errc::bad_flags,
       "GET_FEATURES: bad_flags: flags 0x11 (want version 1, no REPLY, only NEED_REPLY)"},
      {"unknown code", 1023, kV, {}, 1, full(), errc::unknown_request,
       "UNKNOWN(1023): unknown_request: unknown front-end request code 1023"},
      {"code 0", 0, kV, {}, 0, full(), errc::unknown_request,
       "UNKNOWN(0): unknown_request: unknown front-end request code 0"},
      {"short SET_VRING_NUM", 8, kV, std::vector<uint8_t>(4), 0, full(), errc::bad_size,
       "SET_VRING_NUM: bad_size: payload is 4 bytes, expected 8"},
      {"GET_FEATURES with a body", 1, kV, u64(0), 0, full(), errc::bad_size,
       "GET_FEATURES: bad_size: payload is 8 bytes, expected 0"},
      {"long SET_VRING_ADDR", 9, kV, std::vector<uint8_t>(48), 0, full(), errc::bad_size,
       "SET_VRING_ADDR: bad_size: payload is 48 bytes, expected 40"},
      {"mem table short of its header", 5, kV, std::vector<uint8_t>(4), 0, full(), errc::bad_size,
       "SET_MEM_TABLE: bad_size: payload is 4 bytes, expected 8"},
      {"mem table of 0 regions", 5, kV, mem_table(0), 0, full(), errc::invalid_payload,
       "SET_MEM_TABLE: invalid_payload: 0 regions (1..8 allowed)"},
      {"mem table of 9 regions", 5, kV, mem_table(9), 8, full(), errc::invalid_payload,
       "SET_MEM_TABLE: invalid_payload: 9 regions (1..8 allowed)"},
      {"mem table above max_mem_slots", 5, kV, mem_table(3), 3, few_slots,
       errc::invalid_payload, "SET_MEM_TABLE: invalid_payload: 3 regions (1..2 allowed)"},
      {"mem table size inconsistent", 5, kV, mem_table(2) + std::vector<uint8_t>(8), 2, full(),
       errc::bad_size, "SET_MEM_TABLE: bad_size: payload is 80 bytes, expected 72"},
      {"mem table fd per region", 5, kV, mem_table(2), 1, full(), errc::bad_fds,
       "SET_MEM_TABLE: bad_fds: carries 1 fds, expected 2"},
      {"mem table empty region", 5, kV,
       bytes(wire::MemoryTableHeader{1, 0}) + bytes(region(0, 0)), 1, full(),
       errc::invalid_payload, "SET_MEM_TABLE: invalid_payload: region 0: memory_size is 0"},
      {"config size inconsistent", 24, kV, config(0, 8, 0) + std::vector<uint8_t>(1), 0, full(),
       errc::bad_size, "GET_CONFIG: bad_size: payload is 21 bytes, expected 20"},
      {"config too big", 25, kV, config(0, 260, 0), 0, full(), errc::invalid_payload,
       "SET_CONFIG: invalid_payload: size 260 is above 256"},
      {"config flags", 25, kV, config(0, 4, 2), 0, full(), errc::invalid_payload,
       "SET_CONFIG: invalid_payload: flags 0x2 (0 or 1 allowed)"},
      {"kick without fd", 12, kV, u64(1), 0, full(), errc::bad_fds,
       "SET_VRING_KICK: bad_fds: carries 0 fds, expected 1"},
      {"call with NOFD and an fd", 13, kV, u64(0x101), 1, full(), errc::bad_fds,
       "SET_VRING_CALL: bad_fds: carries 1 fds, expected 0"},
      {"err reserved bits", 14, kV, u64(0x201), 1, full(), errc::invalid_payload,
       "SET_VRING_ERR: invalid_payload: reserved bits set in the fd word 0x201"},
      {"fd on SET_VRING_NUM", 8, kV, state(0, 8), 1, full(), errc::bad_fds,
       "SET_VRING_NUM: bad_fds: carries 1 fds, expected 0"},
      {"SET_BACKEND_REQ_FD without fd", 21, kV, {}, 0, full(), errc::bad_fds,
       "SET_BACKEND_REQ_FD: bad_fds: carries 0 fds, expected 1"},
      {"SET_LOG_BASE without fd", 6, kV, bytes(wire::Log{4096, 0}), 0, full(), errc::bad_fds,
       "SET_LOG_BASE: bad_fds: carries 0 fds, expected 1"},
      {"SET_INFLIGHT_FD two fds", 32, kV, bytes(wire::InflightDesc{4096, 0, 1, 8, {}}), 2,
       full(), errc::bad_fds, "SET_INFLIGHT_FD: bad_fds: carries 2 fds, expected 1"},
      {"SET_DEVICE_STATE_FD without fd", 42, kV, bytes(wire::DeviceStateTransfer{0, 0}), 0,
       full(), errc::bad_fds, "SET_DEVICE_STATE_FD: bad_fds: carries 0 fds, expected 1"},
      {"ADD_MEM_REG without fd", 37, kV, single(region(0, 4096)), 0, full(), errc::bad_fds,
       "ADD_MEM_REG: bad_fds: carries 0 fds, expected 1"},
  };
}

/// Ring indices, values and feature gating.
std::vector<Bad> value_cases() {
  Negotiated no_log_all = full();
  no_log_all.acked_features &= ~vufront::bit(ft::log_all);
  return {
      {"index out of range", 8, kV, state(4, 8), 0, full(), errc::invalid_payload,
       "SET_VRING_NUM: invalid_payload: vring 4 >= queue count 4"},
      {"kick index out of range", 12, kV, u64(9), 1, full(), errc::invalid_payload,
       "SET_VRING_KICK: invalid_payload: vring 9 >= queue count 4"},
      {"addr index out of range", 9, kV, bytes(wire::VringAddr{7, 0, 0, 0, 0, 0}), 0, full(),
       errc::invalid_payload, "SET_VRING_ADDR: invalid_payload: vring 7 >= queue count 4"},
      {"queue size 0", 8, kV, state(0, 0), 0, full(), errc::invalid_payload,
       "SET_VRING_NUM: invalid_payload: queue size 0 (1..32768 allowed)"},
      {"GET_VRING_BASE num", 11, kV, state(0, 1), 0, full(), errc::invalid_payload,
       "GET_VRING_BASE: invalid_payload: num must be 0, is 1"},
      {"enable 2", 18, kV, state(0, 2), 0, full(), errc::invalid_payload,
       "SET_VRING_ENABLE: invalid_payload: num must be 0 or 1, is 2"},
      {"addr LOG without LOG_ALL", 9, kV, bytes(wire::VringAddr{0, 1, 0, 0, 0, 0}), 0,
       no_log_all, errc::invalid_payload,
       "SET_VRING_ADDR: invalid_payload: LOG flag without LOG_ALL"},
      {"addr unknown flags", 9, kV, bytes(wire::VringAddr{0, 6, 0, 0, 0, 0}), 0, full(),
       errc::invalid_payload, "SET_VRING_ADDR: invalid_payload: unknown flag bits 0x6"},
      {"features not offered", 2, kV, u64(vufront::bit(33)), 0, fresh(), errc::invalid_payload,
       "SET_FEATURES: invalid_payload: acks features that were not offered: 0x200000000"},
      {"protocol features not offered", 16, kV, u64(0x21), 0, fresh(), errc::invalid_payload,
       "SET_PROTOCOL_FEATURES: invalid_payload: acks protocol features that were not offered: "
       "0x20"},
      {"status above a byte", 39, kV, u64(0x100), 0, full(), errc::invalid_payload,
       "SET_STATUS: invalid_payload: status 0x100 is above 0xff"},
      {"region wraps", 37, kV, single(wire::MemoryRegion{~uint64_t{0} - 10, 4096, 0, 0}), 1,
       full(), errc::invalid_payload,
       "ADD_MEM_REG: invalid_payload: range of 0x1000 bytes wraps (gpa 0xfffffffffffffff5, "
       "user 0x0, mmap_offset 0x0)"},
      {"device state direction", 42, kV, bytes(wire::DeviceStateTransfer{2, 0}), 1, full(),
       errc::invalid_payload, "SET_DEVICE_STATE_FD: invalid_payload: bad direction 2 or phase 0"},
      {"inflight zero queues", 31, kV, bytes(wire::InflightDesc{0, 0, 0, 8, {}}), 0, full(),
       errc::invalid_payload,
       "GET_INFLIGHT_FD: invalid_payload: num_queues and queue_size must be non-zero"},
      {"GET_QUEUE_NUM without MQ", 17, kV, {}, 0, Negotiated{}, errc::not_negotiated,
       "GET_QUEUE_NUM: not_negotiated: needs protocol feature MQ, which was not negotiated"},
      {"GET_CONFIG without CONFIG", 24, kV, config(0, 8, 0), 0, fresh(), errc::not_negotiated,
       "GET_CONFIG: not_negotiated: needs protocol feature CONFIG, which was not negotiated"},
      {"ADD_MEM_REG without CONFIGURE_MEM_SLOTS", 37, kV, single(region(0, 4096)), 1, fresh(),
       errc::not_negotiated,
       "ADD_MEM_REG: not_negotiated: needs protocol feature CONFIGURE_MEM_SLOTS, which was not "
       "negotiated"},
      {"SET_BACKEND_REQ_FD without BACKEND_REQ", 21, kV, {}, 1, fresh(), errc::not_negotiated,
       "SET_BACKEND_REQ_FD: not_negotiated: needs protocol feature BACKEND_REQ, which was not "
       "negotiated"},
      {"SET_INFLIGHT_FD without INFLIGHT_SHMFD", 32, kV,
       bytes(wire::InflightDesc{4096, 0, 1, 8, {}}), 1, fresh(), errc::not_negotiated,
       "SET_INFLIGHT_FD: not_negotiated: needs protocol feature INFLIGHT_SHMFD, which was not "
       "negotiated"},
      {"GET_STATUS without STATUS", 40, kV, {}, 0, fresh(), errc::not_negotiated,
       "GET_STATUS: not_negotiated: needs protocol feature STATUS, which was not negotiated"},
      {"RESET_DEVICE without RESET_DEVICE", 34, kV, {}, 0, fresh(), errc::not_negotiated,
       "RESET_DEVICE: not_negotiated: needs protocol feature RESET_DEVICE, which was not "
       "negotiated"},
      {"SET_DEVICE_STATE_FD without DEVICE_STATE", 42, kV,
       bytes(wire::DeviceStateTransfer{0, 0}), 1, fresh(), errc::not_negotiated,
       "SET_DEVICE_STATE_FD: not_negotiated: needs protocol feature DEVICE_STATE, which was not "
       "negotiated"},
      {"SET_VRING_ENABLE without bit 30 acked", 18, kV, state(0, 1), 0, fresh(),
       errc::not_negotiated,
       "SET_VRING_ENABLE: not_negotiated: needs feature PROTOCOL_FEATURES acked with "
       "SET_FEATURES, which it was not"},
      {"GET_PROTOCOL_FEATURES without bit 30 offered", 15, kV, {}, 0, Negotiated{},
       errc::not_negotiated,
       "GET_PROTOCOL_FEATURES: not_negotiated: needs feature PROTOCOL_FEATURES offered, which it "
       "was not"},
      {"IOTLB_MSG without ACCESS_PLATFORM", 22, kV, bytes(wire::Iotlb{}), 0, fresh(),
       errc::not_negotiated,
       "IOTLB_MSG: not_negotiated: needs feature ACCESS_PLATFORM acked with SET_FEATURES, which "
       "it was not"},
      {"POSTCOPY_ADVISE with mem slots", 28, kV, {}, 0, full(), errc::not_negotiated,
       "POSTCOPY_ADVISE: not_negotiated: postcopy is not allowed with CONFIGURE_MEM_SLOTS"},
      {"CREATE_CRYPTO_SESSION", 26, kV, std::vector<uint8_t>(16), 0, full(),
       errc::not_negotiated,
       "CREATE_CRYPTO_SESSION: not_negotiated: its payload is not supported by this codec"},
  };
}

}  // namespace

TEST_CASE("decode_frontend_request: malformed framing is refused and the fds closed") {
  check_refused(framing_cases());
}

TEST_CASE("decode_frontend_request: bad indices, values and gates are refused, fds closed") {
  check_refused(value_cases());
}

TEST_CASE("frontend replies: byte for byte") {
  using Bytes = std::vector<uint8_t>;
  const auto header = [](uint32_t code, uint32_t size) {
    return bytes(wire::Header{code, 0x5, size});
  };
  SUBCASE("u64, ack and memory slots") {
    const auto r = vufront::encode_u64_reply(FrontendReq::get_features, 0x1'4000'0000);
    CHECK(r.fd == -1);
    CHECK(r.bytes() == Bytes{1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x40, 1, 0, 0, 0});
    CHECK(vufront::encode_ack(FrontendReq::set_mem_table, 0).bytes() ==
          header(5, 8) + Bytes(8, 0));
    CHECK(vufront::encode_ack(FrontendReq::set_vring_kick, 1).bytes() ==
          header(12, 8) + Bytes{1, 0, 0, 0, 0, 0, 0, 0});
    CHECK(vufront::encode_mem_slots_reply(32).bytes() ==
          header(36, 8) + Bytes{32, 0, 0, 0, 0, 0, 0, 0});
  }
  SUBCASE("vring base") {
    CHECK(vufront::encode_vring_base_reply(2, 0x8000'0005).bytes() ==
          header(11, 8) + Bytes{2, 0, 0, 0, 5, 0, 0, 0x80});
    CHECK(vufront::encode_vring_base_reply(1, 7, true).bytes() ==
          header(45, 8) + Bytes{1, 0, 0, 0, 7, 0, 0, 0});
  }
  SUBCASE("config, and its refusal") {
    auto c = vufront::encode_config_reply(wire::ConfigHeader{4, 3, 0}, Bytes{9, 8, 7});
    REQUIRE(c.ok());
    CHECK(c->bytes() == header(24, 15) + Bytes{4, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 8, 7});
    auto bad = vufront::encode_config_reply(wire::ConfigHeader{0, 4, 0}, Bytes{1});
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == errc::invalid_argument);
    CHECK(vufront::encode_config_refusal().bytes() == header(24, 0));
  }
  SUBCASE("inflight with its fd") {
    const auto r = vufront::encode_inflight_reply(wire::InflightDesc{0x3000, 0, 2, 128, {}}, 17);
    CHECK(r.fd == 17);
    CHECK(r.bytes() == header(31, 24) + Bytes{0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                              0, 0,    0, 0, 2, 0, 128, 0, 0, 0, 0, 0});
  }
  SUBCASE("shmem config") {
    wire::ShmemConfig s{};
    s.nregions = 1;
    s.sizes[0] = 0x100000;
    const auto r = vufront::encode_shmem_config_reply(s);
    REQUIRE(r.body.size() == 2056);
    const Bytes wire_bytes = r.bytes();
    REQUIRE(wire_bytes.size() == 12 + 2056);
    CHECK(Bytes(wire_bytes.begin(), wire_bytes.begin() + 20) ==
          header(44, 2056) + Bytes{1, 0, 0, 0, 0, 0, 0, 0});
    CHECK(r.body[10] == 0x10);
  }
  SUBCASE("device state: NOFD, own fd, error") {
    CHECK(vufront::encode_device_state_reply(0).bytes() ==
          header(42, 8) + Bytes{0, 1, 0, 0, 0, 0, 0, 0});
    const auto own = vufront::encode_device_state_reply(0, 9);
    CHECK(own.fd == 9);
    CHECK(own.bytes() == header(42, 8) + Bytes(8, 0));
    const auto err = vufront::encode_device_state_reply(1, 9);
    CHECK(err.fd == -1);
    CHECK(err.bytes() == header(42, 8) + Bytes{1, 1, 0, 0, 0, 0, 0, 0});
  }
}

TEST_CASE("frontend replies: send_reply over a socket, and a served request end to end") {
  FdCount count;
  {
    auto sp = vufront::make_socketpair();
    REQUIRE(sp.first.valid());
    vufront::Connection server(std::move(sp.first));
    vufront::Connection client(std::move(sp.second));
    const auto deadline = vufront::deadline_in(std::chrono::seconds(5));

    // the client sends GET_INFLIGHT_FD; the server decodes it and answers with an fd
    const auto desc = bytes(wire::InflightDesc{0, 0, 2, 64, {}});
    REQUIRE(client.send(31, kV, desc.data(), desc.size(), nullptr, 0, deadline, "test").ok());
    auto in = server.receive(vufront::frontend_request_max_body,
                             vufront::frontend_request_max_fds, deadline, "request");
    REQUIRE(in.ok());
    auto req = vufront::decode_frontend_request(std::move(*in), full());
    REQUIRE_MESSAGE(req.ok(), req.error().message());
    CHECK(std::get<wire::InflightDesc>(req->payload).num_queues == 2);

    vufront::UniqueFd memfd = vufront::make_memfd("inflight", 4096);
    REQUIRE(memfd.valid());
    const auto reply =
        vufront::encode_inflight_reply(wire::InflightDesc{4096, 0, 2, 64, {}}, memfd.get());
    REQUIRE(vufront::send_reply(server, reply, deadline).ok());
    auto got = client.receive(64, 1, deadline, "reply");
    REQUIRE(got.ok());
    CHECK(got->header.request == 31);
    CHECK(got->header.flags == 0x5);
    CHECK(got->body == reply.body);
    REQUIRE(got->fds.size() == 1);
    CHECK(got->fds[0].valid());
  }
  CHECK(count.leaked() == 0);
}
