#include "protocol/backend_request.hpp"

#include <cstring>
#include <string>

#include <unistd.h>

namespace vufront {

namespace {

uint64_t host_page_size() noexcept {
  long v = ::sysconf(_SC_PAGESIZE);
  return v > 0 ? static_cast<uint64_t>(v) : uint64_t{4096};
}

/// Exact payload size of each request.
size_t payload_size(BackendReq r) noexcept {
  switch (r) {
    case BackendReq::iotlb_msg: return sizeof(wire::Iotlb);
    case BackendReq::config_change_msg: return 0;
    case BackendReq::vring_host_notifier_msg: return sizeof(wire::VringArea);
    case BackendReq::vring_call:
    case BackendReq::vring_err: return sizeof(wire::VringState);
    case BackendReq::shared_object_add:
    case BackendReq::shared_object_remove:
    case BackendReq::shared_object_lookup: return sizeof(wire::SharedObject);
    case BackendReq::shmem_map:
    case BackendReq::shmem_unmap: return sizeof(wire::ShmemMap);
  }
  return 0;
}

/// The protocol feature gating each request; -1: never negotiated by vufront.
int gate(BackendReq r) noexcept {
  switch (r) {
    case BackendReq::iotlb_msg: return -1;  // needs ACCESS_PLATFORM (an IOMMU)
    case BackendReq::config_change_msg: return protocol_feature::config;
    case BackendReq::vring_host_notifier_msg: return protocol_feature::host_notifier;
    case BackendReq::vring_call:
    case BackendReq::vring_err: return protocol_feature::inband_notifications;
    case BackendReq::shared_object_add:
    case BackendReq::shared_object_remove:
    case BackendReq::shared_object_lookup: return protocol_feature::shared_object;
    case BackendReq::shmem_map:
    case BackendReq::shmem_unmap: return protocol_feature::shmem;
  }
  return -1;
}

/// Decodes the exact-size payload of `r` (the size was checked before).
template <class T>
T decode(const std::vector<uint8_t>& body) {
  // BOUNDS: the caller proved body.size() == sizeof(T); decode_exact re-checks.
  auto v = wire::decode_exact<T>(body.data(), body.size());
  return v ? *v : T{};
}

Result<void> check_shmem(BackendReq type, const wire::ShmemMap& map, const std::string& what) {
  if (type == BackendReq::shmem_map && (map.flags & ~wire::shmem_map_flag_rw) != 0)
    return make_error(errc::invalid_payload, what, "unknown flag bits " + hex(map.flags));
  if (map.len == 0)
    return make_error(errc::invalid_payload, what, "len is 0");
  if (map.shm_offset + map.len < map.shm_offset)
    return make_error(errc::invalid_payload, what,
                      "shm_offset " + hex(map.shm_offset) + " + len " + hex(map.len) +
                          " overflows");
  if (type == BackendReq::shmem_map && map.fd_offset + map.len < map.fd_offset)
    return make_error(errc::invalid_payload, what,
                      "fd_offset " + hex(map.fd_offset) + " + len " + hex(map.len) +
                          " overflows");
  return ok();
}

Result<void> check_area(const wire::VringArea& area, const std::string& what) {
  if ((area.u64 & ~(wire::vring_index_mask | wire::vring_nofd_mask)) != 0)
    return make_error(errc::invalid_payload, what,
                      "unknown bits in the index word " + hex(area.u64));
  if ((area.u64 & wire::vring_nofd_mask) != 0)
    return ok();  // unregister: size and offset carry nothing
  const uint64_t page = host_page_size();
  if (area.size != page)
    return make_error(errc::invalid_payload, what,
                      "size " + hex(area.size) + " is not the page size " + hex(page));
  if (area.offset % page != 0)
    return make_error(errc::invalid_payload, what,
                      "offset " + hex(area.offset) + " is not page-aligned");
  if (area.offset + area.size < area.offset)
    return make_error(errc::invalid_payload, what, "offset " + hex(area.offset) + " overflows");
  return ok();
}

}  // namespace

Result<BackendRequest> decode_backend_request(Message&& m, uint64_t acked_protocol_features) {
  // OWNERSHIP: take the message (and its fds) so every error path closes them here.
  Message msg = std::move(m);
  const wire::Header& h = msg.header;
  const std::string what = backend_req_name(h.request);

  if ((h.flags & flag_version_mask) != flag_version || (h.flags & flag_reply) != 0 ||
      (h.flags & flag_reserved_mask) != 0)
    return make_error(errc::bad_flags, what,
                      "flags " + hex(h.flags) + " (want version 1, no REPLY, only NEED_REPLY)");

  const auto type = backend_req_from_code(h.request);
  if (!type)
    return make_error(errc::unknown_request, what, "unknown back-end request code " +
                                                       std::to_string(h.request));

  const size_t want = payload_size(*type);
  if (msg.body.size() != want || h.size != msg.body.size())
    return make_error(errc::bad_size, what,
                      "body is " + std::to_string(msg.body.size()) + " bytes, expected " +
                          std::to_string(want));

  BackendRequest out;
  out.type = *type;
  out.flags = h.flags;
  out.need_reply =
      (h.flags & flag_need_reply) != 0 || *type == BackendReq::shared_object_lookup;

  size_t want_fds = 0;
  switch (*type) {
    case BackendReq::iotlb_msg: out.payload = decode<wire::Iotlb>(msg.body); break;
    case BackendReq::config_change_msg: break;
    case BackendReq::vring_host_notifier_msg: {
      auto area = decode<wire::VringArea>(msg.body);
      want_fds = (area.u64 & wire::vring_nofd_mask) != 0 ? 0 : 1;
      out.payload = area;
      break;
    }
    case BackendReq::vring_call:
    case BackendReq::vring_err: out.payload = decode<wire::VringState>(msg.body); break;
    case BackendReq::shared_object_add:
    case BackendReq::shared_object_remove:
    case BackendReq::shared_object_lookup:
      out.payload = decode<wire::SharedObject>(msg.body);
      break;
    case BackendReq::shmem_map:
      want_fds = 1;
      out.payload = decode<wire::ShmemMap>(msg.body);
      break;
    case BackendReq::shmem_unmap: out.payload = decode<wire::ShmemMap>(msg.body); break;
  }
  if (msg.fds.size() != want_fds)
    return make_error(errc::bad_fds, what,
                      "carries " + std::to_string(msg.fds.size()) + " fds, expected " +
                          std::to_string(want_fds));

  if (!has_bit(acked_protocol_features, protocol_feature::backend_req))
    return make_error(errc::not_negotiated, what, "BACKEND_REQ was not negotiated");
  const int g = gate(*type);
  if (g < 0)
    return make_error(errc::not_negotiated, what,
                      "needs ACCESS_PLATFORM (IOMMU), which vufront never negotiates");
  if (!has_bit(acked_protocol_features, static_cast<unsigned>(g)))
    return make_error(errc::not_negotiated, what,
                      "needs protocol feature " +
                          protocol_feature_name(static_cast<unsigned>(g)) +
                          ", which was not negotiated");

  Result<void> valid = ok();
  if (auto* area = std::get_if<wire::VringArea>(&out.payload))
    valid = check_area(*area, what);
  else if (auto* st = std::get_if<wire::VringState>(&out.payload); st && st->index > 0xff)
    valid = make_error(errc::invalid_payload, what,
                       "ring index " + std::to_string(st->index) + " is above 255");
  else if (auto* map = std::get_if<wire::ShmemMap>(&out.payload))
    valid = check_shmem(*type, *map, what);
  if (!valid)
    return std::move(valid).error();

  out.fds = std::move(msg.fds);
  return out;
}

std::vector<uint8_t> encode_backend_reply(uint32_t request_code, uint64_t status) {
  const wire::Header h{request_code, flag_version | flag_reply,
                       static_cast<uint32_t>(sizeof(wire::U64))};
  const wire::U64 body{status};
  std::vector<uint8_t> out(sizeof h + sizeof body);
  // BOUNDS: out holds exactly sizeof h + sizeof body bytes.
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, &body, sizeof body);
  return out;
}

}  // namespace vufront
