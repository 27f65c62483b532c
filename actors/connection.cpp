#include "actors/connection.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "protocol/bringup.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::actors {

namespace {

using Self = connection_actor::stateful_pointer<ConnectionState>;

/// A failed step as the reply's error; tells the device once when the
/// failure broke the connection.
caf::error failure(Self self, const Error& e) {
  auto& st = self->state;
  if (st.client && st.client->broken() && !st.lost_reported) {
    st.lost_reported = true;
    tell_device(st.device, lost_atom_v, caf::actor_cast<caf::actor_addr>(self), e.message());
  }
  return to_caf(e);
}

template <class T>
caf::result<T> answer(Self self, Result<T>&& r) {
  if (r)
    return std::move(r).value();
  return failure(self, r.error());
}

caf::result<caf::ok_atom> answer_ok(Self self, Result<void>&& r) {
  if (r)
    return caf::ok_atom_v;
  return failure(self, r.error());
}

Error not_connected(const char* step) {
  return make_error(errc::bad_state, step, "not connected to a back-end");
}

/// The bring-up's options for a device's negotiation.
BringupOptions bringup_options(const NegotiateRequest& req) {
  BringupOptions o;
  o.kind = req.options.kind;
  o.backend_channel = req.options.backend_channel;
  o.channel_fd = req.channel_fd ? req.channel_fd->get() : -1;
  o.inflight = req.options.inflight;
  // Dirty logging is not offered by the actor layer (no migration while running).
  o.dirty_log = false;
  o.queues_needed = req.options.queues;
  return o;
}

/// The bring-up's result as the device keeps it.
DeviceInfo device_info(const NegotiateOptions& options, BringupResult&& b) {
  DeviceInfo info;
  info.kind = options.kind;
  info.config_size = virtio::config_size(options.kind);
  info.max_queue_size = virtio::usable_queue_size(options.max_queue_size);
  info.backend_features = b.features;
  info.protocol_features_offered = b.protocol_features_offered;
  info.protocol_features = b.protocol_features_acked;
  info.backend_channel = b.backend_channel;
  info.queue_num = b.queue_num;
  info.max_mem_slots = b.max_mem_slots;
  if (b.shmem_sizes)
    info.shmem_sizes = std::move(*b.shmem_sizes);
  return info;
}

Result<DeviceInfo> negotiate(BackendClient& c, const NegotiateRequest& req) {
  auto b = bring_up(c, bringup_options(req));
  if (!b)
    return std::move(b).error();
  return device_info(req.options, std::move(b).value());
}

Result<void> start_queues(BackendClient& c, const std::vector<QueueStart>& queues) {
  for (const auto& q : queues) {
    uint32_t i = q.addr.index;
    if (!q.kick || !q.call)
      return make_error(errc::invalid_argument, "SET_VRING_KICK",
                        "queue " + std::to_string(i) + " has no kick or call eventfd");
    if (auto r = c.set_vring_num(i, q.num); !r)
      return r;
    if (auto r = c.set_vring_addr(q.addr); !r)
      return r;
    if (auto r = c.set_vring_base(i, q.base); !r)
      return r;
    if (auto r = c.set_vring_call(i, q.call->get()); !r)
      return r;
    if (auto r = c.set_vring_kick(i, q.kick->get()); !r)
      return r;
    // Older back-ends start a ring on its first kick (protocol doc §10.1).
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(q.kick->get(), &one, sizeof one);
  }
  if (has_bit(c.acked_features(), feature::protocol_features))
    for (const auto& q : queues)
      if (auto r = c.set_vring_enable(q.addr.index, true); !r)
        return r;
  return ok();
}

Result<std::vector<uint32_t>> stop_queues(BackendClient& c, const std::vector<uint16_t>& indices,
                                          bool packed) {
  if (has_bit(c.acked_features(), feature::protocol_features))
    for (auto i : indices)
      if (auto r = c.set_vring_enable(i, false); !r)
        return std::move(r).error();
  std::vector<uint32_t> bases;
  bases.reserve(indices.size());
  for (auto i : indices) {
    auto b = c.get_vring_base(i, packed);
    if (!b)
      return std::move(b).error();
    bases.push_back(*b);
  }
  return bases;
}

Result<void> activate(BackendClient& c, const ActivateRequest& req) {
  bool status = c.protocol_feature(protocol_feature::status);
  if (auto r = c.set_features(req.features); !r)
    return r;
  if (status)
    if (auto r = c.set_status(req.features_ok_status); !r)
      return r;
  if (!req.mem_table.empty()) {
    std::vector<int> fds;
    for (const auto& f : req.mem_fds)
      fds.push_back(f ? f->get() : -1);
    if (auto r = c.set_mem_table(req.mem_table, fds); !r)
      return r;
  }
  if (req.inflight_fd)
    if (auto r = c.set_inflight_fd(req.inflight, req.inflight_fd->get()); !r)
      return r;
  if (auto r = start_queues(c, req.queues); !r)
    return r;
  if (status && req.driver_ok_status != 0)
    return c.set_status(req.driver_ok_status);
  return ok();
}

Result<void> reset_device(BackendClient& c) {
  if (c.protocol_feature(protocol_feature::reset_device))
    if (auto r = c.reset_device(); !r)
      return r;
  if (c.protocol_feature(protocol_feature::status))
    return c.set_status(0);
  return ok();
}

/// negotiate_atom: connect (client mode: accept the back-end), then the
/// bring-up; replies with what was negotiated and a dup of the socket.
caf::result<DeviceInfo, SharedFd> connect_and_negotiate(Self self, const NegotiateRequest& req) {
  auto& st = self->state;
  const auto wait = std::chrono::milliseconds(req.connect_timeout_ms);
  if (req.listen_fd) {
    // Client mode: the back-end connects to us.
    auto conn = Connection::accept(req.listen_fd->get(), deadline_in(wait), req.socket,
                                   req.stop.get());
    if (!conn)
      return to_caf(conn.error());
    st.client.emplace(std::move(conn).value(), st.timeouts);
  } else {
    auto c = BackendClient::connect(req.socket, wait, st.timeouts, req.stop.get());
    if (!c)
      return to_caf(c.error());
    st.client.emplace(std::move(c).value());
  }
  // dropped by the device while the back-end does not answer: give up
  // within 100 ms, not at the request's deadline
  st.client->connection().stop_when(req.stop);
  st.lost_reported = false;
  UniqueFd dup = UniqueFd::adopt(::fcntl(st.client->connection().fd(), F_DUPFD_CLOEXEC, 0));
  if (!dup)
    return to_caf(make_error(errc::io_error, "connect", "dup of the socket", errno));
  auto info = negotiate(*st.client, req);
  if (!info)
    return failure(self, info.error());
  return {std::move(info).value(), share(std::move(dup))};
}

}  // namespace

