#include "protocol/reply.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace vufront::reply {

namespace {

std::string code_and_name(uint32_t code) {
  return frontend_req_name(code) + " (" + std::to_string(code) + ")";
}

Error err(errc code, FrontendReq req, std::string detail) {
  return make_error(code, name(req), std::move(detail));
}

/// Header, body size == `size` exactly, and at most `fds` fds.
Result<void> check_frame(FrontendReq pending, const Message& m, size_t size, size_t fds) {
  if (auto r = check_header(pending, m.header); !r)
    return r;
  if (m.fds.size() > fds)
    return err(errc::bad_fds, pending,
               "reply carries " + std::to_string(m.fds.size()) + " fd(s), at most " +
                   std::to_string(fds) + " allowed");
  if (m.body.size() != size)
    return err(errc::bad_size, pending,
               "reply body is " + std::to_string(m.body.size()) + " bytes, expected " +
                   std::to_string(size));
  return ok();
}

}  // namespace

size_t max_body(FrontendReq req, uint32_t config_size) noexcept {
  switch (req) {
    case FrontendReq::get_config:
      return sizeof(wire::ConfigHeader) + std::min(config_size, wire::max_config_size);
    case FrontendReq::get_inflight_fd:
      return sizeof(wire::InflightDesc);
    case FrontendReq::get_shmem_config:
      return sizeof(wire::ShmemConfig);
    case FrontendReq::get_vring_base:
    case FrontendReq::get_vring_base_skip_drain:
      return sizeof(wire::VringState);
    case FrontendReq::set_log_base:
      return sizeof(wire::Log);  // rust-vmm echoes the request (parse_log_base)
    default:
      return sizeof(wire::U64);  // u64 replies and acks
  }
}

size_t max_fds(FrontendReq req) noexcept {
  switch (req) {
    case FrontendReq::get_inflight_fd:
    case FrontendReq::set_device_state_fd:
      return 1;
    default:
      return 0;
  }
}

Result<void> check_header(FrontendReq pending, const wire::Header& h) {
  const auto expected = static_cast<uint32_t>(pending);
  if (h.request != expected)
    return err(errc::unexpected_reply, pending,
               "reply is for " + code_and_name(h.request) + ", expected " +
                   code_and_name(expected));
  if (h.flags == (flag_version | flag_reply))
    return ok();
  std::string what;
  if ((h.flags & flag_version_mask) != flag_version)
    what = "version " + std::to_string(h.flags & flag_version_mask) + ", expected 1";
  else if (!(h.flags & flag_reply))
    what = "REPLY bit missing";
  else if (h.flags & flag_need_reply)
    what = "NEED_REPLY set on a reply";
  else
    what = "reserved bits " + hex(h.flags & flag_reserved_mask) + " set";
  return err(errc::bad_flags, pending, "reply flags " + hex(h.flags) + ": " + what);
}

Result<uint64_t> parse_u64(FrontendReq pending, const Message& m) {
  if (auto r = check_frame(pending, m, sizeof(wire::U64), 0); !r)
    return std::move(r).error();
  // BOUNDS: check_frame proved the body is exactly 8 bytes.
  auto v = wire::decode_exact<wire::U64>(m.body.data(), m.body.size());
  return v->value;
}

Result<void> parse_log_base(const Message& m) {
  constexpr auto req = FrontendReq::set_log_base;
  // libvhost-user replies with a u64 (mmap_size), rust-vmm echoes the 16-byte
  // Log; QEMU reads either. The value means nothing: only the frame is checked.
  if (m.body.size() != sizeof(wire::U64) && m.body.size() != sizeof(wire::Log)) {
    if (auto r = check_header(req, m.header); !r)
      return r;
    return err(errc::bad_size, req,
               "reply body is " + std::to_string(m.body.size()) +
                   " bytes, expected 8 (a u64) or 16 (the Log echoed)");
  }
  return check_frame(req, m, m.body.size(), 0);
}

