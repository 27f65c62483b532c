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

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/device_config.hpp"
#include "actors/device_data.hpp"
#include "actors/messages.hpp"

namespace vufront::actors {

[[nodiscard]] device_actor::behavior_type device_impl(device_actor::stateful_pointer<DeviceData> self,
                                                      DeviceConfig config);

}  // namespace vufront::actors
