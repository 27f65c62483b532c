#include "control/packet.hpp"

#include "base/unix_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace vufront::control {

namespace {

constexpr const char* kListen = "control socket";
constexpr const char* kConnect = "connect";
constexpr const char* kSend = "send";
constexpr const char* kReceive = "receive";

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0)
    return 0;
  return left > 60'000 ? 60'000 : static_cast<int>(left);
}

/// Waits for `events` on fd until the deadline. false: the deadline passed.
Result<bool> wait_for(int fd, short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, ms_until(deadline));
    if (n > 0)
      return true;
    if (n == 0) {
      if (Clock::now() >= deadline)
        return false;
      continue;
    }
    if (errno != EINTR)
      return make_error(errc::io_error, what, "poll", errno);
  }
}

}  // namespace

Result<UniqueFd> listen_at(const std::string& path, const ListenOptions& opts, int backlog) {
  ListenFailure why{};
  UniqueFd fd = make_listening_socket(path, SOCK_SEQPACKET, 0, opts, backlog, why);
  switch (why) {
    case ListenFailure::none: return fd;
    case ListenFailure::bad_path:
      return make_error(errc::invalid_argument, kListen, "socket path must be 1..107 bytes: " + path);
    case ListenFailure::in_use:
      return make_error(errc::bad_state, kListen, path + " is in use by another process");
    case ListenFailure::not_a_socket:
      return make_error(errc::invalid_argument, kListen, path + " exists and is not a socket");
    case ListenFailure::system: break;
  }
  return make_error(errc::io_error, kListen, "listen on " + path, errno);
}

Result<UniqueFd> accept_from(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0)
      return UniqueFd::adopt(fd);  // OWNERSHIP: a new fd from accept4
    if (errno != EINTR)
      return make_error(errc::io_error, "accept", "accept4", errno);
  }
}

Result<UniqueFd> connect_to(const std::string& path, std::chrono::milliseconds timeout) {
  auto addr = unix_address(path, kConnect);
  if (!addr)
    return std::move(addr).error();
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd fd = make_unix_socket(SOCK_SEQPACKET);
    if (!fd)
      return make_error(errc::io_error, kConnect, "socket", errno);
    if (unix_connect(fd.get(), *addr))
      return fd;
    int err = errno;
    if (err != ENOENT && err != ECONNREFUSED && err != EINTR && err != EAGAIN)
      return make_error(errc::io_error, kConnect, path, err);
    if (Clock::now() >= deadline)
      return make_error(errc::timeout, kConnect,
                        "nobody listens on " + path + " (" + std::strerror(err) + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<uint32_t> peer_uid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return make_error(errc::io_error, "SO_PEERCRED", "getsockopt", errno);
  return static_cast<uint32_t>(cred.uid);
}

Result<void> send_packet(int fd, std::string_view text, const std::vector<int>& fds,
                         Clock::time_point deadline) {
  if (text.size() > max_packet_bytes)
    return make_error(errc::oversized, kSend,
                      std::to_string(text.size()) + " bytes, at most " +
                          std::to_string(max_packet_bytes));
  if (fds.size() > max_packet_fds)
    return make_error(errc::oversized, kSend,
                      std::to_string(fds.size()) + " fds, at most " + std::to_string(max_packet_fds));
  for (;;) {
    ssize_t n = send_with_fds(fd, text.data(), text.size(), fds.data(), fds.size(), MSG_DONTWAIT);
    if (n >= 0)
      return ok();
    if (errno == EINTR)
      continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
      return make_error(errc::disconnected, kSend, "the peer closed the connection", errno);
    if (errno != EAGAIN)
      return make_error(errc::io_error, kSend, "sendmsg", errno);
    auto ready = wait_for(fd, POLLOUT, deadline, kSend);
    if (!ready)
      return std::move(ready).error();
    if (!*ready)
      return make_error(errc::timeout, kSend, "the peer does not read its messages");
  }
}

Result<std::optional<Packet>> try_receive_packet(int fd) {
  Packet p;
  p.text.resize(max_packet_bytes);
  RecvInfo info;
  ssize_t n;
  for (;;) {
    n = recv_with_fds(fd, p.text.data(), p.text.size(), max_packet_fds, MSG_DONTWAIT | MSG_TRUNC,
                      p.fds, info);
    if (n >= 0 || errno != EINTR)
      break;
  }
  if (n < 0) {
    if (errno == EAGAIN)
      return std::optional<Packet>{};
    if (errno == ECONNRESET)
      return make_error(errc::disconnected, kReceive, "connection reset by the peer", errno);
    return make_error(errc::io_error, kReceive, "recvmsg", errno);
  }
  p.fds_truncated = info.fds_truncated();
  p.size = static_cast<size_t>(n);
  if (n == 0 && p.fds.empty() && !p.fds_truncated)
    return make_error(errc::disconnected, kReceive, "the peer closed the connection");
  p.truncated = info.truncated() || p.size > max_packet_bytes;
  p.text.resize(p.truncated ? max_packet_bytes : p.size);
  return std::optional<Packet>{std::move(p)};
}

Result<std::optional<Packet>> receive_packet(int fd, Clock::time_point deadline) {
  for (;;) {
    auto r = try_receive_packet(fd);
    if (!r) {
      if (r.error().code == errc::disconnected)
        return std::optional<Packet>{};
      return r;
    }
    if (*r)
      return r;
    auto ready = wait_for(fd, POLLIN, deadline, kReceive);
    if (!ready)
      return std::move(ready).error();
    if (!*ready)
      return make_error(errc::timeout, kReceive, "no message before the deadline");
  }
}

}  // namespace vufront::control
