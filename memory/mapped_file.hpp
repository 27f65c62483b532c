#pragma once
// MappedFile: a read-only MAP_SHARED mapping of the first `len` bytes of a
// file, under a SigbusGuard (memory/sigbus_guard.hpp) for as long as it is
// mapped. If another process truncates the file meanwhile, reading the lost
// pages yields zeros instead of killing the process, and truncated() says
// so: a caller that reads through the mapping checks truncated() after it
// has read (and treats EFAULT from a write(2) out of the mapping the same
// way). Move-only; the destructor releases the guard, then unmaps.

#include <cstddef>
#include <cstdint>

#include "base/error.hpp"
#include "memory/sigbus_guard.hpp"

namespace vufront {

class MappedFile {
public:
  /// Maps [0, len) of `fd` (not kept: the mapping holds its own reference)
  /// read-only and guards it; `sequential` adds MADV_SEQUENTIAL. Errors
  /// (request `request`): invalid_argument (len 0), io_error (mmap failed),
  /// and those of SigbusGuard::guard (busy, io_error).
  [[nodiscard]] static Result<MappedFile> map(int fd, size_t len, const char* request,
                                              bool sequential = true);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  [[nodiscard]] const uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] size_t size() const noexcept { return size_; }
  /// Drops this process's page-table entries for the pages from the one
  /// holding `from` up to the last whole page before `to` (MADV_DONTNEED): the file's pages stay in the page cache and
  /// are faulted in again if read, but no longer count in this process's
  /// resident set. A caller streaming through a large file drops what it has
  /// passed, so its RSS stays bounded.
  void drop(size_t from, size_t to) noexcept;

  /// A page of the mapping faulted past the file's end (the file shrank):
  /// what was read there since is zeros, not the file's bytes.
  [[nodiscard]] bool truncated() const noexcept { return guard_.faulted(); }

private:
  void reset() noexcept;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  SigbusGuard guard_;
};

}  // namespace vufront
