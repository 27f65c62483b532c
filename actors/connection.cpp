#include "actors/connection.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/handoff.hpp"
#include "actors/replay_memory.hpp"
#include "protocol/bringup.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::actors {

namespace {

using Self = connection_actor::stateful_pointer<ConnectionState>;

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
  // LOG_SHMFD when offered: dirty logging (actors/device_dirty_log.cpp)
  // needs it; nothing is logged until dirty_log_start.
  o.dirty_log = true;
  o.queues_needed = req.options.queues;
  // the config space is read when the features leave the kind open: a
  // refusal tells the kind check it is smaller than the kind's
  o.config_for_kind_check = true;
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
  if (b.kind.fit == KindVerdict::Fit::could_not_tell)
    info.kind_doubt = b.kind.reason;
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
    if (q.start && (!q.kick || !q.call))
      return make_error(errc::invalid_argument, "SET_VRING_KICK",
                        "queue " + std::to_string(i) + " has no kick or call eventfd");
    if (auto r = c.set_vring_num(i, q.num); !r)
      return r;
    if (auto r = c.set_vring_addr(q.addr); !r)
      return r;
    if (auto r = c.set_vring_base(i, q.base); !r)
      return r;
    if (q.call)
      if (auto r = c.set_vring_call(i, q.call->get()); !r)
        return r;
    if (q.err)
      if (auto r = c.set_vring_err(i, q.err->get()); !r)
        return r;
    if (!q.start)
      continue;
    if (auto r = c.set_vring_kick(i, q.kick->get()); !r)
      return r;
    // Older back-ends start a ring on its first kick (vhost-user spec, "Ring
    // states"); and a ring resumed after a loss has the kicks the lost
    // back-end did not see: one more makes the new one look.
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(q.kick->get(), &one, sizeof one);
  }
  if (has_bit(c.acked_features(), feature::protocol_features))
    for (const auto& q : queues)
      if (q.start && q.enable)
        if (auto r = c.set_vring_enable(q.addr.index, true); !r)
          return r;
  return ok();
}

/// The bases of the stopped rings, and the first ring whose (packed) base
/// came in the short form, -1 when none did.
using Stopped = std::tuple<std::vector<uint32_t>, int32_t>;

Result<Stopped> stop_queues(BackendClient& c, const std::vector<uint16_t>& indices, bool packed) {
  if (has_bit(c.acked_features(), feature::protocol_features))
    for (auto i : indices)
      if (auto r = c.set_vring_enable(i, false); !r)
        return std::move(r).error();
  std::vector<uint32_t> bases;
  bases.reserve(indices.size());
  int32_t first_short = -1;
  for (auto i : indices) {
    if (!packed) {
      auto b = c.get_vring_base(i, false);
      if (!b)
        return std::move(b).error();
      bases.push_back(*b);
      continue;
    }
    auto b = c.get_packed_vring_base(i);
    if (!b)
      return std::move(b).error();
    bases.push_back(b->base);
    if (b->short_form && first_short < 0)
      first_short = i;
  }
  return Stopped{std::move(bases), first_short};
}

Result<void> activate(BackendClient& c, const ActivateRequest& req) {
  bool status = c.protocol_feature(protocol_feature::status);
  if (auto r = c.set_features(req.features); !r)
    return r;
  if (status && req.features_ok_status != 0)  // 0: a VMM's shadow that has no status yet
    if (auto r = c.set_status(req.features_ok_status); !r)
      return r;
  if (!req.mem_table.empty())  // past 8 regions as ADD_MEM_REG each (actors/replay_memory.hpp)
    if (auto r = send_memory(c, req.mem_table, req.mem_fds); !r)
      return r;
  if (req.inflight_fd)
    if (auto r = c.set_inflight_fd(req.inflight, req.inflight_fd->get()); !r)
      return r;
  // logging: the log is there before any ring can write (actors/replay.hpp)
  if (req.log_fd)
    if (auto r = c.set_log_base(req.log, req.log_fd->get()); !r)
      return r;
  if (auto r = start_queues(c, req.queues); !r)
    return r;
  if (status && req.driver_ok_status != 0)
    return c.set_status(req.driver_ok_status);
  return ok();
}

