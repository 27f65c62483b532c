#include "protocol/messages.hpp"

#include <array>

namespace vufront {

namespace {

// Index = wire code; nullptr = unassigned.
constexpr std::array<const char*, frontend_req_max + 1> frontend_names = {
    nullptr,
    "GET_FEATURES",
    "SET_FEATURES",
    "SET_OWNER",
    "RESET_OWNER",
    "SET_MEM_TABLE",
    "SET_LOG_BASE",
    "SET_LOG_FD",
    "SET_VRING_NUM",
    "SET_VRING_ADDR",
    "SET_VRING_BASE",
    "GET_VRING_BASE",
    "SET_VRING_KICK",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "SET_VRING_ENABLE",
    "SEND_RARP",
    "NET_SET_MTU",
    "SET_BACKEND_REQ_FD",
    "IOTLB_MSG",
    "SET_VRING_ENDIAN",
    "GET_CONFIG",
    "SET_CONFIG",
    "CREATE_CRYPTO_SESSION",
    "CLOSE_CRYPTO_SESSION",
    "POSTCOPY_ADVISE",
    "POSTCOPY_LISTEN",
    "POSTCOPY_END",
    "GET_INFLIGHT_FD",
    "SET_INFLIGHT_FD",
    "GPU_SET_SOCKET",
    "RESET_DEVICE",
    "VRING_KICK",
    "GET_MAX_MEM_SLOTS",
    "ADD_MEM_REG",
    "REM_MEM_REG",
    "SET_STATUS",
    "GET_STATUS",
    "GET_SHARED_OBJECT",
    "SET_DEVICE_STATE_FD",
    "CHECK_DEVICE_STATE",
    "GET_SHMEM_CONFIG",
    "GET_VRING_BASE_SKIP_DRAIN",
};

constexpr std::array<const char*, backend_req_max + 1> backend_names = {
    nullptr,
    "BACKEND_IOTLB_MSG",
    "BACKEND_CONFIG_CHANGE_MSG",
    "BACKEND_VRING_HOST_NOTIFIER_MSG",
    "BACKEND_VRING_CALL",
    "BACKEND_VRING_ERR",
    "BACKEND_SHARED_OBJECT_ADD",
    "BACKEND_SHARED_OBJECT_REMOVE",
    "BACKEND_SHARED_OBJECT_LOOKUP",
    "BACKEND_SHMEM_MAP",
    "BACKEND_SHMEM_UNMAP",
};

constexpr std::array<const char*, 24> protocol_names = {
    "MQ",
    "LOG_SHMFD",
    "RARP",
    "REPLY_ACK",
    "MTU",
    "BACKEND_REQ",
    "CROSS_ENDIAN",
    "CRYPTO_SESSION",
    "PAGEFAULT",
    "CONFIG",
    "BACKEND_SEND_FD",
    "HOST_NOTIFIER",
    "INFLIGHT_SHMFD",
    "RESET_DEVICE",
    "INBAND_NOTIFICATIONS",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "XEN_MMAP",
    "SHARED_OBJECT",
    "DEVICE_STATE",
    "GET_VRING_BASE_INFLIGHT",
    "GPA_ADDRESSES",
    "SHMEM",
    "GET_VRING_BASE_SKIP_DRAIN",
};

const char* transport_feature_name(unsigned b) noexcept {
  switch (b) {
    case feature::notify_on_empty: return "NOTIFY_ON_EMPTY";
    case feature::log_all: return "LOG_ALL";
    case feature::any_layout: return "ANY_LAYOUT";
    case feature::indirect_desc: return "INDIRECT_DESC";
    case feature::event_idx: return "EVENT_IDX";
    case feature::protocol_features: return "PROTOCOL_FEATURES";
    case feature::version_1: return "VERSION_1";
    case feature::access_platform: return "ACCESS_PLATFORM";
    case feature::ring_packed: return "RING_PACKED";
    case feature::in_order: return "IN_ORDER";
    case feature::order_platform: return "ORDER_PLATFORM";
    case feature::sr_iov: return "SR_IOV";
    case feature::notification_data: return "NOTIFICATION_DATA";
    case feature::notif_config_data: return "NOTIF_CONFIG_DATA";
    case feature::ring_reset: return "RING_RESET";
    case feature::admin_vq: return "ADMIN_VQ";
    case feature::suspend: return "SUSPEND";
    default: return nullptr;
  }
}

// virtio 1.2 §5.2.3
const char* blk_feature_name(unsigned b) noexcept {
  switch (b) {
    case 0: return "BARRIER";
    case 1: return "SIZE_MAX";
    case 2: return "SEG_MAX";
    case 4: return "GEOMETRY";
    case 5: return "RO";
    case 6: return "BLK_SIZE";
    case 7: return "SCSI";
    case 9: return "FLUSH";
    case 10: return "TOPOLOGY";
    case 11: return "CONFIG_WCE";
    case 12: return "MQ";
    case 13: return "DISCARD";
    case 14: return "WRITE_ZEROES";
    case 15: return "LIFETIME";
    case 16: return "SECURE_ERASE";
    case 17: return "ZONED";
    default: return nullptr;
  }
}

// virtio 1.2 §5.1.3
const char* net_feature_name(unsigned b) noexcept {
  switch (b) {
    case 0: return "CSUM";
    case 1: return "GUEST_CSUM";
    case 2: return "CTRL_GUEST_OFFLOADS";
    case 3: return "MTU";
    case 5: return "MAC";
    case 7: return "GUEST_TSO4";
    case 8: return "GUEST_TSO6";
    case 9: return "GUEST_ECN";
    case 10: return "GUEST_UFO";
    case 11: return "HOST_TSO4";
    case 12: return "HOST_TSO6";
    case 13: return "HOST_ECN";
    case 14: return "HOST_UFO";
    case 15: return "MRG_RXBUF";
    case 16: return "STATUS";
    case 17: return "CTRL_VQ";
    case 18: return "CTRL_RX";
    case 19: return "CTRL_VLAN";
    case 21: return "GUEST_ANNOUNCE";
    case 22: return "MQ";
    case 23: return "CTRL_MAC_ADDR";
    case 61: return "RSC_EXT";
    case 62: return "STANDBY";
    case 63: return "SPEED_DUPLEX";
    default: return nullptr;
  }
}

// virtio 1.2 §5.11.3
const char* fs_feature_name(unsigned b) noexcept {
  return b == 0 ? "NOTIFICATION" : nullptr;
}

}  // namespace

std::optional<FrontendReq> frontend_req_from_code(uint32_t code) noexcept {
  if (code == 0 || code > frontend_req_max)
    return std::nullopt;
  return static_cast<FrontendReq>(code);  // every code 1..max is assigned
}

std::optional<BackendReq> backend_req_from_code(uint32_t code) noexcept {
  if (code == 0 || code > backend_req_max)
    return std::nullopt;
  return static_cast<BackendReq>(code);
}

const char* name(FrontendReq r) noexcept {
  auto code = static_cast<uint32_t>(r);
  return code <= frontend_req_max && frontend_names[code] ? frontend_names[code] : "UNKNOWN";
}

const char* name(BackendReq r) noexcept {
  auto code = static_cast<uint32_t>(r);
  return code <= backend_req_max && backend_names[code] ? backend_names[code] : "UNKNOWN";
}

std::string frontend_req_name(uint32_t code) {
  if (auto r = frontend_req_from_code(code))
    return name(*r);
  return "UNKNOWN(" + std::to_string(code) + ")";
}

std::string backend_req_name(uint32_t code) {
  if (auto r = backend_req_from_code(code))
    return name(*r);
  return "UNKNOWN(" + std::to_string(code) + ")";
}

std::optional<DeviceKind> device_kind_from_string(const std::string& s) {
  if (s == "blk")
    return DeviceKind::blk;
  if (s == "net")
    return DeviceKind::net;
  if (s == "fs")
    return DeviceKind::fs;
  if (s == "generic")
    return DeviceKind::generic;
  return std::nullopt;
}

const char* name(DeviceKind k) noexcept {
  switch (k) {
    case DeviceKind::blk: return "blk";
    case DeviceKind::net: return "net";
    case DeviceKind::fs: return "fs";
    case DeviceKind::generic: return "generic";
  }
  return "generic";
}

std::string feature_name(unsigned b, DeviceKind kind) {
  const char* n = nullptr;
  bool device_specific = b < 24 || b >= 50;
  if (device_specific) {
    switch (kind) {
      case DeviceKind::blk: n = blk_feature_name(b); break;
      case DeviceKind::net: n = net_feature_name(b); break;
      case DeviceKind::fs: n = fs_feature_name(b); break;
      case DeviceKind::generic: break;
    }
  } else {
    n = transport_feature_name(b);
  }
  return n ? std::string(n) : "bit" + std::to_string(b);
}

std::string protocol_feature_name(unsigned b) {
  if (b < protocol_names.size())
    return protocol_names[b];
  return "bit" + std::to_string(b);
}

std::vector<std::string> feature_names(uint64_t mask, DeviceKind kind) {
  std::vector<std::string> out;
  for (unsigned b = 0; b < 64; ++b)
    if (has_bit(mask, b))
      out.push_back(feature_name(b, kind));
  return out;
}

std::vector<std::string> protocol_feature_names(uint64_t mask) {
  std::vector<std::string> out;
  for (unsigned b = 0; b < 64; ++b)
    if (has_bit(mask, b))
      out.push_back(protocol_feature_name(b));
  return out;
}

}  // namespace vufront