connection_actor::behavior_type connection_impl(
    connection_actor::stateful_pointer<ConnectionState> self, caf::actor_addr device,
    Timeouts timeouts) {
  self->state.device = std::move(device);
  self->state.timeouts = timeouts;
  // An exception must never escape a handler (it would kill the actor);
  // every BackendClient call returns Result, so none should.
  return {
      [self](negotiate_atom, const NegotiateRequest& req) -> caf::result<DeviceInfo, SharedFd> {
        return connect_and_negotiate(self, req);
      },
      [self](activate_atom, const ActivateRequest& req) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("SET_FEATURES"));
        return answer_ok(self, activate(*self->state.client, req));
      },
      [self](mem_table_atom, const std::vector<wire::MemoryRegion>& regions,
             const std::vector<SharedFd>& fds) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("SET_MEM_TABLE"));
        std::vector<int> raw;
        for (const auto& f : fds)
          raw.push_back(f ? f->get() : -1);
        return answer_ok(self, self->state.client->set_mem_table(regions, raw));
      },
      [self](add_mem_reg_atom, const wire::MemoryRegion& region,
             const SharedFd& fd) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("ADD_MEM_REG"));
        return answer_ok(self, self->state.client->add_mem_reg(region, fd ? fd->get() : -1));
      },
      [self](rem_mem_reg_atom, const wire::MemoryRegion& region) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("REM_MEM_REG"));
        return answer_ok(self, self->state.client->rem_mem_reg(region));
      },
      [self](start_queues_atom, const std::vector<QueueStart>& queues) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("SET_VRING_NUM"));
        return answer_ok(self, start_queues(*self->state.client, queues));
      },
      [self](stop_queues_atom, const std::vector<uint16_t>& indices,
             bool packed) -> caf::result<std::vector<uint32_t>> {
        if (!self->state.client)
          return to_caf(not_connected("GET_VRING_BASE"));
        return answer(self, stop_queues(*self->state.client, indices, packed));
      },
      [self](get_config_atom, uint32_t offset,
             uint32_t size) -> caf::result<std::vector<uint8_t>> {
        if (!self->state.client)
          return to_caf(not_connected("GET_CONFIG"));
        return answer(self, self->state.client->get_config(offset, size));
      },
      [self](set_config_atom, uint32_t offset,
             const std::vector<uint8_t>& data) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("SET_CONFIG"));
        return answer_ok(self, self->state.client->set_config(offset, data));
      },
      [self](reset_device_atom) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("RESET_DEVICE"));
        return answer_ok(self, reset_device(*self->state.client));
      },
      [self](state_fd_atom, uint32_t direction, const SharedFd& fd) -> caf::result<SharedFd> {
        auto& c = self->state.client;
        if (!c)
          return to_caf(not_connected("SET_DEVICE_STATE_FD"));
        if (!fd)
          return to_caf(make_error(errc::invalid_argument, "SET_DEVICE_STATE_FD", "no pipe end"));
        auto r = c->set_device_state_fd(direction, 0, fd->get());
        if (!r)
          return failure(self, r.error());
        if (r->backend_fd)
          return share(std::move(*r->backend_fd));
        return SharedFd{};
      },
      [self](check_state_atom) -> caf::result<caf::ok_atom> {
        if (!self->state.client)
          return to_caf(not_connected("CHECK_DEVICE_STATE"));
        return answer_ok(self, self->state.client->check_device_state());
      },
      [self](inflight_atom, uint16_t queues, uint16_t size) -> caf::result<wire::InflightDesc, SharedFd> {
        auto& c = self->state.client;
        if (!c)
          return to_caf(not_connected("GET_INFLIGHT_FD"));
        auto r = c->get_inflight_fd(queues, size);
        if (!r)
          return failure(self, r.error());
        SharedFd fd = r->fd ? share(std::move(r->fd)) : SharedFd{};
        return {r->desc, fd};
      },
      [self](status_atom, uint8_t status) -> caf::result<caf::ok_atom> {
        auto& c = self->state.client;
        if (!c)
          return to_caf(not_connected("SET_STATUS"));
        if (!c->protocol_feature(protocol_feature::status))
          return caf::ok_atom_v;
        return answer_ok(self, c->set_status(status));
      },
  };
}

}  // namespace vufront::actors
