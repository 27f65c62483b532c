// The connection actor alone, against a back-end that misbehaves at the
// socket level: it answers the step with an error naming the request, tells
// the device exactly once that the back-end is lost, and refuses later steps
// without touching the socket again.
#include <doctest/doctest.h>

#include <atomic>

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include <caf/typed_event_based_actor.hpp>

#include "actors/connection.hpp"
#include "base/unix_socket.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::actors;
using namespace vufront::test;
using namespace std::chrono_literals;

namespace {

/// A listening socket whose single connection is handled by `peer` on a thread.
class OnePeer {
public:
  template <class F>
  OnePeer(const std::string& path, F peer) {
    listener_ = make_unix_socket(SOCK_STREAM);
    auto a = unix_address(path, "bind");
    REQUIRE(a.ok());
    REQUIRE(unix_bind(listener_.get(), *a));
    REQUIRE(::listen(listener_.get(), 1) == 0);
    thread_ = std::thread([this, peer] {
      UniqueFd c = UniqueFd::adopt(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      peer(c);
    });
  }
  ~OnePeer() { thread_.join(); }

private:
  UniqueFd listener_;
  std::thread thread_;
};

NegotiateRequest request_for(const std::string& socket) {
  NegotiateRequest r;
  r.socket = socket;
  r.connect_timeout_ms = 2000;
  return r;
}

/// Receives (lost_atom, reason) within `timeout`; "" if none came.
std::string next_lost(caf::scoped_actor& self, std::chrono::milliseconds timeout) {
  std::string reason;
  self->receive([&](lost_atom, const caf::actor_addr&, const std::string& why) { reason = why; },
                caf::after(timeout) >> [] {});
  return reason;
}

}  // namespace

TEST_CASE_FIXTURE(RtFixture, "connection: a back-end that never replies times out, reported once") {
  TempDir tmp;
  FdCount fds;
  {
    UniqueFd held;  // keeps the peer's end open and silent until the test ends
    std::atomic<int> got{-1};  // written by the peer's thread
    {
      OnePeer peer(tmp.file("s.sock"), [&](UniqueFd& c) {
        got = c.get();
        held = std::move(c);
      });
      Timeouts t;
      t.request = 200ms;
      auto conn = spawn<caf::detached>(connection_impl, caf::actor_cast<caf::actor_addr>(self), t);
      std::string err;
      self->request(conn, 5s, negotiate_atom_v, request_for(tmp.file("s.sock")))
          .receive([&](DeviceInfo&, SharedFd&) {},
                   [&](caf::error& e) { err = from_caf(e, "negotiate").message(); });
      CHECK(err.find("GET_FEATURES") != std::string::npos);
      CHECK(err.find("timeout") != std::string::npos);
      auto lost = next_lost(self, 2s);
      CHECK(lost.find("GET_FEATURES") != std::string::npos);
      // a later step is refused at once, and the device is not told again
      std::string again;
      self->request(conn, 5s, stop_queues_atom_v, std::vector<uint16_t>{0}, false)
          .receive([](std::vector<uint32_t>&, int32_t) {},
                   [&](caf::error& e) { again = from_caf(e, "stop").message(); });
      CHECK(again.find("broken") != std::string::npos);
      CHECK(next_lost(self, 200ms).empty());
      CHECK(got >= 0);
      // wait until the actor is gone: its state (the socket) goes with it
      self->monitor(conn);
      caf::anon_send_exit(conn, caf::exit_reason::user_shutdown);
      bool down = false;
      self->receive([&](caf::down_msg&) { down = true; }, caf::after(5s) >> [] {});
      CHECK(down);
    }
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE_FIXTURE(RtFixture, "connection: a back-end that closes at once is reported as lost") {
  TempDir tmp;
  OnePeer peer(tmp.file("c.sock"), [](UniqueFd& c) { c.reset(); });
  auto conn = spawn<caf::detached>(connection_impl, caf::actor_cast<caf::actor_addr>(self),
                                   Timeouts{});
  std::string err;
  self->request(conn, 10s, negotiate_atom_v, request_for(tmp.file("c.sock")))
      .receive([&](DeviceInfo&, SharedFd&) {},
               [&](caf::error& e) { err = from_caf(e, "negotiate").message(); });
  CHECK(err.find("disconnected") != std::string::npos);
  CHECK_FALSE(next_lost(self, 2s).empty());
}

TEST_CASE_FIXTURE(RtFixture, "connection: steps before negotiate are refused as not connected") {
  auto conn = spawn<caf::detached>(connection_impl, caf::actor_cast<caf::actor_addr>(self),
                                   Timeouts{});
  std::string err;
  self->request(conn, 5s, stop_queues_atom_v, std::vector<uint16_t>{0}, false)
      .receive([](std::vector<uint32_t>&, int32_t) {},
               [&](caf::error& e) { err = from_caf(e, "stop").message(); });
  CHECK(err.find("not connected") != std::string::npos);
  CHECK(next_lost(self, 100ms).empty());
}
