// A device driven by a VMM socket tells its port which connection actor the
// VMM's requests go to (vmm_conn_atom), and the port sends them there
// straight. The test thread plays the port; the back-end is the scripted
// fake (tests/fakes/), served at a socket path the device connects to, and
// the script follows the device through a loss, its reconnect and a renewal.
// Pinned: the port hears of the new connection before the events that
// follow (vmm_lost, vmm_back); while there is none it is told why (the
// loss); a request to the dropped connection fails instead of waiting; and
// a request sent to a renewed connection as soon as the port hears of it
// runs after the device's negotiation on it (steps in arrival order).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/after.hpp>

#include "actors/session.hpp"
#include "proxy/forward.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace std::chrono_literals;
using namespace vufront;
using namespace vufront::actors;
using test::FakeBackend;

namespace {

constexpr auto kWait = 10s;  // every wait of the test; a failing run ends there

/// The bring-up of a blk back-end offering PROTOCOL_FEATURES and CONFIG only
/// (no REPLY_ACK, no back-end channel): the device reads its 60-byte config
/// space at the end.
void bring_up(FakeBackend& f) {
  f.expect(FrontendReq::set_owner);
  f.answer_u64(FrontendReq::get_features, bit(feature::protocol_features) | bit(32));
  f.answer_u64(FrontendReq::get_protocol_features, bit(protocol_feature::config));
  f.expect(FrontendReq::set_protocol_features);
  f.expect(FrontendReq::get_config);
  f.send(test::reply_bytes(FrontendReq::get_config,
                           test::concat(test::bytes_of(wire::ConfigHeader{0, 60, 0}), std::vector<uint8_t>(60, 0))));
}

/// The VMM's GET_CONFIG of 4 bytes at `offset`, answered with `value`.
void vmm_get_config(FakeBackend& f, uint32_t offset, uint8_t value) {
  f.expect(FrontendReq::get_config, {std::nullopt, test::concat(test::bytes_of(wire::ConfigHeader{offset, 4, 0}),
                                                                std::vector<uint8_t>(4, 0)),
                                     std::nullopt, {}});
  f.send(test::reply_bytes(FrontendReq::get_config, test::concat(test::bytes_of(wire::ConfigHeader{offset, 4, 0}),
                                                                 std::vector<uint8_t>(4, value))));
}

proxy::Forward get_config(uint32_t offset) {
  ConfigRequest c{wire::ConfigHeader{offset, 4, 0}, std::vector<uint8_t>(4, 0)};
  return proxy::Forward{FrontendReq::get_config, std::move(c), {}, false};
}

/// What the device told the port, in order.
struct PortMessage {
  enum class Kind { none, conn, lost, back } kind = Kind::none;
  caf::actor_addr conn;
  std::string why;  ///< conn: why there is none; lost, back: the detail
};

PortMessage next(caf::scoped_actor& self) {
  PortMessage m;
  self->receive(
      [&](vmm_conn_atom, const caf::actor_addr& c, const caf::error& e) {
        m.kind = PortMessage::Kind::conn;
        m.conn = c;
        m.why = e ? from_caf(e, "VMM request").message() : std::string();
      },
      [&](vmm_lost_atom, const std::string& why) {
        m.kind = PortMessage::Kind::lost;
        m.why = why;
      },
      [&](vmm_back_atom, const std::string& detail) {
        m.kind = PortMessage::Kind::back;
        m.why = detail;
      },
      caf::after(kWait) >> [] {});
  return m;
}

/// The messages up to the first of `kind`: that one, with the last
/// vmm_conn before it.
struct Until {
  PortMessage::Kind kind = PortMessage::Kind::none;
  std::optional<PortMessage> last_conn;
};

Until until(caf::scoped_actor& self, PortMessage::Kind kind) {
  Until out;
  for (;;) {
    auto m = next(self);
    if (m.kind == PortMessage::Kind::conn) {
      out.last_conn = m;
      continue;
    }
    out.kind = m.kind;
    if (m.kind == kind || m.kind == PortMessage::Kind::none)
      return out;
  }
}

/// The GET_CONFIG forwarded straight to `conn` as the port does: its reply's
/// value byte, or the error.
std::pair<int, std::string> forward(caf::scoped_actor& self, const caf::actor_addr& conn, uint32_t offset) {
  std::pair<int, std::string> out{-1, ""};
  auto h = caf::actor_cast<connection_actor>(conn);
  if (!h)
    return {-1, "the connection actor is gone"};
  self->request(h, kWait, vmm_fwd_atom_v, get_config(offset), proxy::Answer{})
      .receive(
          [&](const proxy::ForwardResult& r) {
            out.first = r.has_reply && r.body.size() == 16 ? r.body[12] : -2;
          },
          [&](caf::error& e) { out.second = from_caf(e, "GET_CONFIG").message(); });
  return out;
}

}  // namespace

