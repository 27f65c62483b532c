#pragma once
// A real back-end process for integration tests: started through one of the
// shared/peers start scripts (or any command that prints its pid as the last
// line of stdout once its socket is ready) and stopped when the object dies —
// also when the test fails, and (by a watchdog) when the test process is
// killed without unwinding.
//
// The peer is not our child (the scripts detach it), so once it exits init
// reaps it and its pid can be handed to any new process: the suite starts
// thousands, and pid_max may be 32768. Every signal therefore goes through a
// pidfd taken when the peer started, never through kill(pid): a peer that
// crashed on purpose must not have its stale pid signalled later (that once
// killed another test's back-end while it started up).

#include <chrono>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"

namespace vufront::test {

class PeerProcess {
public:
  /// Runs `argv` (a start script), whose last stdout line must be the pid.
  /// `env` entries are "NAME=value". Throws std::runtime_error on failure
  /// (the test then fails with the script's output in the message).
  PeerProcess(std::string socket, std::vector<std::string> argv,
              std::vector<std::string> env = {});
  ~PeerProcess();
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;

  [[nodiscard]] const std::string& socket() const { return socket_; }
  /// For messages and /proc only; signal with signal(), never kill(pid()).
  [[nodiscard]] int pid() const { return pid_; }
  /// Sends `sig` to the peer; false once it has exited (or was stopped).
  bool signal(int sig) const;
  /// True until the peer has exited.
  [[nodiscard]] bool alive() const;
  /// Waits up to `ms` for the peer to exit; true once it has.
  [[nodiscard]] bool wait_exit(std::chrono::milliseconds ms) const;
  /// SIGINT, then SIGKILL after 3 s; waits (bounded) until it is gone.
  void stop();
  /// What the peer has written to its log, SOCKET.log (backend_command and
  /// the start scripts send its output there); empty once stop() removed it.
  [[nodiscard]] std::string log() const;
  /// Waits until log() holds `text`, woken by the log file's writes
  /// (inotify), for up to `ms`; true once it does.
  [[nodiscard]] bool wait_log(const std::string& text, std::chrono::milliseconds ms) const;

  /// Directory of the shared peer scripts (compile-time VUFRONT_PEERS_DIR).
  [[nodiscard]] static std::string peers_dir();

private:
  /// A detached process that kills the peer if this process dies first.
  void start_watchdog() const;

  std::string socket_;
  int pid_ = -1;
  UniqueFd pidfd_;  ///< readable once the peer has exited
};

/// qemu-storage-daemon vhost-user-blk on `socket` backed by `image` ("null" for null-co).
[[nodiscard]] std::vector<std::string> qsd_command(const std::string& socket,
                                                   const std::string& image);
/// virtiofsd sharing `dir` on `socket` (single connection).
[[nodiscard]] std::vector<std::string> virtiofsd_command(const std::string& socket,
                                                         const std::string& dir);

/// vufront-backend (compile-time VUFRONT_BACKEND_BIN) on `socket` with extra
/// arguments; the pid is printed once it is ready (its pidfile SOCKET.pid,
/// written once it listens), so a stale socket file is never taken for it.
[[nodiscard]] std::vector<std::string> backend_command(const std::string& socket,
                                                       const std::vector<std::string>& args = {});

}  // namespace vufront::test
