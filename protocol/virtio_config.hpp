#pragma once
// Device-specific virtio config spaces that vufront reads through GET_CONFIG
// (virtio 1.2 §5.2.4 blk, §5.1.4 net, §5.11.4 fs), as wire structs with
// layout proofs, plus what vufront assumes per device kind: the config size it
// asks for and the queue count without MQ; and the usable queue size.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront::virtio {

/// struct virtio_blk_config up to write_zeroes_may_unmap + padding (60 bytes:
/// what qemu-storage-daemon 7.2 serves; it refuses larger reads). Packed,
/// as in Linux's uapi header: 60 is not a multiple of capacity's alignment.
struct __attribute__((packed)) BlkConfig {
  uint64_t capacity;  ///< in 512-byte sectors
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;
  uint8_t physical_block_exp;
  uint8_t alignment_offset;
  uint16_t min_io_size;
  uint32_t opt_io_size;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
};
VUFRONT_LAYOUT_SIZE(BlkConfig, 60);
VUFRONT_LAYOUT_AT(BlkConfig, size_max, 8);
VUFRONT_LAYOUT_AT(BlkConfig, seg_max, 12);
VUFRONT_LAYOUT_AT(BlkConfig, cylinders, 16);
VUFRONT_LAYOUT_AT(BlkConfig, blk_size, 20);
VUFRONT_LAYOUT_AT(BlkConfig, physical_block_exp, 24);
VUFRONT_LAYOUT_AT(BlkConfig, opt_io_size, 28);
VUFRONT_LAYOUT_AT(BlkConfig, writeback, 32);
VUFRONT_LAYOUT_AT(BlkConfig, num_queues, 34);
VUFRONT_LAYOUT_AT(BlkConfig, max_discard_sectors, 36);
VUFRONT_LAYOUT_AT(BlkConfig, max_write_zeroes_sectors, 48);
VUFRONT_LAYOUT_AT(BlkConfig, write_zeroes_may_unmap, 56);

/// struct virtio_net_config up to mtu (12 bytes).
struct NetConfig {
  uint8_t mac[6];
  uint16_t status;
  uint16_t max_virtqueue_pairs;
  uint16_t mtu;
};
VUFRONT_LAYOUT_SIZE(NetConfig, 12);
VUFRONT_LAYOUT_AT(NetConfig, status, 6);
VUFRONT_LAYOUT_AT(NetConfig, max_virtqueue_pairs, 8);
VUFRONT_LAYOUT_AT(NetConfig, mtu, 10);

/// struct virtio_fs_config (40 bytes).
struct FsConfig {
  uint8_t tag[36];
  uint32_t num_request_queues;
};
VUFRONT_LAYOUT_SIZE(FsConfig, 40);
VUFRONT_LAYOUT_AT(FsConfig, num_request_queues, 36);

/// Bytes of device config vufront reads for a device kind (generic: 256,
/// QEMU's VHOST_USER_MAX_CONFIG_SIZE).
[[nodiscard]] constexpr uint32_t config_size(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::blk: return sizeof(BlkConfig);
    case DeviceKind::net: return sizeof(NetConfig);
    case DeviceKind::fs: return sizeof(FsConfig);
    case DeviceKind::generic: return 256;
  }
  return 256;
}

/// The queue count a device kind has without MQ (blk 1, net 2: one rx/tx
/// pair, fs 2: hiprio + one request queue, generic 1).
[[nodiscard]] constexpr uint16_t fixed_queue_count(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::net: return 2;
    case DeviceKind::fs: return 2;
    case DeviceKind::blk:
    case DeviceKind::generic: return 1;
  }
  return 1;
}

/// The largest queue size a device takes when the VMM asks for `wanted`:
/// at most 32768 (virtio 1.2 §2.7 split, §2.8 packed), at least 1 (also for
/// 0). Split rings must also be a power of two not above it; packed rings may
/// be any size up to it (virtio::valid_queue_size).
[[nodiscard]] constexpr uint16_t usable_queue_size(uint32_t wanted) noexcept {
  return static_cast<uint16_t>(wanted < 1 ? 1 : wanted > 32768 ? 32768 : wanted);
}

/// One named field of a config space: its printable text ("131072 sectors
/// (64.0 MiB)") and, for a numeric field, its value (131072; JSON output uses
/// it: docs/json-output.md).
struct Field {
  std::string name;
  std::string text;
  std::optional<uint64_t> number;
};
/// The fields of a config space, in order; empty when the device kind has no
/// decoder or the bytes are too few.
using Fields = std::vector<Field>;
[[nodiscard]] Fields decode_config(DeviceKind kind, const std::vector<uint8_t>& bytes);

}  // namespace vufront::virtio
