#pragma once
// The live progress line of a state transfer on a terminal: an actor that
// takes the transfer's progress messages and redraws one line on stderr.

#include <cstdint>
#include <functional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/messages.hpp"

namespace vufront::actors {

/// The text of the line for (done, total, microseconds since the start); the
/// caller formats it (app/: "  snapshot  [####....]  12.0 MiB / 64.0 MiB  1.2 s")
/// and keeps it shorter than the terminal is wide.
using ProgressRender = std::function<std::string(uint64_t done, uint64_t total, uint64_t elapsed_us)>;

/// An actor that draws (progress_atom, done, total) as one line on stderr,
/// redrawn in place ("\r") with the text `render` makes.
/// A request `(caf::close_atom)` clears the line, stops drawing and is
/// answered with ok_atom, so the caller can print after it without the two
/// interleaving (late progress messages are ignored).
[[nodiscard]] caf::actor spawn_progress_line(caf::actor_system& sys, ProgressRender render);
/// Clears and stops a progress line (no-op for an invalid handle); waits up
/// to a second for it.
void close_progress_line(caf::actor_system& sys, const caf::actor& line);

}  // namespace vufront::actors
