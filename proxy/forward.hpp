#pragma once
// One VMM request as it goes to the back-end, and its forwarding through
// BackendClient (each request its deadline, REPLY_ACK as vufront negotiated
// it with the back-end, every reply validated), and, for the requests a VMM
// waits on, its answer sent to the VMM from the same place. Runs inside a
// connection actor step (actors/connection.cpp); no CAF here.

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/frontend_request.hpp"

namespace vufront::proxy {

/// A validated VMM request, its user addresses translated (Shadow::prepare),
/// its fds shared so the shadow can keep them after the back-end has them.
struct Forward {
  FrontendReq req{};
  FrontendPayload payload;
  std::vector<SharedFd> fds;
  /// GET_VRING_BASE of a packed ring (32-bit base, normalised).
  bool packed = false;
};

/// Where and how the VMM gets its answer to a Forward, when it goes from
/// where the back-end's reply is read (forward_and_answer()). Empty (no
/// `to`): the caller answers (teardown, deferred rings, replays).
struct Answer {
  /// The VMM's socket: the port's one connection per session for answers
  /// (its stop flag set when the session ends), shared so that it outlives
  /// a step that is still sending; sends on it are one at a time (the port
  /// has one forwarded request in flight per session).
  std::shared_ptr<Connection> to;
  bool need_reply = false; ///< the VMM asked for a REPLY_ACK ack (Shadow::Prepared)
  /// How long the answer may wait for room in the VMM's socket.
  std::chrono::milliseconds timeout{5000};
  /// Called once the answer was sent (or none was owed): the VMM's next
  /// request may be read. Any thread; may be empty.
  std::function<void()> sent;
};

/// What the back-end answered.
struct ForwardResult {
  /// A reply of the request's own for the VMM (GET_* requests); else only
  /// an ack is due, when the VMM asked for one.
  bool has_reply = false;
  std::vector<uint8_t> body;  ///< the reply's body as the VMM gets it
  SharedFd fd;                ///< GET_INFLIGHT_FD's region, to attach
  uint32_t vring_base = 0;    ///< GET_VRING_BASE's base
  wire::InflightDesc inflight{};  ///< GET_INFLIGHT_FD's description
  /// forward_and_answer() sent the VMM its answer (or tried: answer_error),
  /// or owed it none; the caller only records the request.
  bool answered = false;
  /// Why sending the VMM its answer failed; empty when it did not.
  std::string answer_error;
};

/// Whether `req` is one forwarded to the back-end (the others are answered
/// by vufront from the negotiated state or refused).
[[nodiscard]] bool forwarded(FrontendReq req) noexcept;

/// Sends `f` to the back-end and returns its answer. Errors: those of the
/// BackendClient call (a refusal is errc::backend_failure and leaves the
/// connection usable; anything else breaks it), invalid_argument for a
/// request that is not forwarded.
[[nodiscard]] Result<ForwardResult> forward(BackendClient& c, const Forward& f);

/// What the VMM gets for `f` once the back-end accepted it with `r`: the
/// request's own reply, the ack it asked for (`need_reply`), or nothing.
[[nodiscard]] std::optional<FrontendReply> vmm_answer(const Forward& f, bool need_reply,
                                                      const ForwardResult& r);

/// forward(), then, when `a.to` is set, the VMM's answer (vmm_answer())
/// sent on it at once, within `a.timeout` (giving up when the connection's
/// stop flag is set: the session ended), so the VMM's wait ends without a
/// hand-off back to the actors; then
/// `a.sent()`. `answered` says so. Errors: forward()'s (then nothing was
/// sent to the VMM: its caller answers a refusal or handles the loss). A
/// failed send to the VMM is no error: the back-end has the request, so it
/// is recorded, and `answer_error` says why the VMM did not get its answer
/// (`a.sent` is not called).
[[nodiscard]] Result<ForwardResult> forward_and_answer(BackendClient& c, const Forward& f, const Answer& a);

}  // namespace vufront::proxy
