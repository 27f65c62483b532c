#include "base/unique_fd.hpp"

#include <cerrno>
#include <cstring>

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace vufront {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) {
    int saved = errno;  // closing must not clobber the errno a caller reports
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

UniqueFd make_listening_socket(const std::string& path, int type, int flags, unsigned mode,
                               int backlog, ListenFailure& why) noexcept {
  why = ListenFailure::none;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    why = ListenFailure::bad_path;
    errno = ENAMETOOLONG;
    return {};
  }
  // BOUNDS: path.size() < sizeof(sun_path) checked above.
  std::memcpy(addr.sun_path, path.data(), path.size());
  const auto* sa = reinterpret_cast<const sockaddr*>(&addr);
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      why = ListenFailure::not_a_socket;
      errno = EEXIST;
      return {};
    }
    // OWNERSHIP: a probe socket, closed at the end of this block.
    UniqueFd probe = UniqueFd::adopt(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), sa, sizeof addr) == 0) {
      why = ListenFailure::in_use;
      errno = EADDRINUSE;
      return {};
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      why = ListenFailure::system;
      return {};
    }
  }
  // OWNERSHIP: the listening socket is owned by `fd` from birth.
  UniqueFd fd = UniqueFd::adopt(::socket(AF_UNIX, type | SOCK_CLOEXEC | flags, 0));
  if (!fd || ::bind(fd.get(), sa, sizeof addr) != 0) {
    why = ListenFailure::system;
    return {};
  }
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0 || ::listen(fd.get(), backlog) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    why = ListenFailure::system;
    errno = err;
    return {};
  }
  return fd;
}

}  // namespace vufront
