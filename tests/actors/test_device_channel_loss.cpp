// A device whose back-end sends one oversized back-end request (a header
// announcing more body than any back-end request may carry) on the back-end
// channel: the channel closes at once, the device fails naming the request
// and the reason, and every fd of the lost connection is closed while the
// device lives on. The back-end is the scripted fake (tests/fakes/), served
// in-process at a socket path the device connects to; the scenario runs 100
// times, the oversized request arriving at three different moments.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/session.hpp"
#include "protocol/messages.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace std::chrono_literals;
using namespace vufront;
using namespace vufront::actors;
using test::FakeBackend;

namespace {

constexpr auto kStep = 5s;  // every wait of the fake; a failing run ends there

/// When the oversized request comes.
enum class When {
  negotiating,  ///< right after SET_BACKEND_REQ_FD, before the device is negotiated
  idle,         ///< on a negotiated device nobody is using
  in_a_step,    ///< while the device waits for the answer to GET_CONFIG (read_config)
};

const char* name_of(When w) {
  switch (w) {
    case When::negotiating: return "negotiating";
    case When::idle: return "idle";
    case When::in_a_step: return "in a step";
  }
  return "?";
}

/// The back-end's end of the back-end channel, as the fake received it.
struct ChannelEnd {
  UniqueFd fd;
};

/// The bring-up of a blk back-end offering PROTOCOL_FEATURES, BACKEND_REQ
/// and CONFIG (no REPLY_ACK: the SET_* requests get no answer); keeps the
/// channel fd of SET_BACKEND_REQ_FD. Its 60-byte config space is read at the
/// end (a blk device's negotiation does, as QEMU's vhost-user-blk).
void bring_up(FakeBackend& f, const std::shared_ptr<ChannelEnd>& end) {
  f.expect(FrontendReq::set_owner);
  f.answer_u64(FrontendReq::get_features, bit(feature::protocol_features) | bit(32));
  f.answer_u64(FrontendReq::get_protocol_features,
               bit(protocol_feature::backend_req) | bit(protocol_feature::config));
  f.expect(FrontendReq::set_protocol_features);
  f.step("SET_BACKEND_REQ_FD: keep the channel", [end](FakeBackend& self) -> std::string {
    if (!self.wait_readable())
      return "nothing arrived";
    auto m = self.receive_message();
    if (!m)
      return m.error().message();
    if (m->header.request != static_cast<uint32_t>(FrontendReq::set_backend_req_fd))
      return "got " + frontend_req_name(m->header.request);
    if (m->fds.size() != 1)
      return std::to_string(m->fds.size()) + " fds";
    end->fd = std::move(m->fds[0]);
    return "";
  });
  f.expect(FrontendReq::get_config);
  f.send(test::reply_bytes(FrontendReq::get_config,
                           test::concat(test::bytes_of(wire::ConfigHeader{0, 60, 0}),
                                        std::vector<uint8_t>(60, 0))));
}

/// Sends a CONFIG_CHANGE_MSG header announcing 65536 body bytes (none
/// follow), then waits for the front-end to close the channel (EOF) and
/// closes the back-end's end too.
void oversized_then_closed(FakeBackend& f, const std::shared_ptr<ChannelEnd>& end) {
  f.step("oversized CONFIG_CHANGE_MSG", [end](FakeBackend&) -> std::string {
    const uint32_t header[3] = {static_cast<uint32_t>(BackendReq::config_change_msg),
                                flag_version | flag_need_reply, 0x10000};
    if (::send(end->fd.get(), header, sizeof header, MSG_NOSIGNAL) != sizeof header)
      return "send failed";
    return "";
  });
  f.step("the front-end closes the channel", [end](FakeBackend&) -> std::string {
    const auto until = std::chrono::steady_clock::now() + kStep;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{end->fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0)
        continue;
      uint8_t scratch[64];
      const ssize_t n = ::recv(end->fd.get(), scratch, sizeof scratch, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        end->fd.reset();
        return "";
      }
    }
    return "the back-end channel is still open";
  });
}

/// The failure names the request and the reason.
void check_names_it(const std::string& text) {
  INFO(text);
  CHECK(text.find("back-end channel") != std::string::npos);
  CHECK(text.find("CONFIG_CHANGE_MSG") != std::string::npos);
  CHECK(text.find("oversized") != std::string::npos);
}

/// The device reported the loss as an event naming it, and is broken.
void check_lost(DeviceSession& s) {
  auto ev = s.wait_event(DeviceEvent::Kind::backend_lost, 10s);
  REQUIRE_MESSAGE(ev.has_value(), "no backend_lost event");
  check_names_it(ev->detail);
  auto st = s.status();
  REQUIRE(st.ok());
  CHECK(st->state == DeviceState::broken);
  check_names_it(st->last_error);
}

void run_once(caf::actor_system& sys, const std::string& socket, When when) {
  const std::string variant = name_of(when);
  CAPTURE(variant);
  FakeBackend fake(kStep);
  REQUIRE(fake.serve_at(socket));
  auto end = std::make_shared<ChannelEnd>();
  bring_up(fake, end);
  if (when == When::idle)
    fake.wait_signal();
  if (when == When::in_a_step)
    fake.expect(FrontendReq::get_config);
  oversized_then_closed(fake, end);
  fake.start();
  test::FdCount fds;  // the fake's are open already, and stay so

  DeviceConfig config;
  config.socket = socket;
  DeviceSession s(sys, config);  // reconnect off
  s.set_timeout(30s);
  auto info = s.negotiate(NegotiateOptions{});
  switch (when) {
    case When::negotiating:
      // before the device is negotiated, or just after: either way it says so
      if (!info) {
        check_names_it(info.error().message());
        CHECK(s.status()->state == DeviceState::disconnected);
      } else {
        check_lost(s);
      }
      break;
    case When::idle:
      REQUIRE_MESSAGE(info.ok(), info.error().message());
      fake.signal();
      check_lost(s);
      break;
    case When::in_a_step: {
      REQUIRE_MESSAGE(info.ok(), info.error().message());
      auto cfg = s.read_config(0, 8);
      REQUIRE_FALSE(cfg.ok());
      check_names_it(cfg.error().message());
      CHECK(cfg.error().code == errc::broken);
      check_lost(s);
      // and the next step fails at once with the same loss
      auto again = s.read_config(0, 8);
      REQUIRE_FALSE(again.ok());
      check_names_it(again.error().message());
      break;
    }
  }
  // the fake saw the channel close (its last step)
  CHECK(fake.finish() == "");
  // the lost connection's fds (socket, channel, the children's) are closed
  // while the device lives on
  const int leaked = fds.leaked();
  CHECK_MESSAGE(leaked == 0, test::FdCount::listing());
}

}  // namespace

TEST_CASE_FIXTURE(test::RtFixture,
                  "device: an oversized back-end request closes the channel and fails the "
                  "device, naming it, every time (100 runs)") {
  test::TempDir dir;
  for (int i = 0; i < 100; ++i) {
    CAPTURE(i);
    const When when = static_cast<When>(i % 3);
    run_once(sys, dir.file("be" + std::to_string(i) + ".sock"), when);
  }
}
