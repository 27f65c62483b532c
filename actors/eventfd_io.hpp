#pragma once
// Reading and adding to eventfds without ever blocking the calling thread
// (the event loop's thread, a CAF scheduler thread), whether the fd is in
// non-blocking mode or not. A call eventfd or a sink eventfd may come from
// the VMM in blocking mode: then a poll() with zero timeout goes first; in
// non-blocking mode (fd_nonblocking() once per fd) the read or write alone
// does, and EAGAIN means "nothing to read" / "counter full".

#include <cstdint>

namespace vufront::actors {

/// Whether `fd`'s file status flags have O_NONBLOCK (false on error).
[[nodiscard]] bool fd_nonblocking(int fd) noexcept;

/// Reads and returns an eventfd's counter without blocking. 0 when nothing
/// was pending or on error. With `nonblocking` false (or unknown) it polls
/// first; that is only safe while no other thread of this process reads
/// the same eventfd between the poll and the read.
[[nodiscard]] uint64_t read_eventfd(int fd, bool nonblocking) noexcept;

/// Adds `n` to an eventfd's counter without blocking. Returns false when
/// the write did not happen (a saturated counter, a bad fd).
bool add_to_eventfd(int fd, uint64_t n, bool nonblocking) noexcept;

/// read_eventfd(fd, false): for fds whose mode is not known.
[[nodiscard]] uint64_t drain_eventfd(int fd) noexcept;

}  // namespace vufront::actors
