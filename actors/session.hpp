#pragma once
// DeviceSession: the device actor for code that is not an actor (the CLI
// commands, scripted jobs, tests, benchmarks). Each call is one request to
// the device with a deadline, answered as Result<T>; events the device emits
// are collected and read with next_event(). Use from one thread.

#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include "actors/device.hpp"
#include "actors/messages.hpp"
#include "virtio/guest_driver.hpp"

namespace vufront::actors {

class DeviceSession {
public:
  /// Spawns a device for `config.socket` (nothing is connected until negotiate()).
  DeviceSession(caf::actor_system& sys, DeviceConfig config);
  /// Stops the device (and its children) and waits until it is gone.
  ~DeviceSession();
  DeviceSession(const DeviceSession&) = delete;
  DeviceSession& operator=(const DeviceSession&) = delete;

  [[nodiscard]] Result<DeviceInfo> negotiate(const NegotiateOptions& o);
  [[nodiscard]] Result<void> set_memory(const MemorySpec& m);
  [[nodiscard]] Result<void> activate(const ActivateSpec& spec);
  /// One more guest RAM region (the device's mem_add_atom).
  [[nodiscard]] Result<void> add_memory_region(const MemoryRegionSpec& r);
  [[nodiscard]] Result<std::vector<uint8_t>> read_config(uint32_t offset, uint32_t size);
  [[nodiscard]] Result<void> write_config(uint32_t offset, const std::vector<uint8_t>& data);
  [[nodiscard]] Result<void> sleep();
  [[nodiscard]] Result<void> wake();
  [[nodiscard]] Result<void> reset();
  /// After a loss: connect again now (reconnecting: skip the backoff wait;
  /// broken with something to resume: start reconnecting).
  [[nodiscard]] Result<void> reconnect();
  [[nodiscard]] Result<DeviceStatus> status();
  /// (shmid, size) of the back-end's shared-memory region.
  [[nodiscard]] Result<std::pair<uint8_t, uint64_t>> shared_memory_region();
  [[nodiscard]] Result<void> set_shared_memory_mapper(std::shared_ptr<SharedMemoryMapper> m);
  /// Dirty logging on (actors/device_dirty_log.cpp): the log's memfd and
  /// its size in bytes (the same log when already on).
  [[nodiscard]] Result<std::pair<SharedFd, uint64_t>> dirty_log_start();
  /// Dirty logging off (nothing when it is not on).
  [[nodiscard]] Result<void> dirty_log_stop();
  /// Saves the back-end's state to o.path (device sleeping, or negotiated).
  [[nodiscard]] Result<SnapshotInfo> snapshot(const SnapshotOptions& o);
  /// Restores o.path into this freshly negotiated back-end (see RestoreOptions).
  [[nodiscard]] Result<SnapshotInfo> restore(const RestoreOptions& o);
  /// Cancels the snapshot or restore in progress, or the next one if none
  /// is; callable from any thread (e.g. a signal handler's). Sticky (the
  /// device's cancel_all_atom): every snapshot() and restore() after it
  /// fails "cancelled", so a cancel that overtakes the request is not lost.
  void cancel() const;

  /// The next event the device emitted, waiting up to `timeout`.
  [[nodiscard]] std::optional<DeviceEvent> next_event(std::chrono::milliseconds timeout);
  /// The next event of `kind` (others are dropped), waiting up to `timeout`.
  [[nodiscard]] std::optional<DeviceEvent> wait_event(DeviceEvent::Kind kind,
                                                      std::chrono::milliseconds timeout);

  [[nodiscard]] const device_actor& device() const noexcept { return device_; }
  /// Deadline of one operation (each step inside has its own, shorter one).
  void set_timeout(std::chrono::milliseconds t) noexcept { timeout_ = t; }

private:
  template <class T, class... Ts>
  Result<T> ask(const char* op, Ts&&... xs);

  caf::actor_system& sys_;
  caf::scoped_actor self_;
  device_actor device_;
  std::chrono::milliseconds timeout_{std::chrono::minutes(10)};
};

/// The memory spec of all of `mem`'s regions.
[[nodiscard]] MemorySpec memory_spec(const GuestMemory& mem);

/// The activation of all of `g`'s queues. `msix`: each queue's call eventfd
/// goes to the back-end directly; otherwise the worker forwards interrupts
/// to g.intx() (and the driver waits there: g.use_intx(true) is set).
/// `at_driver_bases`: each ring starts at the driver's next index (a device
/// moved to a back-end on shared storage) instead of a fresh ring.
[[nodiscard]] ActivateSpec activate_spec(virtio::GuestDriver& g, uint64_t driver_features, bool msix,
                                         bool at_driver_bases = false);

}  // namespace vufront::actors
