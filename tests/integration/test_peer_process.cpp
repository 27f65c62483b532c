// PeerProcess, the integration tests' handle on a real back-end process: it
// signals the peer only through the pidfd taken at start, so a peer that has
// exited (crashed on purpose, killed by the test) is never signalled again
// by pid, whatever process got that pid since; a peer is ready (listening)
// when it is returned, also where a killed one left its socket file; and a
// peer that fails to start says why (its log is in the error).
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include "protocol/connection.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront::test;

namespace {

/// Whether something accepts connections on the unix socket `path` now (one
/// attempt: the deadline is already due).
bool accepts(const std::string& path) {
  return vufront::Connection::connect(path, vufront::deadline_in(std::chrono::milliseconds(0))).ok();
}

}  // namespace

TEST_CASE("peer process: an exited peer is never signalled again") {
  TempDir tmp;
  const std::string sock = tmp.file("p.sock");
  PeerProcess be(sock, backend_command(sock, {"--size", "1M"}));
  CHECK(be.alive());
  CHECK(be.signal(0));
  REQUIRE(be.signal(SIGKILL));
  REQUIRE(be.wait_exit(scaled(std::chrono::milliseconds(5000))));
  CHECK_FALSE(be.alive());
  // once reaped, its pid is free for any new process: nothing goes to it
  CHECK_FALSE(be.signal(SIGINT));
  CHECK_FALSE(be.signal(0));
  be.stop();
  CHECK_FALSE(be.signal(0));
  be.stop();  // twice is harmless
}

TEST_CASE("peer process: a peer started where a killed one left its socket file is listening") {
  // the old file must not pass for the new peer being ready (it is unlinked
  // and bound again while the new one starts)
  TempDir tmp;
  const std::string sock = tmp.file("s.sock");
  PeerProcess old(sock, backend_command(sock, {"--size", "1M"}));
  REQUIRE(old.signal(SIGKILL));
  REQUIRE(old.wait_exit(scaled(std::chrono::milliseconds(5000))));
  REQUIRE(::access(sock.c_str(), F_OK) == 0);  // its socket file stayed
  CHECK_FALSE(accepts(sock));
  for (int i = 0; i < 20; ++i) {
    PeerProcess again(sock, backend_command(sock, {"--size", "1M"}));
    CHECK(accepts(sock));
    REQUIRE(again.signal(SIGKILL));
    REQUIRE(again.wait_exit(scaled(std::chrono::milliseconds(5000))));
  }
}

TEST_CASE("peer process: a peer that fails to start says why") {
  TempDir tmp;
  const std::string sock = tmp.file("f.sock");
  std::string what;
  try {
    PeerProcess be(sock, backend_command(sock, {"--image", tmp.file("no/such/dir/disk.img")}));
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  CHECK(what.find("start of back-end failed") != std::string::npos);
  CHECK(what.find("no/such/dir/disk.img") != std::string::npos);
  CHECK(what.find("No such file or directory") != std::string::npos);
}
