#pragma once
// The connection bring-up (docs/lifecycle.md), once, for every front-end in
// vufront: the connection actor's negotiation and `vufront probe` both run
// bring_up() on a connected BackendClient. No CAF.
//
// The bring-up is a fixed sequence of typed steps, each sent only when its
// gate holds:
//
//   SET_OWNER                 always
//   GET_FEATURES              always
//   GET_PROTOCOL_FEATURES     PROTOCOL_FEATURES (bit 30) offered
//   SET_PROTOCOL_FEATURES     after GET_PROTOCOL_FEATURES, with acked_protocol_features()
//   SET_BACKEND_REQ_FD        BACKEND_REQ acked (only with a channel fd to give)
//   GET_QUEUE_NUM             MQ acked (else the device kind's fixed count)
//   GET_MAX_MEM_SLOTS         CONFIGURE_MEM_SLOTS acked (else 8)
//   GET_CONFIG                CONFIG acked and BringupOptions::config_size set, or
//                             config_for_kind_check, blk, and the features leave the kind open
//   GET_SHMEM_CONFIG          SHMEM acked
//
// Then the kind check (protocol/device_kind_check.hpp) on what was learnt.
//
// Which protocol features vufront acks is decided by one function,
// acked_protocol_features(), from the options alone.

#include <cstdint>
#include <optional>
#include <vector>

#include "protocol/backend_client.hpp"
#include "base/error.hpp"
#include "protocol/device_kind_check.hpp"
#include "protocol/messages.hpp"

namespace vufront {

/// One step of the bring-up, in the order they run.
enum class BringupStep : uint8_t {
  set_owner,
  get_features,
  get_protocol_features,
  set_protocol_features,
  set_backend_req_fd,
  get_queue_num,
  get_max_mem_slots,
  get_config,
  get_shmem_config,
};

/// Every step in the order bring_up() runs them.
inline constexpr BringupStep bringup_order[] = {
    BringupStep::set_owner,          BringupStep::get_features,
    BringupStep::get_protocol_features, BringupStep::set_protocol_features,
    BringupStep::set_backend_req_fd, BringupStep::get_queue_num,
    BringupStep::get_max_mem_slots,  BringupStep::get_config,
    BringupStep::get_shmem_config,
};

/// The request a step sends ("SET_OWNER", "GET_CONFIG", ...).
[[nodiscard]] const char* name(BringupStep step) noexcept;

/// What a front-end wants from the bring-up. The protocol features acked
/// follow from these alone (acked_protocol_features()).
struct BringupOptions {
  DeviceKind kind = DeviceKind::blk;
  /// Serve a back-end channel: BACKEND_REQ (and BACKEND_SEND_FD, SHMEM, whose
  /// requests arrive on it) are acked only with this and a `channel_fd`.
  bool backend_channel = true;
  /// The back-end's end of the channel socketpair, sent with
  /// SET_BACKEND_REQ_FD; not owned; -1 when there is none.
  int channel_fd = -1;
  /// Ack INFLIGHT_SHMFD (an in-flight region for back-end reconnection).
  bool inflight = false;
  /// Ack LOG_SHMFD (dirty-page logging for migration with a running device).
  bool dirty_log = false;
  /// Queues the caller will use: fewer from the back-end fails the bring-up
  /// at GET_QUEUE_NUM (errc::invalid_argument). 0: no check.
  uint16_t queues_needed = 0;
  /// Read this many bytes of device config (GET_CONFIG at offset 0) when
  /// CONFIG is acked; no GET_CONFIG when empty. Its in-band refusal is, for
  /// a kind other than generic, evidence for the kind check (not a failure
  /// of its own, also in strict mode).
  std::optional<uint32_t> config_size;
  /// A device's negotiation: a blk device reads its config space (GET_CONFIG
  /// of virtio::config_size(blk), as QEMU's vhost-user-blk does at start)
  /// for the kind check, but only when the features do not identify blk by
  /// themselves (features_identify) and no `config_size` is asked for anyway.
  bool config_for_kind_check = false;
  /// Probe mode: a step the back-end refuses in-band (errc::backend_failure,
  /// connection still usable) is recorded in BringupResult::refusals and the
  /// bring-up goes on. Strict mode (false): the first failure of any kind
  /// ends it. A broken connection always ends it.
  bool record_refusals = false;
};

/// A step the back-end refused in-band (probe mode only).
struct StepRefusal {
  BringupStep step = BringupStep::set_owner;
  Error error;  ///< errc::backend_failure; names the request
};

/// What the bring-up found.
struct BringupResult {
  uint64_t features = 0;                   ///< GET_FEATURES
  uint64_t protocol_features_offered = 0;  ///< GET_PROTOCOL_FEATURES (0 without bit 30)
  uint64_t protocol_features_acked = 0;    ///< sent with SET_PROTOCOL_FEATURES
  bool backend_channel = false;            ///< SET_BACKEND_REQ_FD accepted
  std::optional<uint16_t> backend_queue_num;  ///< GET_QUEUE_NUM's answer (MQ only)
  uint16_t queue_num = 1;                  ///< that, or the device kind's fixed count
  std::optional<uint32_t> backend_max_mem_slots;  ///< GET_MAX_MEM_SLOTS's answer
  uint32_t max_mem_slots = 8;              ///< that, or 8 (SET_MEM_TABLE's limit)
  std::optional<std::vector<uint8_t>> config;  ///< GET_CONFIG's bytes
  /// GET_SHMEM_CONFIG (SHMEM only): size per shmid, up to the last non-zero
  /// one (0 = no region with that id).
  std::optional<std::vector<uint64_t>> shmem_sizes;
  std::vector<StepRefusal> refusals;       ///< probe mode: steps refused in-band
  /// Whether the back-end looks like `BringupOptions::kind`
  /// (protocol/device_kind_check.hpp): fits or could not tell (a mismatch
  /// fails the bring-up).
  KindVerdict kind;

  /// The refusal of `step`, if it was refused.
  [[nodiscard]] const StepRefusal* refusal(BringupStep step) const noexcept;
};

/// The protocol features vufront acks out of `offered`: the bits it
/// implements (supported_protocol_features), less
/// * LOG_SHMFD unless `dirty_log`;
/// * BACKEND_REQ, BACKEND_SEND_FD and SHMEM unless `backend_channel` and a
///   `channel_fd` to give;
/// * INFLIGHT_SHMFD unless `inflight`.
/// Nothing else in the options changes it (probe mode acks what a device
/// with the same options would).
[[nodiscard]] uint64_t acked_protocol_features(uint64_t offered,
                                               const BringupOptions& opts) noexcept;

/// Runs the bring-up on a freshly connected client (see the table above).
/// Errors are those of the BackendClient call of the failing step, naming
/// its request (timeout, disconnected, a malformed reply, a refusal in
/// strict mode, ...), or errc::invalid_argument at "GET_QUEUE_NUM" when the
/// back-end has fewer than `queues_needed` queues, or errc::invalid_argument
/// at "device kind" when the back-end clearly is not a `kind` device
/// (check_device_kind: the detail names every piece that did not fit).
[[nodiscard]] Result<BringupResult> bring_up(BackendClient& client, const BringupOptions& opts);

}  // namespace vufront
