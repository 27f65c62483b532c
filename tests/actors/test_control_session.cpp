// The control session (actors/control_session.hpp) against a stand-in server:
// the greeting is the first message of every connection, also when the
// server pushes an event to the session before it answers the greeting's
// request (a device that changes state while a VMM connects: the event and
// the request cross in the server's mailbox).
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>

#include <caf/actor_system.hpp>

#include "actors/control_session.hpp"
#include "actors/system.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::actors;
using vufront::test::scaled;

namespace {

/// Answers the greeting's request, after pushing `event` to the session
/// that asked (so the event reaches the session first); refuses the rest.
/// (`event` is also why it takes an argument: CAF 0.17 spawns a function
/// without arguments through a null tuple pointer, which UBSan reports.)
control_server_actor::behavior_type pushes_before_hello(control_server_actor::pointer self,
                                                        std::string event) {
  auto refused = [] { return caf::make_error(caf::sec::unexpected_message); };
  return {
      [refused](start_atom) -> caf::result<nlohmann::json> { return refused(); },
      [](accept_atom, const SharedFd&) {},
      [self, event](hello_atom) -> nlohmann::json {
        auto session = caf::actor_cast<control_session_actor>(self->current_sender());
        self->send(session, push_atom_v, nlohmann::json{{"event", event}},
                   std::vector<SharedFd>{});
        return nlohmann::json{{"event", "hello"}, {"protocol", 1}};
      },
      [refused](lookup_atom, const std::string&) -> caf::result<device_actor, DeviceSetup> {
        return refused();
      },
      [refused](add_dev_atom, const DeviceSetup&) -> caf::result<nlohmann::json> { return refused(); },
      [refused](rm_dev_atom, const std::string&) -> caf::result<caf::ok_atom> { return refused(); },
      [refused](owner_atom, const std::string&, uint64_t, bool) -> caf::result<caf::ok_atom> {
        return refused();
      },
      [](dev_event_atom, const std::string&, const DeviceEvent&) {},
      [](shmem_fwd_atom, const std::string&, const nlohmann::json&, const SharedFd&) {},
  };
}

/// The next message on `fd` (one packet), or "" when none came in time.
std::string next_message(int fd) {
  pollfd p{fd, POLLIN, 0};
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(scaled(std::chrono::seconds(5)));
  if (::poll(&p, 1, static_cast<int>(ms.count())) != 1)
    return "";
  char buf[4096];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

}  // namespace

TEST_CASE("control session: an event pushed before the greeting goes out after it") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd vmm = UniqueFd::adopt(sv[0]);  // OWNERSHIP: new fds from socketpair
  SharedFd conn = share(UniqueFd::adopt(sv[1]));
  {
    SystemConfig cfg;
    caf::actor_system sys{cfg};
    auto server = sys.spawn(pushes_before_hello, std::string{"state_changed"});
    auto session = sys.spawn(control_session_impl, server, uint64_t{1}, conn, FilePolicy{});
    conn.reset();  // the session keeps its own duplicate
    const auto first = nlohmann::json::parse(next_message(vmm.get()), nullptr, false);
    const auto second = nlohmann::json::parse(next_message(vmm.get()), nullptr, false);
    CHECK(first.value("event", "") == "hello");
    CHECK(second.value("event", "") == "state_changed");
    vmm.reset();  // the VMM goes: the session ends
    caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
  }
}
