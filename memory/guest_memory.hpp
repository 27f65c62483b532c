#pragma once
// Guest RAM as a VMM holds it: fd-backed regions (memfd, POSIX shm via
// Boost.Interprocess, or a caller's own fd) mapped MAP_SHARED read-write,
// GPA -> host pointer translation, and the regions a memory table is built
// from (the payloads themselves are protocol/mem_table.hpp's: memory/ knows
// nothing of the wire).
//
// The `user_addr` a back-end is told is *synthetic*: each region gets a fake
// base from a private address range (starting at synthetic_user_base, never
// overlapping, never reused), not the process's real mapping address. A
// back-end only uses user_addr to translate ring addresses, so any
// consistent space works, and our layout stays private.
//
// Every check happens in add_region*: a region that was accepted can always
// be sent. No CAF here.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <boost/interprocess/mapped_region.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "memory/dirty_log.hpp"

namespace vufront {

/// How add_region() creates the backing fd of a region.
enum class Backing {
  memfd,       ///< memfd_create (preferred; what QEMU uses)
  posix_shm,   ///< Boost.Interprocess shared_memory_object (shm_open), name removed at once
};

/// First synthetic user address; distinct from any plausible GPA so GPA/UVA
/// mix-ups fail loudly.
inline constexpr uint64_t synthetic_user_base = 0x1000'0000'0000;
/// Synthetic bases are aligned to this and separated by at least this gap.
inline constexpr uint64_t synthetic_user_align = 2ull << 20;
/// GuestMemory's default slot limit: SET_MEM_TABLE's 8 regions (checked
/// against the wire constant in protocol/mem_table.hpp).
inline constexpr size_t default_max_guest_regions = 8;

/// One mapped guest RAM region. Owned by GuestMemory; never copied.
class GuestRegion {
public:
  GuestRegion(const GuestRegion&) = delete;
  GuestRegion& operator=(const GuestRegion&) = delete;
  GuestRegion(GuestRegion&&) = default;
  GuestRegion& operator=(GuestRegion&&) = delete;

  [[nodiscard]] uint64_t gpa() const noexcept { return gpa_; }
  [[nodiscard]] uint64_t size() const noexcept { return size_; }
  /// The synthetic user address of the region start (what back-ends see).
  [[nodiscard]] uint64_t user_addr() const noexcept { return user_addr_; }
  /// Offset of the region start inside fd().
  [[nodiscard]] uint64_t fd_offset() const noexcept { return fd_offset_; }
  /// The backing fd (still owned here, shared with whoever else holds the SharedFd).
  [[nodiscard]] int fd() const noexcept { return fd_->get(); }
  [[nodiscard]] const SharedFd& shared_fd() const noexcept { return fd_; }
  /// Start of this process's mapping of the region (never sent anywhere).
  [[nodiscard]] uint8_t* host_base() const noexcept {
    return static_cast<uint8_t*>(map_.get_address());
  }

private:
  friend class GuestMemory;
  GuestRegion(uint64_t gpa, uint64_t size, uint64_t user_addr, uint64_t fd_offset, SharedFd fd,
              boost::interprocess::mapped_region map)
      : gpa_(gpa), size_(size), user_addr_(user_addr), fd_offset_(fd_offset),
        fd_(std::move(fd)), map_(std::move(map)) {}

  uint64_t gpa_;
  uint64_t size_;
  uint64_t user_addr_;
  uint64_t fd_offset_;
  SharedFd fd_;
  boost::interprocess::mapped_region map_;  ///< unmapped with the region
};

/// The guest's RAM: a set of non-overlapping regions keyed by GPA. Move-only;
/// every region is unmapped and its fd closed (last SharedFd copy) on destruction.
class GuestMemory {
public:
  /// `max_regions`: slot limit (8 for SET_MEM_TABLE; raise to GET_MAX_MEM_SLOTS
  /// for ADD_MEM_REG users with set_max_regions()).
  explicit GuestMemory(size_t max_regions = default_max_guest_regions) noexcept
      : max_regions_(max_regions) {}
  GuestMemory(GuestMemory&&) = default;
  GuestMemory& operator=(GuestMemory&&) = default;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory() = default;

