#include "protocol/connection.hpp"

#include "base/unix_socket.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace vufront {

namespace {

/// The control buffer holds this many fds, more than any message may carry,
/// so surplus fds arrive (and are closed) instead of being truncated.
constexpr size_t control_fds = 32;
constexpr size_t control_space = CMSG_SPACE(control_fds * sizeof(int));

constexpr size_t header_size = sizeof(wire::Header);

/// Milliseconds left until `deadline`, rounded up; 0 when it has passed.
int remaining_ms(Deadline deadline) {
  auto now = Clock::now();
  if (now >= deadline)
    return 0;
  auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
  auto ms = (left + 999) / 1000;
  return static_cast<int>(std::min<decltype(ms)>(ms, 1 << 30));
}

enum class WaitResult { ready, timeout, stopped, error };

/// How often a wait with a stop flag looks at it.
constexpr int stop_check_ms = 100;
bool stopped(const std::atomic<bool>* stop) { return stop != nullptr && stop->load(); }

/// poll() one fd for `events` until `deadline`, or until `*stop` is set
/// (looked at every stop_check_ms); EINTR retried.
WaitResult wait_for(int fd, short events, Deadline deadline, const std::atomic<bool>* stop,
                    int& err) {
  for (;;) {
    if (stopped(stop))
      return WaitResult::stopped;
    int ms = remaining_ms(deadline);
    if (ms == 0)
      return WaitResult::timeout;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, stop ? std::min(ms, stop_check_ms) : ms);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return WaitResult::error;
    }
    if (r == 0)
      continue;  // re-check the stop flag and the deadline
    if (p.revents & POLLNVAL) {
      err = EBADF;
      return WaitResult::error;
    }
    return WaitResult::ready;  // data, hang-up or error: the next syscall tells which
  }
}

/// Moves every fd of every SCM_RIGHTS block in `msg` into `out`.
void collect_fds(msghdr& msg, std::vector<UniqueFd>& out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      // BOUNDS: i < n, and n ints fit in cmsg_len as the kernel reported it.
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      // OWNERSHIP: the kernel installed this fd (CLOEXEC) for us; it is ours to close.
      out.push_back(UniqueFd::adopt(fd));
    }
  }
}

std::string plural(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

}  // namespace

Connection::Connection(UniqueFd socket) : sock_(std::move(socket)) {
  if (!sock_.valid())
    broken_ = make_error(errc::invalid_argument, "connection", "no socket");
  else if (!set_nonblocking(sock_.get(), true))
    broken_ = make_error(errc::io_error, "connection", "cannot set O_NONBLOCK", errno);
}

Result<Connection> Connection::connect(const std::string& path, Deadline deadline,
                                       const std::atomic<bool>* stop) {
  const std::string what = "connect " + path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return make_error(errc::invalid_argument, what,
                      "socket path must be 1.." + std::to_string(sizeof(addr.sun_path) - 1) +
                          " bytes, got " + std::to_string(path.size()));
  // BOUNDS: path.size() < sizeof(sun_path) checked above; the rest stays 0.
  std::memcpy(addr.sun_path, path.data(), path.size());

  auto backoff = std::chrono::milliseconds(10);
  int last_errno = 0;
  for (;;) {
    // OWNERSHIP: the new socket is owned by `s` from birth.
    UniqueFd s = UniqueFd::adopt(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s)
      return make_error(errc::io_error, what, "socket() failed", errno);
    int r;
    do {
      r = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (r != 0 && errno == EINTR);
    if (r == 0)
      return Connection(std::move(s));
    last_errno = errno;
    // ECONNREFUSED/ENOENT: nobody listening (yet); EAGAIN: the backlog is full.
    if (last_errno != ECONNREFUSED && last_errno != ENOENT && last_errno != EAGAIN)
      return make_error(errc::io_error, what, "connect() failed", last_errno);
    if (stopped(stop))
      return make_error(errc::cancelled, what, "stopped while waiting for the back-end to listen");
    int left = remaining_ms(deadline);
    if (left == 0)
      return make_error(errc::timeout, what,
                        "no back-end accepted before the deadline (last error: " +
                            std::string(std::strerror(last_errno)) + ")");
    // A retry wait in product code: the back-end is not listening yet.
    std::this_thread::sleep_for(std::min(backoff, std::chrono::milliseconds(left)));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(stop_check_ms));
  }
}

