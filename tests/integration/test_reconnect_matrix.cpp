// The fault matrix of issue 8: the back-end killed at each request of
// negotiate, activate, sleep, wake, reset, snapshot, restore, dirty_log_start
// and dirty_log_stop (issue 25); activate,
// sleep, wake and reset on packed rings too (issue 21: their position after
// a crash is in the in-flight region only).
//
// The requests are not listed by hand. Each operation first runs against a
// healthy vufront-backend with -v, whose log names every request it took;
// then, for each of them, a fresh back-end dies when that request arrives
// (--crash-at REQ:N: the N-th REQ of its life, an _exit without cleanup),
// and for the state transfers also in the middle of the stream. A request
// the front-end starts sending is in the matrix the day it does.
//
// Where the back-end died decides what must happen: in a negotiation there
// is nothing to resume (the device is disconnected and is negotiated again);
// anywhere else the device resumes by itself, the operation is retried, and
// the I/O after it reads back what was written before the crash. In every
// case the process stays up and no fd leaks.
#include <doctest/doctest.h>

#include <functional>
#include <map>
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
using actors::DeviceEvent;
using actors::DeviceState;

namespace {

/// What the steps of an operation work on.
struct Env {
  ops::Checker& c;
  const TempDir& tmp;
  std::string target;  ///< the restore target's socket
};
using Step = std::function<bool(Env&)>;

/// An operation of the device's life, and how the device gets there and
/// carries on after it.
struct Operation {
  bool negotiation = false;  ///< it is the negotiation: nothing to resume
  bool target_dies = false;  ///< the restore target dies in it, not the first back-end
  Step before;               ///< brings the device to the operation
  Step op;                   ///< the operation the back-end dies in
  Step after;                ///< with the new back-end: the operation again, then I/O reading old data back
  std::vector<std::vector<std::string>> mid_stream;  ///< more faults (state transfers)
  std::string surely_sends;  ///< a request it must send (a recording is never empty by mistake)
  bool packed = false;       ///< packed rings (their position after a crash: the in-flight region)
};

/// One request as the back-end took it: the `nth` arrival of `request` in
/// its life (what --crash-at REQ:N counts).
struct Arrival {
  std::string request;
  unsigned nth = 0;
  bool negotiating = false;  ///< part of the dying back-end's negotiation
};

/// Every request in a -v back-end's log, in order.
std::vector<Arrival> arrivals(const std::string& log) {
  static const std::string mark = "vufront-backend: <- ";  // "<- NAME (N bytes)"
  std::vector<Arrival> out;
  std::map<std::string, unsigned> seen;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(mark, 0) != 0)
      continue;
    std::string name = line.substr(mark.size(), line.find(' ', mark.size()) - mark.size());
    const unsigned nth = ++seen[name];
    out.push_back({std::move(name), nth});
  }
  return out;
}

std::string names(const std::vector<Arrival>& v) {
  std::string out;
  for (const auto& a : v)
    out += (out.empty() ? "" : " ") + a.request + ":" + std::to_string(a.nth);
  return out;
}

ops::CheckOptions options(const std::string& socket, bool packed) {
  ops::CheckOptions o;
  o.socket = socket;
  o.packed = packed;
  o.inflight = true;  // as `vufront attach` does
  o.reconnect = fast_policy();
  return o;
}

const Step nothing = [](Env&) { return true; };
const Step negotiate = [](Env& e) { return e.c.negotiate(); };
const Step up = [](Env& e) {
  return e.c.negotiate() && e.c.set_memory() && e.c.activate() && e.c.io("I/O before");
};
const Step asleep = [](Env& e) { return up(e) && e.c.sleep(); };
const Step wake_io = [](Env& e) { return e.c.wake() && e.c.io("I/O after"); };
const Step save_snapshot = [](Env& e) {
  actors::SnapshotOptions s;
  s.path = e.tmp.file("snap.vus");
  return e.c.snapshot(s);
};
const Step restore_snapshot = [](Env& e) {
  actors::RestoreOptions r;
  r.path = e.tmp.file("snap.vus");
  return e.c.restore(e.target, r);
};
const std::vector<std::string> crash_mid_stream = {"--state-crash-after", "64K"};

/// After a failed negotiation: nothing was negotiated, so the device is
/// reset and brought up afresh.
Operation negotiate_op() {
  const Step afresh = [](Env& e) {
    must(e.c.session().reset(), "reset");
    return up(e);
  };
  return {true, false, nothing, negotiate, afresh, {}, "GET_FEATURES"};
}