  /// Changes the slot limit. Errors: invalid_argument if `n` is 0 or below the
  /// number of regions already present.
  [[nodiscard]] Result<void> set_max_regions(size_t n);
  [[nodiscard]] size_t max_regions() const noexcept { return max_regions_; }

  /// Creates a zero-filled backing of `size` bytes and maps it at `gpa`.
  /// Errors: invalid_argument (size 0, gpa/size not page-aligned, gpa+size
  /// wraps, overlap with an existing region, slot limit reached, synthetic
  /// address space exhausted); io_error (memfd/shm/mmap failed, errno set).
  /// The pointer stays valid until the region is removed or this object dies.
  [[nodiscard]] Result<const GuestRegion*> add_region(uint64_t gpa, uint64_t size,
                                                      Backing backing = Backing::memfd);

  /// Maps `[fd_offset, fd_offset+size)` of a caller-given fd at `gpa`
  /// (OWNERSHIP: the fd is adopted / shared). Errors: as add_region, plus
  /// invalid_argument for an invalid fd, an unaligned or wrapping fd_offset,
  /// or a regular file shorter than fd_offset+size.
  [[nodiscard]] Result<const GuestRegion*> add_region_from_fd(uint64_t gpa, uint64_t size,
                                                              UniqueFd fd, uint64_t fd_offset);
  [[nodiscard]] Result<const GuestRegion*> add_region_from_fd(uint64_t gpa, uint64_t size,
                                                              SharedFd fd, uint64_t fd_offset);

  /// Unmaps and drops the region starting exactly at `gpa` (its synthetic base
  /// is never reused). Errors: invalid_argument if no region starts there.
  [[nodiscard]] Result<void> remove_region(uint64_t gpa);

  /// The region starting exactly at `gpa`, or nullptr.
  [[nodiscard]] const GuestRegion* region(uint64_t gpa) const noexcept;
  /// The region containing `gpa`, or nullptr.
  [[nodiscard]] const GuestRegion* find(uint64_t gpa) const noexcept;
  [[nodiscard]] size_t region_count() const noexcept { return regions_.size(); }

  /// Host pointer for `[gpa, gpa+len)`, or nullptr unless the whole range
  /// (len 0 counts as 1 byte) lies inside one region. Overflow-safe.
  [[nodiscard]] uint8_t* host_ptr(uint64_t gpa, uint64_t len) const noexcept;
  /// Synthetic user address of `gpa`, nullopt if no region contains it.
  [[nodiscard]] std::optional<uint64_t> user_addr_of(uint64_t gpa) const noexcept;
  /// Inverse of user_addr_of: GPA of a synthetic user address, or nullopt.
  [[nodiscard]] std::optional<uint64_t> gpa_of_user(uint64_t uaddr) const noexcept;

  /// All regions in ascending GPA order (valid until one is added or removed);
  /// protocol/mem_table.hpp turns them into a memory table.
  [[nodiscard]] std::vector<const GuestRegion*> regions() const;
  /// The backing fds (still owned here), same order as regions().
  [[nodiscard]] std::vector<int> fds() const;

  /// The log of this process's own writes to guest memory (a migration's:
  /// what the guest-side driver writes, as KVM's log of a VMM's vCPUs);
  /// nullptr: none. The log must outlive its use here.
  void set_write_log(DirtyLog* log) noexcept { write_log_ = log; }
  /// Marks `[gpa, gpa+len)` in the write log, if there is one: whoever
  /// writes guest memory through host_ptr() calls it (one test when off).
  void mark_written(uint64_t gpa, uint64_t len) const noexcept {
    if (write_log_ == nullptr || len == 0)
      return;
    for (uint64_t p = gpa / DirtyLog::page_size; p <= (gpa + len - 1) / DirtyLog::page_size; ++p)
      write_log_->mark(p * DirtyLog::page_size);
  }

private:
  [[nodiscard]] Result<void> check_new(uint64_t gpa, uint64_t size, const char* op) const;
  [[nodiscard]] Result<const GuestRegion*> map_and_insert(uint64_t gpa, uint64_t size,
                                                          SharedFd fd, uint64_t fd_offset,
                                                          const char* op);

  std::map<uint64_t, GuestRegion> regions_;  ///< key: gpa
  size_t max_regions_;
  uint64_t next_user_ = synthetic_user_base;
  DirtyLog* write_log_ = nullptr;
};

}  // namespace vufront
