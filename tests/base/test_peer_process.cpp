// base/peer_process: the process behind a unix socket (SO_PEERCRED + a
// pidfd) and fencing it: SIGKILL and a wait for its exit, or, without kill,
// only a process that exited counts.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "base/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace std::chrono_literals;
using vufront::test::TempDir;

namespace {

/// A forked child connected to `path` (listening here), which then waits
/// for one byte and exits, or is killed. Reaped by the destructor.
struct Child {
  pid_t pid = -1;
  UniqueFd conn;  ///< our end of its connection

  explicit Child(const std::string& path) {
    UniqueFd l = UniqueFd::adopt(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(l);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(l.get(), 1) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
      if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        ::_exit(2);
      char b = 0;
      [[maybe_unused]] auto n = ::read(s, &b, 1);  // until the parent says so (or kills it)
      ::_exit(0);
    }
    conn = UniqueFd::adopt(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn);
  }
  void let_exit() { REQUIRE(::write(conn.get(), "x", 1) == 1); }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

}  // namespace

TEST_CASE("peer_process: a live back-end is SIGKILLed and waited for") {
  TempDir dir;
  Child child(dir.file("s"));
  auto p = peer_process(child.conn.get());
  REQUIRE(p);
  CHECK(p->pid == child.pid);
  CHECK_FALSE(has_exited(*p));
  auto off = fence_process(*p, false, 0ms);  // --fence none: a running process is not fenced
  REQUIRE_FALSE(off);
  CHECK(off.error().code == errc::bad_state);
  auto r = fence_process(*p, true, 5000ms);
  REQUIRE(r);
  CHECK(*r == FenceOutcome::killed);
  CHECK(has_exited(*p));
  int status = 0;
  REQUIRE(::waitpid(child.pid, &status, 0) == child.pid);
  child.pid = -1;
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
}

TEST_CASE("peer_process: a back-end that exited is fenced without a signal, also with --fence none") {
  TempDir dir;
  Child child(dir.file("s"));
  auto p = peer_process(child.conn.get());
  REQUIRE(p);
  child.let_exit();
  auto r = fence_process(*p, false, 5000ms);  // waits for the exit, which comes
  REQUIRE(r);
  CHECK(*r == FenceOutcome::exited);
  CHECK(fence_process(*p, true, 0ms).value() == FenceOutcome::exited);
}

TEST_CASE("peer_process: this process is never a peer to fence") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd a = UniqueFd::adopt(sv[0]), b = UniqueFd::adopt(sv[1]);
  auto p = peer_process(a.get());
  REQUIRE_FALSE(p);
  CHECK(p.error().code == errc::bad_state);
}
