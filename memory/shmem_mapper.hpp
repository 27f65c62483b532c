#pragma once
// Where a back-end's SHMEM_MAP / SHMEM_UNMAP requests land. The VMM owns the
// guest-visible shared-memory region (a PCI BAR, a virtio-mmio window); the
// back-end request handler checks every request against the region first
// (shmid, offset, length, flags, overlap) and only then calls the mapper.
// memory/shmem_window.hpp is the in-process implementation (an mmap'ed
// window); the attach server forwards to the VMM instead.

#include <cstdint>

#include "base/error.hpp"

namespace vufront {

class SharedMemoryMapper {
public:
  virtual ~SharedMemoryMapper() = default;
  /// Maps [fd_offset, fd_offset+len) of `fd` at `shm_offset` of region
  /// `shmid`. The fd stays owned by the caller (dup it to keep it).
  [[nodiscard]] virtual Result<void> map(uint8_t shmid, uint64_t shm_offset, int fd,
                                         uint64_t fd_offset, uint64_t len, bool writable) = 0;
  /// Unmaps [shm_offset, shm_offset+len) of region `shmid`.
  [[nodiscard]] virtual Result<void> unmap(uint8_t shmid, uint64_t shm_offset, uint64_t len) = 0;
};

}  // namespace vufront
