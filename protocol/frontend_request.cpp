#include "protocol/frontend_request.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

namespace vufront {

namespace {

using std::to_string;

Error fail(errc code, FrontendReq req, std::string detail) {
  return make_error(code, name(req), std::move(detail));
}

/// A payload whose size depends on its contents (checked separately).
constexpr size_t variable_size = ~size_t{0};

/// Exact payload size of each request, or variable_size.
size_t payload_size(FrontendReq r) noexcept {
  using R = FrontendReq;
  switch (r) {
    case R::set_features:
    case R::set_protocol_features:
    case R::send_rarp:
    case R::net_set_mtu:
    case R::close_crypto_session:
    case R::set_status:
    case R::set_vring_kick:
    case R::set_vring_call:
    case R::set_vring_err: return sizeof(wire::U64);
    case R::set_vring_num:
    case R::set_vring_base:
    case R::get_vring_base:
    case R::set_vring_enable:
    case R::set_vring_endian:
    case R::vring_kick:
    case R::get_vring_base_skip_drain: return sizeof(wire::VringState);
    case R::set_vring_addr: return sizeof(wire::VringAddr);
    case R::set_log_base: return sizeof(wire::Log);
    case R::iotlb_msg: return sizeof(wire::Iotlb);
    case R::get_inflight_fd:
    case R::set_inflight_fd: return sizeof(wire::InflightDesc);
    case R::add_mem_reg:
    case R::rem_mem_reg: return sizeof(wire::SingleMemoryRegion);
    case R::get_shared_object: return sizeof(wire::SharedObject);
    case R::set_device_state_fd: return sizeof(wire::DeviceStateTransfer);
    case R::set_mem_table:
    case R::get_config:
    case R::set_config:
    case R::create_crypto_session: return variable_size;
    default: return 0;  // the requests without a payload
  }
}

/// Fds a request carries when that does not depend on its payload.
size_t fixed_fds(FrontendReq r) noexcept {
  using R = FrontendReq;
  switch (r) {
    case R::set_log_base:
    case R::set_log_fd:
    case R::set_backend_req_fd:
    case R::set_inflight_fd:
    case R::gpu_set_socket:
    case R::add_mem_reg:
    case R::set_device_state_fd: return 1;
    default: return 0;
  }
}

/// What a request needs negotiated before it may be sent.
struct Gate {
  enum Kind { none, protocol, offered_feature, acked_feature, never } kind = none;
  unsigned bit = 0;
};

Gate gate(FrontendReq r) noexcept {
  using R = FrontendReq;
  namespace pf = protocol_feature;
  const auto proto = [](unsigned b) { return Gate{Gate::protocol, b}; };
  switch (r) {
    case R::set_log_base: return proto(pf::log_shmfd);
    case R::get_protocol_features:
    case R::set_protocol_features: return {Gate::offered_feature, feature::protocol_features};
    case R::get_queue_num: return proto(pf::mq);
    case R::set_vring_enable: return {Gate::acked_feature, feature::protocol_features};
    case R::send_rarp: return proto(pf::rarp);
    case R::net_set_mtu: return proto(pf::mtu);
    case R::set_backend_req_fd: return proto(pf::backend_req);
    case R::iotlb_msg: return {Gate::acked_feature, feature::access_platform};
    case R::set_vring_endian: return proto(pf::cross_endian);
    case R::get_config:
    case R::set_config: return proto(pf::config);
    case R::create_crypto_session: return {Gate::never, pf::crypto_session};
    case R::close_crypto_session: return proto(pf::crypto_session);
    case R::postcopy_advise:
    case R::postcopy_listen:
    case R::postcopy_end: return proto(pf::pagefault);
    case R::get_inflight_fd:
    case R::set_inflight_fd: return proto(pf::inflight_shmfd);
    case R::reset_device: return proto(pf::reset_device);
    case R::vring_kick: return proto(pf::inband_notifications);
    case R::get_max_mem_slots:
    case R::add_mem_reg:
    case R::rem_mem_reg: return proto(pf::configure_mem_slots);
    case R::set_status:
    case R::get_status: return proto(pf::status);
    case R::get_shared_object: return proto(pf::shared_object);
    case R::set_device_state_fd:
    case R::check_device_state: return proto(pf::device_state);
    case R::get_shmem_config: return proto(pf::shmem);
    case R::get_vring_base_skip_drain: return proto(pf::get_vring_base_skip_drain);
    default: return {};
  }
}

Result<void> check_gate(FrontendReq r, const Negotiated& ctx) {
  const Gate g = gate(r);
  switch (g.kind) {
    case Gate::none: break;
    case Gate::protocol:
      if (!has_bit(ctx.acked_protocol_features, g.bit))
        return fail(errc::not_negotiated, r,
                    "needs protocol feature " + protocol_feature_name(g.bit) +
                        ", which was not negotiated");
      break;
    case Gate::offered_feature:
      if (!has_bit(ctx.offered_features, g.bit))
        return fail(errc::not_negotiated, r,
                    "needs feature " + feature_name(g.bit, DeviceKind::generic) +
                        " offered, which it was not");
      break;
    case Gate::acked_feature:
      if (!has_bit(ctx.acked_features, g.bit))
        return fail(errc::not_negotiated, r,
                    "needs feature " + feature_name(g.bit, DeviceKind::generic) +
                        " acked with SET_FEATURES, which it was not");
      break;
    case Gate::never:
      return fail(errc::not_negotiated, r, "its payload is not supported by this codec");
  }
  if (r == FrontendReq::postcopy_advise &&
      has_bit(ctx.acked_protocol_features, protocol_feature::configure_mem_slots))
    return fail(errc::not_negotiated, r, "postcopy is not allowed with CONFIGURE_MEM_SLOTS");
  return ok();
}

Result<void> check_flags(const wire::Header& h, const std::string& what) {
  if ((h.flags & flag_version_mask) != flag_version || (h.flags & flag_reply) != 0 ||
      (h.flags & flag_reserved_mask) != 0)
    return make_error(errc::bad_flags, what,
                      "flags " + hex(h.flags) + " (want version 1, no REPLY, only NEED_REPLY)");
  return ok();
}

Error size_error(FrontendReq r, size_t got, uint64_t want) {
  return fail(errc::bad_size, r,
              "payload is " + to_string(got) + " bytes, expected " + to_string(want));
}

/// Copies a wire struct from `body` at `offset`; the caller proved the size.
template <class T>
T take(const std::vector<uint8_t>& body, size_t offset = 0) {
  T out{};
  if (body.size() >= offset + sizeof(T))
    std::memcpy(&out, body.data() + offset, sizeof(T));  // BOUNDS: checked on the line above
  return out;
}

/// A region's ranges must be non-empty and must not wrap.
Result<void> check_region(FrontendReq r, const wire::MemoryRegion& m, const std::string& which) {
  if (m.memory_size == 0)
    return fail(errc::invalid_payload, r, which + "memory_size is 0");
  const uint64_t last = m.memory_size - 1;
  if (m.guest_phys_addr + last < m.guest_phys_addr || m.user_addr + last < m.user_addr ||
      m.mmap_offset + last < m.mmap_offset)
    return fail(errc::invalid_payload, r,
                which + "range of " + hex(m.memory_size) + " bytes wraps (gpa " +
                    hex(m.guest_phys_addr) + ", user " + hex(m.user_addr) + ", mmap_offset " +
                    hex(m.mmap_offset) + ")");
  return ok();
}

/// SET_MEM_TABLE: header, region count, exact size; the regions.
Result<FrontendPayload> decode_mem_table(const std::vector<uint8_t>& body, const Negotiated& ctx,
                                         size_t& want_fds) {
  constexpr auto r = FrontendReq::set_mem_table;
  const auto h = wire::decode_prefix<wire::MemoryTableHeader>(body.data(), body.size());
  if (!h)
    return size_error(r, body.size(), sizeof(wire::MemoryTableHeader));
  const uint32_t max = std::min(ctx.max_mem_slots, wire::max_mem_table_regions);
  if (h->nregions == 0 || h->nregions > max)
    return fail(errc::invalid_payload, r,
                to_string(h->nregions) + " regions (1.." + to_string(max) + " allowed)");
  const size_t want = sizeof *h + size_t{h->nregions} * sizeof(wire::MemoryRegion);
  if (body.size() != want)
    return size_error(r, body.size(), want);
  MemoryTable t;
  t.regions.resize(h->nregions);
  // BOUNDS: the body is exactly the header + nregions regions (checked above).
  std::memcpy(t.regions.data(), body.data() + sizeof *h, want - sizeof *h);
  want_fds = h->nregions;
  return FrontendPayload{std::move(t)};
}

/// GET/SET_CONFIG: header, then exactly `size` bytes of data.
Result<FrontendPayload> decode_config(FrontendReq r, const std::vector<uint8_t>& body) {
  const auto h = wire::decode_prefix<wire::ConfigHeader>(body.data(), body.size());
  if (!h)
    return size_error(r, body.size(), sizeof(wire::ConfigHeader));
  const uint64_t want = sizeof *h + uint64_t{h->size};
  if (body.size() != want)
    return size_error(r, body.size(), want);
  ConfigRequest c;
  c.header = *h;
  // BOUNDS: the body is exactly header + size bytes (checked above).
  c.data.assign(body.begin() + sizeof *h, body.end());
  return FrontendPayload{std::move(c)};
}

/// Size and fd count of `r`, and its payload as a typed value.
Result<FrontendPayload> decode_payload(FrontendReq r, const std::vector<uint8_t>& body,
                                       size_t nfds, const Negotiated& ctx) {
  using R = FrontendReq;
  size_t want_fds = fixed_fds(r);
  Result<FrontendPayload> p = FrontendPayload{};
  const size_t want = payload_size(r);
  if (want != variable_size && body.size() != want)
    return size_error(r, body.size(), want);
  switch (r) {
    case R::set_mem_table: p = decode_mem_table(body, ctx, want_fds); break;
    case R::get_config:
    case R::set_config: p = decode_config(r, body); break;
    case R::set_vring_kick:
    case R::set_vring_call:
    case R::set_vring_err: {
      const uint64_t word = take<wire::U64>(body).value;
      if ((word & wire::vring_nofd_mask) == 0)
        want_fds = 1;
      p = FrontendPayload{VringFd{static_cast<uint32_t>(word & wire::vring_index_mask),
                                  want_fds == 1}};
      break;
    }
    case R::set_vring_num:
    case R::set_vring_base:
    case R::get_vring_base:
    case R::set_vring_enable:
    case R::set_vring_endian:
    case R::vring_kick:
    case R::get_vring_base_skip_drain: p = FrontendPayload{take<wire::VringState>(body)}; break;
    case R::set_features:
    case R::set_protocol_features:
    case R::send_rarp:
    case R::net_set_mtu:
    case R::close_crypto_session:
    case R::set_status: p = FrontendPayload{take<wire::U64>(body)}; break;
    case R::rem_mem_reg:
      want_fds = nfds <= 1 ? nfds : 0;  // one fd is tolerated, and closed by the caller
      p = FrontendPayload{take<wire::SingleMemoryRegion>(body).region};
      break;
    case R::add_mem_reg: p = FrontendPayload{take<wire::SingleMemoryRegion>(body).region}; break;
    case R::set_vring_addr: p = FrontendPayload{take<wire::VringAddr>(body)}; break;
    case R::set_log_base: p = FrontendPayload{take<wire::Log>(body)}; break;
    case R::iotlb_msg: p = FrontendPayload{take<wire::Iotlb>(body)}; break;
    case R::get_inflight_fd:
    case R::set_inflight_fd: p = FrontendPayload{take<wire::InflightDesc>(body)}; break;
    case R::get_shared_object: p = FrontendPayload{take<wire::SharedObject>(body)}; break;
    case R::set_device_state_fd: p = FrontendPayload{take<wire::DeviceStateTransfer>(body)}; break;
    default: break;  // no payload (CREATE_CRYPTO_SESSION is refused by its gate)
  }
  if (!p)
    return p;
  if (nfds != want_fds)
    return fail(errc::bad_fds, r,
                "carries " + to_string(nfds) + " fds, expected " + to_string(want_fds));
  return p;
}

/// The ring index of a per-ring request, if `r` is one.
std::optional<uint32_t> ring_index(const FrontendPayload& p) {
  if (const auto* s = std::get_if<wire::VringState>(&p))
    return s->index;
  if (const auto* f = std::get_if<VringFd>(&p))
    return f->index;
  if (const auto* a = std::get_if<wire::VringAddr>(&p))
    return a->index;
  return std::nullopt;
}

/// The values of the per-ring requests.
Result<void> check_ring(FrontendReq r, const FrontendPayload& p, const Negotiated& ctx,
                        uint64_t word) {
  using R = FrontendReq;
  const auto index = ring_index(p);
  if (!index)
    return ok();
  if (word & ~(wire::vring_index_mask | wire::vring_nofd_mask))
    return fail(errc::invalid_payload, r, "reserved bits set in the fd word " + hex(word));
  if (*index >= ctx.num_queues)
    return fail(errc::invalid_payload, r,
                "vring " + to_string(*index) + " >= queue count " + to_string(ctx.num_queues));
  if (const auto* a = std::get_if<wire::VringAddr>(&p)) {
    if (a->flags & ~wire::vring_addr_flag_log)
      return fail(errc::invalid_payload, r, "unknown flag bits " + hex(a->flags));
    if ((a->flags & wire::vring_addr_flag_log) && !has_bit(ctx.acked_features, feature::log_all))
      return fail(errc::invalid_payload, r, "LOG flag without LOG_ALL");
    return ok();
  }
  const auto* s = std::get_if<wire::VringState>(&p);
  if (s == nullptr)
    return ok();
  switch (r) {
    case R::set_vring_num:
      if (s->num == 0 || s->num > frontend_max_queue_size)
        return fail(errc::invalid_payload, r,
                    "queue size " + to_string(s->num) + " (1.." +
                        to_string(frontend_max_queue_size) + " allowed)");
      break;
    case R::get_vring_base:
    case R::get_vring_base_skip_drain:
    case R::vring_kick:
      if (s->num != 0)
        return fail(errc::invalid_payload, r, "num must be 0, is " + to_string(s->num));
      break;
    case R::set_vring_enable:
    case R::set_vring_endian:
      if (s->num > 1)
        return fail(errc::invalid_payload, r, "num must be 0 or 1, is " + to_string(s->num));
      break;
    default: break;
  }
  return ok();
}

/// The values of every other request.
Result<void> check_values(FrontendReq r, const FrontendPayload& p, const Negotiated& ctx) {
  using R = FrontendReq;
  if (const auto* t = std::get_if<MemoryTable>(&p)) {
    for (size_t i = 0; i < t->regions.size(); ++i)
      if (auto c = check_region(r, t->regions[i], "region " + to_string(i) + ": "); !c)
        return c;
  } else if (const auto* m = std::get_if<wire::MemoryRegion>(&p)) {
    return check_region(r, *m, "");
  } else if (const auto* c = std::get_if<ConfigRequest>(&p)) {
    if (c->header.size > frontend_max_config_size)
      return fail(errc::invalid_payload, r,
                  "size " + to_string(c->header.size) + " is above " +
                      to_string(frontend_max_config_size));
    if (r == R::set_config && c->header.flags > 1)
      return fail(errc::invalid_payload, r, "flags " + hex(c->header.flags) + " (0 or 1 allowed)");
  } else if (const auto* u = std::get_if<wire::U64>(&p)) {
    if (r == R::set_features && (u->value & ~ctx.offered_features))
      return fail(errc::invalid_payload, r,
                  "acks features that were not offered: " + hex(u->value & ~ctx.offered_features));
    if (r == R::set_protocol_features && (u->value & ~ctx.offered_protocol_features))
      return fail(errc::invalid_payload, r,
                  "acks protocol features that were not offered: " +
                      hex(u->value & ~ctx.offered_protocol_features));
    if (r == R::set_status && u->value > 0xff)
      return fail(errc::invalid_payload, r, "status " + hex(u->value) + " is above 0xff");
  } else if (const auto* l = std::get_if<wire::Log>(&p)) {
    if (l->mmap_offset + l->mmap_size < l->mmap_offset)
      return fail(errc::invalid_payload, r, "mmap_offset + mmap_size wraps");
  } else if (const auto* d = std::get_if<wire::InflightDesc>(&p)) {
    if (r == R::get_inflight_fd && (d->num_queues == 0 || d->queue_size == 0))
      return fail(errc::invalid_payload, r, "num_queues and queue_size must be non-zero");
    if (r == R::set_inflight_fd && d->mmap_offset + d->mmap_size < d->mmap_offset)
      return fail(errc::invalid_payload, r, "mmap_offset + mmap_size wraps");
  } else if (const auto* st = std::get_if<wire::DeviceStateTransfer>(&p)) {
    if (st->direction > wire::device_state_load || st->phase != wire::device_state_phase_stopped)
      return fail(errc::invalid_payload, r,
                  "bad direction " + to_string(st->direction) + " or phase " +
                      to_string(st->phase));
  }
  return ok();
}

}  // namespace

bool has_native_reply(FrontendReq req, uint64_t acked_protocol_features) noexcept {
  using R = FrontendReq;
  switch (req) {
    case R::get_features:
    case R::get_protocol_features:
    case R::get_queue_num:
    case R::get_vring_base:
    case R::iotlb_msg:
    case R::get_config:
    case R::create_crypto_session:
    case R::postcopy_advise:
    case R::postcopy_end:
    case R::get_inflight_fd:
    case R::get_max_mem_slots:
    case R::get_status:
    case R::get_shared_object:
    case R::set_device_state_fd:
    case R::check_device_state:
    case R::get_shmem_config:
    case R::get_vring_base_skip_drain: return true;
    case R::set_log_base: return has_bit(acked_protocol_features, protocol_feature::log_shmfd);
    default: return false;
  }
}

Result<FrontendRequest> decode_frontend_request(Message&& m, const Negotiated& ctx) {
  // OWNERSHIP: take the message (and its fds) so every error path closes them here.
  Message msg = std::move(m);
  const wire::Header& h = msg.header;
  if (auto f = check_flags(h, frontend_req_name(h.request)); !f)
    return std::move(f).error();
  const auto req = frontend_req_from_code(h.request);
  if (!req)
    return make_error(errc::unknown_request, frontend_req_name(h.request),
                      "unknown front-end request code " + to_string(h.request));
  auto payload = decode_payload(*req, msg.body, msg.fds.size(), ctx);
  if (!payload)
    return std::move(payload).error();
  if (auto g = check_gate(*req, ctx); !g)
    return std::move(g).error();
  const bool fd_word = std::holds_alternative<VringFd>(*payload);
  const uint64_t word = fd_word ? take<wire::U64>(msg.body).value : 0;
  if (auto c = check_ring(*req, *payload, ctx, word); !c)
    return std::move(c).error();
  if (auto c = check_values(*req, *payload, ctx); !c)
    return std::move(c).error();

  FrontendRequest out;
  out.req = *req;
  out.flags = h.flags;
  out.need_reply = (h.flags & flag_need_reply) != 0 &&
                   has_bit(ctx.acked_protocol_features, protocol_feature::reply_ack) &&
                   !has_native_reply(*req, ctx.acked_protocol_features);
  out.payload = std::move(payload).value();
  if (*req == FrontendReq::rem_mem_reg)
    msg.fds.clear();  // the one fd REM_MEM_REG may carry is closed, never handed on
  out.fds = std::move(msg.fds);
  return out;
}

Result<FrontendRequest> decode_frontend_request(const wire::Header& header,
                                                std::vector<uint8_t> body,
                                                std::vector<UniqueFd> fds,
                                                const Negotiated& ctx) {
  Message m;
  m.header = header;
  m.header.size = static_cast<uint32_t>(body.size());
  m.body = std::move(body);
  m.fds = std::move(fds);
  return decode_frontend_request(std::move(m), ctx);
}

// ---- replies ---------------------------------------------------------------

using wire::bytes_of;

std::vector<uint8_t> FrontendReply::bytes() const {
  const wire::Header h{static_cast<uint32_t>(req), flags(), static_cast<uint32_t>(body.size())};
  std::vector<uint8_t> out(sizeof h + body.size());
  // BOUNDS: `out` holds the header and the body.
  std::memcpy(out.data(), &h, sizeof h);
  if (!body.empty())
    std::memcpy(out.data() + sizeof h, body.data(), body.size());
  return out;
}

FrontendReply encode_u64_reply(FrontendReq req, uint64_t value) {
  return FrontendReply{req, bytes_of(wire::U64{value}), -1};
}

FrontendReply encode_ack(FrontendReq req, uint64_t status) { return encode_u64_reply(req, status); }

FrontendReply encode_mem_slots_reply(uint64_t slots) {
  return encode_u64_reply(FrontendReq::get_max_mem_slots, slots);
}

FrontendReply encode_vring_base_reply(uint32_t index, uint32_t base, bool skip_drain) {
  const FrontendReq req =
      skip_drain ? FrontendReq::get_vring_base_skip_drain : FrontendReq::get_vring_base;
  return FrontendReply{req, bytes_of(wire::VringState{index, base}), -1};
}

Result<FrontendReply> encode_config_reply(const wire::ConfigHeader& request,
                                          const std::vector<uint8_t>& data) {
  constexpr auto req = FrontendReq::get_config;
  if (data.size() != request.size)
    return make_error(errc::invalid_argument, name(req),
                      "reply data is " + to_string(data.size()) + " bytes, the request asked for " +
                          to_string(request.size));
  FrontendReply out{req, bytes_of(request), -1};
  out.body.insert(out.body.end(), data.begin(), data.end());
  return out;
}

FrontendReply encode_config_refusal() { return FrontendReply{FrontendReq::get_config, {}, -1}; }

FrontendReply encode_inflight_reply(const wire::InflightDesc& desc, int fd) {
  return FrontendReply{FrontendReq::get_inflight_fd, bytes_of(desc), fd};
}

FrontendReply encode_shmem_config_reply(const wire::ShmemConfig& config) {
  return FrontendReply{FrontendReq::get_shmem_config, bytes_of(config), -1};
}

FrontendReply encode_device_state_reply(uint8_t error, int fd) {
  const bool with_fd = fd >= 0 && error == 0;
  const uint64_t v = uint64_t{error} | (with_fd ? 0 : wire::device_state_nofd);
  return FrontendReply{FrontendReq::set_device_state_fd, bytes_of(wire::U64{v}),
                       with_fd ? fd : -1};
}

Result<void> send_reply(Connection& conn, const FrontendReply& reply, Deadline deadline) {
  return conn.send(static_cast<uint32_t>(reply.req), FrontendReply::flags(), reply.body.data(),
                   reply.body.size(), reply.fd >= 0 ? &reply.fd : nullptr, reply.fd >= 0 ? 1 : 0,
                   deadline, std::string("reply to ") + name(reply.req));
}

}  // namespace vufront