Result<void> parse_ack(FrontendReq pending, const Message& m) {
  auto v = parse_u64(pending, m);
  if (!v)
    return std::move(v).error();
  if (*v != 0)
    return err(errc::backend_failure, pending, "back-end acked with failure status " + hex(*v));
  return ok();
}

Result<uint64_t> parse_queue_num(const Message& m) {
  auto v = parse_u64(FrontendReq::get_queue_num, m);
  if (v && (*v == 0 || *v > 0x8000))
    return err(errc::invalid_payload, FrontendReq::get_queue_num,
               "queue count " + std::to_string(*v) + " outside 1..32768");
  return v;
}

Result<uint64_t> parse_max_mem_slots(const Message& m) {
  auto v = parse_u64(FrontendReq::get_max_mem_slots, m);
  if (v && (*v == 0 || *v > 512))
    return err(errc::invalid_payload, FrontendReq::get_max_mem_slots,
               "memory slot count " + std::to_string(*v) + " outside 1..512");
  return v;
}

Result<uint8_t> parse_status(const Message& m) {
  auto v = parse_u64(FrontendReq::get_status, m);
  if (!v)
    return std::move(v).error();
  if (*v > 0xff)
    return err(errc::invalid_payload, FrontendReq::get_status,
               "status " + hex(*v) + " does not fit a byte");
  return static_cast<uint8_t>(*v);
}

Result<uint32_t> parse_vring_base(const Message& m, uint32_t index, bool packed) {
  constexpr auto req = FrontendReq::get_vring_base;
  if (auto r = check_frame(req, m, sizeof(wire::VringState), 0); !r)
    return std::move(r).error();
  // BOUNDS: check_frame proved the body is exactly sizeof(VringState).
  auto s = *wire::decode_exact<wire::VringState>(m.body.data(), m.body.size());
  if (s.index != index)
    return err(errc::invalid_payload, req,
               "reply is for ring " + std::to_string(s.index) + ", expected ring " +
                   std::to_string(index));
  if (!packed && s.num > 0xffff)
    return err(errc::invalid_payload, req,
               "base " + hex(s.num) + " too big for a split ring (max 0xffff)");
  return s.num;
}

Result<std::vector<uint8_t>> parse_config(const Message& m, uint32_t offset, uint32_t size) {
  constexpr auto req = FrontendReq::get_config;
  if (auto r = check_header(req, m.header); !r)
    return std::move(r).error();
  if (!m.fds.empty())
    return err(errc::bad_fds, req,
               "reply carries " + std::to_string(m.fds.size()) + " fd(s), none allowed");
  if (m.body.empty())
    return err(errc::backend_failure, req, "back-end refused (empty reply)");
  constexpr size_t hsize = sizeof(wire::ConfigHeader);
  // BOUNDS: decode_prefix checks the body holds at least the 12-byte header.
  auto h = wire::decode_prefix<wire::ConfigHeader>(m.body.data(), m.body.size());
  if (!h)
    return err(errc::bad_size, req,
               "reply body is " + std::to_string(m.body.size()) + " bytes, expected " +
                   std::to_string(hsize + size));
  if (h->size == 0 && m.body.size() == hsize)
    return err(errc::backend_failure, req, "back-end refused (config size 0)");
  if (h->offset != offset)
    return err(errc::invalid_payload, req,
               "reply offset " + std::to_string(h->offset) + ", expected " +
                   std::to_string(offset));
  if (h->size != size)
    return err(errc::invalid_payload, req,
               "reply size " + std::to_string(h->size) + ", expected " + std::to_string(size));
  if (m.body.size() != hsize + size)
    return err(errc::bad_size, req,
               "reply body is " + std::to_string(m.body.size()) + " bytes, expected " +
                   std::to_string(hsize + size));
  return std::vector<uint8_t>(m.body.begin() + hsize, m.body.end());
}

