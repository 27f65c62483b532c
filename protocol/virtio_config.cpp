#include "protocol/virtio_config.hpp"

#include <cstdio>
#include <utility>

namespace vufront::virtio {

namespace {

Field num(const char* name, uint64_t v) { return {name, std::to_string(v), v}; }
Field text(const char* name, std::string t) { return {name, std::move(t), std::nullopt}; }

Fields decode_blk(const BlkConfig& c) {
  Fields f;
  char size[64];
  std::snprintf(size, sizeof size, "%llu sectors (%.1f MiB)",
                static_cast<unsigned long long>(c.capacity),
                static_cast<double>(c.capacity) * 512.0 / (1024.0 * 1024.0));
  f.push_back({"capacity", size, c.capacity});
  f.push_back(num("size_max", c.size_max));
  f.push_back(num("seg_max", c.seg_max));
  f.push_back(num("cylinders", c.cylinders));
  f.push_back(num("heads", c.heads));
  f.push_back(num("sectors", c.sectors));
  f.push_back(num("blk_size", c.blk_size));
  f.push_back(num("physical_block_exp", c.physical_block_exp));
  f.push_back(num("alignment_offset", c.alignment_offset));
  f.push_back(num("min_io_size", c.min_io_size));
  f.push_back(num("opt_io_size", c.opt_io_size));
  f.push_back(num("writeback", c.writeback));
  f.push_back(num("num_queues", c.num_queues));
  f.push_back(num("max_discard_sectors", c.max_discard_sectors));
  f.push_back(num("max_discard_seg", c.max_discard_seg));
  f.push_back(num("discard_sector_alignment", c.discard_sector_alignment));
  f.push_back(num("max_write_zeroes_sectors", c.max_write_zeroes_sectors));
  f.push_back(num("max_write_zeroes_seg", c.max_write_zeroes_seg));
  f.push_back(num("write_zeroes_may_unmap", c.write_zeroes_may_unmap));
  return f;
}

Fields decode_net(const NetConfig& c) {
  char mac[32];
  std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", c.mac[0], c.mac[1], c.mac[2],
                c.mac[3], c.mac[4], c.mac[5]);
  return {text("mac", mac), num("status", c.status),
          num("max_virtqueue_pairs", c.max_virtqueue_pairs), num("mtu", c.mtu)};
}

Fields decode_fs(const FsConfig& c) {
  std::string tag;
  for (uint8_t ch : c.tag) {
    if (ch == 0)
      break;
    tag.push_back(ch >= 0x20 && ch < 0x7f ? static_cast<char>(ch) : '?');
  }
  return {text("tag", tag), num("num_request_queues", c.num_request_queues)};
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
