#include "protocol/connection.hpp"

#include "base/log.hpp"
#include "base/unix_socket.hpp"
#include "base/wait.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vufront {

namespace {

/// The control buffer holds this many fds, more than any message may carry,
/// so surplus fds arrive (and are closed) instead of being truncated.
constexpr size_t control_fds = 32;

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

/// The flags a wait gives up on (either may be nullptr).
struct StopFlags {
  const std::atomic<bool>* a = nullptr;
  const std::atomic<bool>* b = nullptr;
  [[nodiscard]] bool any() const noexcept { return a != nullptr || b != nullptr; }
  [[nodiscard]] bool set() const noexcept { return stopped(a) || stopped(b); }
};

/// Waits (wait_fds) for `events` on one fd until `deadline`, or until a stop
/// flag is set (looked at every stop_check_ms); EINTR retried.
WaitResult wait_for(int fd, short events, Deadline deadline, StopFlags stop, int& err) {
  for (;;) {
    if (stop.set())
      return WaitResult::stopped;
    int ms = remaining_ms(deadline);
    if (ms == 0)
      return WaitResult::timeout;
    pollfd p{fd, events, 0};
    int r = wait_fds(&p, 1, stop.any() ? std::min(ms, stop_check_ms) : ms);
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

std::string plural(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

}  // namespace

Connection::Connection(UniqueFd socket)
    : sock_(std::move(socket)),
      trace_(log::tracing() ? std::make_shared<MessageTrace>(MessageTrace::Channel::frontend,
                                                             "fd " + std::to_string(sock_.get()))
                            : nullptr) {
  if (!sock_.valid())
    broken_ = make_error(errc::invalid_argument, "connection", "no socket");
  else if (!set_nonblocking(sock_.get(), true))
    broken_ = make_error(errc::io_error, "connection", "cannot set O_NONBLOCK", errno);
}

namespace {

/// Why nobody accepted at a path, from the last connect()'s errno and what
/// is at the path.
std::string nobody_accepted(int last_errno, const SocketPath& seen) {
  if (last_errno == EAGAIN)
    return "the back-end's listen backlog stayed full (" + std::string(std::strerror(EAGAIN)) + ")";
  if (seen.kind == SocketPathKind::socket)
    return "the socket exists but nobody accepts on it: stale, or its back-end is not listening "
           "(yet) (" + std::string(std::strerror(last_errno)) + ")";
  if (seen.kind == SocketPathKind::missing)
    return "nothing is at the path (" + seen.text + ")";
  return "the path is " + seen.text;
}

}  // namespace

Result<Connection> Connection::connect(const std::string& path, Deadline deadline,
                                       const std::atomic<bool>* stop, ConnectWait wait) {
  const std::string what = "connect " + path;
  auto addr = unix_address(path, what);
  if (!addr)
    return std::move(addr).error();

  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    UniqueFd s = make_unix_socket(SOCK_STREAM, SOCK_NONBLOCK);
    if (!s)
      return make_error(errc::io_error, what, "socket() failed", errno);
    bool connected;
    do {
      connected = unix_connect(s.get(), *addr);
    } while (!connected && errno == EINTR);
    if (connected) {
      Connection c(std::move(s));
      if (c.trace_)
        c.trace_->relabel(path);
      log::debug("connected to " + path);
      return c;
    }
    const int last_errno = errno;
    // ECONNREFUSED: nobody listens on the socket, or the path is not a
    // socket; ENOENT/ENOTDIR: nothing there; EAGAIN: the backlog is full.
    if (last_errno != ECONNREFUSED && last_errno != ENOENT && last_errno != ENOTDIR &&
        last_errno != EAGAIN)
      return make_error(errc::io_error, what, "connect() failed", last_errno);
    const SocketPath seen = inspect_socket_path(path);
    if (wait == ConnectWait::socket && last_errno != EAGAIN) {
      if (seen.kind == SocketPathKind::missing)
        return make_error(errc::not_found, what,
                          seen.text + ": no back-end socket at this path (start the back-end "
                                      "first, or let vufront wait for it: --wait-for-backend; in a "
                                      "job, \"wait_for_backend\": true)");
      if (seen.kind == SocketPathKind::directory || seen.kind == SocketPathKind::other)
        return make_error(errc::invalid_argument, what,
                          seen.text + ": give the back-end's vhost-user socket");
    }
    if (stopped(stop))
      return make_error(errc::cancelled, what, "stopped while waiting for the back-end to listen");
    int left = remaining_ms(deadline);
    if (left == 0)
      return make_error(errc::timeout, what,
                        "no back-end accepted before the deadline: " +
                            nobody_accepted(last_errno, seen));
    // A retry wait in product code: the back-end is not listening yet.
    (void)wait_fds(nullptr, 0, static_cast<int>(std::min<long long>(backoff.count(), left)));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(stop_check_ms));
  }
}

Result<UniqueFd> Connection::listen(const std::string& path, const ListenOptions& opts) {
  const std::string what = "listen " + path;
  ListenFailure why{};
  UniqueFd fd = make_listening_socket(path, SOCK_STREAM, SOCK_NONBLOCK, opts, 4, why);
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
    if (fd >= 0) {
      Connection c(UniqueFd::adopt(fd));  // OWNERSHIP: a new fd from accept4
      if (c.trace_)
        c.trace_->relabel(path);
      log::debug("a back-end connected on " + path);
      return c;
    }
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
    if (wait_fds(&p, 1, stop ? std::min(left, stop_check_ms) : left) < 0 && errno != EINTR)
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

  iovec* next = iov;                        // the first iovec not yet sent in full
  size_t left_iovs = body_size > 0 ? 2 : 1;
  const int* pending_fds = fds;              // go with the first byte, then never again
  size_t pending_nfds = nfds;

  size_t total = header_size + body_size;
  size_t sent = 0;
  while (sent < total) {
    ssize_t n = send_with_fds(sock_.get(), next, left_iovs, pending_fds, pending_nfds, MSG_DONTWAIT);
    if (n < 0) {
      int e = errno;
      if (e == EINTR)
        continue;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        int werr = 0;
        auto w = wait_for(sock_.get(), POLLOUT, deadline, {stop_.get(), also_stop_.get()}, werr);
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
    pending_fds = nullptr;
    pending_nfds = 0;
    // Advance the iovecs past what was written.
    size_t adv = static_cast<size_t>(n);
    while (adv > 0 && left_iovs > 0) {
      iovec& first = next[0];
      size_t take = std::min(adv, first.iov_len);
      first.iov_base = static_cast<uint8_t*>(first.iov_base) + take;
      first.iov_len -= take;
      adv -= take;
      if (first.iov_len == 0) {
        ++next;
        --left_iovs;
      }
    }
  }
  if (trace_)
    trace_->sent(request, flags, body_size, nfds);
  return ok();
}

Result<Message> Connection::receive(size_t max_body, size_t max_fds, Deadline deadline,
                                    const std::string& what) {
  last_header_.reset();
  if (broken_)
    return broken_error(what);

  Message m;
  std::vector<UniqueFd> late_fds;

  // Reads exactly `want` bytes into `dst`; fds are accepted only when
  // `accept_fds` and nothing of the message was read yet.
  auto read_exact = [&](uint8_t* dst, size_t want, bool accept_fds,
                        const char* part) -> Result<void> {
    size_t got = 0;
    while (got < want) {
      bool first_chunk = accept_fds && got == 0;
      RecvInfo info;
      ssize_t n = recv_with_fds(sock_.get(), dst + got, want - got, control_fds, MSG_DONTWAIT,
                                first_chunk ? m.fds : late_fds, info);
      if (n < 0) {
        int e = errno;
        if (e == EINTR)
          continue;
        if (e == EAGAIN || e == EWOULDBLOCK) {
          int werr = 0;
          auto w = wait_for(sock_.get(), POLLIN, deadline, {stop_.get(), also_stop_.get()}, werr);
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
      if (info.fds_truncated())
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
  last_header_ = m.header;

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
  if (trace_)
    trace_->received(m.header.request, m.header.flags, m.body.size(), m.fds.size());
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