Result<InflightRegion> parse_inflight(Message& m, uint16_t num_queues, uint16_t queue_size) {
  constexpr auto req = FrontendReq::get_inflight_fd;
  if (auto r = check_frame(req, m, sizeof(wire::InflightDesc), 1); !r)
    return std::move(r).error();
  InflightRegion out;
  // BOUNDS: check_frame proved the body is exactly sizeof(InflightDesc).
  out.desc = *wire::decode_exact<wire::InflightDesc>(m.body.data(), m.body.size());
  if (out.desc.mmap_size == 0) {
    // Declined: nothing else matters (QEMU proceeds without inflight tracking).
    if (!m.fds.empty())
      return err(errc::bad_fds, req, "declined reply (mmap_size 0) carries an fd");
    return out;
  }
  if (m.fds.size() != 1)
    return err(errc::bad_fds, req,
               "reply with mmap_size " + std::to_string(out.desc.mmap_size) +
                   " carries no fd, expected 1");
  if (out.desc.num_queues != num_queues || out.desc.queue_size != queue_size)
    return err(errc::invalid_payload, req,
               "reply describes " + std::to_string(out.desc.num_queues) + " queues of " +
                   std::to_string(out.desc.queue_size) + ", expected " +
                   std::to_string(num_queues) + " of " + std::to_string(queue_size));
  if (out.desc.mmap_offset + out.desc.mmap_size < out.desc.mmap_offset)
    return err(errc::invalid_payload, req,
               "mmap_offset " + hex(out.desc.mmap_offset) + " + mmap_size " +
                   hex(out.desc.mmap_size) + " overflows");
  // OWNERSHIP: the fd moves from the message to the caller's InflightRegion.
  out.fd = std::move(m.fds[0]);
  m.fds.clear();
  return out;
}

Result<wire::ShmemConfig> parse_shmem_config(const Message& m) {
  constexpr auto req = FrontendReq::get_shmem_config;
  if (auto r = check_frame(req, m, sizeof(wire::ShmemConfig), 0); !r)
    return std::move(r).error();
  // BOUNDS: check_frame proved the body is exactly sizeof(ShmemConfig).
  auto c = *wire::decode_exact<wire::ShmemConfig>(m.body.data(), m.body.size());
  auto used = static_cast<uint32_t>(
      std::count_if(std::begin(c.sizes), std::end(c.sizes), [](uint64_t s) { return s != 0; }));
  if (used != c.nregions)
    return err(errc::invalid_payload, req,
               "nregions is " + std::to_string(c.nregions) + " but " + std::to_string(used) +
                   " sizes are non-zero");
  return c;
}

Result<DeviceStateReply> parse_device_state(Message& m) {
  constexpr auto req = FrontendReq::set_device_state_fd;
  if (auto r = check_frame(req, m, sizeof(wire::U64), 1); !r)
    return std::move(r).error();
  // BOUNDS: check_frame proved the body is exactly 8 bytes.
  uint64_t v = wire::decode_exact<wire::U64>(m.body.data(), m.body.size())->value;
  constexpr uint64_t known = wire::device_state_error_mask | wire::device_state_nofd;
  if (v & ~known)
    return err(errc::invalid_payload, req, "reply " + hex(v) + " has undefined bits set");
  if (uint64_t e = v & wire::device_state_error_mask; e != 0) {
    if (!m.fds.empty())
      return err(errc::bad_fds, req, "failure reply " + hex(v) + " carries an fd");
    return err(errc::backend_failure, req, "back-end failed with error " + std::to_string(e));
  }
  DeviceStateReply out;
  if (v & wire::device_state_nofd) {
    if (!m.fds.empty())
      return err(errc::bad_fds, req, "reply " + hex(v) + " says no fd but carries one");
    return out;
  }
  if (m.fds.size() != 1)
    return err(errc::bad_fds, req, "reply " + hex(v) + " promises the back-end's fd but carries none");
  // OWNERSHIP: the back-end's fd moves from the message to the caller.
  out.backend_fd = std::move(m.fds[0]);
  m.fds.clear();
  return out;
}

bool is_refusal(const Error& e) noexcept { return e.code == errc::backend_failure; }

}  // namespace vufront::reply