Result<UniqueFd> Connection::listen(const std::string& path) {
  const std::string what = "listen " + path;
  ListenFailure why{};
  UniqueFd fd = make_listening_socket(path, SOCK_STREAM, SOCK_NONBLOCK, 0600, 4, why);
  switch (why) {
    case ListenFailure::none: return fd;
    case ListenFailure::bad_path:
      return make_error(errc::invalid_argument, what, "socket path must be 1..107 bytes");
    case ListenFailure::in_use:
      return make_error(errc::bad_state, what, "another process listens on this socket already");
    case ListenFailure::not_a_socket:
      return make_error(errc::invalid_argument, what, "the path exists and is not a socket");
    case ListenFailure::system: break;
  }
  return make_error(errc::io_error, what, "cannot listen", errno);
}

Result<Connection> Connection::accept(int listen_fd, Deadline deadline, const std::string& path,
                                      const std::atomic<bool>* stop) {
  const std::string what = "accept on " + path;
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0)
      return Connection(UniqueFd::adopt(fd));  // OWNERSHIP: a new fd from accept4
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno != EAGAIN)
      return make_error(errc::io_error, what, "accept4() failed", errno);
    if (stopped(stop))
      return make_error(errc::cancelled, what, "stopped while waiting for the back-end to connect");
    int left = remaining_ms(deadline);
    if (left == 0)
      return make_error(errc::timeout, what, "no back-end connected before the deadline");
    pollfd p{listen_fd, POLLIN, 0};
    if (::poll(&p, 1, stop ? std::min(left, stop_check_ms) : left) < 0 && errno != EINTR)
      return make_error(errc::io_error, what, "poll() failed", errno);
  }
}

Result<void> Connection::send(uint32_t request, uint32_t flags, const uint8_t* body,
                              size_t body_size, const int* fds, size_t nfds, Deadline deadline,
                              const std::string& what) {
  if (broken_)
    return broken_error(what);
  if (body_size > wire::max_payload_size)
    return make_error(errc::invalid_argument, what,
                      "body of " + std::to_string(body_size) + " bytes exceeds " +
                          std::to_string(wire::max_payload_size));
  if (nfds > max_send_fds)
    return make_error(errc::invalid_argument, what, "too many fds: " + std::to_string(nfds));

  wire::Header h{request, flags, static_cast<uint32_t>(body_size)};
  iovec iov[2];
  iov[0].iov_base = &h;
  iov[0].iov_len = header_size;
  iov[1].iov_base = const_cast<uint8_t*>(body);
  iov[1].iov_len = body_size;

  std::vector<unsigned char> control;
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = body_size > 0 ? 2 : 1;
  if (nfds > 0) {
    control.assign(CMSG_SPACE(nfds * sizeof(int)), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    // BOUNDS: the control buffer was sized with CMSG_SPACE(nfds * sizeof(int)).
    std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }

  size_t total = header_size + body_size;
  size_t sent = 0;
  while (sent < total) {
    ssize_t n = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      int e = errno;
      if (e == EINTR)
        continue;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        int werr = 0;
        auto w = wait_for(sock_.get(), POLLOUT, deadline, stop_.get(), werr);
        if (w == WaitResult::stopped)
          return fail(make_error(errc::cancelled, what,
                                 "stopped while waiting to send (" + std::to_string(sent) +
                                     " of " + std::to_string(total) + " bytes sent)"));
        if (w == WaitResult::timeout)
          return fail(make_error(errc::timeout, what,
                                 "socket not writable before the deadline (" +
                                     std::to_string(sent) + " of " + std::to_string(total) +
                                     " bytes sent)"));
        if (w == WaitResult::error)
          return fail(make_error(errc::io_error, what, "poll() failed", werr));
        continue;
      }
      if (e == EPIPE || e == ECONNRESET)
        return fail(make_error(errc::disconnected, what,
                               "peer closed the connection (" + std::to_string(sent) + " of " +
                                   std::to_string(total) + " bytes sent)",
                               e));
      return fail(make_error(errc::io_error, what, "sendmsg() failed", e));
    }
    sent += static_cast<size_t>(n);
    // The fds went with the first byte; continuations carry none.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    // Advance the iovecs past what was written.
    size_t adv = static_cast<size_t>(n);
    while (adv > 0 && msg.msg_iovlen > 0) {
      iovec& first = msg.msg_iov[0];
      size_t take = std::min(adv, first.iov_len);
      first.iov_base = static_cast<uint8_t*>(first.iov_base) + take;
      first.iov_len -= take;
      adv -= take;
      if (first.iov_len == 0) {
        ++msg.msg_iov;
        --msg.msg_iovlen;
      }
    }
  }
  return ok();
}

