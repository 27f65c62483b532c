#pragma once
// The back-end's side of the dirty log (vhost-user spec, "Migration"): the
// log SET_LOG_BASE maps (LOG_SHMFD), and the marks of every guest write the
// back-end makes while LOG_ALL is acked: page p = gpa / 4096 is bit p % 8 of
// byte p / 8, set with an atomic or (the front-end reads and clears the
// words concurrently).

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "protocol/wire.hpp"

namespace vufront::backend {

class DirtyLogWriter {
public:
  DirtyLogWriter() = default;
  DirtyLogWriter(const DirtyLogWriter&) = delete;
  DirtyLogWriter& operator=(const DirtyLogWriter&) = delete;
  ~DirtyLogWriter();

  /// SET_LOG_BASE: maps `log.mmap_size` bytes of `fd` at `log.mmap_offset`
  /// (checked against the fd's size), replacing the log mapped before.
  /// Errors: invalid_payload (size 0, beyond the fd), io_error (fstat, mmap).
  [[nodiscard]] Result<void> set(const wire::Log& log, UniqueFd fd);
  /// Drops the log (a new front-end).
  void clear() noexcept;
  [[nodiscard]] bool mapped() const noexcept { return bytes_ != nullptr; }

  /// Marks every page of `[gpa, gpa + len)`; pages beyond the log are
  /// counted (missed()) and said once on stderr: the front-end's log is too
  /// small for its own memory.
  void mark(uint64_t gpa, uint64_t len) noexcept;
  [[nodiscard]] uint64_t missed() const noexcept { return missed_; }

private:
  uint8_t* bytes_ = nullptr;  ///< the log (mmap_offset applied)
  uint8_t* map_ = nullptr;    ///< the mapping (page-aligned)
  uint64_t size_ = 0;         ///< the log's bytes
  uint64_t map_len_ = 0;
  uint64_t missed_ = 0;
};

}  // namespace vufront::backend
