#pragma once
// The VMM's dirty log (LOG_SHMFD, SET_LOG_BASE; vhost-user spec, "Migration"
// and "Dirty pages logging"; docs/vmm-proxy.md, "Live migration"): the checks
// a VMM's SET_LOG_BASE passes before it goes to the back-end, and marking
// every page of that log dirty when a back-end was lost while the VMM
// logged. The log is the VMM's (QEMU's vhost log): vufront never reads or
// clears it. No CAF.

#include <cstdint>

#include "base/error.hpp"
#include "protocol/wire.hpp"

namespace vufront::proxy {

/// VHOST_LOG_PAGE: one bit of the log per 4 KiB of guest-physical memory.
inline constexpr uint64_t log_page_size = 0x1000;

/// Bytes of a log covering guest-physical memory from 0 up to `end`
/// (exclusive): one bit per page, rounded up to whole bytes.
[[nodiscard]] uint64_t log_bytes_for(uint64_t end) noexcept;

/// Checks a VMM's SET_LOG_BASE before it is forwarded: `mmap_size` not 0,
/// `fd` a file that holds [mmap_offset, mmap_offset + mmap_size) (a back-end
/// mapping beyond its end would fault on its first log write), and the log
/// covering the guest memory the VMM shared so far (up to `memory_end`: the
/// spec's log spans GPA 0 to the highest region end; QEMU sizes it so).
/// Errors: invalid_payload naming SET_LOG_BASE and what is wrong.
[[nodiscard]] Result<void> check_log_base(const wire::Log& log, int fd, uint64_t memory_end);

/// Sets every bit of the VMM's log (written through the fd, never mapped: a
/// VMM reading and clearing words with atomic exchanges meanwhile loses no
/// bit): a back-end lost while logging may have written guest memory and
/// died before its log bit, so every page counts as dirty once.
/// Errors: io_error (pwrite; errno).
[[nodiscard]] Result<void> mark_all_dirty(const wire::Log& log, int fd);

}  // namespace vufront::proxy