/// A change of dirty logging in the vhost-user spec's order ("Migration"):
/// SET_LOG_BASE (its reply waited for), SET_FEATURES, every SET_VRING_ADDR;
/// those two acked with REPLY_ACK, else followed by a GET_FEATURES so that
/// logging is really on (or off) when the step ends, as QEMU's
/// vhost_user_write_sync does.
Result<void> change_log(BackendClient& c, const LogChange& ch) {
  if (ch.log_fd)
    if (auto r = c.set_log_base(ch.log, ch.log_fd->get()); !r)
      return r;
  if (ch.set_features)
    if (auto r = c.set_features(ch.features); !r)
      return r;
  for (const auto& a : ch.rings)
    if (auto r = c.set_vring_addr(a); !r)
      return r;
  if ((ch.set_features || !ch.rings.empty()) && !c.protocol_feature(protocol_feature::reply_ack))
    if (auto r = c.get_features(); !r)
      return std::move(r).error();
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

using Negotiated = std::tuple<DeviceInfo, SharedFd>;

/// negotiate_atom, in the task: connect (client mode: accept the back-end),
/// then the bring-up; `client` becomes the new connection's. Yields what
/// was negotiated and a dup of the socket.
Result<Negotiated> connect_and_negotiate(std::shared_ptr<BackendClient>& client,
                                         const NegotiateRequest& req, Timeouts timeouts,
                                         const std::shared_ptr<std::atomic<bool>>& quit) {
  client.reset();
  const auto wait = std::chrono::milliseconds(req.connect_timeout_ms);
  if (req.listen_fd) {
    // Client mode: the back-end connects to us.
    auto conn = Connection::accept(req.listen_fd->get(), deadline_in(wait), req.socket,
                                   req.stop.get());
    if (!conn)
      return std::move(conn).error();
    client = std::make_shared<BackendClient>(std::move(conn).value(), timeouts);
  } else {
    auto c = BackendClient::connect(req.socket, wait, timeouts, req.stop.get(), req.wait);
    if (!c)
      return std::move(c).error();
    client = std::make_shared<BackendClient>(std::move(c).value());
  }
  // dropped by the device, or ended, while the back-end does not answer:
  // give up within 100 ms, not at the request's deadline
  client->connection().stop_when(req.stop, quit);
  UniqueFd dup = UniqueFd::adopt(::fcntl(client->connection().fd(), F_DUPFD_CLOEXEC, 0));
  if (!dup)
    return make_error(errc::io_error, "connect", "dup of the socket", errno);
  auto info = negotiate(*client, req);
  if (!info)
    return std::move(info).error();
  return Negotiated{std::move(info).value(), share(std::move(dup))};
}

// ---- running steps on the event loop ----------------------------------------------

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

template <class Promise>
void deliver(Self self, Result<void>&& r, Promise& rp) {
  if (r)
    rp.deliver(caf::ok_atom_v);
  else
    rp.deliver(failure(self, r.error()));
}

template <class T, class Promise>
void deliver(Self self, Result<T>&& r, Promise& rp) {
  if (!r) {
    rp.deliver(failure(self, r.error()));
    return;
  }
  if constexpr (std::is_same_v<T, Negotiated> || std::is_same_v<T, Stopped> ||
                std::is_same_v<T, std::tuple<wire::InflightDesc, SharedFd>>)
    std::apply([&rp](auto&&... v) { rp.deliver(pass_on(std::move(v))...); }, std::move(r).value());
  else
    rp.deliver(pass_on(std::move(r).value()));
}

/// What a step's task leaves for the actor.
template <class R>
struct StepSlot {
  std::shared_ptr<BackendClient> client;  ///< the connection's, or the one a negotiation made
  std::optional<R> result;                ///< empty: the step failed to run (no memory)
};

void start_next(Self self) {
  auto& st = self->state;
  if (st.busy || st.queued.empty())
    return;
  auto next = std::move(st.queued.front());
  st.queued.pop_front();
  st.busy = true;
  next.start();
}

/// Runs `work(client)` as a task on the event loop once the steps before it
/// have ended, then answers the request with its Result.
template <class... Ts, class Work>
caf::result<Ts...> run_step(Self self, Work work) {
  using R = std::invoke_result_t<Work&, std::shared_ptr<BackendClient>&>;
  auto rp = self->make_response_promise<Ts...>();
  auto slot = std::make_shared<StepSlot<R>>();
  ConnectionState::Step step;
  step.abandon = [rp](const caf::error& e) mutable { rp.deliver(e); };
  step.start = [self, rp, slot, work = std::move(work)]() mutable {
    auto& st = self->state;
    st.abandon = [rp](const caf::error& e) mutable { rp.deliver(e); };
    slot->client = st.client;
    st.finish = [self, rp, slot]() mutable {
      taken_over(slot.get());
      auto& s = self->state;
      if (slot->client != s.client)
        s.lost_reported = false;  // a new connection
      s.client = slot->client;
      if (slot->result)
        deliver(self, std::move(*slot->result), rp);
      else
        rp.deliver(to_caf(make_error(errc::io_error, "connection step", "could not run (out of memory?)")));
    };
    const uint64_t n = ++st.step;
    auto weak = caf::actor_cast<caf::actor_addr>(self);
    st.running = loop::EventLoop::instance().spawn(
        [slot, work = std::move(work), weak, n]() mutable {
          try {
            slot->result.emplace(work(slot->client));
          } catch (...) {
          }
          handed_over(slot.get());
          if (auto h = caf::actor_cast<connection_actor>(weak))
            caf::anon_send(h, step_done_atom_v, n);
        },
        "connection step");
  };
  self->state.queued.push_back(std::move(step));
  start_next(self);
  return rp;
}

/// Told to exit: the running step stops waiting; it and every queued step
/// are answered with errc::cancelled.
void abandon_steps(Self self) {
  auto& st = self->state;
  st.quit->store(true);
  st.running.interrupt();
  const caf::error e = to_caf(make_error(errc::cancelled, "connection",
                                         "the device let go of its back-end connection"));
  if (st.busy && st.abandon)
    st.abandon(e);
  st.finish = nullptr;
  st.abandon = nullptr;
  st.busy = false;
  for (auto& q : st.queued)
    q.abandon(e);
  st.queued.clear();
}

void on_step_done(Self self, uint64_t n) {
  auto& st = self->state;
  if (!st.busy || n != st.step)
    return;
  auto finish = std::move(st.finish);
  st.finish = nullptr;
  st.abandon = nullptr;
  st.running = loop::TaskHandle{};
  st.busy = false;
  if (finish)
    finish();
  start_next(self);
}

/// A step on the connected client: `work(BackendClient&) -> Result<T>`;
/// `first` names the request that fails when there is no connection.
template <class... Ts, class Work>
caf::result<Ts...> on_client(Self self, const char* first, Work work) {
  return run_step<Ts...>(self, [first, work = std::move(work)](std::shared_ptr<BackendClient>& c) {
    using R = decltype(work(*c));
    if (!c)
      return R(not_connected(first));
    return work(*c);
  });
}

std::vector<int> raw_fds(const std::vector<SharedFd>& fds) {
  std::vector<int> raw;
  raw.reserve(fds.size());
  for (const auto& f : fds)
    raw.push_back(f ? f->get() : -1);
  return raw;
}

}  // namespace

