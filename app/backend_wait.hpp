#pragma once
// --wait-for-backend: a command that waits for its back-end's socket says so
// once in the log (stderr, base/log.hpp), naming what is at the path now, so whoever runs it knows
// why nothing happens yet (and a test knows when to start the back-end).

#include <chrono>
#include <string>

namespace vufront::app {

/// "waiting up to 30 s for a back-end to listen at PATH (now: no such file)",
/// or "" when a socket is at `socket` already (the connect goes ahead).
[[nodiscard]] std::string backend_wait_note(const std::string& socket,
                                            std::chrono::milliseconds timeout);

}  // namespace vufront::app
