#pragma once
// Every vhost-user payload as a plain wire struct (host byte order; vhost-user spec, "Message specification").
// Each struct has explicit padding members and its layout is proven below:
// size, the offset of every field, trivially copyable and no hidden padding
// (has_unique_object_representations), so a value-initialised struct never
// sends uninitialised bytes. Decode with wire_decode() from a bounded span.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>
#include <optional>
#include <type_traits>

namespace vufront::wire {

/// 12-byte message header (vhost-user spec, "Header").
struct Header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;  ///< payload bytes following the header
};

/// A single u64 (features, queue count, acks, status, ...).
struct U64 {
  uint64_t value;
};

/// vring state ("A vring state description"): SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE, back-end VRING_CALL/ERR.
struct VringState {
  uint32_t index;
  uint32_t num;
};

/// u64 "vring fd word" of SET_VRING_KICK/CALL/ERR: bits 0-7 index, bit 8 NOFD.
inline constexpr uint64_t vring_index_mask = 0xff;
inline constexpr uint64_t vring_nofd_mask = 0x100;

/// SET_VRING_ADDR ("A vring address description"). Note: used comes before avail.
struct VringAddr {
  uint32_t index;
  uint32_t flags;  ///< bit 0: VHOST_VRING_F_LOG
  uint64_t desc;
  uint64_t used;
  uint64_t avail;
  uint64_t log;
};
inline constexpr uint32_t vring_addr_flag_log = 0x1;

/// One memory region ("Memory region description").
struct MemoryRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t user_addr;
  uint64_t mmap_offset;
};

/// SET_MEM_TABLE header; followed by `nregions` MemoryRegion entries.
struct MemoryTableHeader {
  uint32_t nregions;
  uint32_t padding;
};
/// At most 8 regions in SET_MEM_TABLE (QEMU/libvhost-user limit, one fd each).
inline constexpr uint32_t max_mem_table_regions = 8;

/// ADD_MEM_REG / REM_MEM_REG ("Single memory region description").
struct SingleMemoryRegion {
  uint64_t padding;
  MemoryRegion region;
};

/// SET_LOG_BASE ("Log description").
struct Log {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};

/// IOTLB message ("An IOTLB message"); 32 bytes on the wire (C tail padding made explicit).
struct Iotlb {
  uint64_t iova;
  uint64_t size;
  uint64_t uaddr;
  uint8_t perm;
  uint8_t type;
  uint8_t padding[6];
};

/// GET/SET_CONFIG header ("Virtio device config space"); followed by `size` data bytes.
struct ConfigHeader {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;  ///< 0 normal, 1 live-migration write
};
/// Largest config data a message may carry (rust-vmm/crosvm bound offset+size).
inline constexpr uint32_t max_config_size = 0x1000 - sizeof(uint32_t) * 3;

/// Back-end VRING_HOST_NOTIFIER_MSG ("Vring area description").
struct VringArea {
  uint64_t u64;  ///< bits 0-7 queue index, bit 8 NOFD
  uint64_t size;
  uint64_t offset;
};

/// GET/SET_INFLIGHT_FD ("Inflight description"): padded to 24 bytes as in C (DPDK checks it).
struct InflightDesc {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
  uint8_t padding[4];
};

/// Shared object UUID ("VhostUserShared").
struct SharedObject {
  uint8_t uuid[16];
};

/// SET_DEVICE_STATE_FD parameters ("Device state transfer parameters").
struct DeviceStateTransfer {
  uint32_t direction;  ///< 0 save, 1 load
  uint32_t phase;      ///< 0 stopped
};
inline constexpr uint32_t device_state_save = 0;
inline constexpr uint32_t device_state_load = 1;
inline constexpr uint32_t device_state_phase_stopped = 0;
/// SET_DEVICE_STATE_FD reply: bits 0-7 error, bit 8 "no fd returned".
inline constexpr uint64_t device_state_error_mask = 0xff;
inline constexpr uint64_t device_state_nofd = 0x100;

/// Back-end SHMEM_MAP / SHMEM_UNMAP ("MMAP request").
struct ShmemMap {
  uint8_t shmid;
  uint8_t padding[7];
  uint64_t fd_offset;
  uint64_t shm_offset;
  uint64_t len;
  uint64_t flags;  ///< bit 0: map read-write
};
inline constexpr uint64_t shmem_map_flag_rw = 0x1;

