#include "base/unique_fd.hpp"

#include <cerrno>

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/wait.hpp"

namespace vufront {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) {
    int saved = errno;  // closing must not clobber the errno a caller reports
    note_fd_closing(fd_);
    ::close(fd_);
    errno = saved;
  }
  fd_ = fd;
}

UniqueFd UniqueFd::duplicate() const noexcept {
  if (fd_ < 0) {
    errno = EBADF;
    return {};
  }
  return adopt(::fcntl(fd_, F_DUPFD_CLOEXEC, 0));
}

UniqueFd make_eventfd(bool nonblocking) noexcept {
  return UniqueFd::adopt(::eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0)));
}

UniqueFd make_memfd(const char* name, uint64_t size) noexcept {
  auto fd = UniqueFd::adopt(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd)
    return fd;
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    fd.reset();
  return fd;
}

Pipe make_pipe() noexcept {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return {};
  return {UniqueFd::adopt(fds[0]), UniqueFd::adopt(fds[1])};
}

SocketPair make_socketpair() noexcept {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return {};
  return {UniqueFd::adopt(fds[0]), UniqueFd::adopt(fds[1])};
}

int count_open_fds() noexcept {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr)
    return -1;
  int n = 0;
  while (const dirent* e = ::readdir(dir))
    if (e->d_name[0] != '.')
      ++n;
  ::closedir(dir);
  return n - 1;  // the directory stream's own fd
}

bool set_nonblocking(int fd, bool on) noexcept {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0)
    return false;
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return ::fcntl(fd, F_SETFL, flags) == 0;
}

}  // namespace vufront
