#pragma once
// The live progress line of a state transfer on a terminal: an actor that
// takes the transfer's progress messages and redraws one line on stderr.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "actors/messages.hpp"

namespace vufront::actors {

/// The time a transfer still needs at the rate so far (microseconds):
/// empty while the total is unknown (0: a snapshot learns the back-end's
/// state size only at its end) or nothing moved yet; 0 once done.
[[nodiscard]] std::optional<uint64_t> eta_us(uint64_t done, uint64_t total, uint64_t elapsed_us);

/// The text of the line for (done, total, microseconds since the start); the
/// caller formats it (app/: "  snapshot  [####....]  12.0 MiB / 64.0 MiB  1.2 s")
/// and keeps it shorter than the terminal is wide.
using ProgressRender = std::function<std::string(uint64_t done, uint64_t total, uint64_t elapsed_us)>;

/// An actor that draws (progress_atom, done, total) as one line on stderr,
/// redrawn in place ("\r") with the text `render` makes. The elapsed time
/// starts again when `done` goes back (a restore checks its file, then loads it).
/// A request `(caf::close_atom)` clears the line, stops drawing and is
/// answered with ok_atom, so the caller can print after it without the two
/// interleaving (late progress messages are ignored).
[[nodiscard]] caf::actor spawn_progress_line(caf::actor_system& sys, ProgressRender render);
/// Clears and stops a progress line (no-op for an invalid handle); waits up
/// to a second for it.
void close_progress_line(caf::actor_system& sys, const caf::actor& line);

}  // namespace vufront::actors
