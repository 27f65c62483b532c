#pragma once
// Does a back-end look like the device kind it is driven as (`--device`)?
// The one rule, used by every bring-up (protocol/bringup.cpp): `vufront
// probe` and every device's negotiation (check, snapshot, restore, job,
// attach, reconnect). No CAF.
//
// What decides, from what the bring-up learnt anyway:
// * device feature bits (0-23, 50-63): bits the kind does not define, when
//   every offered device bit is one another kind defines (a blk back-end's
//   SEG_MAX, BLK_SIZE driven as net: bit 6 is no net feature);
// * the queue count GET_QUEUE_NUM answered, below the kind's least (net: one
//   rx/tx pair, fs: hiprio and one request queue);
// * blk: GET_CONFIG of a blk config space (60 bytes, protocol/virtio_config.hpp)
//   or less refused in-band: the back-end's config space is smaller than a
//   disk's (net and fs front-ends do not read the back-end's config).
// A clear mismatch fails; with no device bit, no queue count and no config
// read, nothing decides and the verdict says "could not tell".

#include <cstdint>
#include <optional>
#include <string>

#include "protocol/messages.hpp"

namespace vufront {

/// What a bring-up learnt that bears on the device kind.
struct KindEvidence {
  uint64_t features = 0;                 ///< GET_FEATURES
  std::optional<uint64_t> queue_num;     ///< GET_QUEUE_NUM's answer (MQ only)
  /// GET_CONFIG at offset 0 for config_size bytes: not asked, read, refused.
  enum class Config : uint8_t { not_asked, read, refused } config = Config::not_asked;
  uint32_t config_size = 0;
};

struct KindVerdict {
  enum class Fit : uint8_t { fits, mismatch, could_not_tell } fit = Fit::fits;
  /// mismatch: every piece of evidence that did not fit; could_not_tell: why
  /// nothing decided; fits: empty.
  std::string reason;
};

/// The verdict for a back-end driven as `kind` (generic always fits).
[[nodiscard]] KindVerdict check_device_kind(DeviceKind kind, const KindEvidence& e);

/// Whether `features` name the kind by themselves: an offered device bit
/// that `kind` defines and no other kind does (blk BLK_SIZE, bit 6). The
/// negotiation reads the config space for the check only when they do not.
[[nodiscard]] bool features_identify(DeviceKind kind, uint64_t features);

/// The least queue count a device of `kind` works with (blk 1, net 2, fs 2).
[[nodiscard]] uint64_t min_queue_count(DeviceKind kind) noexcept;

}  // namespace vufront
