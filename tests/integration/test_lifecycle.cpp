// The device lifecycle through the actors, end to end against real
// back-ends (vufront-backend, qemu-storage-daemon, virtiofsd): the whole
// check sequence, every operation in every state, a back-end killed in every
// state, an interrupt raised during sleep, and a sleep/wake soak.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include <sys/stat.h>

#include <poll.h>
#include <unistd.h>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "ops/checker.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;
using actors::DeviceEvent;
using actors::DeviceState;

namespace {

constexpr auto event_wait = std::chrono::seconds(10);

/// Whether `fd` (an eventfd) becomes readable within `ms`; consumes it.
bool signalled(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) != 1)
    return false;
  uint64_t v = 0;
  return ::read(fd, &v, sizeof v) == sizeof v && v > 0;
}

/// Brings a Checker to `target` through the standard steps.
bool bring_to(ops::Checker& c, DeviceState target) {
  switch (target) {
    case DeviceState::disconnected: return true;
    case DeviceState::negotiated: return c.negotiate() && c.set_memory();
    case DeviceState::active: return c.negotiate() && c.set_memory() && c.activate();
    case DeviceState::sleeping:
      return c.negotiate() && c.set_memory() && c.activate() && c.io("I/O") && c.sleep();
    case DeviceState::broken:
    case DeviceState::reconnecting: return false;
  }
  return false;
}

DeviceState state_of(actors::DeviceSession& s) { return must(s.status(), "status").state; }

}  // namespace

TEST_CASE("lifecycle: the whole check against vufront-backend (split/packed, forwarded/MSI-X)") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  for (bool packed : {false, true})
    for (bool msix : {false, true}) {
      CAPTURE(packed);
      CAPTURE(msix);
      TempDir tmp;
      PeerProcess be(tmp.file("be.sock"), backend_command(tmp.file("be.sock"), {"--queues", "2"}));
      FdCount fds;
      {
        ops::CheckOptions o;
        o.socket = be.socket();
        o.queues = 2;
        o.packed = packed;
        o.msix = msix;
        ops::Checker c(sys, o);
        CHECK_MESSAGE(c.run(), failure(c));
        CHECK(c.steps().size() == 11);
      }
      CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
    }
}

TEST_CASE("lifecycle: the whole check against qemu-storage-daemon, 1 and 4 queues") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  for (uint16_t queues : {uint16_t{1}, uint16_t{4}}) {
    CAPTURE(queues);
    TempDir tmp;
    PeerProcess qsd(tmp.file("q.sock"), qsd_command(tmp.file("q.sock"), tmp.file("disk.img")),
                    {"QSD_NUM_QUEUES=" + std::to_string(queues)});
    FdCount fds;
    {
      ops::CheckOptions o;
      o.socket = qsd.socket();
      o.queues = queues;
      ops::Checker c(sys, o);
      CHECK_MESSAGE(c.run(), failure(c));
    }
    CHECK(fds.leaked() == 0);
  }
}

TEST_CASE("lifecycle: the whole check against virtiofsd reads a shared file") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  std::string dir = tmp.file("share");
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  std::ofstream(dir + "/hello.txt") << "hello from the shared directory\n";
  PeerProcess fs(tmp.file("fs.sock"), virtiofsd_command(tmp.file("fs.sock"), dir));
  ops::CheckOptions o;
  o.socket = fs.socket();
  o.device = DeviceKind::fs;
  o.fs_file = "hello.txt";
  ops::Checker c(sys, o);
  CHECK_MESSAGE(c.run(), failure(c));
  CHECK(c.steps().back().detail.find("read 32 bytes of hello.txt") != std::string::npos);
}

TEST_CASE("lifecycle: every operation in every state is answered, invalid ones with bad_state") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  using Op = std::function<Result<void>(ops::Checker&)>;
  const std::map<std::string, Op> ops = {
      {"sleep", [](ops::Checker& c) { return c.session().sleep(); }},
      {"wake", [](ops::Checker& c) { return c.session().wake(); }},
      {"reset", [](ops::Checker& c) { return c.session().reset(); }},
  };
  // Which operations each state accepts.
  const std::map<DeviceState, std::set<std::string>> valid = {
      {DeviceState::disconnected, {"reset"}},
      {DeviceState::negotiated, {"reset"}},
      {DeviceState::active, {"sleep", "reset"}},
      {DeviceState::sleeping, {"wake", "reset"}},
  };
  for (const auto& [state, accepted] : valid)
    for (const auto& [name, op] : ops) {
      CAPTURE(actors::to_string(state));
      CAPTURE(name);
      TempDir tmp;
      PeerProcess be(tmp.file("s.sock"), backend_command(tmp.file("s.sock")));
      ops::CheckOptions o;
      o.socket = be.socket();
      ops::Checker c(sys, o);
      REQUIRE_MESSAGE(bring_to(c, state), failure(c));
      auto r = op(c);
      if (accepted.count(name)) {
        CHECK_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
      } else {
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == errc::bad_state);
        CHECK(r.error().request == name);
        // a refused operation changes nothing
        CHECK(state_of(c.session()) == state);
      }
    }
}

