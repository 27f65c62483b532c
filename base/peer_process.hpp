#pragma once
// The process at the other end of a unix socket, held by a pidfd so it can
// be told apart from a later process with the same pid: what vufront fences
// before it answers a VMM for a back-end that is gone or hung
// (docs/vmm-proxy.md, "Fencing"). Linux only (pidfd_open, 5.3).

#include <sys/types.h>

#include <chrono>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront {

struct ProcessHandle {
  pid_t pid = 0;
  UniqueFd pidfd;  ///< readable once the process has exited
};

/// The socket's peer (SO_PEERCRED: the process that connected, or that
/// listened when we connected) and a pidfd of it. Errors: no pid (a peer in
/// another pid namespace), the pid is this process (a back-end inside the
/// same process, as in tests: never fenced), or pidfd_open failed (gone
/// already: errc::disconnected).
[[nodiscard]] Result<ProcessHandle> peer_process(int socket_fd);

/// Whether the process has exited (its pidfd is readable); never waits.
[[nodiscard]] bool has_exited(const ProcessHandle& p) noexcept;

/// How a fence ended.
enum class FenceOutcome {
  exited,  ///< it had exited, or exited while waited for (no signal sent)
  killed,  ///< SIGKILLed, and gone
};

/// Makes sure the process can no longer touch anything: waits until it has
/// exited, after SIGKILL when `kill` (an exiting process first finishes its
/// in-flight I/O, which the wait covers). Waits through wait_fds(), so as a
/// task on the event loop it does not hold a thread. Errors: timeout (still
/// there after `limit`), permission_denied (the signal was refused), and,
/// without `kill`, bad_state for a process that is still running.
[[nodiscard]] Result<FenceOutcome> fence_process(const ProcessHandle& p, bool kill,
                                                 std::chrono::milliseconds limit);

}  // namespace vufront
