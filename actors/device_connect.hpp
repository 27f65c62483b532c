#pragma once
// The device actor's connection to its back-end (see device.hpp and
// docs/lifecycle.md): the first connect + negotiation, and the reconnect
// after a loss.
//
//   negotiate   [listen] connect (or accept) -> negotiate -> channel ->
//               hang-up watch
//   reconnect   lost -> reconnecting -> (backoff) connect + negotiate ->
//               same features? -> replay what was set up before the loss:
//                 negotiated: nothing more
//                 sleeping:   features, FEATURES_OK, memory table, inflight
//                             region; wake starts the queues, then DRIVER_OK
//                 active:     the same, then the queues at their bases
//                             (split: the used index in guest memory) and
//                             DRIVER_OK, then the worker
//               -> resumed; a back-end with other features -> resume_failed
//               (broken); a failed attempt -> the next, the delay doubling
//               up to max_delay, until give_up_after (if set)
//
// With INFLIGHT_SHMFD the region the old back-end recorded its in-flight
// requests in goes to the new one (SET_INFLIGHT_FD), which resubmits them.
// Without it the queues start at the used index, so what was in flight is
// processed again; the resumed event says which of the two happened.

#include <functional>

#include "actors/device.hpp"
#include "base/error.hpp"

namespace vufront::actors {

/// Spawns fresh children, connects (client mode: waits for the back-end),
/// negotiates with the device's options, starts the channel and the hang-up
/// watch, then `done` (the device's state is left to the caller).
void connect_and_negotiate(device_actor::stateful_pointer<DeviceData> self,
                           std::function<void(Result<DeviceInfo>)> done);

/// The reconnect timer (retry_atom) of `generation`.
void reconnect_attempt(device_actor::stateful_pointer<DeviceData> self, uint64_t generation);

/// The operator's reconnect request.
[[nodiscard]] caf::result<caf::ok_atom> reconnect_now(device_actor::stateful_pointer<DeviceData> self);

/// Stops reconnecting (reset while reconnecting): later timers do nothing.
void cancel_reconnect(DeviceData& st);

}  // namespace vufront::actors