Result<Message> Connection::receive(size_t max_body, size_t max_fds, Deadline deadline,
                                    const std::string& what) {
  if (broken_)
    return broken_error(what);

  Message m;
  std::vector<UniqueFd> late_fds;
  alignas(cmsghdr) unsigned char control[control_space];

  // Reads exactly `want` bytes into `dst`; fds are accepted only when
  // `accept_fds` and nothing of the message was read yet.
  auto read_exact = [&](uint8_t* dst, size_t want, bool accept_fds,
                        const char* part) -> Result<void> {
    size_t got = 0;
    while (got < want) {
      iovec iov{dst + got, want - got};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0) {
        int e = errno;
        if (e == EINTR)
          continue;
        if (e == EAGAIN || e == EWOULDBLOCK) {
          int werr = 0;
          auto w = wait_for(sock_.get(), POLLIN, deadline, stop_.get(), werr);
          if (w == WaitResult::stopped)
            return fail(make_error(errc::cancelled, what,
                                   std::string("stopped while waiting for the ") + part + " (" +
                                       std::to_string(got) + " of " + std::to_string(want) +
                                       " bytes received)"));
          if (w == WaitResult::timeout)
            return fail(make_error(errc::timeout, what,
                                   std::string("no complete ") + part +
                                       " before the deadline (" + std::to_string(got) + " of " +
                                       std::to_string(want) + " bytes received)"));
          if (w == WaitResult::error)
            return fail(make_error(errc::io_error, what, "poll() failed", werr));
          continue;
        }
        if (e == ECONNRESET)
          return fail(make_error(errc::disconnected, what,
                                 std::string("connection reset during the ") + part, e));
        return fail(make_error(errc::io_error, what, "recvmsg() failed", e));
      }
      bool first_chunk = accept_fds && got == 0;
      collect_fds(msg, first_chunk ? m.fds : late_fds);
      if (msg.msg_flags & MSG_CTRUNC)
        return fail(make_error(errc::bad_fds, what,
                               "control data truncated (more than " +
                                   plural(control_fds, "fd") + " sent); all fds closed"));
      if (!late_fds.empty())
        return fail(make_error(errc::bad_fds, what,
                               plural(late_fds.size(), "fd") + " arrived after the first byte of the " +
                                   part + "; closed"));
      if (n == 0) {
        if (got == 0 && accept_fds)
          return fail(make_error(errc::disconnected, what, "peer closed the connection"));
        return fail(make_error(errc::disconnected, what,
                               "peer closed the connection with " +
                                   std::to_string(want - got) + " of " + std::to_string(want) +
                                   " " + part + " bytes missing"));
      }
      got += static_cast<size_t>(n);
    }
    return ok();
  };

  uint8_t hdr[header_size];
  if (auto r = read_exact(hdr, header_size, true, "header"); !r)
    return std::move(r).error();
  // BOUNDS: exactly header_size bytes were read into hdr.
  std::memcpy(&m.header, hdr, header_size);

  if (m.fds.size() > max_fds) {
    size_t n = m.fds.size();
    m.fds.clear();
    return std::move(fail(make_error(errc::bad_fds, what,
                                     "message carries " + plural(n, "fd") + ", at most " +
                                         std::to_string(max_fds) + " allowed; all closed")))
        .error();
  }
  if (m.header.size > max_body)
    return std::move(fail(make_error(errc::oversized, what,
                                     "header announces " + std::to_string(m.header.size) +
                                         " body bytes, at most " + std::to_string(max_body) +
                                         " allowed; body not read")))
        .error();
  m.body.resize(m.header.size);
  if (m.header.size > 0) {
    if (auto r = read_exact(m.body.data(), m.body.size(), false, "body"); !r)
      return std::move(r).error();
  }
  return m;
}

void Connection::mark_broken(const Error& why) {
  if (!broken_)
    broken_ = why;
}

void Connection::close() {
  sock_.reset();
  mark_broken(make_error(errc::broken, "close", "connection closed locally"));
}

Result<void> Connection::fail(Error e) {
  mark_broken(e);
  return e;
}

Error Connection::broken_error(const std::string& what) const {
  return make_error(errc::broken, what,
                    "connection is broken since: " + (broken_ ? broken_->message() : std::string("?")));
}

}  // namespace vufront