/// The requests `k.op` sends to the back-end that dies in it, as a healthy
/// one logs them (all marked negotiating when `k` is the negotiation).
std::vector<Arrival> record(caf::actor_system& sys, const Operation& k) {
  TempDir tmp;
  const std::string sock = tmp.file("m.sock"), target = tmp.file("t.sock");
  PeerProcess first(sock, disk_backend(sock, tmp.file("disk.img"), {"-v"}));
  std::unique_ptr<PeerProcess> second;
  if (k.target_dies)
    second = std::make_unique<PeerProcess>(target, disk_backend(target, tmp.file("t.img"), {"-v"}));
  const PeerProcess& logged = k.target_dies ? *second : first;
  std::vector<Arrival> seen;
  {
    ops::Checker c(sys, options(sock, k.packed));
    Env env{c, tmp, target};
    REQUIRE_MESSAGE(k.before(env), failure(c));
    // every request is answered (REPLY_ACK), so the log holds each one the
    // operation sent by the time it returns
    const size_t from = arrivals(logged.log()).size();
    REQUIRE_MESSAGE(k.op(env), failure(c));
    seen = arrivals(logged.log());
    seen.erase(seen.begin(), seen.begin() + static_cast<std::ptrdiff_t>(from));
  }
  CAPTURE(names(seen));
  bool sends = false;
  for (const auto& a : seen)
    sends = sends || a.request == k.surely_sends;
  REQUIRE_MESSAGE(sends, "no " << k.surely_sends << " in the recording");
  for (auto& a : seen)
    a.negotiating = k.negotiation;
  return seen;
}

/// The restore target's recording, its negotiation marked: the requests a
/// fresh back-end's negotiation takes, which must open the restore's.
std::vector<Arrival> record_restore(caf::actor_system& sys, const Operation& k) {
  const auto negotiation = record(sys, negotiate_op());
  auto seen = record(sys, k);
  REQUIRE(seen.size() > negotiation.size());
  for (size_t i = 0; i < negotiation.size(); ++i) {
    REQUIRE_MESSAGE(seen[i].request == negotiation[i].request,
                    "the restore's negotiation differs: " << names(seen) << " vs "
                                                          << names(negotiation));
    seen[i].negotiating = true;
  }
  return seen;
}

/// The back-end that dies in `k.op` with `faults`, a new one on its socket,
/// and then what must follow.
void crash_case(caf::actor_system& sys, const Operation& k, const std::vector<std::string>& faults,
                bool negotiating, const std::string& crash_log) {
  TempDir tmp;
  const std::string sock = tmp.file("m.sock"), img = tmp.file("disk.img");
  const std::string target = tmp.file("t.sock"), timg = tmp.file("target.img");
  FdCount fds;
  {
    const std::vector<std::string> none;
    auto first = std::make_unique<PeerProcess>(sock, disk_backend(sock, img, k.target_dies ? none : faults));
    std::unique_ptr<PeerProcess> second;
    if (k.target_dies)
      second = std::make_unique<PeerProcess>(target, disk_backend(target, timg, faults));
    ops::Checker c(sys, options(sock, k.packed));
    Env env{c, tmp, target};
    REQUIRE_MESSAGE(k.before(env), failure(c));
    REQUIRE_FALSE_MESSAGE(k.op(env), "the operation passed: the back-end did not die in it");
    CAPTURE(failure(c));
    // it died where it was meant to
    const std::string& died = k.target_dies ? target : sock;
    auto& dead = k.target_dies ? second : first;
    REQUIRE(dead->wait_exit(event_wait));
    CHECK_MESSAGE(dead->log().find(crash_log) != std::string::npos, dead->log());
    dead.reset();  // (removes its socket file: before the new one binds)
    dead = std::make_unique<PeerProcess>(died, disk_backend(died, k.target_dies ? timg : img, {"-v"}));
    c.clear_failure();
    std::string resumed;
    if (negotiating) {
      // a failed negotiation leaves the device as it was: not connected,
      // nothing to resume (a restore retried makes a new device)
      REQUIRE(state_of(c.session()) == DeviceState::disconnected);
      auto r = c.session().reconnect();
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == errc::bad_state);
    } else {
      resumed = expect_event(c.session(), DeviceEvent::Kind::resumed).detail;
    }
    CAPTURE(resumed);
    CHECK_MESSAGE(k.after(env), failure(c));
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

/// Every case of `k`: a crash at each recorded request, then mid-stream.
void run_matrix(const Operation& k) {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  const auto steps = k.target_dies ? record_restore(sys, k) : record(sys, k);
  MESSAGE(steps.size() << " request(s): " << names(steps));
  for (const auto& a : steps) {
    const std::string at = a.request + ":" + std::to_string(a.nth);
    CAPTURE(at);
    crash_case(sys, k, {"--crash-at", at}, a.negotiating, "--crash-at " + a.request + ": exiting");
  }
  for (const auto& faults : k.mid_stream) {
    CAPTURE(faults[0]);
    crash_case(sys, k, faults, false, faults[0]);
  }
}

}  // namespace

