#pragma once
// The process's log: every program of vufront writes its log lines through
// here (spdlog underneath, one logger, to stderr), never with fprintf of its
// own. A line is "PROGRAM: MESSAGE"; a daemon's (`vufront attach`) carries
// the date with milliseconds and the level:
//
//   vufront probe: waiting up to 30 s for a back-end to listen at /tmp/b.sock (now: no such file)
//   vufront attach: 2026-12-06 11:00:00.123 info: serving disk0 (blk, /tmp/b.sock) on /tmp/c.ctl
//
// Levels, from the quietest: error, warning, info (the default), debug. The
// request trace (`--trace`: every vhost-user message each way,
// protocol/message_trace.hpp) has a level of its own below debug, on only
// when asked for, whatever the level; tracing() tells whether it is, for
// the price of one relaxed atomic load.
//
// Output a tool prints on stdout (reports, JSON) does not come here. The
// functions are thread-safe; before setup() lines go out as "vufront: ...".
// Not part of the client package (vufront_base): the library vufront_log.

#include <atomic>
#include <optional>
#include <string>
#include <string_view>

namespace vufront::log {

enum class Level { debug, info, warning, error };

struct Settings {
  /// "vufront probe", "vufront attach", "vufront-backend": each line's prefix.
  std::string program = "vufront";
  Level level = Level::info;
  /// The request trace (--trace).
  bool trace = false;
  /// Date and time with milliseconds, and the level, on each line (a daemon).
  bool timestamps = false;
};

/// (Re)configures the process's logger. Call it once the command line is
/// parsed, before any thread logs.
void setup(const Settings& s);

/// "error", "warning" (or "warn"), "info", "debug"; nullopt otherwise.
[[nodiscard]] std::optional<Level> level_from_string(std::string_view text);
/// The names --log-level takes, in order: error, warning, info, debug.
[[nodiscard]] const char* name(Level l) noexcept;

/// Whether a line of level `l` would be written (to skip building it).
[[nodiscard]] bool enabled(Level l) noexcept;

void write(Level l, std::string_view message);
inline void debug(std::string_view m) { write(Level::debug, m); }
inline void info(std::string_view m) { write(Level::info, m); }
inline void warning(std::string_view m) { write(Level::warning, m); }
inline void error(std::string_view m) { write(Level::error, m); }

namespace detail {
inline std::atomic<bool> trace_on{false};
}

/// Whether the request trace is on (setup() with trace). Costs one relaxed
/// load: the framing code asks it for every message.
[[nodiscard]] inline bool tracing() noexcept {
  return detail::trace_on.load(std::memory_order_relaxed);
}

/// Writes one line of the request trace (only when tracing()).
void trace(std::string_view message);

}  // namespace vufront::log
