#include "ops/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <climits>

#include "base/unique_fd.hpp"

extern char** environ;

namespace vufront::ops {

bool wait_exit(int pid, std::chrono::milliseconds ms) {
  auto pidfd = UniqueFd::adopt(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd)
    return errno == ESRCH;
  pollfd p{pidfd.get(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(ms.count()));
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv,
                                         const std::string& log_path) {
  if (argv.empty())
    return make_error(errc::invalid_argument, "spawn", "empty command");
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  ::posix_spawn_file_actions_init(&fa);
  if (!log_path.empty()) {
    ::posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return make_error(errc::io_error, "spawn", argv[0], rc);
  return ChildProcess(pid);
}

Result<void> ChildProcess::signal(int sig) const {
  if (pid_ <= 0 || ::kill(pid_, sig) != 0)
    return make_error(errc::io_error, "kill", "pid " + std::to_string(pid_), pid_ <= 0 ? ESRCH : errno);
  return ok();
}

void ChildProcess::stop(std::chrono::milliseconds grace) noexcept {
  if (pid_ <= 0)
    return;
  if (::kill(pid_, SIGTERM) == 0 && !wait_exit(pid_, grace)) {
    ::kill(pid_, SIGKILL);
    (void)wait_exit(pid_, std::chrono::milliseconds(5000));
  }
  int status = 0;
  ::waitpid(pid_, &status, WNOHANG);
  pid_ = -1;
}

std::string executable_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0)
    return ".";
  std::string path(buf, static_cast<size_t>(n));
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace vufront::ops