connection_actor::behavior_type connection_impl(
    connection_actor::stateful_pointer<ConnectionState> self, caf::actor_addr device,
    Timeouts timeouts) {
  self->state.device = std::move(device);
  self->state.timeouts = timeouts;
  self->set_exit_handler([self](caf::exit_msg& msg) {
    abandon_steps(self);
    self->quit(std::move(msg.reason));
  });
  // An exception must never escape a handler (it would kill the actor);
  // every BackendClient call returns Result, so none should.
  return {
      [self](negotiate_atom, const NegotiateRequest& req) -> caf::result<DeviceInfo, SharedFd> {
        return run_step<DeviceInfo, SharedFd>(
            self, [req, t = self->state.timeouts, quit = self->state.quit](std::shared_ptr<BackendClient>& c) {
              return connect_and_negotiate(c, req, t, quit);
            });
      },
      [self](activate_atom, const ActivateRequest& req) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "SET_FEATURES",
                                       [req](BackendClient& c) { return activate(c, req); });
      },
      [self](mem_table_atom, const std::vector<wire::MemoryRegion>& regions,
             const std::vector<SharedFd>& fds) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "SET_MEM_TABLE", [regions, fds](BackendClient& c) {
          return c.set_mem_table(regions, raw_fds(fds));
        });
      },
      [self](add_mem_reg_atom, const wire::MemoryRegion& region,
             const SharedFd& fd) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "ADD_MEM_REG", [region, fd](BackendClient& c) {
          return c.add_mem_reg(region, fd ? fd->get() : -1);
        });
      },
      [self](rem_mem_reg_atom, const wire::MemoryRegion& region) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "REM_MEM_REG",
                                       [region](BackendClient& c) { return c.rem_mem_reg(region); });
      },
      [self](start_queues_atom, const std::vector<QueueStart>& queues) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "SET_VRING_NUM",
                                       [queues](BackendClient& c) { return start_queues(c, queues); });
      },
      [self](stop_queues_atom, const std::vector<uint16_t>& indices,
             bool packed) -> caf::result<std::vector<uint32_t>, int32_t> {
        return on_client<std::vector<uint32_t>, int32_t>(
            self, "GET_VRING_BASE",
            [indices, packed](BackendClient& c) { return stop_queues(c, indices, packed); });
      },
      [self](get_config_atom, uint32_t offset,
             uint32_t size) -> caf::result<std::vector<uint8_t>> {
        return on_client<std::vector<uint8_t>>(
            self, "GET_CONFIG", [offset, size](BackendClient& c) { return c.get_config(offset, size); });
      },
      [self](set_config_atom, uint32_t offset,
             const std::vector<uint8_t>& data) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(
            self, "SET_CONFIG", [offset, data](BackendClient& c) { return c.set_config(offset, data); });
      },
      [self](reset_device_atom) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "RESET_DEVICE",
                                       [](BackendClient& c) { return reset_device(c); });
      },
      [self](state_fd_atom, uint32_t direction, const SharedFd& fd) -> caf::result<SharedFd> {
        return on_client<SharedFd>(self, "SET_DEVICE_STATE_FD", [direction, fd](BackendClient& c) -> Result<SharedFd> {
          if (!fd)
            return make_error(errc::invalid_argument, "SET_DEVICE_STATE_FD", "no pipe end");
          auto r = c.set_device_state_fd(direction, 0, fd->get());
          if (!r)
            return std::move(r).error();
          if (r->backend_fd)
            return share(std::move(*r->backend_fd));
          return SharedFd{};
        });
      },
      [self](check_state_atom) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "CHECK_DEVICE_STATE",
                                       [](BackendClient& c) { return c.check_device_state(); });
      },
      [self](inflight_atom, uint16_t queues, uint16_t size) -> caf::result<wire::InflightDesc, SharedFd> {
        using Inflight = std::tuple<wire::InflightDesc, SharedFd>;
        return on_client<wire::InflightDesc, SharedFd>(
            self, "GET_INFLIGHT_FD", [queues, size](BackendClient& c) -> Result<Inflight> {
              auto r = c.get_inflight_fd(queues, size);
              if (!r)
                return std::move(r).error();
              SharedFd fd = r->fd ? share(std::move(r->fd)) : SharedFd{};
              return Inflight{r->desc, fd};
            });
      },
      [self](status_atom, uint8_t status) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, "SET_STATUS", [status](BackendClient& c) -> Result<void> {
          if (!c.protocol_feature(protocol_feature::status))
            return ok();
          return c.set_status(status);
        });
      },
      [self](vmm_fwd_atom, const proxy::Forward& f, const proxy::Answer& a) -> caf::result<proxy::ForwardResult> {
        // The VMM's answer leaves from the task, as soon as the back-end's
        // reply is read; the port records the request afterwards.
        return on_client<proxy::ForwardResult>(self, "VMM request", [f, a](BackendClient& c) {
          return proxy::forward_and_answer(c, f, a);
        });
      },
      [self](dirty_log_atom, const LogChange& ch) -> caf::result<caf::ok_atom> {
        return on_client<caf::ok_atom>(self, ch.log_fd ? "SET_LOG_BASE" : "SET_FEATURES",
                                       [ch](BackendClient& c) { return change_log(c, ch); });
      },
      [self](step_done_atom, uint64_t n) { on_step_done(self, n); },
  };
}

}  // namespace vufront::actors
