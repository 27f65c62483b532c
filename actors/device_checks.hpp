#pragma once
// The device actor's input checks, as pure functions: everything a VMM hands
// over (memory regions, queue set-up, feature choices) is validated here
// before anything is sent to the back-end, and each failure names what was
// wrong. Also the GPA -> user-address translation of the memory table.

#include <cstdint>
#include <vector>

#include "actors/messages.hpp"
#include "base/error.hpp"
#include "protocol/wire.hpp"

namespace vufront::actors {

/// The user addresses vufront announces in the memory table are synthetic:
/// gpa + user_addr_bias (vufront may not even share the VMM's address space).
inline constexpr uint64_t user_addr_bias = 0x4000'0000'0000ull;

/// Checks the regions (count within `max_slots` and 8, non-empty, an fd each,
/// no GPA overlap or wrap, fd large enough) and builds the memory table.
[[nodiscard]] Result<std::vector<wire::MemoryRegion>> check_memory(const MemorySpec& m,
                                                                   uint32_t max_slots);

/// The user address of [gpa, gpa+len) when it lies inside one region.
[[nodiscard]] Result<uint64_t> translate(const std::vector<wire::MemoryRegion>& table, uint64_t gpa,
                                         uint64_t len, const char* what);

/// Reads the little-endian u16 at guest-physical `gpa` from the VMM's
/// guest memory (maps the page it is in, read-only, and unmaps it): the used
/// index of a split ring after a lost back-end. Errors: invalid_argument
/// (not inside a region), io_error (mmap).
[[nodiscard]] Result<uint16_t> read_guest_u16(const MemorySpec& memory, uint64_t gpa);

/// Checks an activation against what was negotiated: driver features a
/// subset of the back-end's, queues unique, in range, sized for their ring
/// kind and at most info.max_queue_size, ring areas inside guest memory and
/// aligned, a kick fd each, a call fd or an interrupt sink. Returns the
/// SET_FEATURES value (driver features plus PROTOCOL_FEATURES when offered).
[[nodiscard]] Result<uint64_t> check_activation(const ActivateSpec& spec, const DeviceInfo& info,
                                                const std::vector<wire::MemoryRegion>& table);

/// The vring address of a queue (user addresses).
[[nodiscard]] Result<wire::VringAddr> vring_addr(const QueueSpec& q, bool packed,
                                                 const std::vector<wire::MemoryRegion>& table);

}  // namespace vufront::actors
