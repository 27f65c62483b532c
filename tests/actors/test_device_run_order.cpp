// The order of a device's ring and worker exchanges at sleep and wake, as
// the guest sees it: the worker's stop comes after the back-end answered
// GET_VRING_BASE (an interrupt the back-end raised for a request it completed
// before that answer is forwarded by the stop, before sleep returns), wake
// returns once the worker runs again (what was raised while asleep is
// forwarded), and a back-end lost at GET_VRING_BASE fails the sleep naming
// that request and breaks the device (the worker's stop, never sent, does not
// hold the sleep up). The back-end is the scripted fake (tests/fakes/),
// answering whatever comes, served in-process at a socket path. The worker
// runs without its watcher threads (DeviceConfig::start_threads false), so an
// interrupt is forwarded only by a stop or a start: what is checked is
// which of them forwarded it, with no race.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include <poll.h>
#include <unistd.h>

#include "actors/session.hpp"
#include "protocol/messages.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"
#include "virtio/guest_driver.hpp"

using namespace std::chrono_literals;
using namespace vufront;
using namespace vufront::actors;
using test::FakeBackend;

namespace {

constexpr auto kStep = 5s;  // every wait of the fake; a failing run ends there

/// What the serving back-end does at GET_VRING_BASE.
enum class AtStop {
  signal_then_answer,  ///< writes the queue's call eventfd, then answers
  close,               ///< closes the connection instead of answering
};

/// Shared between the fake's thread and the test.
struct Peer {
  std::mutex m;
  SharedFd call;  ///< queue 0's call eventfd, from SET_VRING_CALL
  int vring_base_requests = 0;
};

bool write_one(int fd) {
  uint64_t one = 1;
  return ::write(fd, &one, sizeof one) == sizeof one;
}

/// Whether `fd` (an eventfd) is readable now; consumes it.
bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1)
    return false;
  uint64_t v = 0;
  return ::read(fd, &v, sizeof v) == sizeof v && v > 0;
}

/// A back-end offering VERSION_1 only (no PROTOCOL_FEATURES: no request but
/// GET_FEATURES and GET_VRING_BASE is answered) that serves until the
/// front-end closes the connection.
std::string serve(FakeBackend& f, const std::shared_ptr<Peer>& peer, AtStop at_stop) {
  for (;;) {
    if (!f.wait_readable())
      return "";  // the test is over (stop signal) or idle for a step timeout
    auto m = f.receive_message();
    if (!m)
      return "";  // the front-end closed the connection
    const auto req = static_cast<FrontendReq>(m->header.request);
    if (req == FrontendReq::get_features) {
      if (auto e = f.send_raw(test::reply_u64(req, bit(feature::version_1)), {}); !e.empty())
        return e;
    } else if (req == FrontendReq::set_vring_call) {
      std::lock_guard<std::mutex> lock(peer->m);
      if (m->fds.size() == 1 && m->body.size() == 8 && m->body[0] == 0)
        peer->call = share(std::move(m->fds[0]));
    } else if (req == FrontendReq::get_vring_base) {
      wire::VringState vs{};
      std::memcpy(&vs, m->body.data(), std::min(m->body.size(), sizeof vs));
      SharedFd call;
      {
        std::lock_guard<std::mutex> lock(peer->m);
        ++peer->vring_base_requests;
        call = peer->call;
      }
      if (at_stop == AtStop::close)
        return "";  // the fake's end closes when the script ends
      // a request completed just before the ring stopped
      if (!call || !write_one(call->get()))
        return "no call eventfd to signal";
      vs.num = 7;
      if (auto e = f.send_raw(test::reply_bytes(req, test::bytes_of(vs)), {}); !e.empty())
        return e;
    }
  }
}

struct Running {
  std::unique_ptr<virtio::GuestDriver> guest;
  std::unique_ptr<DeviceSession> session;
};

