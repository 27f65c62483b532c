// Ctrl-C as the commands take it (ops/cancel_on_signal.hpp): the first signal
// calls on_signal and marks the run interrupted; a second one runs on_quit,
// prints what it says and ends the process with 130. The second signal ends
// the process, so each case runs in a forked child.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <fstream>
#include <string>

#include "ops/cancel_on_signal.hpp"
#include "snapshot/writer.hpp"
#include "tests/support.hpp"

using namespace vufront;
using vufront::test::TempDir;

namespace {

/// Reads what the child wrote to `fd` until `want` appears or 20 s pass.
bool read_until(int fd, std::string& got, const std::string& want) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (got.find(want) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      continue;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0)
      return got.find(want) != std::string::npos;
    got.append(buf, static_cast<size_t>(n));
  }
  return true;
}

/// Waits up to 20 s for `pid` to end (its pidfd becomes readable); its wait
/// status, or -1.
int wait_for(pid_t pid) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  pollfd p{pidfd, POLLIN, 0};
  int status = -1;
  if (pidfd >= 0 && ::poll(&p, 1, 20000) == 1 && ::waitpid(pid, &status, 0) == pid) {
    ::close(pidfd);
    return status;
  }
  if (pidfd >= 0)
    ::close(pidfd);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

}  // namespace

TEST_CASE("a second Ctrl-C runs on_quit, says what it left and exits 130") {
  TempDir dir;
  const std::string snap = dir.file("s.vfsnap");
  {  // what an unfinished snapshot writer leaves: its temporary
    std::ofstream(snap + ".tmp.abc123") << "partial";
    std::ofstream(dir.file("other.tmp.abc123")) << "not ours";
  }
  int err[2];
  REQUIRE(::pipe(err) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::dup2(err[1], STDERR_FILENO);
    ops::CancelOnSignal interrupt;
    // a cancel that does not finish the run; it says whether the run is
    // marked interrupted by the time it is called
    interrupt.on_signal([&interrupt] {
      (void)!::write(STDERR_FILENO, interrupt.interrupted() ? "marked\n" : "unmarked\n",
                     interrupt.interrupted() ? 7 : 9);
    });
    interrupt.on_quit([snap] {
      auto removed = snapshot::SnapshotWriter::remove_temporaries(snap);
      return "removed " + std::to_string(removed.size()) + ": " +
             (removed.empty() ? std::string() : removed.front());
    });
    int never[2];
    if (::pipe(never) != 0)
      ::_exit(4);
    (void)!::write(STDERR_FILENO, "ready\n", 6);
    char c;
    (void)!::read(never[0], &c, 1);  // blocks until the second signal ends the process
    ::_exit(3);  // not reached when the second signal works
  }
  ::close(err[1]);
  std::string got;
  REQUIRE(read_until(err[0], got, "ready"));
  ::kill(child, SIGINT);
  REQUIRE_MESSAGE(read_until(err[0], got, "marked\n"), got);
  CHECK(got.find("cancelling (interrupt again to quit at once)") != std::string::npos);
  CHECK(got.find("unmarked") == std::string::npos);
  ::kill(child, SIGTERM);  // SIGTERM counts as a second Ctrl-C too
  read_until(err[0], got, "removed");
  const int status = wait_for(child);
  ::close(err[0]);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == ops::CancelOnSignal::exit_interrupted);
  CHECK_MESSAGE(got.find("interrupted again, quitting at once") != std::string::npos, got);
  CHECK_MESSAGE(got.find("removed 1: " + snap + ".tmp.abc123") != std::string::npos, got);
  CHECK(::access((snap + ".tmp.abc123").c_str(), F_OK) != 0);
  CHECK(::access(dir.file("other.tmp.abc123").c_str(), F_OK) == 0);
}
