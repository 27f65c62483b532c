#pragma once
// A minimal VMM for integration tests: brings a device up on a real back-end
// directly through BackendClient (no actors), with guest memory from
// memory/ and guest-side virtqueues from virtio/, then pushes real requests.
// The back-end channel is negotiated only on request; the test then serves it.

#include <cstdint>
#include <functional>
#include <map>
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
  uint16_t queues = 1;  ///< vrings (net: 2 per queue pair, RX 2k and TX 2k+1)
  uint16_t queue_size = 128;
  virtio::RingKind ring = virtio::RingKind::split;
  bool indirect = false;  ///< negotiate INDIRECT_DESC and give the queues indirect tables
  /// Negotiate BACKEND_REQ (+ SHMEM when offered) and keep our end of the
  /// back-end channel for the test to serve (backend_channel()).
  bool backend_channel = false;
  /// Send SET_VRING_ENABLE(1) for every queue once they are set up.
  bool enable_rings = true;
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

  // virtio-net helpers: queue pair p = RX queue 2p + TX queue 2p+1
  /// Transmits one frame on pair p and waits for the TX completion. With
  /// `split_header` the 12-byte header and the frame are separate buffers.
  [[nodiscard]] Result<void> net_send(uint16_t p, const std::vector<uint8_t>& frame,
                                      bool split_header = false);
  /// Posts one receive buffer of `len` bytes (header included) on pair p and kicks.
  [[nodiscard]] Result<void> net_post_rx(uint16_t p, uint32_t len = 2048);
  /// Waits for the next received frame on pair p (posting a buffer first
  /// when none is posted) and parses it.
  [[nodiscard]] Result<virtio::NetFrame> net_receive(uint16_t p);
  /// RX buffers of pair p posted and not yet received into.
  [[nodiscard]] size_t net_rx_posted(uint16_t p) const { return queues_.at(2u * p).rx.size(); }

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
    std::map<uint16_t, virtio::NetBuffer> rx;  ///< net RX buffers posted, by chain id
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
