#pragma once
// vhost-user request ids, header flags and feature bits, with their names.
// Standard ids only (QEMU's docs/interop/vhost-user.rst, newest revision):
// crosvm's old private ids 41-45 / back-end 6-13 collide with standard ones
// and are not used. Its sections "Front-end message types", "Back-end message types" and
// "Protocol features" list them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vufront {

/// Requests the front-end sends on the main channel.
enum class FrontendReq : uint32_t {
  get_features = 1,
  set_features = 2,
  set_owner = 3,
  reset_owner = 4,
  set_mem_table = 5,
  set_log_base = 6,
  set_log_fd = 7,
  set_vring_num = 8,
  set_vring_addr = 9,
  set_vring_base = 10,
  get_vring_base = 11,
  set_vring_kick = 12,
  set_vring_call = 13,
  set_vring_err = 14,
  get_protocol_features = 15,
  set_protocol_features = 16,
  get_queue_num = 17,
  set_vring_enable = 18,
  send_rarp = 19,
  net_set_mtu = 20,
  set_backend_req_fd = 21,
  iotlb_msg = 22,
  set_vring_endian = 23,
  get_config = 24,
  set_config = 25,
  create_crypto_session = 26,
  close_crypto_session = 27,
  postcopy_advise = 28,
  postcopy_listen = 29,
  postcopy_end = 30,
  get_inflight_fd = 31,
  set_inflight_fd = 32,
  gpu_set_socket = 33,
  reset_device = 34,
  vring_kick = 35,
  get_max_mem_slots = 36,
  add_mem_reg = 37,
  rem_mem_reg = 38,
  set_status = 39,
  get_status = 40,
  get_shared_object = 41,
  set_device_state_fd = 42,
  check_device_state = 43,
  get_shmem_config = 44,
  get_vring_base_skip_drain = 45,
};
inline constexpr uint32_t frontend_req_max = 45;

/// Requests the back-end sends on the back-end channel.
enum class BackendReq : uint32_t {
  iotlb_msg = 1,
  config_change_msg = 2,
  vring_host_notifier_msg = 3,
  vring_call = 4,
  vring_err = 5,
  shared_object_add = 6,
  shared_object_remove = 7,
  shared_object_lookup = 8,
  shmem_map = 9,
  shmem_unmap = 10,
};
inline constexpr uint32_t backend_req_max = 10;

/// Checked conversions from wire codes (never a cast): nullopt for unknown codes.
[[nodiscard]] std::optional<FrontendReq> frontend_req_from_code(uint32_t code) noexcept;
[[nodiscard]] std::optional<BackendReq> backend_req_from_code(uint32_t code) noexcept;

/// Spec names ("GET_FEATURES", "BACKEND_SHMEM_MAP").
[[nodiscard]] const char* name(FrontendReq r) noexcept;
[[nodiscard]] const char* name(BackendReq r) noexcept;
/// Name for a raw code, "UNKNOWN(1023)" when it is not a known code.
[[nodiscard]] std::string frontend_req_name(uint32_t code);
[[nodiscard]] std::string backend_req_name(uint32_t code);

// ---- header flags (vhost-user spec, "Header")
inline constexpr uint32_t flag_version_mask = 0x3;
inline constexpr uint32_t flag_version = 0x1;
inline constexpr uint32_t flag_reply = 0x4;
inline constexpr uint32_t flag_need_reply = 0x8;
inline constexpr uint32_t flag_reserved_mask = ~uint32_t{0xf};

// ---- virtio / vhost feature bits (virtio spec, vhost-user spec); values are bit numbers
namespace feature {
inline constexpr unsigned notify_on_empty = 24;
inline constexpr unsigned log_all = 26;
inline constexpr unsigned any_layout = 27;
inline constexpr unsigned indirect_desc = 28;
inline constexpr unsigned event_idx = 29;
inline constexpr unsigned protocol_features = 30;  ///< vhost-user only, never shown to a guest
inline constexpr unsigned version_1 = 32;
inline constexpr unsigned access_platform = 33;
inline constexpr unsigned ring_packed = 34;
inline constexpr unsigned in_order = 35;
inline constexpr unsigned order_platform = 36;
inline constexpr unsigned sr_iov = 37;
inline constexpr unsigned notification_data = 38;
inline constexpr unsigned notif_config_data = 39;
inline constexpr unsigned ring_reset = 40;
inline constexpr unsigned admin_vq = 41;
inline constexpr unsigned suspend = 42;
}  // namespace feature

