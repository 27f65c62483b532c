#pragma once
// ShmemWindow: the in-process SharedMemoryMapper. Each VIRTIO shared-memory
// region (index = shmid, non-zero size) gets a reserved, inaccessible range
// of this process's address space (anonymous, PROT_NONE, MAP_NORESERVE).
// map() places the back-end's fd over part of it (MAP_SHARED | MAP_FIXED,
// read-only or read-write); unmap() puts an inaccessible anonymous mapping
// back. Nothing outside the reservations is ever touched, because every call
// re-checks its arguments (known shmid, page alignment, range inside the
// region with overflow-safe arithmetic) even though the back-end request
// handler checked them first.
//
// What it does not do: track which parts are mapped (the handler does, and
// refuses overlaps). Reading an unmapped part of data() faults.
//
// Thread safety: the layout never changes after create(); map/unmap from one
// thread at a time (the channel actor), data()/size() from anywhere.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "memory/shmem_mapper.hpp"
#include "base/error.hpp"

namespace vufront {

class ShmemWindow final : public SharedMemoryMapper {
public:
  /// Reserves `sizes[shmid]` bytes for every non-zero entry (at most 256
  /// entries; shmid is a u8). Errors (request "shmem window"):
  /// invalid_argument (more than 256 entries, a size that is not a multiple
  /// of the page size), io_error (mmap failed, e.g. ENOMEM).
  [[nodiscard]] static Result<std::unique_ptr<ShmemWindow>> create(
      const std::vector<uint64_t>& sizes);

  /// Unmaps every reservation, and with it every mapping inside.
  ~ShmemWindow() override;

  ShmemWindow(const ShmemWindow&) = delete;
  ShmemWindow& operator=(const ShmemWindow&) = delete;
  ShmemWindow(ShmemWindow&&) = delete;
  ShmemWindow& operator=(ShmemWindow&&) = delete;

  /// Maps [fd_offset, fd_offset+len) of `fd` (not kept: the mapping holds
  /// its own reference) at `shm_offset` of region `shmid`, PROT_READ plus
  /// PROT_WRITE if `writable`. Errors (request "BACKEND_SHMEM_MAP"):
  /// invalid_argument (unknown shmid, len 0, offsets/len not page-aligned,
  /// range outside the region or overflowing, a regular file shorter than
  /// fd_offset+len), io_error (fstat/mmap failed; the range is inaccessible
  /// again afterwards).
  [[nodiscard]] Result<void> map(uint8_t shmid, uint64_t shm_offset, int fd, uint64_t fd_offset,
                                 uint64_t len, bool writable) override;

  /// Makes [shm_offset, shm_offset+len) of region `shmid` inaccessible again
  /// (whatever was mapped there). Errors (request "BACKEND_SHMEM_UNMAP"):
  /// invalid_argument as for map(), io_error (mmap failed).
  [[nodiscard]] Result<void> unmap(uint8_t shmid, uint64_t shm_offset, uint64_t len) override;

  /// Start of region `shmid`, nullptr if it has none. Only mapped parts may
  /// be accessed (read-only mappings only read).
  [[nodiscard]] uint8_t* data(uint8_t shmid) const noexcept;
  /// Size of region `shmid`, 0 if it has none.
  [[nodiscard]] uint64_t size(uint8_t shmid) const noexcept;
  /// Number of entries create() got (the highest shmid + 1 it knows).
  [[nodiscard]] size_t regions() const noexcept { return regions_.size(); }

  /// The mmap page size every offset and length must be a multiple of.
  [[nodiscard]] static uint64_t page_size() noexcept;

private:
  struct Region {
    uint8_t* base = nullptr;  ///< OWNERSHIP: a reservation of `size` bytes, or nullptr
    uint64_t size = 0;
  };

  ShmemWindow() = default;
  /// The region, or an error naming `request` when the range is unusable.
  [[nodiscard]] Result<Region> check(const char* request, uint8_t shmid, uint64_t shm_offset,
                                     uint64_t len) const;
  /// Puts a PROT_NONE anonymous mapping over [at, at+len).
  [[nodiscard]] static bool reserve_fixed(uint8_t* at, uint64_t len) noexcept;

  std::vector<Region> regions_;
};

}  // namespace vufront