TEST_CASE("reconnect matrix: the back-end killed at each request of negotiate") {
  run_matrix(negotiate_op());
}

namespace {

Operation activate_op() {
  // guest memory goes to the back-end at activation
  return {false, false, [](Env& e) { return e.c.negotiate() && e.c.set_memory(); },
          [](Env& e) { return e.c.activate(); },
          [](Env& e) { return e.c.activate() && e.c.io("I/O after"); },
          {},
          "SET_MEM_TABLE"};
}

Operation sleep_op() {
  return {false, false, up, [](Env& e) { return e.c.sleep(); },
          [](Env& e) { return e.c.sleep() && wake_io(e); }, {}, "GET_VRING_BASE"};
}

Operation wake_op() { return {false, false, asleep, [](Env& e) { return e.c.wake(); }, wake_io, {}, "SET_VRING_KICK"}; }

/// Dirty logging on and off (issue 25): a device lost in it resumes (with
/// the log when it was on before the loss), the operation is asked again.
const Step log_on = [](Env& e) { return e.c.session().dirty_log_start().ok(); };
const Step log_off = [](Env& e) { return e.c.session().dirty_log_stop().ok(); };

Operation dirty_log_start_op() {
  return {false, false, up, log_on, [](Env& e) { return log_on(e) && e.c.io("I/O after"); }, {},
          "SET_LOG_BASE"};
}

Operation dirty_log_stop_op() {
  return {false, false, [](Env& e) { return up(e) && log_on(e); }, log_off,
          [](Env& e) { return log_off(e) && e.c.io("I/O after"); }, {}, "SET_FEATURES"};
}

Operation reset_op() {
  return {false, false, up, [](Env& e) { return e.c.reset(); },
          [](Env& e) { return e.c.reset() && e.c.activate("activate again") && e.c.io("I/O after"); },
          {},
          "RESET_DEVICE"};
}

/// The same operation on packed rings.
Operation packed(Operation k) {
  k.packed = true;
  return k;
}

}  // namespace

TEST_CASE("reconnect matrix: the back-end killed at each request of activate") { run_matrix(activate_op()); }

TEST_CASE("reconnect matrix: the back-end killed at each request of sleep") { run_matrix(sleep_op()); }

TEST_CASE("reconnect matrix: the back-end killed at each request of wake") { run_matrix(wake_op()); }

TEST_CASE("reconnect matrix: the back-end killed at each request of reset") { run_matrix(reset_op()); }

TEST_CASE("reconnect matrix: the back-end killed at each request of dirty_log_start") {
  run_matrix(dirty_log_start_op());
}

TEST_CASE("reconnect matrix: the back-end killed at each request of dirty_log_stop") {
  run_matrix(dirty_log_stop_op());
}

// Packed rings: a back-end lost while they run leaves their position in the
// in-flight region only (docs/lifecycle.md, "reconnect": Packed rings).
TEST_CASE("reconnect matrix (packed rings): the back-end killed at each request of activate") {
  run_matrix(packed(activate_op()));
}

TEST_CASE("reconnect matrix (packed rings): the back-end killed at each request of sleep") {
  run_matrix(packed(sleep_op()));
}

TEST_CASE("reconnect matrix (packed rings): the back-end killed at each request of wake") {
  run_matrix(packed(wake_op()));
}

TEST_CASE("reconnect matrix (packed rings): the back-end killed at each request of reset") {
  run_matrix(packed(reset_op()));
}

TEST_CASE("reconnect matrix: the back-end killed at each request of snapshot, and mid-stream") {
  run_matrix({false, false, asleep, save_snapshot, [](Env& e) { return save_snapshot(e) && wake_io(e); },
              {crash_mid_stream}, "SET_DEVICE_STATE_FD"});
}

TEST_CASE("reconnect matrix: the restore target killed at each request of restore, and mid-stream") {
  run_matrix({false, true, [](Env& e) { return asleep(e) && save_snapshot(e); }, restore_snapshot,
              [](Env& e) { return restore_snapshot(e) && wake_io(e); }, {crash_mid_stream},
              "CHECK_DEVICE_STATE"});
}
