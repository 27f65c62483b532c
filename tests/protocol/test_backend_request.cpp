#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "protocol/backend_request.hpp"
#include "tests/support.hpp"

using vufront::BackendReq;
using vufront::BackendRequest;
using vufront::errc;
using vufront::Message;
using vufront::test::FdCount;
namespace wire = vufront::wire;
namespace pf = vufront::protocol_feature;

namespace {

const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
constexpr uint32_t kV = vufront::flag_version;
constexpr uint32_t kNeedReply = vufront::flag_need_reply;

constexpr uint64_t kAll = vufront::bit(pf::backend_req) | vufront::bit(pf::reply_ack) |
                          vufront::bit(pf::config) | vufront::bit(pf::host_notifier) |
                          vufront::bit(pf::inband_notifications) |
                          vufront::bit(pf::shared_object) | vufront::bit(pf::shmem);

template <class T>
std::vector<uint8_t> bytes(const T& v) {
  std::vector<uint8_t> out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  return out;
}

Message msg(uint32_t code, uint32_t flags, std::vector<uint8_t> body, size_t nfds = 0) {
  Message m;
  m.header = {code, flags, static_cast<uint32_t>(body.size())};
  m.body = std::move(body);
  for (size_t i = 0; i < nfds; ++i)
    m.fds.push_back(vufront::make_eventfd());
  return m;
}

wire::ShmemMap shmem(uint64_t fd_offset, uint64_t shm_offset, uint64_t len, uint64_t flags) {
  wire::ShmemMap m{};
  m.shmid = 3;
  m.fd_offset = fd_offset;
  m.shm_offset = shm_offset;
  m.len = len;
  m.flags = flags;
  return m;
}

wire::VringArea area(uint64_t word, uint64_t size, uint64_t offset) {
  return wire::VringArea{word, size, offset};
}

}  // namespace

TEST_CASE("decode_backend_request: the bounds for Connection::receive") {
  CHECK(vufront::backend_request_max_body == 40);
  CHECK(vufront::backend_request_max_fds == 8);
}

TEST_CASE("decode_backend_request: valid requests") {
  FdCount count;
  SUBCASE("CONFIG_CHANGE_MSG without NEED_REPLY") {
    auto r = vufront::decode_backend_request(msg(2, kV, {}), kAll);
    REQUIRE(r.ok());
    CHECK(r->type == BackendReq::config_change_msg);
    CHECK_FALSE(r->need_reply);
    CHECK(std::holds_alternative<std::monostate>(r->payload));
    CHECK(r->fds.empty());
  }
  SUBCASE("VRING_CALL with NEED_REPLY") {
    auto r = vufront::decode_backend_request(
        msg(4, kV | kNeedReply, bytes(wire::VringState{255, 0})), kAll);
    REQUIRE(r.ok());
    CHECK(r->type == BackendReq::vring_call);
    CHECK(r->need_reply);
    CHECK(r->flags == (kV | kNeedReply));
    CHECK(std::get<wire::VringState>(r->payload).index == 255);
  }
  SUBCASE("VRING_ERR") {
    auto r = vufront::decode_backend_request(msg(5, kV, bytes(wire::VringState{1, 0})), kAll);
    REQUIRE(r.ok());
    CHECK(r->type == BackendReq::vring_err);
  }
  SUBCASE("SHARED_OBJECT_LOOKUP always needs a reply") {
    wire::SharedObject so{};
    for (int i = 0; i < 16; ++i)
      so.uuid[i] = static_cast<uint8_t>(i);
    auto r = vufront::decode_backend_request(msg(8, kV, bytes(so)), kAll);
    REQUIRE(r.ok());
    CHECK(r->need_reply);
    CHECK(std::get<wire::SharedObject>(r->payload).uuid[15] == 15);
    auto add = vufront::decode_backend_request(msg(6, kV, bytes(so)), kAll);
    REQUIRE(add.ok());
    CHECK_FALSE(add->need_reply);
  }
  SUBCASE("SHMEM_MAP with its fd; padding ignored") {
    auto m = shmem(kPage, 2 * kPage, kPage, 1);
    m.padding[3] = 0xaa;
    auto r = vufront::decode_backend_request(msg(9, kV | kNeedReply, bytes(m), 1), kAll);
    REQUIRE(r.ok());
    CHECK(r->type == BackendReq::shmem_map);
    REQUIRE(r->fds.size() == 1);
    CHECK(r->fds[0].valid());
    const auto& got = std::get<wire::ShmemMap>(r->payload);
    CHECK(got.shmid == 3);
    CHECK(got.shm_offset == 2 * kPage);
    CHECK(count.open_now() == 1);  // owned by r
  }
  SUBCASE("SHMEM_UNMAP ignores fd_offset and flags") {
    auto r = vufront::decode_backend_request(
        msg(10, kV, bytes(shmem(~uint64_t{0}, 0, kPage, 0xff))), kAll);
    REQUIRE(r.ok());
    CHECK(r->type == BackendReq::shmem_unmap);
  }
  SUBCASE("VRING_HOST_NOTIFIER_MSG with an fd, and NOFD without") {
    auto r = vufront::decode_backend_request(msg(3, kV, bytes(area(7, kPage, kPage)), 1), kAll);
    REQUIRE(r.ok());
    CHECK(r->fds.size() == 1);
    CHECK(std::get<wire::VringArea>(r->payload).u64 == 7);
    auto unreg = vufront::decode_backend_request(
        msg(3, kV, bytes(area(0x107, 0, 12345))), kAll);
    REQUIRE(unreg.ok());
    CHECK(unreg->fds.empty());
  }
  CHECK(count.leaked() == 0);
}

