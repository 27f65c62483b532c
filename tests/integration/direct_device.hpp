#pragma once
// A minimal VMM for integration tests: brings a device up on a real back-end
// directly through BackendClient (no actors), with guest memory from
// memory/ and guest-side virtqueues from virtio/, then pushes real requests.
// The back-end channel is negotiated only on request; the test then serves it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "memory/guest_memory.hpp"
#include "protocol/backend_client.hpp"
#include "virtio/driver_queue.hpp"
#include "virtio/requests.hpp"

namespace vufront::test {

struct DirectDeviceOptions {
  std::string socket;
  DeviceKind kind = DeviceKind::blk;
  uint16_t queues = 1;
  uint16_t queue_size = 128;
  virtio::RingKind ring = virtio::RingKind::split;
  bool indirect = false;  ///< negotiate INDIRECT_DESC and give the queues indirect tables
  /// Negotiate BACKEND_REQ (+ SHMEM when offered) and keep our end of the
  /// back-end channel for the test to serve (backend_channel()).
  bool backend_channel = false;
};

class DirectDevice {
public:
  /// Connects and brings the device up: SET_OWNER, features, protocol
  /// features, queue count check, SET_FEATURES, SET_MEM_TABLE, per queue
  /// NUM/ADDR/BASE/CALL/KICK, SET_STATUS (if negotiated), SET_VRING_ENABLE.
  [[nodiscard]] static Result<std::unique_ptr<DirectDevice>> start(const DirectDeviceOptions& o);

  /// Adds `chain` to queue `q`, kicks and waits for its completion.
  [[nodiscard]] Result<virtio::Used> submit(uint16_t q, const std::vector<virtio::Buffer>& chain);

  // virtio-blk helpers (each one request on queue q; scratch reset first)
  [[nodiscard]] Result<void> blk_write(uint16_t q, uint64_t sector, const std::vector<uint8_t>& d);
  [[nodiscard]] Result<std::vector<uint8_t>> blk_read(uint16_t q, uint64_t sector, uint32_t len);
  [[nodiscard]] Result<void> blk_flush(uint16_t q);
  [[nodiscard]] Result<std::string> blk_get_id(uint16_t q);

  /// GET_VRING_BASE on queue q (stops it).
  [[nodiscard]] Result<uint32_t> stop_queue(uint16_t q);

  [[nodiscard]] BackendClient& client() { return client_; }
  [[nodiscard]] virtio::DriverQueue& queue(uint16_t q) { return queues_[q].driver; }
  [[nodiscard]] virtio::GuestScratch& scratch(uint16_t q) { return queues_[q].scratch; }
  [[nodiscard]] int kick_fd(uint16_t q) const { return queues_[q].kick.get(); }
  [[nodiscard]] int call_fd(uint16_t q) const { return queues_[q].call.get(); }
  [[nodiscard]] uint16_t queue_count() const { return static_cast<uint16_t>(queues_.size()); }
  [[nodiscard]] const GuestMemory& memory() const { return mem_; }
  /// Our end of the back-end channel (empty unless options.backend_channel).
  [[nodiscard]] std::optional<Connection>& backend_channel() { return channel_; }

private:
  struct Queue {
    virtio::DriverQueue driver;
    virtio::GuestScratch scratch;
    UniqueFd kick;
    UniqueFd call;
  };
  DirectDevice(BackendClient client, GuestMemory mem)
      : client_(std::move(client)), mem_(std::move(mem)) {}
  /// Builds a blk request in queue q's (reset) scratch area, submits it and
  /// checks the status byte.
  [[nodiscard]] Result<virtio::BlkRequest> blk_request(
      uint16_t q, const std::function<Result<virtio::BlkRequest>(virtio::GuestScratch&)>& build);
  [[nodiscard]] Result<void> setup_queue(uint16_t index, const DirectDeviceOptions& o,
                                         uint64_t rings_gpa, uint64_t scratch_gpa);

  BackendClient client_;
  GuestMemory mem_;
  std::vector<Queue> queues_;
  std::optional<Connection> channel_;
};

}  // namespace vufront::test