TEST_CASE_FIXTURE(test::RtFixture,
                  "device: a VMM port is told each connection its requests go to, before the events, "
                  "and a renewed one runs them after its negotiation") {
  test::TempDir dir;
  const std::string socket = dir.file("be.sock");
  FakeBackend fake(kWait);
  REQUIRE(fake.serve_at(socket));
  bring_up(fake);         // connection 1
  vmm_get_config(fake, 0, 0x11);
  fake.close();           // lost
  fake.accept_next();     // the reconnect: connection 2
  bring_up(fake);
  vmm_get_config(fake, 4, 0x22);
  fake.accept_next();     // the renewal: connection 3 (the device shut the second down)
  bring_up(fake);
  vmm_get_config(fake, 8, 0x33);  // sent before the renewal's negotiation ended
  fake.start();

  DeviceConfig config;
  config.socket = socket;
  config.reconnect.enabled = true;
  config.reconnect.initial_delay = 10ms;
  DeviceSession s(sys, config);
  s.set_timeout(kWait);
  auto info = s.negotiate(NegotiateOptions{});
  REQUIRE_MESSAGE(info.ok(), info.error().message());

  // the test thread registers as the device's VMM port
  bool registered = false;
  self->request(s.device(), kWait, vmm_atom_v, self->address())
      .receive([&](const DeviceInfo&) { registered = true; },
               [&](caf::error& e) { FAIL(from_caf(e, "vmm").message()); });
  REQUIRE(registered);
  auto first = next(self);
  REQUIRE(first.kind == PortMessage::Kind::conn);
  REQUIRE(first.conn);
  CHECK(forward(self, first.conn, 0) == std::make_pair(0x11, std::string()));

  // the fake closes: no connection (the last word before vmm_lost: the
  // loss), then vmm_lost
  auto lost = until(self, PortMessage::Kind::lost);
  REQUIRE(lost.kind == PortMessage::Kind::lost);
  REQUIRE(lost.last_conn.has_value());
  CHECK_FALSE(lost.last_conn->conn);
  CHECK_MESSAGE(lost.last_conn->why.find("the back-end was lost") != std::string::npos, lost.last_conn->why);
  // a request to the dropped connection fails (the port handles it as a loss)
  auto dropped = forward(self, first.conn, 0);
  CHECK(dropped.first == -1);
  CHECK_FALSE(dropped.second.empty());

  // the reconnect: the new connection before vmm_back; requests go there
  auto back = until(self, PortMessage::Kind::back);
  REQUIRE(back.kind == PortMessage::Kind::back);
  REQUIRE(back.last_conn.has_value());
  auto second = *back.last_conn;
  REQUIRE(second.conn);
  CHECK(second.conn != first.conn);
  CHECK(forward(self, second.conn, 4) == std::make_pair(0x22, std::string()));

  // the renewal: none while the old children go, then the new connection,
  // told once its negotiation is queued; a request sent to it at once runs
  // after that negotiation (the fake expects the bring-up first)
  auto renewed = self->request(s.device(), kWait, vmm_renew_atom_v, std::string("the VMM left"));
  PortMessage third = next(self);
  while (third.kind == PortMessage::Kind::conn && !third.conn)  // the old children dropped
    third = next(self);
  REQUIRE(third.kind == PortMessage::Kind::conn);
  REQUIRE(third.conn);
  CHECK(third.conn != second.conn);
  CHECK(forward(self, third.conn, 8) == std::make_pair(0x33, std::string()));
  std::string renew_error = "no answer";
  std::move(renewed).receive([&](caf::ok_atom) { renew_error.clear(); },
                             [&](caf::error& e) { renew_error = from_caf(e, "renew").message(); });
  CHECK(renew_error == "");
  CHECK(fake.finish() == "");
}
