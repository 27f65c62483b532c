#include "protocol/backend_client.hpp"

#include <cstring>
#include <string>

#include "protocol/frontend_request.hpp"
#include "protocol/reply.hpp"

namespace vufront {

namespace {

using wire::bytes_of;

std::vector<uint8_t> u64_body(uint64_t v) { return bytes_of(wire::U64{v}); }

Error invalid(FrontendReq req, std::string detail) {
  return make_error(errc::invalid_argument, name(req), std::move(detail));
}

Result<void> check_fd(FrontendReq req, int fd) {
  if (fd < 0)
    return invalid(req, "needs a valid fd, got " + std::to_string(fd));
  return ok();
}

}  // namespace

BackendClient::BackendClient(Connection conn, Timeouts timeouts)
    : conn_(std::move(conn)), timeouts_(timeouts) {}

Result<BackendClient> BackendClient::connect(const std::string& path,
                                             std::chrono::milliseconds timeout,
                                             Timeouts timeouts, const std::atomic<bool>* stop,
                                             ConnectWait wait) {
  auto c = Connection::connect(path, deadline_in(timeout), stop, wait);
  if (!c)
    return std::move(c).error();
  return BackendClient(std::move(c).value(), timeouts);
}

// ---- helpers ---------------------------------------------------------------

Result<void> BackendClient::require_protocol(FrontendReq req, unsigned b) const {
  if (has_bit(acked_protocol_, b))
    return ok();
  return make_error(errc::not_negotiated, name(req),
                    "needs protocol feature " + protocol_feature_name(b) + " (bit " +
                        std::to_string(b) + "), which was not acked");
}

Error BackendClient::reply_error(Error e) {
  if (!reply::is_refusal(e))
    conn_.mark_broken(e);
  return e;
}

Result<void> BackendClient::call_no_reply(FrontendReq req, const std::vector<uint8_t>& body,
                                          const std::vector<int>& fds, Deadline deadline) {
  const bool ack = has_bit(acked_protocol_, protocol_feature::reply_ack) &&
                   !has_native_reply(req, acked_protocol_);
  const std::string what = name(req);
  uint32_t flags = flag_version | (ack ? flag_need_reply : 0);
  if (auto r = conn_.send(static_cast<uint32_t>(req), flags, body.data(), body.size(),
                          fds.data(), fds.size(), deadline, what);
      !r)
    return r;
  if (!ack)
    return ok();
  auto m = conn_.receive(reply::max_body(req), 0, deadline, what);
  if (!m)
    return std::move(m).error();
  if (auto r = reply::parse_ack(req, *m); !r)
    return reply_error(std::move(r).error());
  return ok();
}

Result<Message> BackendClient::call_with_reply(FrontendReq req, const std::vector<uint8_t>& body,
                                               const std::vector<int>& fds, Deadline deadline,
                                               uint32_t config_size) {
  const std::string what = name(req);
  if (auto r = conn_.send(static_cast<uint32_t>(req), flag_version, body.data(), body.size(),
                          fds.data(), fds.size(), deadline, what);
      !r)
    return std::move(r).error();
  return conn_.receive(reply::max_body(req, config_size), reply::max_fds(req), deadline, what);
}

Result<uint64_t> BackendClient::call_u64(FrontendReq req, Deadline deadline) {
  auto m = call_with_reply(req, {}, {}, deadline);
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_u64(req, *m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

// ---- session and features --------------------------------------------------

Result<void> BackendClient::set_owner() {
  return call_no_reply(FrontendReq::set_owner, {}, {}, deadline_in(timeouts_.request));
}

Result<void> BackendClient::reset_owner() {
  return call_no_reply(FrontendReq::reset_owner, {}, {}, deadline_in(timeouts_.request));
}

Result<uint64_t> BackendClient::get_features() {
  auto v = call_u64(FrontendReq::get_features, deadline_in(timeouts_.request));
  if (v)
    backend_features_ = *v;
  return v;
}

Result<void> BackendClient::set_features(uint64_t features) {
  auto r = call_no_reply(FrontendReq::set_features, u64_body(features), {},
                         deadline_in(timeouts_.request));
  if (r)
    acked_features_ = features;
  return r;
}

Result<uint64_t> BackendClient::get_protocol_features() {
  constexpr auto req = FrontendReq::get_protocol_features;
  if (!has_bit(backend_features_, feature::protocol_features))
    return make_error(errc::not_negotiated, name(req),
                      "the back-end did not offer PROTOCOL_FEATURES (bit 30) in GET_FEATURES");
  return call_u64(req, deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_protocol_features(uint64_t features) {
  constexpr auto req = FrontendReq::set_protocol_features;
  if (!has_bit(backend_features_, feature::protocol_features))
    return make_error(errc::not_negotiated, name(req),
                      "the back-end did not offer PROTOCOL_FEATURES (bit 30) in GET_FEATURES");
  // The ack rule uses the set acked before this request (QEMU never waits here).
  auto r = call_no_reply(req, u64_body(features), {}, deadline_in(timeouts_.request));
  if (r)
    acked_protocol_ = features;
  return r;
}

Result<uint64_t> BackendClient::get_queue_num() {
  constexpr auto req = FrontendReq::get_queue_num;
  if (auto g = require_protocol(req, protocol_feature::mq); !g)
    return std::move(g).error();
  auto m = call_with_reply(req, {}, {}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_queue_num(*m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<uint64_t> BackendClient::get_max_mem_slots() {
  constexpr auto req = FrontendReq::get_max_mem_slots;
  if (auto g = require_protocol(req, protocol_feature::configure_mem_slots); !g)
    return std::move(g).error();
  auto m = call_with_reply(req, {}, {}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_max_mem_slots(*m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

// ---- memory -------------------------------------------------------------------

Result<void> BackendClient::set_mem_table(const std::vector<wire::MemoryRegion>& regions,
                                          const std::vector<int>& fds) {
  constexpr auto req = FrontendReq::set_mem_table;
  if (regions.empty() || regions.size() > wire::max_mem_table_regions)
    return invalid(req, "needs 1.." + std::to_string(wire::max_mem_table_regions) +
                            " regions, got " + std::to_string(regions.size()));
  if (fds.size() != regions.size())
    return invalid(req, std::to_string(regions.size()) + " regions but " +
                            std::to_string(fds.size()) + " fds");
  for (int fd : fds)
    if (auto r = check_fd(req, fd); !r)
      return r;
  auto body = bytes_of(wire::MemoryTableHeader{static_cast<uint32_t>(regions.size()), 0});
  for (const auto& region : regions) {
    auto b = bytes_of(region);
    body.insert(body.end(), b.begin(), b.end());
  }
  return call_no_reply(req, body, fds, deadline_in(timeouts_.request));
}

Result<void> BackendClient::add_mem_reg(const wire::MemoryRegion& region, int fd) {
  constexpr auto req = FrontendReq::add_mem_reg;
  if (auto g = require_protocol(req, protocol_feature::configure_mem_slots); !g)
    return g;
  if (auto r = check_fd(req, fd); !r)
    return r;
  return call_no_reply(req, bytes_of(wire::SingleMemoryRegion{0, region}), {fd},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::rem_mem_reg(const wire::MemoryRegion& region) {
  constexpr auto req = FrontendReq::rem_mem_reg;
  if (auto g = require_protocol(req, protocol_feature::configure_mem_slots); !g)
    return g;
  return call_no_reply(req, bytes_of(wire::SingleMemoryRegion{0, region}), {},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_log_base(const wire::Log& log, int fd) {
  constexpr auto req = FrontendReq::set_log_base;
  if (auto g = require_protocol(req, protocol_feature::log_shmfd); !g)
    return g;
  if (auto r = check_fd(req, fd); !r)
    return r;
  auto m = call_with_reply(req, bytes_of(log), {fd}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  if (auto v = reply::parse_log_base(*m); !v)
    return reply_error(std::move(v).error());
  return ok();
}

// ---- virtqueues -----------------------------------------------------------------

Result<void> BackendClient::set_vring_num(uint32_t index, uint32_t num) {
  return call_no_reply(FrontendReq::set_vring_num, bytes_of(wire::VringState{index, num}), {},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_vring_addr(const wire::VringAddr& addr) {
  return call_no_reply(FrontendReq::set_vring_addr, bytes_of(addr), {},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_vring_base(uint32_t index, uint32_t base) {
  return call_no_reply(FrontendReq::set_vring_base, bytes_of(wire::VringState{index, base}), {},
                       deadline_in(timeouts_.request));
}

Result<uint32_t> BackendClient::get_vring_base(uint32_t index, bool packed) {
  if (packed) {
    auto v = get_packed_vring_base(index);
    if (!v)
      return std::move(v).error();
    return v->base;
  }
  auto m = call_with_reply(FrontendReq::get_vring_base, bytes_of(wire::VringState{index, 0}), {},
                           deadline_in(timeouts_.drain));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_vring_base(*m, index, false);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<PackedVringBase> BackendClient::get_packed_vring_base(uint32_t index) {
  auto m = call_with_reply(FrontendReq::get_vring_base, bytes_of(wire::VringState{index, 0}), {},
                           deadline_in(timeouts_.drain));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_vring_base(*m, index, true);
  if (!v)
    return reply_error(std::move(v).error());
  return normalise_packed_base(*v);
}

namespace {
Result<std::vector<uint8_t>> vring_fd_word(FrontendReq req, uint32_t index, int fd) {
  if (index > wire::vring_index_mask)
    return invalid(req, "ring index " + std::to_string(index) + " does not fit 8 bits");
  return u64_body(uint64_t{index} | (fd < 0 ? wire::vring_nofd_mask : 0));
}
}  // namespace

Result<void> BackendClient::set_vring_kick(uint32_t index, int fd) {
  constexpr auto req = FrontendReq::set_vring_kick;
  auto body = vring_fd_word(req, index, fd);
  if (!body)
    return std::move(body).error();
  return call_no_reply(req, *body, fd >= 0 ? std::vector<int>{fd} : std::vector<int>{},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_vring_call(uint32_t index, int fd) {
  constexpr auto req = FrontendReq::set_vring_call;
  auto body = vring_fd_word(req, index, fd);
  if (!body)
    return std::move(body).error();
  return call_no_reply(req, *body, fd >= 0 ? std::vector<int>{fd} : std::vector<int>{},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_vring_err(uint32_t index, int fd) {
  constexpr auto req = FrontendReq::set_vring_err;
  auto body = vring_fd_word(req, index, fd);
  if (!body)
    return std::move(body).error();
  return call_no_reply(req, *body, fd >= 0 ? std::vector<int>{fd} : std::vector<int>{},
                       deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_vring_enable(uint32_t index, bool enable) {
  constexpr auto req = FrontendReq::set_vring_enable;
  if (!has_bit(acked_features_, feature::protocol_features))
    return make_error(errc::not_negotiated, name(req),
                      "needs PROTOCOL_FEATURES (bit 30) acked with SET_FEATURES");
  return call_no_reply(req, bytes_of(wire::VringState{index, enable ? 1u : 0u}), {},
                       deadline_in(timeouts_.request));
}

// ---- device config ----------------------------------------------------------------

namespace {
Result<void> check_config_range(FrontendReq req, uint32_t offset, size_t size) {
  if (size == 0 || size > wire::max_config_size)
    return invalid(req, "config size must be 1.." + std::to_string(wire::max_config_size) +
                            ", got " + std::to_string(size));
  if (uint64_t{offset} + size > UINT32_MAX)
    return invalid(req, "offset " + std::to_string(offset) + " + size " + std::to_string(size) +
                            " overflows 32 bits");
  return ok();
}
}  // namespace

Result<std::vector<uint8_t>> BackendClient::get_config(uint32_t offset, uint32_t size,
                                                        uint32_t flags) {
  constexpr auto req = FrontendReq::get_config;
  if (auto g = require_protocol(req, protocol_feature::config); !g)
    return std::move(g).error();
  if (auto r = check_config_range(req, offset, size); !r)
    return std::move(r).error();
  // Header plus `size` zero bytes, as QEMU and crosvm send it.
  auto body = bytes_of(wire::ConfigHeader{offset, size, flags});
  body.resize(body.size() + size, 0);
  auto m = call_with_reply(req, body, {}, deadline_in(timeouts_.request), size);
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_config(*m, offset, size);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<void> BackendClient::set_config(uint32_t offset, const std::vector<uint8_t>& data,
                                       uint32_t flags) {
  constexpr auto req = FrontendReq::set_config;
  if (auto g = require_protocol(req, protocol_feature::config); !g)
    return g;
  if (auto r = check_config_range(req, offset, data.size()); !r)
    return r;
  auto body = bytes_of(wire::ConfigHeader{offset, static_cast<uint32_t>(data.size()), flags});
  body.insert(body.end(), data.begin(), data.end());
  return call_no_reply(req, body, {}, deadline_in(timeouts_.request));
}

// ---- channels, inflight, status, reset -----------------------------------------------

Result<void> BackendClient::set_backend_req_fd(int fd) {
  constexpr auto req = FrontendReq::set_backend_req_fd;
  if (auto g = require_protocol(req, protocol_feature::backend_req); !g)
    return g;
  if (auto r = check_fd(req, fd); !r)
    return r;
  return call_no_reply(req, {}, {fd}, deadline_in(timeouts_.request));
}

Result<InflightRegion> BackendClient::get_inflight_fd(uint16_t num_queues, uint16_t queue_size) {
  constexpr auto req = FrontendReq::get_inflight_fd;
  if (auto g = require_protocol(req, protocol_feature::inflight_shmfd); !g)
    return std::move(g).error();
  wire::InflightDesc d{};
  d.num_queues = num_queues;
  d.queue_size = queue_size;
  auto m = call_with_reply(req, bytes_of(d), {}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_inflight(*m, num_queues, queue_size);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<void> BackendClient::set_inflight_fd(const wire::InflightDesc& desc, int fd) {
  constexpr auto req = FrontendReq::set_inflight_fd;
  if (auto g = require_protocol(req, protocol_feature::inflight_shmfd); !g)
    return g;
  if (auto r = check_fd(req, fd); !r)
    return r;
  return call_no_reply(req, bytes_of(desc), {fd}, deadline_in(timeouts_.request));
}

Result<void> BackendClient::set_status(uint8_t status) {
  constexpr auto req = FrontendReq::set_status;
  if (auto g = require_protocol(req, protocol_feature::status); !g)
    return g;
  return call_no_reply(req, u64_body(status), {}, deadline_in(timeouts_.request));
}

Result<uint8_t> BackendClient::get_status() {
  constexpr auto req = FrontendReq::get_status;
  if (auto g = require_protocol(req, protocol_feature::status); !g)
    return std::move(g).error();
  auto m = call_with_reply(req, {}, {}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_status(*m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<void> BackendClient::reset_device() {
  constexpr auto req = FrontendReq::reset_device;
  if (auto g = require_protocol(req, protocol_feature::reset_device); !g)
    return g;
  return call_no_reply(req, {}, {}, deadline_in(timeouts_.request));
}

// ---- shared memory and device state ------------------------------------------------

Result<wire::ShmemConfig> BackendClient::get_shmem_config() {
  constexpr auto req = FrontendReq::get_shmem_config;
  if (auto g = require_protocol(req, protocol_feature::shmem); !g)
    return std::move(g).error();
  auto m = call_with_reply(req, {}, {}, deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_shmem_config(*m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<DeviceStateReply> BackendClient::set_device_state_fd(uint32_t direction, uint32_t phase,
                                                            int fd) {
  constexpr auto req = FrontendReq::set_device_state_fd;
  if (auto g = require_protocol(req, protocol_feature::device_state); !g)
    return std::move(g).error();
  if (direction != wire::device_state_save && direction != wire::device_state_load)
    return invalid(req, "direction " + std::to_string(direction) + " is neither save nor load");
  if (phase != wire::device_state_phase_stopped)
    return invalid(req, "phase " + std::to_string(phase) + " is not STOPPED (0)");
  if (auto r = check_fd(req, fd); !r)
    return std::move(r).error();
  auto m = call_with_reply(req, bytes_of(wire::DeviceStateTransfer{direction, phase}), {fd},
                           deadline_in(timeouts_.request));
  if (!m)
    return std::move(m).error();
  auto v = reply::parse_device_state(*m);
  if (!v)
    return reply_error(std::move(v).error());
  return v;
}

Result<void> BackendClient::check_device_state() {
  constexpr auto req = FrontendReq::check_device_state;
  if (auto g = require_protocol(req, protocol_feature::device_state); !g)
    return g;
  auto v = call_u64(req, deadline_in(timeouts_.request));
  if (!v)
    return std::move(v).error();
  if (*v != 0)
    return make_error(errc::backend_failure, name(req),
                      "back-end reports the state transfer failed (status " +
                          std::to_string(*v) + ")");
  return ok();
}

}  // namespace vufront
