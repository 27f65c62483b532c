#pragma once
// A probe of a back-end (`vufront probe`): connect, negotiate what it offers,
// and collect features, protocol features, queue count, memory slots, config
// space and shared-memory regions. The report is in probe_report.hpp.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "protocol/messages.hpp"

namespace vufront::ops {

struct ProbeOptions {
  std::string socket;
  DeviceKind device = DeviceKind::blk;
  std::optional<uint32_t> config_size;  ///< default: virtio::config_size(device)
  std::chrono::milliseconds timeout{5000};
  /// Wait up to `timeout` for the socket to appear instead of failing at
  /// once when nothing (or no socket) is at the path.
  bool wait_for_backend = false;
  bool json = false;  ///< the command's output form (not used by run_probe)
};

/// What the back-end said. Optionals are empty when the back-end does not
/// offer the feature that gates the query.
struct ProbeResult {
  std::string socket;
  DeviceKind device = DeviceKind::blk;
  uint64_t features = 0;
  std::optional<uint64_t> protocol_features;        ///< offered
  std::optional<uint64_t> protocol_features_acked;  ///< what vufront acked
  std::optional<uint64_t> queue_num;
  std::optional<uint64_t> max_mem_slots;
  bool backend_channel = false;                     ///< SET_BACKEND_REQ_FD accepted
  std::optional<std::string> backend_channel_error; ///< the back-end refused SET_BACKEND_REQ_FD
  std::optional<std::vector<uint8_t>> config;
  uint32_t config_size_requested = 0;
  std::optional<std::string> config_error;          ///< the back-end refused GET_CONFIG
  std::optional<std::vector<std::pair<uint32_t, uint64_t>>> shmem_regions;  ///< (shmid, size)
  /// Why the kind check could not tell whether the back-end is a `device`
  /// (protocol/device_kind_check.hpp); empty when it fits. A clear mismatch
  /// fails the probe.
  std::string kind_doubt;
};

/// Runs the bring-up (protocol/bringup.hpp) in probe mode: it acks what a
/// device with a back-end channel and an in-flight region acks (never
/// LOG_SHMFD: no dirty logging), reads `config_size` bytes of config, and
/// records an in-band refusal of GET_CONFIG or SET_BACKEND_REQ_FD instead of
/// failing. Errors (connect, timeout, disconnected, malformed replies) name
/// the request that failed.
[[nodiscard]] Result<ProbeResult> run_probe(const ProbeOptions& opts);

}  // namespace vufront::ops
