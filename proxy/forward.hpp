#pragma once
// One VMM request as it goes to the back-end, and its forwarding through
// BackendClient (each request its deadline, REPLY_ACK as vufront negotiated
// it with the back-end, every reply validated). Runs inside a connection
// actor step (actors/connection.cpp); no CAF here.

#include <cstdint>
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

/// What the back-end answered.
struct ForwardResult {
  /// A reply of the request's own for the VMM (GET_* requests); else only
  /// an ack is due, when the VMM asked for one.
  bool has_reply = false;
  std::vector<uint8_t> body;  ///< the reply's body as the VMM gets it
  SharedFd fd;                ///< GET_INFLIGHT_FD's region, to attach
  uint32_t vring_base = 0;    ///< GET_VRING_BASE's base
  wire::InflightDesc inflight{};  ///< GET_INFLIGHT_FD's description
};

/// Whether `req` is one forwarded to the back-end (the others are answered
/// by vufront from the negotiated state or refused).
[[nodiscard]] bool forwarded(FrontendReq req) noexcept;

/// Sends `f` to the back-end and returns its answer. Errors: those of the
/// BackendClient call (a refusal is errc::backend_failure and leaves the
/// connection usable; anything else breaks it), invalid_argument for a
/// request that is not forwarded.
[[nodiscard]] Result<ForwardResult> forward(BackendClient& c, const Forward& f);

}  // namespace vufront::proxy