/// A one-queue device, active on the fake at `socket`, its worker without
/// watcher threads; interrupts go to the guest's INTx eventfd.
Running active_device(caf::actor_system& sys, const std::string& socket) {
  Running r;
  virtio::GuestDriverOptions go;
  go.queues = 1;
  auto g = virtio::GuestDriver::create(go);
  REQUIRE_MESSAGE(g.ok(), g.error().message());
  r.guest = std::move(g).value();
  DeviceConfig config;
  config.socket = socket;
  config.start_threads = false;
  r.session = std::make_unique<DeviceSession>(sys, config);
  r.session->set_timeout(30s);
  NegotiateOptions n;
  n.queues = 1;
  auto info = r.session->negotiate(n);
  REQUIRE_MESSAGE(info.ok(), info.error().message());
  auto mem = r.session->set_memory(memory_spec(r.guest->memory()));
  REQUIRE_MESSAGE(mem.ok(), mem.error().message());
  auto act = r.session->activate(activate_spec(*r.guest, bit(feature::version_1), false));
  REQUIRE_MESSAGE(act.ok(), act.error().message());
  return r;
}

}  // namespace

TEST_CASE_FIXTURE(test::RtFixture,
                  "device: sleep stops the worker after GET_VRING_BASE was answered, wake "
                  "answers once it runs again") {
  test::TempDir dir;
  FakeBackend fake(kStep);
  REQUIRE(fake.serve_at(dir.file("be.sock")));
  auto peer = std::make_shared<Peer>();
  fake.step("serve", [peer](FakeBackend& f) { return serve(f, peer, AtStop::signal_then_answer); });
  fake.start();
  {
    auto dev = active_device(sys, dir.file("be.sock"));
    const int intx = dev.guest->intx()->get();
    while (readable_now(intx)) {
    }
    for (int cycle = 0; cycle < 20; ++cycle) {
      CAPTURE(cycle);
      auto s = dev.session->sleep();
      REQUIRE_MESSAGE(s.ok(), s.error().message());
      // raised by the back-end before it answered GET_VRING_BASE: the worker's
      // stop, which came after that answer, found it and forwarded it
      CHECK(readable_now(intx));
      SharedFd call;
      {
        std::lock_guard<std::mutex> lock(peer->m);
        call = peer->call;
      }
      REQUIRE(call);
      // raised while asleep: held, and forwarded by the worker's start
      REQUIRE(write_one(call->get()));
      CHECK_FALSE(readable_now(intx));
      auto w = dev.session->wake();
      REQUIRE_MESSAGE(w.ok(), w.error().message());
      CHECK(readable_now(intx));
      auto st = dev.session->status();
      REQUIRE(st.ok());
      CHECK(st->state == DeviceState::active);
      REQUIRE(st->queues.size() == 1);
      CHECK(st->queues[0].base == 7);  // the base GET_VRING_BASE answered
    }
  }
  CHECK(fake.finish() == "");
  std::lock_guard<std::mutex> lock(peer->m);
  CHECK(peer->vring_base_requests == 20);
}

TEST_CASE_FIXTURE(test::RtFixture,
                  "device: a back-end lost at GET_VRING_BASE fails the sleep naming it, the "
                  "device is broken") {
  test::TempDir dir;
  FakeBackend fake(kStep);
  REQUIRE(fake.serve_at(dir.file("be.sock")));
  auto peer = std::make_shared<Peer>();
  fake.step("serve", [peer](FakeBackend& f) { return serve(f, peer, AtStop::close); });
  fake.close();
  fake.start();
  auto dev = active_device(sys, dir.file("be.sock"));
  auto s = dev.session->sleep();
  REQUIRE_FALSE(s.ok());
  INFO(s.error().message());
  CHECK(s.error().op == "sleep");
  CHECK(s.error().message().find("GET_VRING_BASE") != std::string::npos);
  auto st = dev.session->status();
  REQUIRE(st.ok());
  CHECK(st->state == DeviceState::broken);
  CHECK(fake.finish() == "");
}
