#pragma once
// Sizes, byte counts, rates and times as users write and read them on the
// command line ("512M", "64.0 MiB", "312.4 MiB/s", "1.25 s"), a progress
// bar, and the terminal the live output goes to.

#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.hpp"

namespace vufront::ops {

/// "4096", "512K", "512M", "4G", "1T" (also "4GiB", "4GB", lower case):
/// binary multiples, a whole number > 0, at most 2^63.
/// Errors: invalid_argument naming the text ("size \"1X\": ...").
[[nodiscard]] Result<uint64_t> parse_size(std::string_view text);

/// "512 B", "1.5 KiB", "64.0 MiB", "4.00 GiB".
[[nodiscard]] std::string format_bytes(uint64_t bytes);
/// "312.4 MiB/s"; "-" when no time passed.
[[nodiscard]] std::string format_rate(uint64_t bytes, uint64_t elapsed_us);
/// "1.25 s" / "312 ms".
[[nodiscard]] std::string format_duration_us(uint64_t elapsed_us);
/// The state checksum as the manifest writes it: 16 lower-case hex digits.
[[nodiscard]] std::string checksum_hex(uint64_t checksum);

/// A progress bar of `width` cells for done/total: "[#######.......]"; when
/// the total is unknown (0), a marker that bounces one cell per `phase`
/// (e.g. tenths of a second): "[...###........]".
[[nodiscard]] std::string progress_bar(uint64_t done, uint64_t total, unsigned width,
                                       uint64_t phase = 0);

/// Columns of the terminal on stderr (80 when unknown).
[[nodiscard]] unsigned terminal_columns();

/// Whether stderr is a terminal (live progress only there).
[[nodiscard]] inline bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

}  // namespace vufront::ops
