#pragma once
// Shared by the reconnect tests (test_reconnect.cpp, test_reconnect_matrix.cpp):
// a device that reconnects at once, a disk back-end whose data outlives it,
// and waiting for the device's events.

#include <chrono>
#include <string>
#include <vector>

#include "actors/session.hpp"

namespace vufront::test {

/// How long a test waits for one of the device's events.
inline constexpr auto event_wait = std::chrono::seconds(15);

/// Fast backoff so the tests do not wait; no give-up window.
[[nodiscard]] actors::ReconnectPolicy fast_policy();

/// vufront-backend as a blk disk on `socket` over the file `image` (16 MiB),
/// so the data outlives the process; `extra`: more switches (faults, -v).
[[nodiscard]] std::vector<std::string> disk_backend(const std::string& socket,
                                                    const std::string& image,
                                                    std::vector<std::string> extra = {});

/// The device's state now (fails the test if status fails).
[[nodiscard]] actors::DeviceState state_of(actors::DeviceSession& s);

/// Waits for an event of `kind`, skipping others; fails the test with the
/// events that came instead and the device's status.
actors::DeviceEvent expect_event(actors::DeviceSession& s, actors::DeviceEvent::Kind kind);

}  // namespace vufront::test