// ---- protocol feature bits (vhost-user spec, "Protocol features"); values are bit numbers
namespace protocol_feature {
inline constexpr unsigned mq = 0;
inline constexpr unsigned log_shmfd = 1;
inline constexpr unsigned rarp = 2;
inline constexpr unsigned reply_ack = 3;
inline constexpr unsigned mtu = 4;
inline constexpr unsigned backend_req = 5;
inline constexpr unsigned cross_endian = 6;
inline constexpr unsigned crypto_session = 7;
inline constexpr unsigned pagefault = 8;
inline constexpr unsigned config = 9;
inline constexpr unsigned backend_send_fd = 10;
inline constexpr unsigned host_notifier = 11;
inline constexpr unsigned inflight_shmfd = 12;
inline constexpr unsigned reset_device = 13;
inline constexpr unsigned inband_notifications = 14;
inline constexpr unsigned configure_mem_slots = 15;
inline constexpr unsigned status = 16;
inline constexpr unsigned xen_mmap = 17;
inline constexpr unsigned shared_object = 18;
inline constexpr unsigned device_state = 19;
inline constexpr unsigned get_vring_base_inflight = 20;
inline constexpr unsigned gpa_addresses = 21;
inline constexpr unsigned shmem = 22;
inline constexpr unsigned get_vring_base_skip_drain = 23;
}  // namespace protocol_feature

[[nodiscard]] constexpr uint64_t bit(unsigned n) noexcept { return uint64_t{1} << n; }
[[nodiscard]] constexpr bool has_bit(uint64_t mask, unsigned n) noexcept {
  return (mask >> n) & 1u;
}

/// Which virtio device a feature set or config space belongs to; decides the
/// names of device-specific feature bits (0-23, 50-63).
enum class DeviceKind { generic, blk, net, fs };
[[nodiscard]] std::optional<DeviceKind> device_kind_from_string(const std::string& s);
[[nodiscard]] const char* name(DeviceKind k) noexcept;

/// Name of a virtio feature bit ("VERSION_1", blk "FLUSH"), or "bit<N>".
[[nodiscard]] std::string feature_name(unsigned bit_number, DeviceKind kind);
/// Name of a protocol feature bit ("REPLY_ACK"), or "bit<N>".
[[nodiscard]] std::string protocol_feature_name(unsigned bit_number);

/// Names of every set bit, lowest first.
[[nodiscard]] std::vector<std::string> feature_names(uint64_t mask, DeviceKind kind);
[[nodiscard]] std::vector<std::string> protocol_feature_names(uint64_t mask);

/// The protocol features vufront implements and therefore acks when offered.
/// Bits it does not implement (postcopy, IOTLB, in-band notifications,
/// host notifiers, Xen, shared objects, skip-drain) are never acked.
inline constexpr uint64_t supported_protocol_features =
    bit(protocol_feature::mq) | bit(protocol_feature::log_shmfd) |
    bit(protocol_feature::reply_ack) | bit(protocol_feature::backend_req) |
    bit(protocol_feature::config) | bit(protocol_feature::backend_send_fd) |
    bit(protocol_feature::inflight_shmfd) | bit(protocol_feature::reset_device) |
    bit(protocol_feature::configure_mem_slots) | bit(protocol_feature::status) |
    bit(protocol_feature::device_state) | bit(protocol_feature::shmem);

/// Virtio status byte bits (SET/GET_STATUS; virtio spec, "Device Status Field").
namespace status_bit {
inline constexpr uint8_t acknowledge = 1;
inline constexpr uint8_t driver = 2;
inline constexpr uint8_t driver_ok = 4;
inline constexpr uint8_t features_ok = 8;
inline constexpr uint8_t device_needs_reset = 64;
inline constexpr uint8_t failed = 128;
}  // namespace status_bit

}  // namespace vufront
