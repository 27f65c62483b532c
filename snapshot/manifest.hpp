#pragma once
// The snapshot manifest: what vufront knows about a device when its back-end
// state is saved (docs/snapshot-format.md). Plain data plus JSON conversion;
// every field is checked on the way in and on the way out. No CAF.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "protocol/messages.hpp"

namespace vufront::snapshot {

/// The only format version this code writes and reads.
inline constexpr uint32_t format_version = 1;

// Bounds a manifest must respect. They are what keeps the manifest inside the
// fixed head area of the file (see kHeadSize in format.hpp; a test proves a
// manifest at every bound fits).
inline constexpr size_t max_queues = 1024;        ///< QEMU's VIRTIO_QUEUE_MAX
inline constexpr uint32_t max_queue_size = 32768; ///< virtio ring size limit
inline constexpr size_t max_config_bytes = 4096;
inline constexpr size_t max_shmem_regions = 256;  ///< shmid is a u8

struct QueueState {
  uint16_t index = 0;
  uint16_t size = 0;   ///< 1..32768
  uint32_t base = 0;   ///< vring base (GET_VRING_BASE encoding)
  bool operator==(const QueueState& o) const {
    return index == o.index && size == o.size && base == o.base;
  }
};

struct ShmemRegion {
  uint8_t shmid = 0;
  uint64_t size = 0;   ///< > 0
  bool operator==(const ShmemRegion& o) const { return shmid == o.shmid && size == o.size; }
};

struct Manifest {
  uint32_t format_version = snapshot::format_version;
  DeviceKind kind = DeviceKind::blk;
  uint64_t features = 0;           ///< virtio features acked (SET_FEATURES)
  uint64_t protocol_features = 0;  ///< protocol features acked
  std::vector<QueueState> queues;  ///< indices unique, any order
  std::vector<uint8_t> config;     ///< config space bytes (≤ 4096)
  std::vector<ShmemRegion> shmem;  ///< shmids unique
  uint64_t state_length = 0;       ///< bytes of back-end state after the head
  uint64_t state_checksum = 0;     ///< XXH3-64 (seed 0) of those bytes
  std::string created;             ///< UTC, "YYYY-MM-DDThh:mm:ssZ"

  bool operator==(const Manifest& o) const;
};

/// Every rule a manifest obeys (ranges, uniqueness, the time format); the
/// error names the field, e.g. "queues[2].size: 0 is not in 1..32768".
[[nodiscard]] Result<void> validate(const Manifest& m);

/// The JSON object (hex strings for masks, config and checksum). Does not
/// validate: call validate() first.
[[nodiscard]] nlohmann::json to_json(const Manifest& m);

/// Parses and validates; unknown or missing keys and wrong types are errors.
[[nodiscard]] Result<Manifest> manifest_from_json(const nlohmann::json& j);

/// The same from UTF-8 JSON text (syntax errors reported with their byte).
[[nodiscard]] Result<Manifest> manifest_from_text(std::string_view text);

/// The current UTC time as "YYYY-MM-DDThh:mm:ssZ".
[[nodiscard]] std::string utc_now();

}  // namespace vufront::snapshot
