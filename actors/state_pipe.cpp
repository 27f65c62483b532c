#include "actors/state_pipe.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace vufront::actors {

namespace {
constexpr int pipe_bytes = 1 << 20;  // F_SETPIPE_SZ: fewer wake-ups per MiB
}  // namespace

Result<Pipe> transfer_pipe(const std::string& request, bool we_read) {
  Pipe p = make_pipe();
  if (!p.read_end || !p.write_end)
    return make_error(errc::io_error, request, "pipe", errno);
  (void)::fcntl(p.write_end.get(), F_SETPIPE_SZ, pipe_bytes);  // best effort
  int ours = we_read ? p.read_end.get() : p.write_end.get();
  int fl = ::fcntl(ours, F_GETFL);
  if (fl < 0 || ::fcntl(ours, F_SETFL, fl | O_NONBLOCK) != 0)
    return make_error(errc::io_error, request, "O_NONBLOCK on the pipe", errno);
  return p;
}

Result<UniqueFd> adopt_backend_fd(const std::string& request, const SharedFd& theirs, bool we_read) {
  int fd = ::fcntl(theirs->get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return make_error(errc::io_error, request, "dup of the back-end's fd", errno);
  UniqueFd own = UniqueFd::adopt(fd);
  struct stat sb {};
  if (::fstat(fd, &sb) != 0)
    return make_error(errc::io_error, request, "fstat of the back-end's fd", errno);
  if (!S_ISFIFO(sb.st_mode) && !S_ISSOCK(sb.st_mode))
    return make_error(errc::bad_fds, request, "the back-end's fd is not a pipe or socket");
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0)
    return make_error(errc::io_error, request, "F_GETFL on the back-end's fd", errno);
  int mode = fl & O_ACCMODE;
  bool usable = mode == O_RDWR || (we_read ? mode == O_RDONLY : mode == O_WRONLY);
  if (!usable)
    return make_error(errc::bad_fds, request,
                      std::string("the back-end's fd is not open for ") +
                          (we_read ? "reading" : "writing"));
  if (::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
    return make_error(errc::io_error, request, "O_NONBLOCK on the back-end's fd", errno);
  return own;
}

void block_sigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void consume_sigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  timespec zero{0, 0};
  while (sigtimedwait(&set, nullptr, &zero) > 0) {
  }
}

ssize_t splice_or_write(int fd, bool& vmsplice_ok, const uint8_t* at, size_t len) {
  if (vmsplice_ok) {
    iovec iov{const_cast<uint8_t*>(at), len};
    ssize_t n = ::vmsplice(fd, &iov, 1, SPLICE_F_NONBLOCK);
    if (n >= 0 || (errno != EBADF && errno != EINVAL))
      return n;
    vmsplice_ok = false;
  }
  return ::write(fd, at, len);
}

}  // namespace vufront::actors
