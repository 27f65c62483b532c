#pragma once
// A virtio-net device model (virtio 1.2 §5.1) that echoes: every frame the
// driver transmits on TX queue 2k+1 comes back on RX queue 2k of the same
// pair, so a front-end can check a net data path end to end without a
// network. No offloads, no control queue, no mergeable RX buffers: a frame
// travels as one 12-byte virtio_net_hdr_v1 (VERSION_1) followed by the frame.
//
// The driver is untrusted. A TX chain whose readable part is no longer than
// the header, longer than header + max_frame, or that has device-writable
// buffers is completed (used len 0) and counted as malformed. A frame that
// finds no RX buffer waits in a bounded per-pair backlog (oldest dropped
// beyond it) until the driver posts one; a frame larger than the RX buffer
// it gets is dropped and counted, and the buffer is given back for the next
// frame (as vhost-net does without MRG_RXBUF).

#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "backend/device.hpp"

namespace vufront::backend {

/// virtio-net feature bits offered.
namespace net_feature {
inline constexpr unsigned mac = 5;
inline constexpr unsigned status = 16;
inline constexpr unsigned mq = 22;
}  // namespace net_feature

inline constexpr uint16_t net_status_link_up = 1;
inline constexpr uint16_t net_max_pairs = 32;
inline constexpr uint32_t net_hdr_bytes = 12;
/// Largest frame accepted on TX: ETH_MAX_MTU (65535) + Ethernet + VLAN header.
inline constexpr uint32_t net_max_frame = 65535 + 18;
inline constexpr size_t net_backlog_frames = 256;
inline constexpr uint64_t net_backlog_bytes = 4ull << 20;

using MacAddress = std::array<uint8_t, 6>;
inline constexpr MacAddress net_default_mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

class NetDevice final : public Device {
public:
  /// Counters over the device's lifetime (all pairs, all front-ends).
  struct Stats {
    uint64_t tx_frames = 0;        ///< well-formed frames taken from TX
    uint64_t rx_frames = 0;        ///< frames delivered into RX buffers
    uint64_t tx_malformed = 0;     ///< TX chains completed without a frame
    uint64_t backlog_dropped = 0;  ///< oldest frames dropped from a full backlog
    uint64_t rx_too_big = 0;       ///< frames dropped: larger than the RX buffer
  };

  /// `pairs` in 1..net_max_pairs (checked by the caller).
  NetDevice(uint16_t pairs, const MacAddress& mac);

  [[nodiscard]] DeviceKind kind() const noexcept override { return DeviceKind::net; }
  [[nodiscard]] uint32_t num_vrings() const noexcept override { return 2u * pairs_; }
  /// MAC, STATUS, and MQ with more than one pair.
  [[nodiscard]] uint64_t device_features() const noexcept override;
  /// struct virtio_net_config: mac, status LINK_UP, max_virtqueue_pairs, mtu 0.
  [[nodiscard]] std::vector<uint8_t> config() const override;
  /// Vrings 0 and 1 (the historic vhost-user-net quirk, vhost-user spec "Ring states").
  [[nodiscard]] bool enabled_at_start(uint32_t index) const noexcept override { return index < 2; }
  /// TX (odd index): echo every frame into the pair's RX; RX (even): deliver the backlog.
  void process(uint32_t index, Rings& rings) override;
  /// Drops every backlog.
  void reset() override;
  /// "net: tx N, rx N, malformed N, backlog drops N, too big N".
  [[nodiscard]] std::string summary() const override;

  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }
  /// Frames waiting for an RX buffer on `pair`.
  [[nodiscard]] size_t backlog(uint16_t pair) const { return backlog_.at(pair).frames.size(); }

private:
  struct Backlog {
    std::deque<std::vector<uint8_t>> frames;
    uint64_t bytes = 0;
  };
  void enqueue(uint16_t pair, std::vector<uint8_t> frame);
  void deliver(uint16_t pair, Rings& rings);

  uint16_t pairs_;
  MacAddress mac_;
  std::vector<Backlog> backlog_;
  Stats stats_;
};

}  // namespace vufront::backend
