#pragma once
// The memory-table payloads a back-end receives (SET_MEM_TABLE, ADD/REM_MEM_REG;
// vhost-user spec, "Memory access"), built from guest memory as the VMM holds it. Here rather
// than in memory/ so that memory/ knows nothing of the wire: guest memory
// hands out its regions, protocol/ encodes them. Header-only, so whoever
// holds a GuestMemory can build a table without linking vufront_protocol.

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "memory/guest_memory.hpp"
#include "protocol/wire.hpp"

namespace vufront {

static_assert(default_max_guest_regions == wire::max_mem_table_regions,
              "GuestMemory's default slot limit is SET_MEM_TABLE's region limit");

/// The region as a wire entry {gpa, size, synthetic user_addr, fd_offset}.
[[nodiscard]] inline wire::MemoryRegion region_payload(const GuestRegion& r) noexcept {
  return {r.gpa(), r.size(), r.user_addr(), r.fd_offset()};
}

/// All regions in ascending GPA order, ready for BackendClient::set_mem_table;
/// the same order as GuestMemory::fds().
[[nodiscard]] inline std::vector<wire::MemoryRegion> mem_table(const GuestMemory& mem) {
  std::vector<wire::MemoryRegion> out;
  out.reserve(mem.region_count());
  for (const GuestRegion* r : mem.regions())
    out.push_back(region_payload(*r));
  return out;
}

/// The single-region payload of the region starting at `gpa` (ADD/REM_MEM_REG).
/// Errors: invalid_argument if no region starts there.
[[nodiscard]] inline Result<wire::MemoryRegion> region_payload(const GuestMemory& mem,
                                                               uint64_t gpa) {
  const GuestRegion* r = mem.region(gpa);
  if (r == nullptr)
    return make_error(errc::invalid_argument, "region_payload", "no region starts at " + hex(gpa));
  return region_payload(*r);
}

}  // namespace vufront
