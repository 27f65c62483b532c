#include "backend/net_device.hpp"

#include <algorithm>
#include <cstring>

#include "protocol/virtio_config.hpp"
#include "virtio/requests.hpp"

namespace vufront::backend {

namespace {

/// The frame of a TX chain: its readable bytes after the header, wherever the
/// driver split header and data; empty when the chain is malformed.
std::vector<uint8_t> tx_frame(const virtio::Chain& chain) {
  if (chain.writable_bytes() != 0)
    return {};
  const uint64_t total = chain.readable_bytes();
  if (total <= net_hdr_bytes || total - net_hdr_bytes > net_max_frame)
    return {};
  std::vector<uint8_t> frame(total - net_hdr_bytes);
  uint64_t skip = net_hdr_bytes, at = 0;
  for (const virtio::Segment& s : chain.segments) {
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const uint64_t take = s.len - skip;  // all readable: writable_bytes() == 0
    // BOUNDS: at + take <= frame.size() (segment lengths sum to total),
    // [skip, s.len) lies inside the translated segment.
    std::memcpy(frame.data() + at, s.ptr + skip, take);
    at += take;
    skip = 0;
  }
  return frame;
}

/// Writes `n` bytes into the chain's writable buffers from byte `offset` on.
/// The caller checked offset + n <= writable_bytes().
void scatter(const virtio::Chain& chain, uint64_t offset, const uint8_t* data, uint64_t n) {
  for (const virtio::Segment& s : chain.segments) {
    if (n == 0)
      return;
    if (!s.writable)
      continue;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(n, s.len - offset);
    // BOUNDS: [offset, offset+take) lies inside the translated segment.
    std::memcpy(s.ptr + offset, data, take);
    data += take;
    n -= take;
    offset = 0;
  }
}

}  // namespace

NetDevice::NetDevice(uint16_t pairs, const MacAddress& mac)
    : pairs_(pairs), mac_(mac), backlog_(pairs) {}

uint64_t NetDevice::device_features() const noexcept {
  uint64_t f = bit(net_feature::mac) | bit(net_feature::status);
  if (pairs_ > 1)
    f |= bit(net_feature::mq);
  return f;
}

std::vector<uint8_t> NetDevice::config() const {
  virtio::NetConfig c{};
  std::memcpy(c.mac, mac_.data(), sizeof c.mac);
  c.status = net_status_link_up;
  c.max_virtqueue_pairs = pairs_;
  c.mtu = 0;  // VIRTIO_NET_F_MTU is not offered
  const auto* b = reinterpret_cast<const uint8_t*>(&c);
  return std::vector<uint8_t>(b, b + sizeof c);
}

std::string NetDevice::summary() const {
  return "net: tx " + std::to_string(stats_.tx_frames) + ", rx " +
         std::to_string(stats_.rx_frames) + ", malformed " +
         std::to_string(stats_.tx_malformed) + ", backlog drops " +
         std::to_string(stats_.backlog_dropped) + ", too big " +
         std::to_string(stats_.rx_too_big);
}

void NetDevice::reset() {
  for (Backlog& b : backlog_)
    b = Backlog{};
}

void NetDevice::enqueue(uint16_t pair, std::vector<uint8_t> frame) {
  Backlog& b = backlog_[pair];
  b.bytes += frame.size();
  b.frames.push_back(std::move(frame));
  while (b.frames.size() > net_backlog_frames || b.bytes > net_backlog_bytes) {
    b.bytes -= b.frames.front().size();
    b.frames.pop_front();
    ++stats_.backlog_dropped;
  }
}

void NetDevice::deliver(uint16_t pair, Rings& rings) {
  const uint32_t rx = 2u * pair;
  Backlog& b = backlog_[pair];
  while (!b.frames.empty()) {
    auto chain = rings.pop(rx);
    if (!chain)
      return;  // no buffer (or RX not ready): the frames wait
    const std::vector<uint8_t>& frame = b.frames.front();
    const uint64_t need = net_hdr_bytes + frame.size();
    bool consumed = false;
    if (chain->writable_bytes() < need) {
      ++stats_.rx_too_big;  // drop the frame, keep the buffer for the next one
      if (!rings.unpop(rx, *chain))
        return;
    } else {
      virtio::NetHdrV1 h{};
      h.num_buffers = 1;
      scatter(*chain, 0, reinterpret_cast<const uint8_t*>(&h), sizeof h);
      scatter(*chain, sizeof h, frame.data(), frame.size());
      consumed = true;
    }
    b.bytes -= frame.size();
    b.frames.pop_front();
    if (consumed) {
      ++stats_.rx_frames;
      if (!rings.push(rx, *chain, static_cast<uint32_t>(need)))  // need <= 65565
        return;
    }
  }
}

void NetDevice::process(uint32_t index, Rings& rings) {
  const auto pair = static_cast<uint16_t>(index / 2);
  if (pair >= pairs_)
    return;
  if (index % 2 == 1) {
    while (auto chain = rings.pop(index)) {
      std::vector<uint8_t> frame = tx_frame(*chain);
      if (!rings.push(index, *chain, 0))
        break;
      if (frame.empty()) {
        ++stats_.tx_malformed;
        continue;
      }
      ++stats_.tx_frames;
      enqueue(pair, std::move(frame));
      deliver(pair, rings);  // frame by frame: the backlog only holds what RX cannot take
    }
  }
  deliver(pair, rings);
}

}  // namespace vufront::backend