TEST_CASE("lifecycle: a back-end killed in every state is reported, the device recovers by reset") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  for (auto state : {DeviceState::negotiated, DeviceState::active, DeviceState::sleeping}) {
    CAPTURE(actors::to_string(state));
    TempDir tmp;
    FdCount fds;
    {
      PeerProcess be(tmp.file("k.sock"), backend_command(tmp.file("k.sock")));
      ops::CheckOptions o;
      o.socket = be.socket();
      ops::Checker c(sys, o);
      REQUIRE_MESSAGE(bring_to(c, state), failure(c));
      REQUIRE(be.signal(SIGKILL));
      auto lost = c.session().wait_event(DeviceEvent::Kind::backend_lost, event_wait);
      REQUIRE_MESSAGE(lost, "no backend_lost event");
      CHECK_FALSE(lost->detail.empty());
      auto st = must(c.session().status(), "status");
      CHECK(st.state == DeviceState::broken);
      CHECK(st.last_error == lost->detail);
      // every operation but reset is refused while broken, at once, naming
      // the loss; nothing hangs
      auto slept = c.session().sleep();
      REQUIRE_FALSE(slept.ok());
      CHECK(slept.error().code == errc::broken);
      CHECK(slept.error().message() == "sleep: broken: the back-end was lost: " + lost->detail);
      must(c.session().reset(), "reset from broken");
      CHECK(state_of(c.session()) == DeviceState::disconnected);
      be.stop();
      // a new back-end on the same socket: the same device negotiates again
      PeerProcess again(tmp.file("k.sock"), backend_command(tmp.file("k.sock")));
      actors::NegotiateOptions n;
      must(c.session().negotiate(n), "negotiate after reset");
      CHECK(state_of(c.session()) == DeviceState::negotiated);
    }
    CHECK(fds.leaked() == 0);
  }
}

TEST_CASE("lifecycle: a back-end that dies mid-operation fails that operation with its step") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  // the back-end crashes when asked for the first GET_VRING_BASE (sleep)
  PeerProcess be(tmp.file("c.sock"),
                 backend_command(tmp.file("c.sock"), {"--crash-at", "GET_VRING_BASE"}));
  ops::CheckOptions o;
  o.socket = be.socket();
  ops::Checker c(sys, o);
  REQUIRE_MESSAGE(bring_to(c, DeviceState::active), failure(c));
  auto r = c.session().sleep();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().op == "sleep");
  CHECK(state_of(c.session()) == DeviceState::broken);
}

TEST_CASE("lifecycle: an interrupt raised during sleep is delivered after wake, not before") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  PeerProcess be(tmp.file("i.sock"), backend_command(tmp.file("i.sock")));
  ops::CheckOptions o;
  o.socket = be.socket();
  ops::Checker c(sys, o);
  REQUIRE_MESSAGE(bring_to(c, DeviceState::sleeping), failure(c));
  int intx = c.guest()->intx()->get();
  while (signalled(intx, 0)) {
  }
  // the back-end raises a configuration change while the device sleeps
  REQUIRE(be.signal(SIGUSR1));
  REQUIRE(c.session().wait_event(DeviceEvent::Kind::config_changed, event_wait));
  CHECK_FALSE(signalled(intx, 200));  // held while asleep
  REQUIRE_MESSAGE(c.wake(), failure(c));
  CHECK(signalled(intx, 5000));  // delivered on wake
  CHECK_MESSAGE(c.io("I/O after wake"), failure(c));
}

TEST_CASE("lifecycle: 1,000 sleep/wake cycles leave the fd count unchanged") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  PeerProcess be(tmp.file("w.sock"), backend_command(tmp.file("w.sock"), {"--queues", "2"}));
  ops::CheckOptions o;
  o.socket = be.socket();
  o.queues = 2;
  ops::Checker c(sys, o);
  REQUIRE_MESSAGE(bring_to(c, DeviceState::active), failure(c));
  REQUIRE_MESSAGE(c.io("I/O"), failure(c));
  FdCount fds;
  for (int i = 0; i < 1000; ++i) {
    auto s = c.session().sleep();
    REQUIRE_MESSAGE(s.ok(), "cycle " << i << ": " << s.error().message());
    auto w = c.session().wake();
    REQUIRE_MESSAGE(w.ok(), "cycle " << i << ": " << w.error().message());
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
  CHECK_MESSAGE(c.io("I/O after the soak"), failure(c));
  CHECK(state_of(c.session()) == DeviceState::active);
}
