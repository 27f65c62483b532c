#include "base/unix_socket.hpp"

#include <cerrno>
#include <cstring>

#include <sys/stat.h>
#include <unistd.h>

namespace vufront {

namespace {

/// Room for the largest SCM_RIGHTS block either direction uses.
constexpr size_t control_room = CMSG_SPACE(max_send_fds * sizeof(int));
static_assert(max_recv_fds <= max_send_fds, "one buffer size serves both directions");

}  // namespace

Result<UnixAddress> unix_address(const std::string& path, const std::string& request) {
  UnixAddress a;
  a.addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() > max_unix_path)
    return make_error(errc::invalid_argument, request,
                      "socket path must be 1.." + std::to_string(max_unix_path) + " bytes, got " +
                          std::to_string(path.size()) + ": " + path);
  // BOUNDS: path.size() <= max_unix_path < sizeof(sun_path) checked above; the rest stays 0.
  std::memcpy(a.addr.sun_path, path.data(), path.size());
  return a;
}

UniqueFd make_unix_socket(int type, int flags) noexcept {
  // OWNERSHIP: the new socket is owned by the returned UniqueFd from birth.
  return UniqueFd::adopt(::socket(AF_UNIX, type | SOCK_CLOEXEC | flags, 0));
}

bool unix_connect(int fd, const UnixAddress& to) noexcept {
  return ::connect(fd, to.get(), UnixAddress::size()) == 0;
}

SocketPath inspect_socket_path(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT)
      return {SocketPathKind::missing, "no such file"};
    if (errno == ENOTDIR)
      return {SocketPathKind::missing, "no such file (a component of the path is not a directory)"};
    return {SocketPathKind::unknown,
            std::string("cannot be examined (") + std::strerror(errno) + ")"};
  }
  switch (sb.st_mode & S_IFMT) {
    case S_IFSOCK: return {SocketPathKind::socket, "a socket"};
    case S_IFDIR: return {SocketPathKind::directory, "a directory, not a socket"};
    case S_IFREG: return {SocketPathKind::other, "not a socket (a regular file)"};
    case S_IFIFO: return {SocketPathKind::other, "not a socket (a named pipe)"};
    case S_IFCHR: return {SocketPathKind::other, "not a socket (a character device)"};
    case S_IFBLK: return {SocketPathKind::other, "not a socket (a block device)"};
    default: return {SocketPathKind::other, "not a socket"};
  }
}

bool unix_bind(int fd, const UnixAddress& at) noexcept {
  return ::bind(fd, at.get(), UnixAddress::size()) == 0;
}

UniqueFd make_listening_socket(const std::string& path, int type, int flags,
                               const ListenOptions& opts, int backlog, ListenFailure& why) noexcept {
  why = ListenFailure::none;
  if (path.empty() || path.size() > max_unix_path) {
    why = ListenFailure::bad_path;
    errno = ENAMETOOLONG;
    return {};
  }
  UnixAddress addr;
  addr.addr.sun_family = AF_UNIX;
  // BOUNDS: path.size() <= max_unix_path < sizeof(sun_path) checked above.
  std::memcpy(addr.addr.sun_path, path.data(), path.size());
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) {
      why = ListenFailure::not_a_socket;
      errno = EEXIST;
      return {};
    }
    // OWNERSHIP: a probe socket, closed at the end of this block.
    UniqueFd probe = make_unix_socket(type);
    if (probe && unix_connect(probe.get(), addr)) {
      why = ListenFailure::in_use;
      errno = EADDRINUSE;
      return {};
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      why = ListenFailure::system;
      return {};
    }
  }
  UniqueFd fd = make_unix_socket(type, flags);
  if (!fd || !unix_bind(fd.get(), addr)) {
    why = ListenFailure::system;
    return {};
  }
  // Mode and group before listen(): until then a connect is refused.
  bool set = ::chmod(path.c_str(), static_cast<mode_t>(opts.mode & 07777)) == 0 &&
             (opts.group < 0 ||
              ::lchown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(opts.group)) == 0);
  if (!set || ::listen(fd.get(), backlog) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    why = ListenFailure::system;
    errno = err;
    return {};
  }
  return fd;
}

ssize_t send_with_fds(int sock, const iovec* iov, size_t iovcnt, const int* fds, size_t nfds,
                      int flags) noexcept {
  if (nfds > max_send_fds) {
    errno = EINVAL;
    return -1;
  }
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = iovcnt;
  alignas(cmsghdr) unsigned char control[control_room];
  if (nfds > 0) {
    std::memset(control, 0, CMSG_SPACE(nfds * sizeof(int)));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    // BOUNDS: nfds <= max_send_fds, the count `control` was sized for.
    std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  return ::sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
}

ssize_t send_with_fds(int sock, const void* data, size_t size, const int* fds, size_t nfds,
                      int flags) noexcept {
  iovec iov{const_cast<void*>(data), size};
  return send_with_fds(sock, &iov, 1, fds, nfds, flags);
}

ssize_t recv_with_fds(int sock, const iovec* iov, size_t iovcnt, size_t fd_room, int flags,
                      std::vector<UniqueFd>& fds, RecvInfo& info) {
  info = RecvInfo{};
  if (fd_room > max_recv_fds)
    fd_room = max_recv_fds;
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = iovcnt;
  alignas(cmsghdr) unsigned char control[control_room];
  if (fd_room > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(fd_room * sizeof(int));
  }
  ssize_t n = ::recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  if (n < 0)
    return n;
  info.msg_flags = msg.msg_flags;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      // BOUNDS: i < count, and count ints fit in cmsg_len as the kernel reported it.
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      // OWNERSHIP: the kernel installed this fd (CLOEXEC) for us; it is ours to close.
      fds.push_back(UniqueFd::adopt(fd));
    }
  }
  return n;
}

ssize_t recv_with_fds(int sock, void* data, size_t size, size_t fd_room, int flags,
                      std::vector<UniqueFd>& fds, RecvInfo& info) {
  iovec iov{data, size};
  return recv_with_fds(sock, &iov, 1, fd_room, flags, fds, info);
}

}  // namespace vufront
