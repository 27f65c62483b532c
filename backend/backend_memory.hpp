#pragma once
// The front-end's memory table as the back-end maps it (vhost-user spec, "Memory access"): every
// region is validated before anything is mapped, then mapped MAP_SHARED.
// Translates guest-physical addresses (descriptor buffers) and front-end
// user addresses (ring addresses) to local pointers with bounds checks.

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"

namespace vufront::backend {

/// Memory slots offered with CONFIGURE_MEM_SLOTS (GET_MAX_MEM_SLOTS).
inline constexpr uint32_t max_mem_slots = 32;

class BackendMemory {
public:
  BackendMemory() = default;
  BackendMemory(const BackendMemory&) = delete;
  BackendMemory& operator=(const BackendMemory&) = delete;

  /// SET_MEM_TABLE: replaces the whole table. `regions.size()` must be 1..8
  /// and equal `fds.size()`. On error the old table stays.
  /// Errors: invalid_payload (zero size, wrap, overlap, beyond the fd),
  /// bad_fds (count mismatch), io_error (fstat/mmap).
  [[nodiscard]] Result<void> set_table(const std::vector<wire::MemoryRegion>& regions,
                                       std::vector<UniqueFd> fds);
  /// ADD_MEM_REG. Errors: as set_table, plus invalid_payload when all slots are used.
  [[nodiscard]] Result<void> add(const wire::MemoryRegion& region, UniqueFd fd);
  /// REM_MEM_REG: removes the region with this GPA, user address and size.
  /// Errors: invalid_payload (no such region).
  [[nodiscard]] Result<void> remove(const wire::MemoryRegion& region);
  /// Drops every mapping.
  void clear() noexcept { regions_.clear(); }

  /// `[gpa, gpa+len)` as a local pointer, nullptr unless wholly inside one region.
  [[nodiscard]] uint8_t* gpa_to_ptr(uint64_t gpa, uint64_t len) const noexcept;
  /// `[uva, uva+len)` (front-end user address) as a local pointer, or nullptr.
  [[nodiscard]] uint8_t* uva_to_ptr(uint64_t uva, uint64_t len) const noexcept;

  /// The guest-physical address of local pointer `p` (into a region), if it is one.
  [[nodiscard]] std::optional<uint64_t> ptr_to_gpa(const uint8_t* p) const noexcept;

  [[nodiscard]] size_t region_count() const noexcept { return regions_.size(); }

private:
  struct Mapped {
    wire::MemoryRegion r{};
    uint8_t* base = nullptr;  ///< mapping of [page-aligned start, ...)
    uint8_t* start = nullptr; ///< local pointer of the region start
    size_t map_len = 0;
    UniqueFd fd;
    Mapped() = default;
    Mapped(const Mapped&) = delete;
    Mapped& operator=(const Mapped&) = delete;
    ~Mapped();
  };
  [[nodiscard]] static Result<std::unique_ptr<Mapped>> map_one(const wire::MemoryRegion& r,
                                                               UniqueFd fd, const char* what);
  [[nodiscard]] static Result<void> check_disjoint(const std::vector<const wire::MemoryRegion*>& all,
                                                   const char* what);

  std::vector<std::unique_ptr<Mapped>> regions_;
};

}  // namespace vufront::backend
