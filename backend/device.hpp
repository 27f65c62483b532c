#pragma once
// The device models vufront-backend can serve (blk_device.hpp, net_device.hpp)
// behind one interface, so VhostServer stays device-agnostic: it owns the
// vhost-user session and the rings, a Device decides what the rings carry.
//
// Rings is the server's side of that contract: the device pops chains from
// and pushes completions to the rings it names, and the server keeps the
// bookkeeping (inflight records, DEVICE_NEEDS_RESET on a malformed ring, one
// call-eventfd signal per touched ring once Device::process returns).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/messages.hpp"
#include "virtio/device_queue.hpp"

namespace vufront::backend {

class Rings {
public:
  virtual ~Rings() = default;
  /// Whether ring `index` is started, enabled and not broken.
  [[nodiscard]] virtual bool ready(uint32_t index) const = 0;
  /// The next available chain of a ready ring; nullopt when there is none,
  /// the ring is not ready, or it turned out malformed (logged; the device
  /// is then marked DEVICE_NEEDS_RESET and the ring stays broken).
  [[nodiscard]] virtual std::optional<virtio::Chain> pop(uint32_t index) = 0;
  /// Gives the chain just popped from `index` back unused; the driver's
  /// buffer stays available and the next pop returns it again. Only the
  /// most recent pop of the ring can be undone. False if that failed.
  virtual bool unpop(uint32_t index, const virtio::Chain& chain) = 0;
  /// Completes a popped chain with `written` bytes. False if the ring
  /// refused (logged; stop using the ring).
  virtual bool push(uint32_t index, const virtio::Chain& chain, uint32_t written) = 0;
};

/// A window of the device's memory that SHMEM_MAP may share (blk: the disk).
struct SharedWindow {
  int fd = -1;        ///< -1: the device has nothing to share
  uint64_t size = 0;
};

class Device {
public:
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  virtual ~Device() = default;

  [[nodiscard]] virtual DeviceKind kind() const noexcept = 0;
  /// vrings the device has (also the GET_QUEUE_NUM answer).
  [[nodiscard]] virtual uint32_t num_vrings() const noexcept = 0;
  /// Device-specific virtio feature bits offered (the server adds the
  /// transport ones: VERSION_1, PROTOCOL_FEATURES, INDIRECT_DESC, RING_PACKED).
  [[nodiscard]] virtual uint64_t device_features() const noexcept = 0;
  /// The device config space (GET_CONFIG, device state).
  [[nodiscard]] virtual std::vector<uint8_t> config() const = 0;
  /// Whether vring `index` starts enabled although PROTOCOL_FEATURES is
  /// negotiated (net: the first queue pair, vhost-user spec, "Ring states").
  [[nodiscard]] virtual bool enabled_at_start(uint32_t /*index*/) const noexcept { return false; }

  /// Ring `index` was kicked, started or enabled: consume what it holds.
  virtual void process(uint32_t index, Rings& rings) = 0;
  /// Device reset (RESET_DEVICE, SET_STATUS 0) and a new front-end: drop
  /// whatever the device holds for the driver. blk keeps its disk.
  virtual void reset() {}

  /// Bytes streamed after the config in the device state (blk: the disk);
  /// nullptr/0 when the device has none.
  [[nodiscard]] virtual uint8_t* state_data() noexcept { return nullptr; }
  [[nodiscard]] virtual uint64_t state_bytes() const noexcept { return 0; }
  [[nodiscard]] virtual SharedWindow shared_window() const noexcept { return {}; }
  /// One line of counters for the --verbose log at disconnect ("" = none).
  [[nodiscard]] virtual std::string summary() const { return {}; }
};

}  // namespace vufront::backend
