#pragma once
// The device actor's snapshot and restore operations (see device.hpp and
// docs/lifecycle.md): the checks and the order around the snapshot actor,
// which moves the bytes.
//
//   snapshot  sleeping (or negotiated, never activated): [GET_CONFIG] ->
//             save -> the device stays as it was, also on failure
//   restore   negotiated (a fresh back-end): open + verify the file -> check
//             it against the back-end and the VMM's activation -> SET_FEATURES,
//             FEATURES_OK, SET_MEM_TABLE -> load -> sleeping, queues at the
//             snapshot's bases (wake starts them, then DRIVER_OK); without an
//             activation the device stays negotiated

#include <caf/typed_response_promise.hpp>

#include "actors/device.hpp"

namespace vufront::actors {

[[nodiscard]] caf::result<SnapshotInfo> snapshot_device(
    device_actor::stateful_pointer<DeviceData> self, const SnapshotOptions& o);
/// A snapshot of a device a VMM drives, asked by its port once the VMM's
/// rings are stopped: `a` (the VMM's features and rings) goes in the manifest.
[[nodiscard]] caf::result<SnapshotInfo> snapshot_for_vmm(device_actor::stateful_pointer<DeviceData> self,
                                                        const SnapshotOptions& o, const VmmSaveSpec& a);
[[nodiscard]] caf::result<SnapshotInfo> restore_device(
    device_actor::stateful_pointer<DeviceData> self, const RestoreOptions& o);
/// Cancels the transfer in progress, if any.
void cancel_transfer(device_actor::stateful_pointer<DeviceData> self);

}  // namespace vufront::actors
