// BackendClient against the scripted fake back-end: every call's happy path
// (with and without REPLY_ACK), local refusals, and the malformed-reply table.

#include <doctest/doctest.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sys/ioctl.h>

#include "protocol/backend_client.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace std::chrono_literals;
using vufront::test::bytes_of;
using vufront::test::concat;
using vufront::test::FakeBackend;
using vufront::test::FdCount;
using vufront::test::raw_message;
using vufront::test::reply_bytes;
using vufront::test::reply_u64;

namespace {

constexpr uint32_t plain = flag_version;
constexpr uint32_t need_reply = flag_version | flag_need_reply;
constexpr uint64_t offered_features = bit(feature::protocol_features) | bit(feature::version_1);

Timeouts fast(std::chrono::milliseconds t = 3000ms) {
  Timeouts out;
  out.request = out.drain = t;
  return out;
}

FakeBackend::Expect ex(uint32_t flags, std::optional<std::vector<uint8_t>> body = std::nullopt,
                       size_t nfds = 0) {
  FakeBackend::Expect e;
  e.flags = flags;
  e.body = std::move(body);
  e.nfds = nfds;
  return e;
}

std::vector<uint8_t> u64(uint64_t v) { return bytes_of(wire::U64{v}); }

/// Scripts GET_FEATURES, GET/SET_PROTOCOL_FEATURES and SET_FEATURES.
void script_negotiation(FakeBackend& f, uint64_t protocol) {
  f.answer_u64(FrontendReq::get_features, offered_features, ex(plain, std::vector<uint8_t>{}));
  f.answer_u64(FrontendReq::get_protocol_features, protocol, ex(plain));
  // REPLY_ACK is not in force yet for SET_PROTOCOL_FEATURES itself
  f.expect(FrontendReq::set_protocol_features, ex(plain, u64(protocol)));
  bool ack = has_bit(protocol, protocol_feature::reply_ack);
  f.expect(FrontendReq::set_features, ex(ack ? need_reply : plain, u64(offered_features)));
  if (ack)
    f.send(reply_u64(FrontendReq::set_features, 0));
}

void negotiate(BackendClient& c, uint64_t protocol) {
  REQUIRE(c.get_features().value() == offered_features);
  REQUIRE(c.get_protocol_features().value() == protocol);
  REQUIRE(c.set_protocol_features(protocol).ok());
  REQUIRE(c.set_features(offered_features).ok());
  REQUIRE(c.acked_protocol_features() == protocol);
  REQUIRE(c.acked_features() == offered_features);
}

/// A request without a native reply: NEED_REPLY and an ack only with REPLY_ACK.
void script_no_reply(FakeBackend& f, FrontendReq req, bool ack, std::vector<uint8_t> body,
                     size_t nfds = 0) {
  f.expect(req, ex(ack ? need_reply : plain, std::move(body), nfds));
  if (ack)
    f.send(reply_u64(req, 0));
}

wire::InflightDesc inflight(uint64_t size, uint16_t nq, uint16_t qs) {
  wire::InflightDesc d{};
  d.mmap_size = size;
  d.num_queues = nq;
  d.queue_size = qs;
  return d;
}

template <class T>
std::optional<Error> err_of(Result<T> r) {
  if (r.ok())
    return std::nullopt;
  return std::move(r).error();
}

size_t unread(int fd) {
  int n = 0;
  if (::ioctl(fd, FIONREAD, &n) != 0)
    return 0;
  return static_cast<size_t>(n);
}

}  // namespace

