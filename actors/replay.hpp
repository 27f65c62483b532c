#pragma once
// The one place that knows what brings a device's back-end to where the
// device is: the requests of an activation (features, FEATURES_OK, memory
// table, in-flight region, every ring at its base, DRIVER_OK), built from
// DeviceData alone. Activate, wake, the replay after a reconnect and a
// restore all send what these functions build; a new replayed setting (a
// dirty log, a VMM-facing socket's shadow state) is added here once.
//
// Pure functions: no actor, no I/O (tests/actors/test_replay.cpp).

#include <cstdint>
#include <vector>

#include "actors/device_data.hpp"
#include "actors/messages.hpp"
#include "proxy/shadow.hpp"

namespace vufront::actors {

/// Where the requests of replay_request() bring a device.
enum class ReplayTo {
  /// Running: features, FEATURES_OK, the memory table, the in-flight region,
  /// every ring at its base, DRIVER_OK (activate; a reconnect from active).
  running,
  /// Rings stopped: the same without the rings and DRIVER_OK, which wake
  /// sends (a reconnect from sleeping).
  rings_stopped,
  /// A state load: features and FEATURES_OK only (a restore without guest
  /// memory); the back-end then gets SET_DEVICE_STATE_FD.
  state_load,
  /// A state load into a guest: features, FEATURES_OK and the memory table
  /// (a restore with the VMM's activation); wake starts the rings at the
  /// snapshot's bases.
  state_load_with_memory,
};

/// The status a device has once the requests of `to` are done: FEATURES_OK
/// (ACKNOWLEDGE | DRIVER | FEATURES_OK), and DRIVER_OK too when running.
[[nodiscard]] uint8_t replayed_status(ReplayTo to) noexcept;

/// The activation that brings `st`'s back-end to `to`, with `features` as
/// SET_FEATURES (the device's acked features, or a snapshot's). While the
/// device logs (DeviceData::dirty_log), running and rings_stopped add
/// LOG_ALL and SET_LOG_BASE with the same log (sent before any ring), and
/// the rings carry VHOST_VRING_F_LOG.
[[nodiscard]] ActivateRequest replay_request(const DeviceData& st, ReplayTo to, uint64_t features);

/// What a VMM had set up through its socket (proxy::Shadow), for the next
/// back-end after a loss: its features, FEATURES_OK as the VMM set it, its
/// memory (synthetic addresses), its in-flight region, its dirty log while it
/// logs (SET_LOG_BASE with the VMM's log, before any ring), every ring it set up
/// (started ones kicked and enabled as the VMM left them), and DRIVER_OK
/// when the VMM had set it. A started split ring resumes at the used index
/// in guest memory (what the lost back-end completed), a stopped one at the
/// base the VMM was told; a started packed ring at its last base, which a
/// back-end with the in-flight region replaces with the region's position.
[[nodiscard]] ActivateRequest replay_shadow(const proxy::Shadow& shadow);

/// Each ring as SET_VRING_NUM/ADDR/BASE/CALL/KICK start it: at its saved
/// base, with the device's call fd (the VMM's or the worker's);
/// log_guest_addr is the used ring's guest-physical address, and the LOG
/// flag is set while the device logs.
[[nodiscard]] std::vector<QueueStart> queue_starts(const DeviceData& st);

/// The fds of the guest memory regions, in table order.
[[nodiscard]] std::vector<SharedFd> memory_fds(const MemorySpec& m);

}  // namespace vufront::actors
