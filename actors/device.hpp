#pragma once
// The device actor: the facade a VMM talks to (crosvm's VhostUserFrontend,
// as messages). It owns the device's state machine and the negotiated state,
// and turns each lifecycle operation into a message sequence over its
// children (see docs/lifecycle.md):
//
//   negotiate  connect -> negotiate -> spawn channel -> watch hang-ups
//   activate   features -> status FEATURES_OK -> memory table -> start queues
//              -> status DRIVER_OK -> start worker
//   sleep      stop queues (GET_VRING_BASE, bases saved) -> stop worker
//   wake       start queues at the saved bases -> start worker
//   reset      [stop queues -> stop worker] -> reset device -> drop mappings
//   snapshot   [config] -> snapshot actor: save (device stays sleeping)
//   restore    snapshot actor: open + verify -> checks -> features,
//              FEATURES_OK, memory table -> load -> sleeping (wake starts
//              the queues at the snapshot's bases, then DRIVER_OK)
//
// One operation runs at a time; another one meanwhile gets errc::bad_state
// ("busy"). A request that is not valid in the current state gets
// errc::bad_state naming the state. Every failure names the operation and
// the step ("sleep: GET_VRING_BASE: timeout: ..."). A lost back-end (EOF,
// hang-up, timeout, protocol violation) moves the device to `broken` and
// emits backend_lost; reset from broken returns it to disconnected, from
// where negotiate connects again.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/messages.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

struct DeviceConfig {
  std::string socket;
  Timeouts timeouts;
  std::chrono::milliseconds connect_timeout{5000};
  /// false: children run no threads (deterministic tests inject messages).
  bool start_threads = true;
};

/// Everything negotiated and set up, in one place: what wake replays and
/// what a reconnect would replay.
struct DeviceData {
  static inline const char* name = "vufront.device";

  DeviceConfig config;
  DeviceState state = DeviceState::disconnected;
  /// The operation in progress ("" when idle).
  std::string busy;
  std::string last_error;
  /// Shutting down: waiting for `children_left` children to stop first.
  bool exiting = false;
  size_t children_left = 0;
  caf::error exit_reason;

  connection_actor conn;
  worker_actor worker;
  channel_actor channel;
  snapshot_actor transfer;  ///< only during a snapshot or restore
  caf::actor subscriber;
  std::shared_ptr<SharedMemoryMapper> mapper;

  // ---- negotiated state
  NegotiateOptions options;
  DeviceInfo info;
  MemorySpec memory;
  std::vector<wire::MemoryRegion> mem_table;
  uint64_t acked_features = 0;  ///< SET_FEATURES value of the running activation
  uint8_t virtio_status = 0;
  struct Queue {
    QueueSpec spec;
    SharedFd call;        ///< what the back-end signals (the VMM's irqfd or ours)
    bool forwarded = false;  ///< ours: the worker forwards it to the sink
    uint32_t base = 0;    ///< next base to start from
  };
  std::vector<Queue> queues;
  InterruptSink sink;
  bool packed = false;
  /// Restored into a sleeping device: wake sends DRIVER_OK after the queues.
  bool driver_ok_pending = false;
};

[[nodiscard]] device_actor::behavior_type device_impl(device_actor::stateful_pointer<DeviceData> self,
                                                      DeviceConfig config);

}  // namespace vufront::actors
