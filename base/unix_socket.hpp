#pragma once
// Unix sockets and fd passing, the one copy: a sockaddr_un from a path (with
// its length check), sockets created CLOEXEC, connect/bind as one syscall
// each, a listening socket that replaces a stale socket file, and the framing
// of SCM_RIGHTS control messages for one sendmsg/recvmsg.
//
// Each function does one syscall's worth of work (make_listening_socket
// excepted): EINTR, EAGAIN, deadlines and short writes stay with the callers,
// which know what a retry means for them.

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <cstddef>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront {

/// The longest socket path: sun_path without its terminating NUL (107 on Linux).
inline constexpr size_t max_unix_path = sizeof(sockaddr_un::sun_path) - 1;

/// A unix socket address built from a checked path.
struct UnixAddress {
  sockaddr_un addr{};

  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&addr);
  }
  [[nodiscard]] static constexpr socklen_t size() noexcept { return sizeof(sockaddr_un); }
};

/// The address of the socket at `path`.
/// Errors: invalid_argument when `path` is empty or longer than max_unix_path
/// bytes; `request` names the operation, the detail the path:
/// "socket path must be 1..107 bytes, got 200: /tmp/...".
[[nodiscard]] Result<UnixAddress> unix_address(const std::string& path, const std::string& request);

/// socket(AF_UNIX, type | SOCK_CLOEXEC | flags, 0), e.g. type SOCK_STREAM or
/// SOCK_SEQPACKET, flags SOCK_NONBLOCK. Empty on failure (errno set).
[[nodiscard]] UniqueFd make_unix_socket(int type, int flags = 0) noexcept;

/// One connect() of `fd` to `to`; false on failure (errno set, EINTR included:
/// the caller decides whether to try again).
[[nodiscard]] bool unix_connect(int fd, const UnixAddress& to) noexcept;

/// One bind() of `fd` to `at`; false on failure (errno set).
[[nodiscard]] bool unix_bind(int fd, const UnixAddress& at) noexcept;

/// What is at a socket path (stat(), following symlinks as connect() does).
enum class SocketPathKind { missing, socket, directory, other, unknown };

struct SocketPath {
  SocketPathKind kind = SocketPathKind::unknown;
  /// For a human: "no such file", "a socket", "a directory", "not a socket
  /// (a regular file)", "cannot be examined (Permission denied)".
  std::string text;
};

/// What is at `path` now. `missing` also when a component of the path is
/// not a directory (ENOTDIR); `unknown` when stat() fails otherwise.
[[nodiscard]] SocketPath inspect_socket_path(const std::string& path);

/// Why make_listening_socket() failed.
enum class ListenFailure { none, bad_path, in_use, not_a_socket, system };

/// Who may connect to a socket vufront listens on, as the file system sees
/// it: the socket file's mode and group (base/listen_options.hpp reads them
/// from the command line). The one rule for every listening socket: the
/// control socket, client-mode back-end sockets, the VMM-facing sockets.
struct ListenOptions {
  unsigned mode = 0600;  ///< permission bits of the socket file (connect needs write)
  /// The socket file's group (chown before listen); -1 keeps the creator's.
  long long group = -1;
};

/// A unix socket of `type` (SOCK_STREAM or SOCK_SEQPACKET; CLOEXEC, plus
/// `flags` such as SOCK_NONBLOCK) listening at `path`, with `opts.mode` and
/// `opts.group` set before listen() so nobody connects in between. A socket
/// file nobody listens on any more is replaced; a live one (in_use) or another
/// kind of file (not_a_socket) is refused. Empty on failure, `why` says why
/// (and errno for `system`; ENAMETOOLONG for bad_path: empty or too long).
[[nodiscard]] UniqueFd make_listening_socket(const std::string& path, int type, int flags,
                                             const ListenOptions& opts, int backlog,
                                             ListenFailure& why) noexcept;

/// Linux's SCM_MAX_FD: the most fds one sendmsg can carry.
inline constexpr size_t max_send_fds = 253;

/// One sendmsg(flags | MSG_NOSIGNAL) of `iov[0..iovcnt)` with `fds[0..nfds)`
/// attached as one SCM_RIGHTS block (no control data when nfds is 0). The fds
/// stay the caller's. Returns the bytes sent, or -1 with errno (EINTR and
/// EAGAIN are the caller's to handle; EINVAL when nfds > max_send_fds).
/// On a stream socket the fds go with the first byte sent: a caller finishing
/// a short write sends the rest with nfds 0.
[[nodiscard]] ssize_t send_with_fds(int sock, const iovec* iov, size_t iovcnt, const int* fds,
                                    size_t nfds, int flags) noexcept;

/// The same for one buffer.
[[nodiscard]] ssize_t send_with_fds(int sock, const void* data, size_t size, const int* fds,
                                    size_t nfds, int flags) noexcept;

/// The most fds recv_with_fds() makes room for.
inline constexpr size_t max_recv_fds = 253;

/// What one recv_with_fds() got besides the bytes.
struct RecvInfo {
  int msg_flags = 0;  ///< msghdr::msg_flags of the recvmsg
  /// MSG_CTRUNC: more fds were sent than there was room for; the kernel closed
  /// those that did not fit.
  [[nodiscard]] bool fds_truncated() const noexcept { return (msg_flags & MSG_CTRUNC) != 0; }
  /// MSG_TRUNC: a datagram/packet was longer than the buffer.
  [[nodiscard]] bool truncated() const noexcept { return (msg_flags & MSG_TRUNC) != 0; }
};

/// One recvmsg(flags | MSG_CMSG_CLOEXEC) into `iov[0..iovcnt)` with room for
/// `fd_room` fds (at most max_recv_fds). Every fd that arrived, of every
/// SCM_RIGHTS block, is appended to `fds` (OWNERSHIP: owned there, so a
/// caller that does not want them just drops them: surplus fds are closed,
/// never leaked); `info` gets msg_flags (MSG_CTRUNC: some were dropped by the
/// kernel for lack of room). Returns the bytes received (0: EOF, or an empty
/// packet), or -1 with errno (EINTR and EAGAIN are the caller's to handle).
[[nodiscard]] ssize_t recv_with_fds(int sock, const iovec* iov, size_t iovcnt, size_t fd_room,
                                    int flags, std::vector<UniqueFd>& fds, RecvInfo& info);

/// The same for one buffer.
[[nodiscard]] ssize_t recv_with_fds(int sock, void* data, size_t size, size_t fd_room, int flags,
                                    std::vector<UniqueFd>& fds, RecvInfo& info);

}  // namespace vufront
