#pragma once
// Connection: vhost-user framing over a unix stream socket.
//
// One message = one 12-byte header + `size` body bytes; fds ride as
// SCM_RIGHTS on the sendmsg carrying the header's first byte. Sending uses
// MSG_NOSIGNAL and continues short writes (without re-sending fds);
// receiving uses MSG_CMSG_CLOEXEC, detects MSG_CTRUNC, accepts fds only
// with the first chunk of a message, checks the announced size against a
// caller-given bound *before* reading the body, and never waits past a
// deadline. The socket is non-blocking; all waits are poll() with the time
// left to the deadline (or until a stop flag is set: stop_when), EINTR is
// retried.
//
// Once any call fails the connection is *broken*: every later call returns
// errc::broken with the first error in its detail. A reply that arrives after
// a deadline can therefore never be taken for the answer to a later request.
//
// With the request trace on (`--trace`, log::tracing() when the connection
// is made) every message sent or received in full is logged with its name,
// direction, size, fds, flags and, for a reply, the time since its request
// (protocol/message_trace.hpp).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "base/unix_socket.hpp"
#include "protocol/message_trace.hpp"
#include "protocol/wire.hpp"

namespace vufront {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

[[nodiscard]] inline Deadline deadline_in(std::chrono::milliseconds d) {
  return Clock::now() + d;
}

/// A received message: header, exactly `header.size` body bytes, and the fds
/// that came with it (owned).
struct Message {
  wire::Header header{};
  std::vector<uint8_t> body;
  std::vector<UniqueFd> fds;
};

/// Upper bound on fds accepted with one message (the back-end channel's 8);
/// the control buffer is sized for more so surplus fds are received and
/// closed rather than truncated.
inline constexpr size_t max_fds_per_message = 8;

/// What a connect waits for while nothing accepts at the path.
enum class ConnectWait : uint8_t {
  /// A socket nobody accepts on (stale, or its back-end restarting) is tried
  /// again until the deadline; a path that does not exist or is not a socket
  /// fails at once, saying what is there.
  socket,
  /// Everything is tried again until the deadline: the back-end creates its
  /// socket later (--wait-for-backend, and every reconnect attempt).
  backend,
};

class Connection {
public:
  /// Takes an already connected unix stream socket.
  explicit Connection(UniqueFd socket);
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  /// Connects to the unix socket at `path`, retrying while nobody accepts
  /// (as `wait` says) until `deadline`, or until `*stop` is set (checked
  /// between tries, at most 100 ms apart).
  /// Errors: invalid_argument (path too long; with ConnectWait::socket a
  /// directory or another file that is not a socket), not_found (with
  /// ConnectWait::socket: no such file), timeout (naming what was at the
  /// path), cancelled (stop), io_error.
  [[nodiscard]] static Result<Connection> connect(const std::string& path, Deadline deadline,
                                                  const std::atomic<bool>* stop = nullptr,
                                                  ConnectWait wait = ConnectWait::socket);

  /// Client mode (the back-end connects to us, as DPDK's --client does):
  /// a listening stream socket at `path` (non-blocking; mode and group from
  /// `opts`, default 0600). A stale
  /// socket file is replaced. Errors: invalid_argument (path too long, or
  /// not a socket), bad_state (someone listens there already), io_error.
  [[nodiscard]] static Result<UniqueFd> listen(const std::string& path,
                                               const ListenOptions& opts = ListenOptions{});
  /// Waits until `deadline` for a back-end to connect to `listen_fd`, or
  /// until `*stop` is set (checked at least every 100 ms).
  /// Errors: timeout ("no back-end connected"), cancelled (stop), io_error.
  [[nodiscard]] static Result<Connection> accept(int listen_fd, Deadline deadline,
                                                 const std::string& path,
                                                 const std::atomic<bool>* stop = nullptr);

  /// Sends one message: header {request, flags, body.size()} + body, with
  /// `fds` attached to the first byte. `what` names the request in errors.
  /// Errors: broken, io_error, disconnected (EPIPE/ECONNRESET), timeout,
  /// cancelled (stop_when); invalid_argument (body over
  /// wire::max_payload_size or more fds than one sendmsg carries) is
  /// returned before anything is sent and does not break.
  [[nodiscard]] Result<void> send(uint32_t request, uint32_t flags, const uint8_t* body,
                                  size_t body_size, const int* fds, size_t nfds,
                                  Deadline deadline, const std::string& what);

  /// Receives one message whose body may be at most `max_body` bytes and
  /// which may carry at most `max_fds` fds. `what` names the pending request.
  /// Errors: broken, disconnected (EOF, also mid-message), timeout,
  /// cancelled (stop_when), io_error, oversized (size > max_body; the body
  /// is not read), bad_fds (more than max_fds or MSG_CTRUNC; all received
  /// fds are closed).
  [[nodiscard]] Result<Message> receive(size_t max_body, size_t max_fds, Deadline deadline,
                                        const std::string& what);
  /// The header the last receive() read, also when the message then failed
  /// (oversized, too many fds, truncated body): lets a failure name the
  /// request. Empty when that receive() got no complete header.
  [[nodiscard]] const std::optional<wire::Header>& last_header() const noexcept {
    return last_header_;
  }

  /// From now on a send() or receive() waiting on the socket gives up when
  /// `*stop` is set (looked at every 100 ms while waiting, never when the
  /// socket is ready): errc::cancelled, and the connection is broken. Lets
  /// its owner be stopped while the back-end does not answer, instead of at
  /// the request's deadline. nullptr: deadlines only.
  /// A second flag, `also`, works the same (the owner's own, beside the
  /// one its owner's owner sets).
  void stop_when(std::shared_ptr<const std::atomic<bool>> stop,
                 std::shared_ptr<const std::atomic<bool>> also = nullptr) {
    stop_ = std::move(stop);
    also_stop_ = std::move(also);
    if (!stop_)
      stop_ = std::exchange(also_stop_, nullptr);
  }

  /// Marks the connection broken with `why` (no-op if already broken).
  void mark_broken(const Error& why);
  [[nodiscard]] bool broken() const noexcept { return broken_.has_value(); }
  [[nodiscard]] const std::optional<Error>& broken_reason() const noexcept { return broken_; }

  /// The socket (still owned here), e.g. to watch it for hang-up.
  [[nodiscard]] int fd() const noexcept { return sock_.get(); }

  /// Closes the socket; later calls fail with errc::broken.
  void close();

  /// The request trace of this connection: null while the trace is off.
  /// Labelled with the socket's path by connect() and accept(), "fd N"
  /// otherwise; the back-end channel's reader and writer share one.
  [[nodiscard]] const std::shared_ptr<MessageTrace>& trace() const noexcept { return trace_; }
  void trace_with(std::shared_ptr<MessageTrace> t) noexcept { trace_ = std::move(t); }

private:
  [[nodiscard]] Result<void> fail(Error e);
  [[nodiscard]] Error broken_error(const std::string& what) const;

  UniqueFd sock_;
  std::optional<Error> broken_;
  std::optional<wire::Header> last_header_;
  std::shared_ptr<const std::atomic<bool>> stop_;
  std::shared_ptr<const std::atomic<bool>> also_stop_;
  std::shared_ptr<MessageTrace> trace_;
};

}  // namespace vufront