TEST_CASE("decode_backend_request: malformed requests are refused and their fds closed") {
  struct Bad {
    const char* what;
    uint32_t code;
    uint32_t flags;
    std::vector<uint8_t> body;
    size_t nfds;
    uint64_t acked;
    errc want;
    const char* request;
  };
  const auto ok_map = bytes(shmem(0, 0, kPage, 1));
  const auto state = bytes(wire::VringState{0, 0});
  const std::vector<Bad> cases = {
      // flags
      {"version 0", 2, 0, {}, 0, kAll, errc::bad_flags, "BACKEND_CONFIG_CHANGE_MSG"},
      {"version 2", 2, 2, {}, 0, kAll, errc::bad_flags, "BACKEND_CONFIG_CHANGE_MSG"},
      {"REPLY set", 2, kV | vufront::flag_reply, {}, 0, kAll, errc::bad_flags,
       "BACKEND_CONFIG_CHANGE_MSG"},
      {"reserved bit", 9, kV | 0x10, ok_map, 1, kAll, errc::bad_flags, "BACKEND_SHMEM_MAP"},
      {"high bit", 9, kV | 0x80000000u, ok_map, 1, kAll, errc::bad_flags, "BACKEND_SHMEM_MAP"},
      // codes
      {"code 0", 0, kV, {}, 0, kAll, errc::unknown_request, "UNKNOWN(0)"},
      {"code 11", 11, kV, {}, 0, kAll, errc::unknown_request, "UNKNOWN(11)"},
      {"crosvm GPU_MAP", 1006, kV, {}, 1, kAll, errc::unknown_request, "UNKNOWN(1006)"},
      {"code 1023", 1023, kV, state, 0, kAll, errc::unknown_request, "UNKNOWN(1023)"},
      // sizes
      {"config change with body", 2, kV, state, 0, kAll, errc::bad_size,
       "BACKEND_CONFIG_CHANGE_MSG"},
      {"short shmem map", 9, kV, std::vector<uint8_t>(32), 1, kAll, errc::bad_size,
       "BACKEND_SHMEM_MAP"},
      {"long vring call", 4, kV, std::vector<uint8_t>(16), 0, kAll, errc::bad_size,
       "BACKEND_VRING_CALL"},
      {"empty shared object", 6, kV, {}, 0, kAll, errc::bad_size,
       "BACKEND_SHARED_OBJECT_ADD"},
      {"legacy 32-byte crosvm map", 9, kV, std::vector<uint8_t>(32), 1, kAll, errc::bad_size,
       "BACKEND_SHMEM_MAP"},
      // fds
      {"shmem map without fd", 9, kV, ok_map, 0, kAll, errc::bad_fds, "BACKEND_SHMEM_MAP"},
      {"shmem map with 2 fds", 9, kV, ok_map, 2, kAll, errc::bad_fds, "BACKEND_SHMEM_MAP"},
      {"shmem unmap with fd", 10, kV, ok_map, 1, kAll, errc::bad_fds, "BACKEND_SHMEM_UNMAP"},
      {"vring call with 8 fds", 4, kV, state, 8, kAll, errc::bad_fds, "BACKEND_VRING_CALL"},
      {"config change with fd", 2, kV, {}, 1, kAll, errc::bad_fds,
       "BACKEND_CONFIG_CHANGE_MSG"},
      {"host notifier without fd", 3, kV, bytes(area(0, kPage, 0)), 0, kAll, errc::bad_fds,
       "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"host notifier NOFD with fd", 3, kV, bytes(area(0x100, 0, 0)), 1, kAll, errc::bad_fds,
       "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"lookup with fd (rust-vmm style)", 8, kV, std::vector<uint8_t>(16), 1, kAll,
       errc::bad_fds, "BACKEND_SHARED_OBJECT_LOOKUP"},
      // gating
      {"iotlb never", 1, kV, std::vector<uint8_t>(32), 0, kAll, errc::not_negotiated,
       "BACKEND_IOTLB_MSG"},
      {"no BACKEND_REQ", 2, kV, {}, 0, kAll & ~vufront::bit(pf::backend_req),
       errc::not_negotiated, "BACKEND_CONFIG_CHANGE_MSG"},
      {"no CONFIG", 2, kV, {}, 0, kAll & ~vufront::bit(pf::config), errc::not_negotiated,
       "BACKEND_CONFIG_CHANGE_MSG"},
      {"no HOST_NOTIFIER", 3, kV, bytes(area(0x100, 0, 0)), 0,
       kAll & ~vufront::bit(pf::host_notifier), errc::not_negotiated,
       "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"no INBAND", 5, kV, state, 0, kAll & ~vufront::bit(pf::inband_notifications),
       errc::not_negotiated, "BACKEND_VRING_ERR"},
      {"no SHARED_OBJECT", 7, kV, std::vector<uint8_t>(16), 0,
       kAll & ~vufront::bit(pf::shared_object), errc::not_negotiated,
       "BACKEND_SHARED_OBJECT_REMOVE"},
      {"no SHMEM", 9, kV, ok_map, 1, kAll & ~vufront::bit(pf::shmem), errc::not_negotiated,
       "BACKEND_SHMEM_MAP"},
      {"supported set lacks inband", 4, kV, state, 0, vufront::supported_protocol_features,
       errc::not_negotiated, "BACKEND_VRING_CALL"},
      // payloads
      {"vring index 256", 4, kV, bytes(wire::VringState{256, 0}), 0, kAll,
       errc::invalid_payload, "BACKEND_VRING_CALL"},
      {"shmem map flag bit 1", 9, kV, bytes(shmem(0, 0, kPage, 2)), 1, kAll,
       errc::invalid_payload, "BACKEND_SHMEM_MAP"},
      {"shmem map len 0", 9, kV, bytes(shmem(0, 0, 0, 0)), 1, kAll, errc::invalid_payload,
       "BACKEND_SHMEM_MAP"},
      {"shmem unmap len 0", 10, kV, bytes(shmem(0, 0, 0, 0)), 0, kAll,
       errc::invalid_payload, "BACKEND_SHMEM_UNMAP"},
      {"shm_offset overflow", 9, kV, bytes(shmem(0, ~uint64_t{0} - 10, 11, 0)), 1, kAll,
       errc::invalid_payload, "BACKEND_SHMEM_MAP"},
      {"fd_offset overflow", 9, kV, bytes(shmem(~uint64_t{0}, 0, 1, 0)), 1, kAll,
       errc::invalid_payload, "BACKEND_SHMEM_MAP"},
      {"unmap shm_offset overflow", 10, kV, bytes(shmem(0, ~uint64_t{0}, 1, 0)), 0, kAll,
       errc::invalid_payload, "BACKEND_SHMEM_UNMAP"},
      {"host notifier stray bits", 3, kV, bytes(area(0x200, kPage, 0)), 1, kAll,
       errc::invalid_payload, "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"host notifier size", 3, kV, bytes(area(0, 2 * kPage, 0)), 1, kAll,
       errc::invalid_payload, "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"host notifier offset unaligned", 3, kV, bytes(area(0, kPage, 8)), 1, kAll,
       errc::invalid_payload, "BACKEND_VRING_HOST_NOTIFIER_MSG"},
      {"host notifier offset overflow", 3, kV, bytes(area(0, kPage, ~uint64_t{0} - kPage + 1)),
       1, kAll, errc::invalid_payload, "BACKEND_VRING_HOST_NOTIFIER_MSG"},
  };
  for (const Bad& b : cases) {
    CAPTURE(b.what);
    FdCount count;
    auto m = msg(b.code, b.flags, b.body, b.nfds);
    CHECK(count.open_now() == static_cast<int>(b.nfds));
    auto r = vufront::decode_backend_request(std::move(m), b.acked);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == b.want);
    CHECK(r.error().request == b.request);
    CHECK_FALSE(r.error().detail.empty());
    CHECK(count.leaked() == 0);  // closed right away, not when m dies
  }
}

