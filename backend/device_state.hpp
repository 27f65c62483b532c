#pragma once
// DEVICE_STATE (vhost-user spec, "Migrating back-end state"): vufront-backend's versioned state stream,
// written to / read from the pipe given with SET_DEVICE_STATE_FD. The format
// is documented in docs/backend-state-format.md. The disk is streamed in
// chunks straight from / into its mapping, never copied whole.

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "base/error.hpp"
#include "protocol/wire.hpp"

namespace vufront::backend {

inline constexpr char state_magic[8] = {'V', 'U', 'F', 'B', 'K', 'S', 'T', '2'};
inline constexpr uint32_t state_version = 2;
inline constexpr uint32_t state_chunk_bytes = 1u << 20;

/// Fixed header at the start of the stream (40 bytes).
struct StateHeader {
  char magic[8];
  uint32_t version;
  uint32_t num_queues;
  uint64_t disk_bytes;
  uint64_t features;     ///< virtio features acked by the front-end
  uint32_t config_bytes; ///< bytes of config space that follow the header
  uint32_t status;       ///< virtio status byte
};
VUFRONT_LAYOUT_SIZE(StateHeader, 40);
VUFRONT_LAYOUT_AT(StateHeader, version, 8);
VUFRONT_LAYOUT_AT(StateHeader, num_queues, 12);
VUFRONT_LAYOUT_AT(StateHeader, disk_bytes, 16);
VUFRONT_LAYOUT_AT(StateHeader, features, 24);
VUFRONT_LAYOUT_AT(StateHeader, config_bytes, 32);
VUFRONT_LAYOUT_AT(StateHeader, status, 36);

/// Framing of one disk chunk; `bytes` data bytes follow. bytes == 0 ends the disk.
struct StateChunk {
  uint32_t bytes;
  uint32_t reserved;
};
VUFRONT_LAYOUT_SIZE(StateChunk, 8);

/// What a state stream carries besides the disk.
struct DeviceState {
  uint64_t features = 0;
  uint8_t status = 0;
  std::vector<uint8_t> config;
  std::vector<uint32_t> vring_bases;  ///< one per queue (GET_VRING_BASE encoding)
};

/// How one transfer deviates from the normal one, for fault injection
/// (backend/faults.hpp builds it from the --state-* options). The default
/// value is a normal transfer.
struct TransferPlan {
  /// Stream bytes (header included) that move before `at_budget` runs.
  uint64_t budget = std::numeric_limits<uint64_t>::max();
  /// Runs once, with the pipe fd, when `budget` bytes have moved and more are
  /// about to (never for a stream of at most `budget` bytes). An error ends
  /// the transfer with that error; ok lets it go on without a budget.
  std::function<Result<void>(int fd)> at_budget;
  /// Save only: after the header (config, vring bases) the disk chunks repeat
  /// forever (wrapping around the disk; zero-filled chunks when there is no
  /// disk); no end marker is ever written, so the save only ends with an
  /// error, e.g. io_error EPIPE when the reader closes its end.
  bool endless = false;
};

/// Writes the whole state to `fd` (blocking until written; a stall of
/// `stall_ms` without progress is an error). Errors: io_error, timeout,
/// and whatever `plan.at_budget` returns.
[[nodiscard]] Result<void> save_state(int fd, const DeviceState& state, const uint8_t* disk,
                                      uint64_t disk_bytes, const TransferPlan& plan = {},
                                      int stall_ms = 10000);

/// Reads a state stream from `fd` until EOF, validates it against this
/// device (disk size, queue count, config size) and writes the disk contents
/// into `disk`. Errors: invalid_payload (bad magic/version/sizes/checksum,
/// trailing bytes), disconnected (EOF too early), io_error, timeout.
/// On a validation error after the disk chunks started, the disk may hold a
/// mix of old and new contents. `plan.at_budget` applies as for save_state
/// (`plan.endless` does not apply to a load).
[[nodiscard]] Result<DeviceState> load_state(int fd, uint8_t* disk, uint64_t disk_bytes,
                                             uint32_t num_queues, uint32_t config_bytes,
                                             const TransferPlan& plan = {},
                                             int stall_ms = 10000);

}  // namespace vufront::backend
