#pragma once
// What `vufront-backend -v` logs of a front-end request besides its name: the
// payload's values that say what the front-end asked for (features acked,
// ring index and number, region placement, config window, ...), never a host
// address. One line per request, so a recording of a whole operation (the
// golden recordings in tests/integration/golden/) shows every change to
// what vufront sends.

#include <string>

#include "protocol/connection.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

/// " 0x8e2b", " index 0 num 128", " [reply]"...: the text after
/// "<- NAME (N bytes)"; "" for a request with nothing to show. A payload of
/// the wrong size shows nothing (the request is refused after the log line).
[[nodiscard]] std::string request_summary(FrontendReq req, const Message& m);

}  // namespace vufront::backend