TEST_CASE("backend_client: happy path of every call, with and without REPLY_ACK") {
  for (bool ack : {false, true}) {
    CAPTURE(ack);
    const uint64_t proto = supported_protocol_features &
                           ~(ack ? 0 : bit(protocol_feature::reply_ack));
    FdCount leak;
    {
      FakeBackend f;
      script_negotiation(f, proto);
      script_no_reply(f, FrontendReq::set_owner, ack, {});
      script_no_reply(f, FrontendReq::reset_owner, ack, {});
      f.answer_u64(FrontendReq::get_queue_num, 4, ex(plain, std::vector<uint8_t>{}));
      f.answer_u64(FrontendReq::get_max_mem_slots, 32, ex(plain));

      wire::MemoryRegion r0{0, 0x100000, 0x7f0000000000, 0};
      wire::MemoryRegion r1{0x100000, 0x200000, 0x7f0000100000, 0x1000};
      auto table = concat(concat(bytes_of(wire::MemoryTableHeader{2, 0}), bytes_of(r0)), bytes_of(r1));
      script_no_reply(f, FrontendReq::set_mem_table, ack, table, 2);
      script_no_reply(f, FrontendReq::add_mem_reg, ack, bytes_of(wire::SingleMemoryRegion{0, r1}), 1);
      script_no_reply(f, FrontendReq::rem_mem_reg, ack, bytes_of(wire::SingleMemoryRegion{0, r1}), 0);
      // SET_LOG_BASE with LOG_SHMFD has a native reply: never NEED_REPLY
      f.answer_u64(FrontendReq::set_log_base, 0, ex(plain, bytes_of(wire::Log{0x1000, 0}), 1));

      script_no_reply(f, FrontendReq::set_vring_num, ack, bytes_of(wire::VringState{1, 256}));
      wire::VringAddr addr{1, 0, 0x1000, 0x2000, 0x3000, 0};
      script_no_reply(f, FrontendReq::set_vring_addr, ack, bytes_of(addr));
      script_no_reply(f, FrontendReq::set_vring_base, ack, bytes_of(wire::VringState{1, 7}));
      f.expect(FrontendReq::get_vring_base, ex(plain, bytes_of(wire::VringState{1, 0})));
      f.send(reply_bytes(FrontendReq::get_vring_base, bytes_of(wire::VringState{1, 7})));
      script_no_reply(f, FrontendReq::set_vring_kick, ack, u64(1), 1);
      script_no_reply(f, FrontendReq::set_vring_kick, ack, u64(0x100 | 255), 0);
      script_no_reply(f, FrontendReq::set_vring_call, ack, u64(2), 1);
      script_no_reply(f, FrontendReq::set_vring_err, ack, u64(0x100 | 3), 0);
      script_no_reply(f, FrontendReq::set_vring_enable, ack, bytes_of(wire::VringState{1, 1}));

      // GET_CONFIG sends the header plus `size` zero bytes
      auto cfg_req = concat(bytes_of(wire::ConfigHeader{4, 8, 0}), std::vector<uint8_t>(8, 0));
      f.expect(FrontendReq::get_config, ex(plain, cfg_req));
      f.send(reply_bytes(FrontendReq::get_config,
                         concat(bytes_of(wire::ConfigHeader{4, 8, 0}), {1, 2, 3, 4, 5, 6, 7, 8})));
      script_no_reply(f, FrontendReq::set_config, ack,
                      concat(bytes_of(wire::ConfigHeader{2, 3, 1}), {9, 9, 9}));

      script_no_reply(f, FrontendReq::set_backend_req_fd, ack, {}, 1);
      f.expect(FrontendReq::get_inflight_fd, ex(plain, bytes_of(inflight(0, 2, 128))));
      f.send(reply_bytes(FrontendReq::get_inflight_fd, bytes_of(inflight(4096, 2, 128))), 1);
      f.expect(FrontendReq::get_inflight_fd, ex(plain));
      f.send(reply_bytes(FrontendReq::get_inflight_fd, bytes_of(inflight(0, 0, 0))));
      script_no_reply(f, FrontendReq::set_inflight_fd, ack, bytes_of(inflight(4096, 2, 128)), 1);
      script_no_reply(f, FrontendReq::set_status, ack, u64(status_bit::acknowledge | status_bit::driver));
      f.answer_u64(FrontendReq::get_status, 0x0f, ex(plain));
      script_no_reply(f, FrontendReq::reset_device, ack, {});

      wire::ShmemConfig shm{};
      shm.nregions = 1;
      shm.sizes[3] = 0x200000;
      f.expect(FrontendReq::get_shmem_config, ex(plain));
      f.send(reply_bytes(FrontendReq::get_shmem_config, bytes_of(shm)));
      // SET_DEVICE_STATE_FD: first the back-end keeps our pipe (0x100), then returns its own fd
      f.answer_u64(FrontendReq::set_device_state_fd, 0x100,
                   ex(plain, bytes_of(wire::DeviceStateTransfer{0, 0}), 1));
      f.expect(FrontendReq::set_device_state_fd, ex(plain, bytes_of(wire::DeviceStateTransfer{1, 0}), 1));
      f.send(reply_u64(FrontendReq::set_device_state_fd, 0), 1);
      f.answer_u64(FrontendReq::check_device_state, 0, ex(plain));
      // a non-zero CHECK_DEVICE_STATE is a refusal: the stream stays usable
      f.answer_u64(FrontendReq::check_device_state, 3, ex(plain));
      f.answer_u64(FrontendReq::get_features, offered_features, ex(plain));

      auto c = f.client(fast());
      negotiate(c, proto);
      CHECK(c.protocol_feature(protocol_feature::config));
      CHECK(c.set_owner().ok());
      CHECK(c.reset_owner().ok());
      CHECK(c.get_queue_num().value() == 4);
      CHECK(c.get_max_mem_slots().value() == 32);
      {
        auto m0 = make_memfd("r0", 0x100000);
        auto m1 = make_memfd("r1", 0x201000);
        CHECK(c.set_mem_table({r0, r1}, {m0.get(), m1.get()}).ok());
        CHECK(c.add_mem_reg(r1, m1.get()).ok());
        CHECK(c.rem_mem_reg(r1).ok());
        auto log = make_memfd("log", 0x1000);
        CHECK(c.set_log_base(wire::Log{0x1000, 0}, log.get()).ok());
      }
      CHECK(c.set_vring_num(1, 256).ok());
      CHECK(c.set_vring_addr(addr).ok());
      CHECK(c.set_vring_base(1, 7).ok());
      CHECK(c.get_vring_base(1).value() == 7);
      {
        auto kick = make_eventfd();
        auto call = make_eventfd();
        CHECK(c.set_vring_kick(1, kick.get()).ok());
        CHECK(c.set_vring_kick(255, -1).ok());
        CHECK(c.set_vring_call(2, call.get()).ok());
        CHECK(c.set_vring_err(3, -1).ok());
      }
      CHECK(c.set_vring_enable(1, true).ok());
      CHECK(c.get_config(4, 8).value() == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
      CHECK(c.set_config(2, {9, 9, 9}, 1).ok());
      {
        auto sp = make_socketpair();
        CHECK(c.set_backend_req_fd(sp.second.get()).ok());
      }
      {
        auto inf = c.get_inflight_fd(2, 128);
        REQUIRE(inf.ok());
        CHECK(inf->desc.mmap_size == 4096);
        CHECK(inf->fd.valid());
        auto declined = c.get_inflight_fd(2, 128);
        REQUIRE(declined.ok());
        CHECK(declined->desc.mmap_size == 0);
        CHECK_FALSE(declined->fd.valid());
        CHECK(c.set_inflight_fd(inflight(4096, 2, 128), inf->fd.get()).ok());
      }
      CHECK(c.set_status(status_bit::acknowledge | status_bit::driver).ok());
      CHECK(c.get_status().value() == 0x0f);
      CHECK(c.reset_device().ok());
      {
        auto s = c.get_shmem_config();
        REQUIRE(s.ok());
        CHECK(s->nregions == 1);
        CHECK(s->sizes[3] == 0x200000);
      }
      {
        auto p = make_pipe();
        auto own = c.set_device_state_fd(wire::device_state_save, 0, p.write_end.get());
        REQUIRE(own.ok());
        CHECK_FALSE(own->backend_fd.has_value());
        auto theirs = c.set_device_state_fd(wire::device_state_load, 0, p.read_end.get());
        REQUIRE(theirs.ok());
        REQUIRE(theirs->backend_fd.has_value());
        CHECK(theirs->backend_fd->valid());
      }
      CHECK(c.check_device_state().ok());
      auto refused = c.check_device_state();
      REQUIRE_FALSE(refused.ok());
      CHECK(refused.error().code == errc::backend_failure);
      CHECK_FALSE(c.broken());
      CHECK(c.get_features().ok());
      CHECK(f.finish() == "");
      CHECK(f.unread_bytes() == 0);
      CHECK_FALSE(c.broken());
    }
    CHECK(leak.leaked() == 0);
  }
}

TEST_CASE("backend_client: normalise_packed_base: DPDK's short form gets used = avail, nothing else changes") {
  // the short form: upper half 0, lower half not (DPDK 22.11's librte_vhost)
  static_assert(normalise_packed_base(0x8002).base == 0x8002'8002u);
  CHECK(normalise_packed_base(0x8002).short_form);
  CHECK(normalise_packed_base(0x8000).base == 0x8000'8000u);  // a fresh ring: wrap 1, index 0
  CHECK(normalise_packed_base(0x8000).short_form);
  CHECK(normalise_packed_base(0x0005).base == 0x0005'0005u);  // wrap 0, index 5
  CHECK(normalise_packed_base(0x7fff).base == 0x7fff'7fffu);
  CHECK(normalise_packed_base(0xffff).base == 0xffff'ffffu);
  // the full form is kept verbatim, also where the halves differ (no guessing)
  for (uint32_t full : {0x8002'8002u, 0x8000'8000u, 0x8001'8002u, 0x0003'8002u, 0xffff'ffffu}) {
    CAPTURE(full);
    CHECK(normalise_packed_base(full).base == full);
    CHECK_FALSE(normalise_packed_base(full).short_form);
  }
  // both halves 0: the same in either form
  CHECK(normalise_packed_base(0).base == 0);
  CHECK_FALSE(normalise_packed_base(0).short_form);
  // upper half not 0 and lower half 0 (avail index 0, wrap counter 0): the full form, verbatim
  for (uint32_t full : {0x8000'0000u, 0x0001'0000u, 0x8002'0000u}) {
    CAPTURE(full);
    CHECK(normalise_packed_base(full).base == full);
    CHECK_FALSE(normalise_packed_base(full).short_form);
  }
}

TEST_CASE("backend_client: GET_VRING_BASE of a packed ring is normalised in the client, a split one is not") {
  FdCount leak;
  {
    FakeBackend f;
    script_negotiation(f, 0);
    // short form, full form, both halves 0, upper half only
    const std::vector<uint32_t> answers = {0x8002, 0x8002'8002, 0, 0x8003'0000};
    auto answer = [&](uint32_t num) {
      f.expect(FrontendReq::get_vring_base, ex(plain, bytes_of(wire::VringState{1, 0})));
      f.send(reply_bytes(FrontendReq::get_vring_base, bytes_of(wire::VringState{1, num})));
    };
    for (int round = 0; round < 2; ++round)
      for (uint32_t num : answers)
        answer(num);
    answer(0x8002);  // a split ring's
    auto c = f.client(fast());
    negotiate(c, 0);
    auto short_form = c.get_packed_vring_base(1).value();
    CHECK(short_form.base == 0x8002'8002u);
    CHECK(short_form.short_form);
    auto full = c.get_packed_vring_base(1).value();
    CHECK(full.base == 0x8002'8002u);
    CHECK_FALSE(full.short_form);
    auto zero = c.get_packed_vring_base(1).value();
    CHECK(zero.base == 0);
    CHECK_FALSE(zero.short_form);
    auto upper = c.get_packed_vring_base(1).value();
    CHECK(upper.base == 0x8003'0000u);
    CHECK_FALSE(upper.short_form);
    // get_vring_base(index, packed) answers the same, normalised
    CHECK(c.get_vring_base(1, true).value() == 0x8002'8002u);
    CHECK(c.get_vring_base(1, true).value() == 0x8002'8002u);
    CHECK(c.get_vring_base(1, true).value() == 0);
    CHECK(c.get_vring_base(1, true).value() == 0x8003'0000u);
    // a split ring's base is its next avail index: never touched
    CHECK(c.get_vring_base(1, false).value() == 0x8002);
    CHECK(f.finish() == "");
    CHECK_FALSE(c.broken());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("backend_client: not_negotiated and invalid_argument send nothing") {
  FdCount leak;
  {
    FakeBackend f;
    f.answer_u64(FrontendReq::get_features, bit(feature::version_1));  // no bit 30
    auto c = f.client(fast());
    REQUIRE(c.get_features().ok());
    REQUIRE(f.finish() == "");

    auto expect_local = [&](std::optional<Error> e, errc want, const char* req) {
      REQUIRE(e.has_value());
      CHECK(e->code == want);
      CHECK(e->request == req);
      CHECK(f.unread_bytes() == 0);
      CHECK_FALSE(c.broken());
    };
    // gates
    expect_local(err_of(c.get_protocol_features()), errc::not_negotiated, "GET_PROTOCOL_FEATURES");
    expect_local(err_of(c.set_protocol_features(0)), errc::not_negotiated, "SET_PROTOCOL_FEATURES");
    expect_local(err_of(c.get_queue_num()), errc::not_negotiated, "GET_QUEUE_NUM");
    expect_local(err_of(c.get_max_mem_slots()), errc::not_negotiated, "GET_MAX_MEM_SLOTS");
    expect_local(err_of(c.get_config(0, 8)), errc::not_negotiated, "GET_CONFIG");
    expect_local(err_of(c.set_config(0, {1})), errc::not_negotiated, "SET_CONFIG");
    expect_local(err_of(c.get_inflight_fd(1, 128)), errc::not_negotiated, "GET_INFLIGHT_FD");
    expect_local(err_of(c.set_status(1)), errc::not_negotiated, "SET_STATUS");
    expect_local(err_of(c.get_status()), errc::not_negotiated, "GET_STATUS");
    expect_local(err_of(c.reset_device()), errc::not_negotiated, "RESET_DEVICE");
    expect_local(err_of(c.get_shmem_config()), errc::not_negotiated, "GET_SHMEM_CONFIG");
    expect_local(err_of(c.check_device_state()), errc::not_negotiated, "CHECK_DEVICE_STATE");
    expect_local(err_of(c.set_vring_enable(0, true)), errc::not_negotiated, "SET_VRING_ENABLE");
    {
      auto efd = make_eventfd();
      wire::MemoryRegion r{0, 0x1000, 0, 0};
      expect_local(err_of(c.add_mem_reg(r, efd.get())), errc::not_negotiated, "ADD_MEM_REG");
      expect_local(err_of(c.rem_mem_reg(r)), errc::not_negotiated, "REM_MEM_REG");
      expect_local(err_of(c.set_backend_req_fd(efd.get())), errc::not_negotiated, "SET_BACKEND_REQ_FD");
      expect_local(err_of(c.set_log_base({0x1000, 0}, efd.get())), errc::not_negotiated, "SET_LOG_BASE");
      expect_local(err_of(c.set_device_state_fd(0, 0, efd.get())), errc::not_negotiated,
                   "SET_DEVICE_STATE_FD");
      expect_local(err_of(c.set_inflight_fd(inflight(4096, 1, 128), efd.get())),
                   errc::not_negotiated, "SET_INFLIGHT_FD");

      // argument checks
      std::vector<wire::MemoryRegion> nine(9, r);
      std::vector<int> nine_fds(9, efd.get());
      expect_local(err_of(c.set_mem_table({}, {})), errc::invalid_argument, "SET_MEM_TABLE");
      expect_local(err_of(c.set_mem_table(nine, nine_fds)), errc::invalid_argument, "SET_MEM_TABLE");
      expect_local(err_of(c.set_mem_table({r, r}, {efd.get()})), errc::invalid_argument,
                   "SET_MEM_TABLE");
      expect_local(err_of(c.set_mem_table({r}, {-1})), errc::invalid_argument, "SET_MEM_TABLE");
      expect_local(err_of(c.set_vring_kick(256, efd.get())), errc::invalid_argument, "SET_VRING_KICK");
      expect_local(err_of(c.set_vring_call(1000, -1)), errc::invalid_argument, "SET_VRING_CALL");
      expect_local(err_of(c.set_vring_err(256, -1)), errc::invalid_argument, "SET_VRING_ERR");
    }
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("backend_client: argument checks behind negotiated gates send nothing") {
  FdCount leak;
  {
    FakeBackend f;
    const uint64_t proto = supported_protocol_features;
    script_negotiation(f, proto);
    auto c = f.client(fast());
    negotiate(c, proto);
    REQUIRE(f.finish() == "");
    auto local = [&](std::optional<Error> e, const char* req) {
      REQUIRE(e.has_value());
      CHECK(e->code == errc::invalid_argument);
      CHECK(e->request == req);
      CHECK(f.unread_bytes() == 0);
      CHECK_FALSE(c.broken());
    };
    local(err_of(c.get_config(0, 0)), "GET_CONFIG");
    local(err_of(c.get_config(0, wire::max_config_size + 1)), "GET_CONFIG");
    local(err_of(c.get_config(0xFFFFFFF0u, 0x20)), "GET_CONFIG");
    local(err_of(c.set_config(0, {})), "SET_CONFIG");
    local(err_of(c.add_mem_reg(wire::MemoryRegion{0, 0x1000, 0, 0}, -1)), "ADD_MEM_REG");
    local(err_of(c.set_backend_req_fd(-1)), "SET_BACKEND_REQ_FD");
    local(err_of(c.set_device_state_fd(0, 0, -1)), "SET_DEVICE_STATE_FD");
    local(err_of(c.set_device_state_fd(2, 0, 0)), "SET_DEVICE_STATE_FD");
  }
  CHECK(leak.leaked() == 0);
}

namespace {

struct BadReply {
  const char* name;
  FrontendReq req;
  std::function<std::optional<Error>(BackendClient&)> call;
  std::vector<uint8_t> reply;
  size_t nfds;
  errc want;
  bool close_after = false;
};

std::optional<Error> call_simple(BackendClient& c, FrontendReq req) {
  switch (req) {
    case FrontendReq::get_features: return err_of(c.get_features());
    case FrontendReq::get_queue_num: return err_of(c.get_queue_num());
    case FrontendReq::get_inflight_fd: return err_of(c.get_inflight_fd(2, 128));
    case FrontendReq::get_vring_base: return err_of(c.get_vring_base(0));
    case FrontendReq::set_vring_num: return err_of(c.set_vring_num(0, 256));
    default: FAIL("no call for this request"); return std::nullopt;
  }
}

std::vector<BadReply> bad_replies() {
  using R = FrontendReq;
  auto simple = [](R req) { return [req](BackendClient& c) { return call_simple(c, req); }; };
  auto cfg = [](uint32_t off, uint32_t size, size_t data) {
    return reply_bytes(R::get_config, concat(bytes_of(wire::ConfigHeader{off, size, 0}),
                                             std::vector<uint8_t>(data, 0x55)));
  };
  auto get_config = [](BackendClient& c) { return err_of(c.get_config(0, 8)); };
  auto state_fd = [](BackendClient& c) {
    auto p = make_pipe();
    return err_of(c.set_device_state_fd(0, 0, p.write_end.get()));
  };
  const uint32_t gf = static_cast<uint32_t>(R::get_features);
  auto good = reply_u64(R::get_features, 1);
  return {
      {"short header then EOF", R::get_features, simple(R::get_features),
       std::vector<uint8_t>(good.begin(), good.begin() + 6), 0, errc::disconnected, true},
      {"oversize 0x1001", R::get_features, simple(R::get_features), raw_message(gf, 5, 0x1001), 0,
       errc::oversized},
      {"oversize 0xFFFFFFFF", R::get_features, simple(R::get_features),
       raw_message(gf, 5, 0xFFFFFFFF), 0, errc::oversized},
      {"undersized body", R::get_features, simple(R::get_features),
       reply_bytes(R::get_features, {1, 2, 3, 4}), 0, errc::bad_size},
      {"wrong request code", R::get_features, simple(R::get_features),
       reply_u64(R::get_status, 1), 0, errc::unexpected_reply},
      {"missing reply flag", R::get_features, simple(R::get_features),
       raw_message(gf, 0x1, 8, u64(1)), 0, errc::bad_flags},
      {"bad version", R::get_features, simple(R::get_features), raw_message(gf, 0x6, 8, u64(1)), 0,
       errc::bad_flags},
      {"reserved flags", R::get_features, simple(R::get_features),
       raw_message(gf, 0x25, 8, u64(1)), 0, errc::bad_flags},
      {"unexpected fd on GET_FEATURES", R::get_features, simple(R::get_features), good, 1,
       errc::bad_fds},
      {"GET_INFLIGHT_FD without its fd", R::get_inflight_fd, simple(R::get_inflight_fd),
       reply_bytes(R::get_inflight_fd, bytes_of(inflight(4096, 2, 128))), 0, errc::bad_fds},
      {"SET_DEVICE_STATE_FD with two fds", R::set_device_state_fd, state_fd,
       reply_u64(R::set_device_state_fd, 0), 2, errc::bad_fds},
      {"GET_QUEUE_NUM 0", R::get_queue_num, simple(R::get_queue_num),
       reply_u64(R::get_queue_num, 0), 0, errc::invalid_payload},
      {"GET_QUEUE_NUM 0x8001", R::get_queue_num, simple(R::get_queue_num),
       reply_u64(R::get_queue_num, 0x8001), 0, errc::invalid_payload},
      {"GET_CONFIG other offset", R::get_config, get_config, cfg(4, 8, 8), 0,
       errc::invalid_payload},
      {"GET_CONFIG other size", R::get_config, get_config, cfg(0, 4, 4), 0,
       errc::invalid_payload},
      {"GET_CONFIG size 0 (refusal)", R::get_config, get_config, cfg(0, 0, 0), 0,
       errc::backend_failure},
      {"GET_VRING_BASE 0x10000 on a split ring", R::get_vring_base, simple(R::get_vring_base),
       reply_bytes(R::get_vring_base, bytes_of(wire::VringState{0, 0x10000})), 0,
       errc::invalid_payload},
      {"REPLY_ACK non-zero (refusal)", R::set_vring_num, simple(R::set_vring_num),
       reply_u64(R::set_vring_num, 1), 0, errc::backend_failure},
  };
}

}  // namespace

TEST_CASE("backend_client: malformed-reply table") {
  const uint64_t proto = supported_protocol_features;
  for (const auto& row : bad_replies()) {
    CAPTURE(row.name);
    FdCount leak;
    {
      FakeBackend f;
      script_negotiation(f, proto);
      f.expect(row.req);
      f.send(row.reply, row.nfds);
      if (row.close_after)
        f.close();
      const bool refusal = row.want == errc::backend_failure;
      if (refusal)  // the stream stays in sync: the next request works
        f.answer_u64(FrontendReq::get_features, offered_features);
      auto c = f.client(fast());
      negotiate(c, proto);

      auto e = row.call(c);
      REQUIRE(e.has_value());
      CHECK(e->code == row.want);
      CHECK(e->request == name(row.req));
      CHECK(c.broken() == !refusal);
      if (refusal) {
        CHECK(c.get_features().ok());
      } else {
        auto again = c.get_features();
        REQUIRE_FALSE(again.ok());
        CHECK(again.error().code == errc::broken);
        CHECK(again.error().detail.find(e->message()) != std::string::npos);
      }
      CHECK(f.finish() == "");
      CHECK(f.unread_bytes() == 0);  // nothing sent after the failure
    }
    CHECK(leak.leaked() == 0);
  }
}

TEST_CASE("backend_client: no reply times out, a late reply is never matched") {
  FdCount leak;
  {
    FakeBackend f;
    f.expect(FrontendReq::get_features);
    f.wait_signal();
    f.send(reply_u64(FrontendReq::get_features, offered_features));
    auto c = f.client(fast(100ms));

    auto start = Clock::now();
    auto r = c.get_features();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::timeout);
    CHECK(r.error().request == "GET_FEATURES");
    CHECK(Clock::now() - start < 2s);
    CHECK(c.broken());

    f.signal();
    REQUIRE(f.finish() == "");
    // the late reply sits in the socket; the next request must not take it
    CHECK(unread(c.connection().fd()) == 20);
    auto next = c.get_features();
    REQUIRE_FALSE(next.ok());
    CHECK(next.error().code == errc::broken);
    CHECK(next.error().detail.find("timeout") != std::string::npos);
    CHECK(f.unread_bytes() == 0);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("backend_client: connect() to a missing socket fails at once, or times out waiting") {
  vufront::test::TempDir dir;
  auto c = BackendClient::connect(dir.file("none.sock"), 600s);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == errc::not_found);
  auto waited = BackendClient::connect(dir.file("none.sock"), 100ms, {}, nullptr, ConnectWait::backend);
  REQUIRE_FALSE(waited.ok());
  CHECK(waited.error().code == errc::timeout);
}
