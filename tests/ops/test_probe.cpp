// `vufront probe` (run_probe) against a scripted peer on a unix socket: it
// runs the shared bring-up in probe mode, acks by the device's rule (no
// LOG_SHMFD, nothing vufront does not implement), and reports in-band
// refusals (SET_BACKEND_REQ_FD, GET_CONFIG) instead of failing.
#include <doctest/doctest.h>

#include <sys/socket.h>

#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ops/probe.hpp"
#include "ops/probe_report.hpp"
#include "protocol/connection.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::ops;
using namespace std::chrono_literals;
using vufront::test::bytes_of;
using vufront::test::reply_bytes;
using vufront::test::reply_u64;
using vufront::test::TempDir;

namespace {

/// A back-end on `path` that accepts one front-end and answers each request
/// it receives from `answers` (empty bytes: no answer), recording the
/// requests; after the last answer it reads until the front-end closes.
class ScriptedPeer {
public:
  using Answer = std::function<std::vector<uint8_t>(const Message&)>;

  ScriptedPeer(const std::string& path, std::vector<Answer> answers) : answers_(std::move(answers)) {
    auto l = Connection::listen(path);
    REQUIRE(l.ok());
    listen_ = std::move(l).value();
    thread_ = std::thread([this, path] { run(path); });
  }
  ~ScriptedPeer() {
    if (thread_.joinable())
      thread_.join();
  }

  /// The requests received (valid after the probe returned and the peer ended).
  const std::vector<wire::Header>& requests() {
    if (thread_.joinable())
      thread_.join();
    return requests_;
  }
  const std::vector<std::vector<uint8_t>>& bodies() { return bodies_; }

private:
  void run(const std::string& path) {
    auto c = Connection::accept(listen_.get(), deadline_in(test::scaled(5000ms)), path);
    if (!c)
      return;
    for (;;) {
      auto m = c->receive(0x1000, max_fds_per_message, deadline_in(test::scaled(5000ms)), "peer");
      if (!m)
        return;  // the probe closed the connection (or a deadline passed)
      requests_.push_back(m->header);
      bodies_.push_back(m->body);
      if (next_ >= answers_.size())
        continue;
      auto bytes = answers_[next_++](*m);
      if (!bytes.empty() &&
          ::send(c->fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size()))
        return;
    }
  }

  UniqueFd listen_;
  std::vector<Answer> answers_;
  size_t next_ = 0;
  std::vector<wire::Header> requests_;
  std::vector<std::vector<uint8_t>> bodies_;
  std::thread thread_;
};

ScriptedPeer::Answer none() {
  return [](const Message&) { return std::vector<uint8_t>{}; };
}

ScriptedPeer::Answer u64(FrontendReq req, uint64_t v) {
  return [req, v](const Message&) { return reply_u64(req, v); };
}

constexpr uint64_t offered_protocol =
    bit(protocol_feature::mq) | bit(protocol_feature::log_shmfd) | bit(protocol_feature::reply_ack) |
    bit(protocol_feature::backend_req) | bit(protocol_feature::pagefault) |
    bit(protocol_feature::config) | bit(protocol_feature::configure_mem_slots);

}  // namespace

TEST_CASE("probe: the device's ack rule (no LOG_SHMFD), refusals reported and the probe goes on") {
  TempDir tmp;
  const std::string sock = tmp.file("p.sock");
  std::vector<ScriptedPeer::Answer> script = {
      none(),                                                            // SET_OWNER
      u64(FrontendReq::get_features, bit(feature::protocol_features) | bit(feature::version_1)),
      u64(FrontendReq::get_protocol_features, offered_protocol),
      none(),                                                            // SET_PROTOCOL_FEATURES
      u64(FrontendReq::set_backend_req_fd, 1),                           // refused (REPLY_ACK)
      u64(FrontendReq::get_queue_num, 2),
      u64(FrontendReq::get_max_mem_slots, 16),
      [](const Message&) {  // GET_CONFIG refused: size 0
        return reply_bytes(FrontendReq::get_config, bytes_of(wire::ConfigHeader{0, 0, 0}));
      },
  };
  ScriptedPeer peer(sock, std::move(script));
  ProbeOptions opts;
  opts.socket = sock;
  // generic: a blk back-end that refuses a blk config space fails the kind
  // check (tests/protocol/test_bringup.cpp); here the refusal is only reported
  opts.device = DeviceKind::generic;
  opts.config_size = 60;
  opts.timeout = test::scaled(3000ms);
  auto r = run_probe(opts);
  REQUIRE_MESSAGE(r.ok(), r.error().message());

  std::vector<std::string> names;
  for (const auto& h : peer.requests()) {
    auto req = frontend_req_from_code(h.request);
    names.push_back(req ? name(*req) : "?");
  }
  CHECK(names == std::vector<std::string>{"SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES",
                                          "SET_PROTOCOL_FEATURES", "SET_BACKEND_REQ_FD",
                                          "GET_QUEUE_NUM", "GET_MAX_MEM_SLOTS", "GET_CONFIG"});
  const uint64_t acked = offered_protocol & ~bit(protocol_feature::log_shmfd) &
                         ~bit(protocol_feature::pagefault);
  REQUIRE(peer.bodies().size() > 3);
  CHECK(peer.bodies()[3] == bytes_of(wire::U64{acked}));
  CHECK(r->protocol_features == std::optional<uint64_t>(offered_protocol));
  CHECK(r->protocol_features_acked == std::optional<uint64_t>(acked));
  CHECK(r->queue_num == std::optional<uint64_t>(2));
  CHECK(r->max_mem_slots == std::optional<uint64_t>(16));
  CHECK_FALSE(r->backend_channel);
  REQUIRE(r->backend_channel_error.has_value());
  CHECK(r->backend_channel_error->find("SET_BACKEND_REQ_FD") != std::string::npos);
  CHECK_FALSE(r->config.has_value());
  REQUIRE(r->config_error.has_value());
  CHECK(r->config_error->find("GET_CONFIG") != std::string::npos);
  CHECK(r->config_size_requested == 60);
  CHECK_FALSE(r->shmem_regions.has_value());

  std::ostringstream text;
  print_probe_text(text, *r);
  CHECK(text.str().find("back-end channel    refused: SET_BACKEND_REQ_FD") != std::string::npos);
  std::istringstream lines(text.str());
  std::string offered_line;
  std::string acked_line;
  for (std::string l; std::getline(lines, l);) {
    if (l.rfind("protocol features", 0) == 0)
      offered_line = l;
    if (l.rfind("  acked", 0) == 0)
      acked_line = l;
  }
  CHECK(offered_line.find("LOG_SHMFD") != std::string::npos);
  CHECK(acked_line.find("REPLY_ACK") != std::string::npos);
  CHECK(acked_line.find("LOG_SHMFD") == std::string::npos);
  auto j = probe_json(*r);
  CHECK(j["backend_channel_error"].get<std::string>().find("SET_BACKEND_REQ_FD") != std::string::npos);
  CHECK(std::stoull(j["protocol_features_acked"]["bits"].get<std::string>(), nullptr, 16) == acked);
}