TEST_CASE("decode_backend_request: error details name what was wrong") {
  auto unknown = vufront::decode_backend_request(msg(1023, kV, {}), kAll);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().message().find("UNKNOWN(1023)") != std::string::npos);
  auto size = vufront::decode_backend_request(msg(4, kV, std::vector<uint8_t>(3)), kAll);
  REQUIRE_FALSE(size.ok());
  CHECK(size.error().detail == "body is 3 bytes, expected 8");
  auto gate = vufront::decode_backend_request(msg(9, kV, bytes(shmem(0, 0, 1, 0)), 1),
                                              vufront::bit(pf::backend_req));
  REQUIRE_FALSE(gate.ok());
  CHECK(gate.error().detail.find("SHMEM") != std::string::npos);
  // A header size disagreeing with the body (never produced by Connection) is bad_size.
  auto m = msg(4, kV, bytes(wire::VringState{0, 0}));
  m.header.size = 9;
  auto mismatch = vufront::decode_backend_request(std::move(m), kAll);
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.error().code == errc::bad_size);
}

TEST_CASE("encode_backend_reply layout") {
  const auto out = vufront::encode_backend_reply(9, 0xfffffffffffffff2ull);
  REQUIRE(out.size() == 20);
  wire::Header h{};
  std::memcpy(&h, out.data(), sizeof h);
  CHECK(h.request == 9);
  CHECK(h.flags == 0x5);
  CHECK(h.size == 8);
  uint64_t status = 0;
  std::memcpy(&status, out.data() + 12, sizeof status);
  CHECK(status == 0xfffffffffffffff2ull);
  const std::vector<uint8_t> ok_reply = {2, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 0};
  CHECK(vufront::encode_backend_reply(2, 0) == ok_reply);
}
