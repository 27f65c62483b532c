#pragma once
// A child process that is always stopped by its pid: SIGTERM, then SIGKILL
// when it has not exited within a grace period, and reaped. Used by
// `vufront demo` to run its private reference back-end.

#include <chrono>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace vufront::ops {

class ChildProcess {
public:
  /// Starts argv[0] (a path) with `argv`; stdout/stderr go to `log_path`
  /// (or are inherited when empty).
  [[nodiscard]] static Result<ChildProcess> spawn(const std::vector<std::string>& argv,
                                                  const std::string& log_path = "");
  ChildProcess(ChildProcess&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ~ChildProcess() { stop(); }

  [[nodiscard]] int pid() const noexcept { return pid_; }
  /// Sends `sig` (e.g. SIGUSR1). Errors: io_error.
  [[nodiscard]] Result<void> signal(int sig) const;
  /// SIGTERM, SIGKILL after `grace`, then reaps. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000)) noexcept;

private:
  explicit ChildProcess(int pid) : pid_(pid) {}
  int pid_ = -1;
};

/// Waits until process `pid` has exited (pidfd, bounded by `ms`); true if
/// it has (or no longer exists).
[[nodiscard]] bool wait_exit(int pid, std::chrono::milliseconds ms);

/// The directory of the running executable ("/path/to/build/bin").
[[nodiscard]] std::string executable_dir();

}  // namespace vufront::ops