/// GET_SHMEM_CONFIG reply ("VhostUserShMemConfig"): sizes indexed by shmid.
inline constexpr uint32_t max_shmem_regions = 256;
struct ShmemConfig {
  uint32_t nregions;  ///< number of non-zero entries in sizes
  uint32_t padding;
  uint64_t sizes[max_shmem_regions];
};

// ---- layout proofs ---------------------------------------------------------

template <class T>
inline constexpr bool is_wire_v = std::is_trivially_copyable_v<T> &&
                                  std::is_standard_layout_v<T> &&
                                  std::has_unique_object_representations_v<T>;

/// Layout proofs, used for every wire struct of the project (also virtio/):
/// VUFRONT_LAYOUT_SIZE(T, n) — padding-free, trivially copyable, n bytes;
/// VUFRONT_LAYOUT_AT(T, field, off) — field at that offset.
#define VUFRONT_LAYOUT_SIZE(T, n)                                                  \
  static_assert(::vufront::wire::is_wire_v<T>,                                     \
                #T " must be a padding-free trivially copyable struct");           \
  static_assert(sizeof(T) == (n), #T " has the wrong size")
#define VUFRONT_LAYOUT_AT(T, field, off) \
  static_assert(offsetof(T, field) == (off), #T "::" #field " is at the wrong offset")

VUFRONT_LAYOUT_SIZE(Header, 12);
VUFRONT_LAYOUT_AT(Header, request, 0);
VUFRONT_LAYOUT_AT(Header, flags, 4);
VUFRONT_LAYOUT_AT(Header, size, 8);

VUFRONT_LAYOUT_SIZE(U64, 8);
VUFRONT_LAYOUT_AT(U64, value, 0);

VUFRONT_LAYOUT_SIZE(VringState, 8);
VUFRONT_LAYOUT_AT(VringState, index, 0);
VUFRONT_LAYOUT_AT(VringState, num, 4);

VUFRONT_LAYOUT_SIZE(VringAddr, 40);
VUFRONT_LAYOUT_AT(VringAddr, index, 0);
VUFRONT_LAYOUT_AT(VringAddr, flags, 4);
VUFRONT_LAYOUT_AT(VringAddr, desc, 8);
VUFRONT_LAYOUT_AT(VringAddr, used, 16);
VUFRONT_LAYOUT_AT(VringAddr, avail, 24);
VUFRONT_LAYOUT_AT(VringAddr, log, 32);

VUFRONT_LAYOUT_SIZE(MemoryRegion, 32);
VUFRONT_LAYOUT_AT(MemoryRegion, guest_phys_addr, 0);
VUFRONT_LAYOUT_AT(MemoryRegion, memory_size, 8);
VUFRONT_LAYOUT_AT(MemoryRegion, user_addr, 16);
VUFRONT_LAYOUT_AT(MemoryRegion, mmap_offset, 24);

VUFRONT_LAYOUT_SIZE(MemoryTableHeader, 8);
VUFRONT_LAYOUT_AT(MemoryTableHeader, nregions, 0);
VUFRONT_LAYOUT_AT(MemoryTableHeader, padding, 4);

VUFRONT_LAYOUT_SIZE(SingleMemoryRegion, 40);
VUFRONT_LAYOUT_AT(SingleMemoryRegion, padding, 0);
VUFRONT_LAYOUT_AT(SingleMemoryRegion, region, 8);

VUFRONT_LAYOUT_SIZE(Log, 16);
VUFRONT_LAYOUT_AT(Log, mmap_size, 0);
VUFRONT_LAYOUT_AT(Log, mmap_offset, 8);

VUFRONT_LAYOUT_SIZE(Iotlb, 32);
VUFRONT_LAYOUT_AT(Iotlb, iova, 0);
VUFRONT_LAYOUT_AT(Iotlb, size, 8);
VUFRONT_LAYOUT_AT(Iotlb, uaddr, 16);
VUFRONT_LAYOUT_AT(Iotlb, perm, 24);
VUFRONT_LAYOUT_AT(Iotlb, type, 25);
VUFRONT_LAYOUT_AT(Iotlb, padding, 26);

VUFRONT_LAYOUT_SIZE(ConfigHeader, 12);
VUFRONT_LAYOUT_AT(ConfigHeader, offset, 0);
VUFRONT_LAYOUT_AT(ConfigHeader, size, 4);
VUFRONT_LAYOUT_AT(ConfigHeader, flags, 8);

VUFRONT_LAYOUT_SIZE(VringArea, 24);
VUFRONT_LAYOUT_AT(VringArea, u64, 0);
VUFRONT_LAYOUT_AT(VringArea, size, 8);
VUFRONT_LAYOUT_AT(VringArea, offset, 16);

VUFRONT_LAYOUT_SIZE(InflightDesc, 24);
VUFRONT_LAYOUT_AT(InflightDesc, mmap_size, 0);
VUFRONT_LAYOUT_AT(InflightDesc, mmap_offset, 8);
VUFRONT_LAYOUT_AT(InflightDesc, num_queues, 16);
VUFRONT_LAYOUT_AT(InflightDesc, queue_size, 18);
VUFRONT_LAYOUT_AT(InflightDesc, padding, 20);

VUFRONT_LAYOUT_SIZE(SharedObject, 16);
VUFRONT_LAYOUT_AT(SharedObject, uuid, 0);

VUFRONT_LAYOUT_SIZE(DeviceStateTransfer, 8);
VUFRONT_LAYOUT_AT(DeviceStateTransfer, direction, 0);
VUFRONT_LAYOUT_AT(DeviceStateTransfer, phase, 4);

VUFRONT_LAYOUT_SIZE(ShmemMap, 40);
VUFRONT_LAYOUT_AT(ShmemMap, shmid, 0);
VUFRONT_LAYOUT_AT(ShmemMap, padding, 1);
VUFRONT_LAYOUT_AT(ShmemMap, fd_offset, 8);
VUFRONT_LAYOUT_AT(ShmemMap, shm_offset, 16);
VUFRONT_LAYOUT_AT(ShmemMap, len, 24);
VUFRONT_LAYOUT_AT(ShmemMap, flags, 32);

VUFRONT_LAYOUT_SIZE(ShmemConfig, 2056);
VUFRONT_LAYOUT_AT(ShmemConfig, nregions, 0);
VUFRONT_LAYOUT_AT(ShmemConfig, padding, 4);
VUFRONT_LAYOUT_AT(ShmemConfig, sizes, 8);


/// The largest payload any vhost-user message we handle may carry: a GET_CONFIG
/// reply at the config bound (4096). Headers announcing more are refused
/// before a single body byte is read.
inline constexpr uint32_t max_payload_size = 0x1000;
static_assert(sizeof(ShmemConfig) <= max_payload_size);

// ---- encoding / decoding ---------------------------------------------------

/// The bytes of a wire struct (padding-free by construction: is_wire_v).
template <class T>
[[nodiscard]] std::vector<uint8_t> bytes_of(const T& v) {
  static_assert(is_wire_v<T>);
  std::vector<uint8_t> out(sizeof(T));
  // BOUNDS: `out` holds exactly sizeof(T) bytes.
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

/// Copies a wire struct out of `size` bytes at `data`; nullopt unless
/// `size == sizeof(T)` exactly. BOUNDS: reads exactly sizeof(T) bytes after the check.
template <class T>
[[nodiscard]] std::optional<T> decode_exact(const uint8_t* data, size_t size) noexcept {
  static_assert(is_wire_v<T>);
  if (size != sizeof(T))
    return std::nullopt;
  T out;
  std::memcpy(&out, data, sizeof(T));
  return out;
}

/// Copies a wire struct from the front of a buffer of `size` bytes; nullopt if
/// the buffer is shorter than sizeof(T). BOUNDS: reads sizeof(T) bytes after the check.
template <class T>
[[nodiscard]] std::optional<T> decode_prefix(const uint8_t* data, size_t size) noexcept {
  static_assert(is_wire_v<T>);
  if (size < sizeof(T))
    return std::nullopt;
  T out;
  std::memcpy(&out, data, sizeof(T));
  return out;
}

}  // namespace vufront::wire
