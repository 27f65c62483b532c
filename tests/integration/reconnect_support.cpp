#include "tests/integration/reconnect_support.hpp"

#include <doctest/doctest.h>

#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"

namespace vufront::test {

actors::ReconnectPolicy fast_policy() {
  actors::ReconnectPolicy p;
  p.enabled = true;
  p.initial_delay = std::chrono::milliseconds(10);
  p.max_delay = std::chrono::milliseconds(100);
  return p;
}

std::vector<std::string> disk_backend(const std::string& socket, const std::string& image,
                                      std::vector<std::string> extra) {
  std::vector<std::string> args = {"--image", image, "--size", "16M"};
  args.insert(args.end(), extra.begin(), extra.end());
  return backend_command(socket, args);
}

actors::DeviceState state_of(actors::DeviceSession& s) { return must(s.status(), "status").state; }

actors::DeviceEvent expect_event(actors::DeviceSession& s, actors::DeviceEvent::Kind kind) {
  std::string seen;
  const auto until = std::chrono::steady_clock::now() + event_wait;
  while (std::chrono::steady_clock::now() < until) {
    auto e = s.next_event(std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now()));
    if (!e)
      break;
    if (e->kind == kind)
      return *e;
    seen += std::string("\n  ") + actors::to_string(e->kind) + ": " + e->detail;
  }
  const auto st = must(s.status(), "status");
  const std::string why = "no " + std::string(actors::to_string(kind)) + " event; device " +
                          actors::to_string(st.state) + " (" + std::to_string(st.reconnect_attempts) +
                          " reconnect attempts): " + st.last_error + "; events:" + seen;
  FAIL(why);
  return {};
}

}  // namespace vufront::test
