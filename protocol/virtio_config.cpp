#include "protocol/virtio_config.hpp"

#include <cstdio>

namespace vufront::virtio {

namespace {

std::string num(uint64_t v) { return std::to_string(v); }

Fields decode_blk(const BlkConfig& c) {
  Fields f;
  char size[64];
  std::snprintf(size, sizeof size, "%llu sectors (%.1f MiB)",
                static_cast<unsigned long long>(c.capacity),
                static_cast<double>(c.capacity) * 512.0 / (1024.0 * 1024.0));
  f.emplace_back("capacity", size);
  f.emplace_back("size_max", num(c.size_max));
  f.emplace_back("seg_max", num(c.seg_max));
  f.emplace_back("geometry", num(c.cylinders) + "/" + num(c.heads) + "/" + num(c.sectors));
  f.emplace_back("blk_size", num(c.blk_size));
  f.emplace_back("physical_block_exp", num(c.physical_block_exp));
  f.emplace_back("alignment_offset", num(c.alignment_offset));
  f.emplace_back("min_io_size", num(c.min_io_size));
  f.emplace_back("opt_io_size", num(c.opt_io_size));
  f.emplace_back("writeback", num(c.writeback));
  f.emplace_back("num_queues", num(c.num_queues));
  f.emplace_back("max_discard_sectors", num(c.max_discard_sectors));
  f.emplace_back("max_discard_seg", num(c.max_discard_seg));
  f.emplace_back("discard_sector_alignment", num(c.discard_sector_alignment));
  f.emplace_back("max_write_zeroes_sectors", num(c.max_write_zeroes_sectors));
  f.emplace_back("max_write_zeroes_seg", num(c.max_write_zeroes_seg));
  f.emplace_back("write_zeroes_may_unmap", num(c.write_zeroes_may_unmap));
  return f;
}

Fields decode_net(const NetConfig& c) {
  char mac[32];
  std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", c.mac[0], c.mac[1], c.mac[2],
                c.mac[3], c.mac[4], c.mac[5]);
  return {{"mac", mac},
          {"status", num(c.status)},
          {"max_virtqueue_pairs", num(c.max_virtqueue_pairs)},
          {"mtu", num(c.mtu)}};
}

Fields decode_fs(const FsConfig& c) {
  std::string tag;
  for (uint8_t ch : c.tag) {
    if (ch == 0)
      break;
    tag.push_back(ch >= 0x20 && ch < 0x7f ? static_cast<char>(ch) : '?');
  }
  return {{"tag", tag}, {"num_request_queues", num(c.num_request_queues)}};
}

}  // namespace

Fields decode_config(DeviceKind kind, const std::vector<uint8_t>& bytes) {
  switch (kind) {
    case DeviceKind::blk:
      if (auto c = wire::decode_prefix<BlkConfig>(bytes.data(), bytes.size()))
        return decode_blk(*c);
      break;
    case DeviceKind::net:
      if (auto c = wire::decode_prefix<NetConfig>(bytes.data(), bytes.size()))
        return decode_net(*c);
      break;
    case DeviceKind::fs:
      if (auto c = wire::decode_prefix<FsConfig>(bytes.data(), bytes.size()))
        return decode_fs(*c);
      break;
    case DeviceKind::generic:
      break;
  }
  return {};
}

}  // namespace vufront::virtio
