// Golden recordings: what vufront sends a back-end in each operation of a
// device's life (negotiate, activate, sleep, wake, reset, snapshot, restore,
// and the replay after a back-end is lost), as vufront-backend -v logs it:
// each request with its payload's values (backend/request_log.*), in order.
// The recordings are in tests/integration/golden/, one file per operation;
// a change to what vufront sends fails this test until the recording is
// made again and the difference reviewed in the commit that makes it:
//
//   VUFRONT_GOLDEN_UPDATE=1 build/tests/integration/vufront_integration_tests -tc='golden*'
//
// The device: blk, 2 queues of 128, split rings, the in-flight region on (as
// `vufront attach` runs it), interrupts forwarded by the worker.
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "ops/checker.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/integration/reconnect_support.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

/// The requests in a -v back-end's log, one line each: "NAME (N bytes) ...".
std::vector<std::string> requests_in(const std::string& log) {
  static const std::string mark = "vufront-backend: <- ";
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(mark, 0) == 0)
      out.push_back(line.substr(mark.size()));
  return out;
}

std::string golden_path(const std::string& op) {
  return std::string(VUFRONT_SOURCE_DIR) + "/tests/integration/golden/" + op + ".txt";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& l : v)
    out += l + "\n";
  return out;
}

/// The first line where `got` and `want` part, for the failure message.
std::string first_difference(const std::vector<std::string>& got, const std::vector<std::string>& want) {
  for (size_t i = 0; i < got.size() || i < want.size(); ++i) {
    const std::string g = i < got.size() ? got[i] : "(nothing)";
    const std::string w = i < want.size() ? want[i] : "(nothing)";
    if (g != w)
      return "request " + std::to_string(i + 1) + ": sent  " + g + "\n             recorded " + w;
  }
  return "";
}

/// Compares `got` with the recording of `op` (or writes it, with
/// VUFRONT_GOLDEN_UPDATE=1).
void compare(const std::string& op, const std::vector<std::string>& got) {
  CAPTURE(op);
  REQUIRE_FALSE(got.empty());
  const std::string path = golden_path(op);
  const char* update = std::getenv("VUFRONT_GOLDEN_UPDATE");
  if (update && std::string(update) == "1") {
    std::ofstream(path) << joined(got);
    MESSAGE("recorded " << path);
    return;
  }
  const auto want = read_lines(path);
  REQUIRE_MESSAGE(!want.empty(), "no recording at " << path << " (VUFRONT_GOLDEN_UPDATE=1 makes it)");
  CHECK_MESSAGE(got == want, "what vufront sends in " << op << " changed; " << first_difference(got, want)
                                                      << "\nsent now:\n" << joined(got));
}

ops::CheckOptions options(const std::string& socket) {
  ops::CheckOptions o;
  o.socket = socket;
  o.queues = 2;
  o.inflight = true;  // as `vufront attach` does
  o.reconnect = fast_policy();
  return o;
}

/// Runs `op` and returns the requests `peer` took meanwhile (every request is
/// answered with REPLY_ACK or a reply, so each one is logged by the time the
/// operation returns).
std::vector<std::string> during(const PeerProcess& peer, const std::function<bool()>& op,
                                ops::Checker& c) {
  const size_t from = requests_in(peer.log()).size();
  const bool done = op();
  REQUIRE_MESSAGE(done, failure(c));
  auto all = requests_in(peer.log());
  return {all.begin() + static_cast<std::ptrdiff_t>(from), all.end()};
}

}  // namespace

TEST_CASE("golden: each operation sends what its recording says") {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir tmp;
  const std::string sock = tmp.file("g.sock"), target = tmp.file("t.sock");
  auto first = std::make_unique<PeerProcess>(sock, disk_backend(sock, tmp.file("disk.img"), {"-v", "--queues", "2"}));
  PeerProcess second(target, disk_backend(target, tmp.file("t.img"), {"-v", "--queues", "2"}));
  ops::Checker c(sys, options(sock));

  compare("negotiate", during(*first, [&] { return c.negotiate(); }, c));
  compare("activate", during(*first, [&] { return c.set_memory() && c.activate(); }, c));
  REQUIRE_MESSAGE(c.io("I/O"), failure(c));
  compare("sleep", during(*first, [&] { return c.sleep(); }, c));
  compare("wake", during(*first, [&] { return c.wake(); }, c));
  REQUIRE_MESSAGE(c.io("I/O after wake"), failure(c));
  compare("reset", during(*first, [&] { return c.reset(); }, c));
  const bool again_up = c.activate("activate again") && c.io("I/O again");
  REQUIRE_MESSAGE(again_up, failure(c));

  // the back-end is lost while active; a new one on the same socket gets the
  // device's whole state replayed
  REQUIRE(first->signal(SIGKILL));
  REQUIRE(first->wait_exit(event_wait));
  first.reset();
  PeerProcess again(sock, disk_backend(sock, tmp.file("disk.img"), {"-v", "--queues", "2"}));
  expect_event(c.session(), actors::DeviceEvent::Kind::resumed);
  compare("reconnect", requests_in(again.log()));
  const bool resumed = c.io("I/O after the loss") && c.sleep();
  REQUIRE_MESSAGE(resumed, failure(c));
  actors::SnapshotOptions s;
  s.path = tmp.file("snap.vus");
  compare("snapshot", during(again, [&] { return c.snapshot(s); }, c));

  actors::RestoreOptions r;
  r.path = s.path;
  compare("restore", during(second, [&] { return c.restore(target, r); }, c));
  const bool restored = c.wake() && c.io("I/O after the restore");
  REQUIRE_MESSAGE(restored, failure(c));
}
