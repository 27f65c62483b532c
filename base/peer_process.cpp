#include "base/peer_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "base/wait.hpp"

namespace vufront {

namespace {

constexpr const char* op = "fence";

// glibc 2.36's <sys/pidfd.h> declares these without C linkage for C++:
// the system calls themselves.
int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int kill_by_pidfd(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

/// Waits until `pidfd` is readable (the process exited) or `deadline`.
bool wait_exit(int pidfd, std::chrono::steady_clock::time_point deadline) {
  using namespace std::chrono;
  for (;;) {
    const auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
    pollfd p{pidfd, POLLIN, 0};
    const int n = wait_fds(&p, 1, left > 0 ? static_cast<int>(left) : 0);
    if (n > 0)
      return true;
    if (n < 0 && errno != EINTR)
      return false;
    if (left <= 0)
      return false;
  }
}

}  // namespace

Result<ProcessHandle> peer_process(int socket_fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return make_error(errc::io_error, "SO_PEERCRED", "the back-end's process", errno);
  if (cred.pid <= 0)
    return make_error(errc::not_found, "SO_PEERCRED",
                      "the peer has no pid here (another pid namespace?)");
  if (cred.pid == ::getpid())
    return make_error(errc::bad_state, "SO_PEERCRED", "the peer is this process");
  ProcessHandle p;
  p.pid = cred.pid;
  p.pidfd = UniqueFd::adopt(open_pidfd(cred.pid));
  if (!p.pidfd)
    return make_error(errno == ESRCH ? errc::disconnected : errc::io_error, "pidfd_open",
                      "process " + std::to_string(cred.pid), errno);
  return p;
}

bool has_exited(const ProcessHandle& p) noexcept {
  if (!p.pidfd)
    return false;
  pollfd fd{p.pidfd.get(), POLLIN, 0};
  return ::poll(&fd, 1, 0) > 0;
}

Result<FenceOutcome> fence_process(const ProcessHandle& p, bool kill, std::chrono::milliseconds limit) {
  const std::string who = "process " + std::to_string(p.pid);
  if (!p.pidfd)
    return make_error(errc::invalid_argument, op, who + ": no pidfd");
  if (has_exited(p))
    return FenceOutcome::exited;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  if (!kill) {
    if (wait_exit(p.pidfd.get(), deadline))
      return FenceOutcome::exited;
    return make_error(errc::bad_state, op, who + " is still running and fencing is off (--fence none)");
  }
  if (kill_by_pidfd(p.pidfd.get(), SIGKILL) != 0) {
    if (errno == ESRCH)  // exited meanwhile (a zombie counts as exited)
      return FenceOutcome::exited;
    return make_error(errno == EPERM ? errc::permission_denied : errc::io_error, op,
                      "SIGKILL to " + who + " was refused", errno);
  }
  if (wait_exit(p.pidfd.get(), deadline))
    return FenceOutcome::killed;
  return make_error(errc::timeout, op,
                    who + " was sent SIGKILL but has not exited after " + std::to_string(limit.count()) +
                        " ms (uninterruptible I/O?)");
}

}  // namespace vufront
