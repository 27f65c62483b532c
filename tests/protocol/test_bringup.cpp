// The bring-up (protocol/bringup.hpp) against the scripted fake back-end: the
// order of its requests and their gates, the ack rule for every option
// combination, in-band refusals recorded in probe mode and fatal in strict
// mode, and a broken connection ending it in either mode.

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "protocol/bringup.hpp"
#include "base/unique_fd.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace std::chrono_literals;
using vufront::test::bytes_of;
using vufront::test::concat;
using vufront::test::FakeBackend;
using vufront::test::FdCount;
using vufront::test::reply_bytes;
using vufront::test::reply_u64;

namespace {

constexpr uint32_t plain = flag_version;
constexpr uint32_t need_reply = flag_version | flag_need_reply;
constexpr uint64_t features = bit(feature::protocol_features) | bit(feature::version_1);

Timeouts fast() {
  Timeouts out;
  out.request = out.drain = 3000ms;
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

/// Every protocol feature the bring-up has a step for, plus one vufront never acks.
constexpr uint64_t all_offered =
    supported_protocol_features | bit(protocol_feature::pagefault) |
    bit(protocol_feature::host_notifier);

/// Scripts SET_OWNER .. SET_PROTOCOL_FEATURES (acking `acked`).
void script_head(FakeBackend& f, uint64_t offered, uint64_t acked) {
  f.expect(FrontendReq::set_owner, ex(plain, std::vector<uint8_t>{}, 0));
  f.answer_u64(FrontendReq::get_features, features, ex(plain));
  f.answer_u64(FrontendReq::get_protocol_features, offered, ex(plain));
  f.expect(FrontendReq::set_protocol_features, ex(plain, u64(acked)));
}

/// SET_BACKEND_REQ_FD carrying one fd, acked with `status` (REPLY_ACK is acked).
void script_channel(FakeBackend& f, uint64_t status = 0) {
  f.expect(FrontendReq::set_backend_req_fd, ex(need_reply, std::vector<uint8_t>{}, 1));
  f.send(reply_u64(FrontendReq::set_backend_req_fd, status));
}

std::vector<uint8_t> config_request(uint32_t size) {
  return concat(bytes_of(wire::ConfigHeader{0, size, 0}), std::vector<uint8_t>(size, 0));
}

std::vector<uint8_t> config_reply(uint32_t size, uint8_t fill) {
  return reply_bytes(FrontendReq::get_config, concat(bytes_of(wire::ConfigHeader{0, size, 0}),
                                                      std::vector<uint8_t>(size, fill)));
}

std::vector<uint8_t> shmem_reply() {
  wire::ShmemConfig shm{};
  shm.nregions = 1;
  shm.sizes[2] = 0x200000;
  return reply_bytes(FrontendReq::get_shmem_config, bytes_of(shm));
}

/// The requests the fake received, as names.
std::vector<std::string> requests(FakeBackend& f) {
  std::vector<std::string> out;
  for (const auto& r : f.received()) {
    auto req = frontend_req_from_code(r.header.request);
    out.push_back(req ? name(*req) : "?");
  }
  return out;
}

/// Probe-like options: a channel, in-flight, GET_CONFIG of 8 bytes, refusals recorded.
BringupOptions probe_like(int channel_fd) {
  BringupOptions o;
  o.kind = DeviceKind::blk;
  o.backend_channel = true;
  o.channel_fd = channel_fd;
  o.inflight = true;
  o.config_size = 8;
  o.record_refusals = true;
  return o;
}

}  // namespace

TEST_CASE("bringup: every step in order when everything is offered") {
  FdCount leak;
  {
    auto pair = make_socketpair();
    BringupOptions o = probe_like(pair.second.get());
    o.record_refusals = false;
    o.queues_needed = 4;
    const uint64_t acked = acked_protocol_features(all_offered, o);
    FakeBackend f;
    script_head(f, all_offered, acked);
    script_channel(f);
    f.answer_u64(FrontendReq::get_queue_num, 4, ex(plain));
    f.answer_u64(FrontendReq::get_max_mem_slots, 32, ex(plain));
    f.expect(FrontendReq::get_config, ex(plain, config_request(8)));
    f.send(config_reply(8, 0xab));
    f.expect(FrontendReq::get_shmem_config, ex(plain));
    f.send(shmem_reply());
    auto c = f.client(fast());
    auto r = bring_up(c, o);
    REQUIRE(r.ok());
    CHECK(f.finish() == "");
    CHECK(requests(f) == std::vector<std::string>{
                             "SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES",
                             "SET_PROTOCOL_FEATURES", "SET_BACKEND_REQ_FD", "GET_QUEUE_NUM",
                             "GET_MAX_MEM_SLOTS", "GET_CONFIG", "GET_SHMEM_CONFIG"});
    std::vector<std::string> order;
    for (auto s : bringup_order)
      order.push_back(name(s));
    CHECK(requests(f) == order);
    CHECK(r->features == features);
    CHECK(r->protocol_features_offered == all_offered);
    CHECK(r->protocol_features_acked == acked);
    CHECK(c.acked_protocol_features() == acked);
    CHECK(r->backend_channel);
    CHECK(r->backend_queue_num == std::optional<uint16_t>(4));
    CHECK(r->queue_num == 4);
    CHECK(r->backend_max_mem_slots == std::optional<uint32_t>(32));
    CHECK(r->max_mem_slots == 32);
    CHECK(r->config == std::optional<std::vector<uint8_t>>(std::vector<uint8_t>(8, 0xab)));
    CHECK(r->shmem_sizes == std::optional<std::vector<uint64_t>>({0, 0, 0x200000}));
    CHECK(r->refusals.empty());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("bringup: gates — no bit 30, then nothing but the features and fixed counts") {
  for (auto kind : {DeviceKind::blk, DeviceKind::net, DeviceKind::fs}) {
    CAPTURE(name(kind));
    FakeBackend f;
    f.expect(FrontendReq::set_owner, ex(plain));
    f.answer_u64(FrontendReq::get_features, bit(feature::version_1), ex(plain));
    auto c = f.client(fast());
    BringupOptions o = probe_like(-1);
    o.kind = kind;
    auto r = bring_up(c, o);
    REQUIRE(r.ok());
    CHECK(f.finish() == "");
    CHECK(requests(f) == std::vector<std::string>{"SET_OWNER", "GET_FEATURES"});
    CHECK(r->protocol_features_offered == 0);
    CHECK(r->protocol_features_acked == 0);
    CHECK(r->queue_num == (kind == DeviceKind::blk ? 1 : 2));
    CHECK_FALSE(r->backend_queue_num);
    CHECK(r->max_mem_slots == 8);
    CHECK_FALSE(r->backend_max_mem_slots);
    CHECK_FALSE(r->backend_channel);
    CHECK_FALSE(r->config);
    CHECK_FALSE(r->shmem_sizes);
    CHECK(f.unread_bytes() == 0);
  }
}

TEST_CASE("bringup: gates — no channel fd, no config size: only the acked queries") {
  BringupOptions o;  // a device without a channel: no SET_BACKEND_REQ_FD, no SHMEM
  o.backend_channel = true;
  o.channel_fd = -1;
  const uint64_t acked = acked_protocol_features(all_offered, o);
  CHECK_FALSE(has_bit(acked, protocol_feature::backend_req));
  CHECK_FALSE(has_bit(acked, protocol_feature::shmem));
  FakeBackend f;
  script_head(f, all_offered, acked);
  f.answer_u64(FrontendReq::get_queue_num, 2, ex(plain));
  f.answer_u64(FrontendReq::get_max_mem_slots, 16, ex(plain));
  auto c = f.client(fast());
  auto r = bring_up(c, o);
  REQUIRE(r.ok());
  CHECK(f.finish() == "");
  CHECK(requests(f) == std::vector<std::string>{"SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES",
                                                "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM",
                                                "GET_MAX_MEM_SLOTS"});
  CHECK_FALSE(r->backend_channel);
  CHECK(r->queue_num == 2);
  CHECK(r->max_mem_slots == 16);
}

TEST_CASE("bringup: the ack rule for every option combination") {
  const uint64_t channel_bits = bit(protocol_feature::backend_req) |
                                bit(protocol_feature::backend_send_fd) | bit(protocol_feature::shmem);
  const uint64_t base = supported_protocol_features & ~channel_bits &
                        ~bit(protocol_feature::log_shmfd) & ~bit(protocol_feature::inflight_shmfd);
  struct Row {
    bool channel;
    int fd;
    bool inflight;
    bool dirty_log;
    uint64_t expected;
  };
  const uint64_t in = bit(protocol_feature::inflight_shmfd);
  const uint64_t log = bit(protocol_feature::log_shmfd);
  const Row rows[] = {
      {false, -1, false, false, base},
      {false, 7, false, false, base},  // a fd but no channel wanted
      {true, -1, false, false, base},  // a channel wanted but no fd to give
      {true, 7, false, false, base | channel_bits},
      {false, -1, true, false, base | in},
      {false, -1, false, true, base | log},
      {true, 7, true, false, base | channel_bits | in},
      {true, 7, false, true, base | channel_bits | log},
      {false, -1, true, true, base | in | log},
      {true, 7, true, true, supported_protocol_features},
  };
  for (const auto& row : rows) {
    CAPTURE(row.channel);
    CAPTURE(row.fd);
    CAPTURE(row.inflight);
    CAPTURE(row.dirty_log);
    for (bool probe : {false, true}) {
      CAPTURE(probe);
      BringupOptions o;
      o.backend_channel = row.channel;
      o.channel_fd = row.fd;
      o.inflight = row.inflight;
      o.dirty_log = row.dirty_log;
      // probe mode (refusals recorded, config read) never changes what is acked
      o.record_refusals = probe;
      o.config_size = probe ? std::optional<uint32_t>(60) : std::nullopt;
      for (auto kind : {DeviceKind::blk, DeviceKind::net, DeviceKind::fs, DeviceKind::generic}) {
        o.kind = kind;
        CHECK(acked_protocol_features(~uint64_t{0}, o) == row.expected);
        CHECK(acked_protocol_features(all_offered, o) == row.expected);
        // only what is offered
        CHECK(acked_protocol_features(0, o) == 0);
        CHECK(acked_protocol_features(log | in, o) == ((log | in) & row.expected));
      }
    }
  }
  // never acked, whatever the options: bits vufront does not implement
  BringupOptions everything;
  everything.channel_fd = 3;
  everything.inflight = everything.dirty_log = true;
  CHECK((acked_protocol_features(~uint64_t{0}, everything) & ~supported_protocol_features) == 0);
  CHECK_FALSE(has_bit(acked_protocol_features(~uint64_t{0}, everything), protocol_feature::pagefault));
}

TEST_CASE("bringup: no LOG_SHMFD by default, and probe acks what a like device acks") {
  BringupOptions device;  // the defaults: channel wanted, no in-flight, no dirty logging
  CHECK_FALSE(device.dirty_log);
  device.channel_fd = 5;
  CHECK_FALSE(has_bit(acked_protocol_features(all_offered, device), protocol_feature::log_shmfd));
  // probe: a channel, an in-flight region, no dirty logging
  device.inflight = true;
  const BringupOptions probe = probe_like(9);
  CHECK(acked_protocol_features(all_offered, probe) == acked_protocol_features(all_offered, device));
  CHECK_FALSE(has_bit(acked_protocol_features(all_offered, probe), protocol_feature::log_shmfd));
}

TEST_CASE("bringup: fewer queues than needed fails at GET_QUEUE_NUM and stops there") {
  BringupOptions o;
  o.queues_needed = 3;
  o.record_refusals = true;  // not a refusal: probe mode stops too
  const uint64_t offered = bit(protocol_feature::mq) | bit(protocol_feature::configure_mem_slots);
  FakeBackend f;
  script_head(f, offered, offered);
  f.answer_u64(FrontendReq::get_queue_num, 2, ex(plain));
  auto c = f.client(fast());
  auto r = bring_up(c, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::invalid_argument);
  CHECK(r.error().request == "GET_QUEUE_NUM");
  CHECK(r.error().message().find("needs 3") != std::string::npos);
  CHECK(f.finish() == "");
  CHECK(f.unread_bytes() == 0);  // no GET_MAX_MEM_SLOTS sent
}

TEST_CASE("bringup: an in-band refusal is recorded in probe mode and the bring-up goes on") {
  FdCount leak;
  {
    auto pair = make_socketpair();
    BringupOptions o = probe_like(pair.second.get());
    o.kind = DeviceKind::generic;  // a refused GET_CONFIG is no kind evidence for generic
    const uint64_t acked = acked_protocol_features(all_offered, o);
    FakeBackend f;
    script_head(f, all_offered, acked);
    script_channel(f, 1);  // SET_BACKEND_REQ_FD refused with a failure ack
    f.answer_u64(FrontendReq::get_queue_num, 1, ex(plain));
    f.answer_u64(FrontendReq::get_max_mem_slots, 8, ex(plain));
    f.expect(FrontendReq::get_config, ex(plain, config_request(8)));
    f.send(reply_bytes(FrontendReq::get_config, bytes_of(wire::ConfigHeader{0, 0, 0})));  // refused
    f.expect(FrontendReq::get_shmem_config, ex(plain));
    f.send(shmem_reply());
    auto c = f.client(fast());
    auto r = bring_up(c, o);
    REQUIRE(r.ok());
    CHECK(f.finish() == "");
    CHECK(requests(f).size() == 9);
    REQUIRE(r->refusals.size() == 2);
    CHECK(r->refusals[0].step == BringupStep::set_backend_req_fd);
    CHECK(r->refusals[1].step == BringupStep::get_config);
    const StepRefusal* channel = r->refusal(BringupStep::set_backend_req_fd);
    REQUIRE(channel != nullptr);
    CHECK(channel->error.code == errc::backend_failure);
    CHECK(channel->error.request == "SET_BACKEND_REQ_FD");
    const StepRefusal* config = r->refusal(BringupStep::get_config);
    REQUIRE(config != nullptr);
    CHECK(config->error.code == errc::backend_failure);
    CHECK(config->error.message().find("GET_CONFIG") != std::string::npos);
    CHECK(r->refusal(BringupStep::get_queue_num) == nullptr);
    CHECK_FALSE(r->backend_channel);
    CHECK_FALSE(r->config);
    CHECK(r->queue_num == 1);
    CHECK(r->shmem_sizes.has_value());
    CHECK_FALSE(c.broken());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("bringup: an in-band refusal ends a strict bring-up, naming the request") {
  for (bool config_refused : {false, true}) {
    CAPTURE(config_refused);
    auto pair = make_socketpair();
    BringupOptions o = probe_like(pair.second.get());
    o.record_refusals = false;
    o.kind = DeviceKind::generic;  // blk: the next test
    const uint64_t acked = acked_protocol_features(all_offered, o);
    FakeBackend f;
    script_head(f, all_offered, acked);
    script_channel(f, config_refused ? 0 : 1);
    if (config_refused) {
      f.answer_u64(FrontendReq::get_queue_num, 1, ex(plain));
      f.answer_u64(FrontendReq::get_max_mem_slots, 8, ex(plain));
      f.expect(FrontendReq::get_config, ex(plain, config_request(8)));
      f.send(reply_bytes(FrontendReq::get_config, bytes_of(wire::ConfigHeader{0, 0, 0})));
    }
    auto c = f.client(fast());
    auto r = bring_up(c, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::backend_failure);
    CHECK(r.error().request == (config_refused ? "GET_CONFIG" : "SET_BACKEND_REQ_FD"));
    CHECK(f.finish() == "");
    CHECK(f.unread_bytes() == 0);  // nothing sent after the refused step
    CHECK_FALSE(c.broken());
  }
}

TEST_CASE("bringup: a refused GET_CONFIG of a blk config space fails as a device-kind mismatch") {
  // strict and probe mode alike: the refusal is the kind check's evidence, the
  // bring-up goes on to its end and then fails naming the kind and the size
  for (bool probe : {false, true}) {
    CAPTURE(probe);
    auto pair = make_socketpair();
    BringupOptions o = probe_like(pair.second.get());
    o.record_refusals = probe;
    o.config_size = 60;
    const uint64_t acked = acked_protocol_features(all_offered, o);
    FakeBackend f;
    script_head(f, all_offered, acked);
    script_channel(f, 0);
    f.answer_u64(FrontendReq::get_queue_num, 2, ex(plain));
    f.answer_u64(FrontendReq::get_max_mem_slots, 8, ex(plain));
    f.expect(FrontendReq::get_config, ex(plain, config_request(60)));
    f.send(reply_bytes(FrontendReq::get_config, bytes_of(wire::ConfigHeader{0, 0, 0})));
    f.expect(FrontendReq::get_shmem_config, ex(plain));
    f.send(shmem_reply());
    auto c = f.client(fast());
    auto r = bring_up(c, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::invalid_argument);
    CHECK(r.error().request == "device kind");
    CHECK_MESSAGE(r.error().detail.find("does not look like a blk device: it refused GET_CONFIG of "
                                        "60 bytes, the size of a blk config space") !=
                      std::string::npos,
                  r.error().message());
    CHECK(f.finish() == "");
    CHECK_FALSE(c.broken());
  }
}

TEST_CASE("bringup: a back-end of another kind is named before a queue shortfall") {
  // qemu-storage-daemon's features and one queue, driven as net with 2 queues needed
  BringupOptions o;
  o.kind = DeviceKind::net;
  o.queues_needed = 2;
  const uint64_t offered = bit(protocol_feature::mq);
  FakeBackend f;
  f.expect(FrontendReq::set_owner, ex(plain, std::vector<uint8_t>{}, 0));
  f.answer_u64(FrontendReq::get_features, 0x175007e46, ex(plain));
  f.answer_u64(FrontendReq::get_protocol_features, offered, ex(plain));
  f.expect(FrontendReq::set_protocol_features, ex(plain, u64(offered)));
  f.answer_u64(FrontendReq::get_queue_num, 1, ex(plain));
  auto c = f.client(fast());
  auto r = bring_up(c, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().request == "device kind");
  CHECK_MESSAGE(r.error().detail.find("bit 6 (blk BLK_SIZE)") != std::string::npos, r.error().message());
  CHECK(f.finish() == "");
}

TEST_CASE("bringup: a broken connection ends the bring-up in probe mode too") {
  struct Case {
    const char* what;
    const char* request;
    errc code;
  };
  const Case cases[] = {
      {"EOF before GET_QUEUE_NUM's reply", "GET_QUEUE_NUM", errc::disconnected},
      {"GET_CONFIG answered for another offset", "GET_CONFIG", errc::invalid_payload},
      {"silence at GET_FEATURES", "GET_FEATURES", errc::timeout},
  };
  for (const auto& k : cases) {
    CAPTURE(k.what);
    auto pair = make_socketpair();
    const BringupOptions o = probe_like(pair.second.get());
    const uint64_t acked = acked_protocol_features(all_offered, o);
    FakeBackend f;
    const std::string request = k.request;
    if (request == "GET_FEATURES") {
      f.expect(FrontendReq::set_owner, ex(plain));
      f.expect(FrontendReq::get_features, ex(plain));
    } else {
      script_head(f, all_offered, acked);
      script_channel(f);
      if (request == "GET_QUEUE_NUM") {
        f.expect(FrontendReq::get_queue_num, ex(plain));
        f.close();
      } else {
        f.answer_u64(FrontendReq::get_queue_num, 1, ex(plain));
        f.answer_u64(FrontendReq::get_max_mem_slots, 8, ex(plain));
        f.expect(FrontendReq::get_config, ex(plain, config_request(8)));
        f.send(reply_bytes(FrontendReq::get_config,
                           concat(bytes_of(wire::ConfigHeader{4, 8, 0}), std::vector<uint8_t>(8, 1))));
      }
    }
    Timeouts t = fast();
    t.request = 300ms;
    auto c = f.client(t);
    auto r = bring_up(c, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == k.code);
    CHECK(r.error().request == request);
    CHECK(r.error().message().find(request) != std::string::npos);
    CHECK(c.broken());
    CHECK(f.finish() == "");
  }
}
