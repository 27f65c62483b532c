#include "actors/control_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <utility>

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/control_commands.hpp"
#include "actors/device.hpp"
#include "actors/error.hpp"
#include "base/log.hpp"
#include "control/packet.hpp"
#include "control/protocol.hpp"

namespace vufront::actors {

namespace {

using Self = control_server_actor::stateful_pointer<ControlServerData>;
using std::chrono::milliseconds;
using Device = ControlServerData::Device;

// A device bounds each of its operations itself (its connection actor gives
// every request its deadline, `--timeout` or `--drain-timeout`): a wait on one
// needs no deadline of its own, and none that would cut a long drain short.
const caf::duration device_wait{caf::infinite};
constexpr milliseconds refuse_deadline{200};

/// Forwards a device's events to the server, tagged with the device id.
caf::behavior event_relay(caf::event_based_actor*, caf::actor_addr server, std::string id) {
  return {[server, id](event_atom, const DeviceEvent& ev) {
    if (auto s = caf::actor_cast<control_server_actor>(server))
      caf::anon_send(s, dev_event_atom_v, id, ev);
  }};
}

/// set_shmem_owner vmm: the back-end's SHMEM_MAP/UNMAP (already checked
/// against the region by the channel) become events for the owning VMM.
class VmmMapper final : public SharedMemoryMapper {
public:
  VmmMapper(caf::actor_addr server, std::string device) : server_(std::move(server)), device_(std::move(device)) {}

  Result<void> map(uint8_t shmid, uint64_t shm_offset, int fd, uint64_t fd_offset, uint64_t len,
                   bool writable) override {
    auto s = caf::actor_cast<control_server_actor>(server_);
    if (!s)
      return make_error(errc::disconnected, "SHMEM_MAP", "vufront attach is shutting down");
    // OWNERSHIP: the duplicate travels to the VMM with the event.
    UniqueFd copy = UniqueFd::adopt(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy)
      return make_error(errc::io_error, "SHMEM_MAP", "dup of the back-end's fd", errno);
    caf::anon_send(s, shmem_fwd_atom_v, device_,
                   control::make_event("shmem_map", device_,
                                       {{"shmid", shmid}, {"shm_offset", shm_offset}, {"fd_offset", fd_offset},
                                        {"len", len}, {"writable", writable}}),
                   share(std::move(copy)));
    return ok();
  }

  Result<void> unmap(uint8_t shmid, uint64_t shm_offset, uint64_t len) override {
    auto s = caf::actor_cast<control_server_actor>(server_);
    if (!s)
      return make_error(errc::disconnected, "SHMEM_UNMAP", "vufront attach is shutting down");
    caf::anon_send(s, shmem_fwd_atom_v, device_,
                   control::make_event("shmem_unmap", device_,
                                       {{"shmid", shmid}, {"shm_offset", shm_offset}, {"len", len}}),
                   SharedFd{});
    return ok();
  }

private:
  caf::actor_addr server_;
  std::string device_;
};

json device_list(const ControlServerData& st) {
  json list = json::array();
  for (const auto& [id, d] : st.devices) {
    json dev = {{"id", id},
                {"kind", name(d.setup.negotiate.kind)},
                {"backend", d.setup.backend},
                {"state", to_string(d.state)}};
    if (!d.setup.vmm_socket.empty())
      dev["vmm_socket"] = d.setup.vmm_socket;
    if (!d.kind_doubt.empty())
      dev["kind_doubt"] = d.kind_doubt;
    list.push_back(std::move(dev));
  }
  return list;
}

json greeting(const ControlServerData& st) {
  return control::make_event("hello", std::nullopt,
                             {{"protocol", control::protocol_version},
                              {"server", "vufront"},
                              {"devices", device_list(st)}});
}

void broadcast(Self self, const json& event, const std::vector<SharedFd>& fds = {}) {
  for (const auto& [id, s] : self->state.sessions)
    self->send(s, push_atom_v, event, fds);
}

Device& add_device(Self self, const DeviceSetup& setup) {
  auto& st = self->state;
  DeviceConfig cfg;
  cfg.socket = setup.backend;
  cfg.timeouts = st.config.timeouts;
  cfg.connect_timeout = st.config.connect_timeout;
  cfg.wait_for_backend = st.config.wait_for_backend;
  cfg.reconnect = st.config.reconnect;
  cfg.fence_kill = st.config.fence_kill;
  cfg.listen = setup.listen;
  cfg.listen_options = st.config.backend_listen;
  Device d;
  d.setup = setup;
  d.setup.shmem_owner = 0;
  d.dev = self->spawn<caf::linked>(device_impl, std::move(cfg));
  d.relay = self->spawn<caf::linked>(event_relay, caf::actor_cast<caf::actor_addr>(self), setup.id);
  caf::anon_send(d.dev, subscribe_atom_v, d.relay);
  return st.devices[setup.id] = std::move(d);
}

void drop_device(Self self, const std::string& id) {
  auto& st = self->state;
  auto it = st.devices.find(id);
  if (it == st.devices.end())
    return;
  self->unlink_from(it->second.dev);
  self->unlink_from(it->second.relay);
  caf::anon_send_exit(it->second.dev, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(it->second.relay, caf::exit_reason::user_shutdown);
  if (it->second.port) {
    self->unlink_from(it->second.port);
    caf::anon_send_exit(it->second.port, caf::exit_reason::user_shutdown);
  }
  st.devices.erase(it);
}

/// Negotiates device `id`, then gives it its shared-memory window; `done`
/// gets the result as JSON or the error.
template <class Done>
void negotiate(Self self, const std::string& id, Done done) {
  auto& st = self->state;
  auto& d = st.devices.at(id);
  self->request(d.dev, device_wait, negotiate_atom_v, d.setup.negotiate)
      .then(
          [self, id, done](DeviceInfo& info) mutable {
            auto it = self->state.devices.find(id);
            if (it == self->state.devices.end())
              return done(Result<json>(make_error(errc::not_found, "negotiate", id + " was removed")));
            if (it->second.state == DeviceState::disconnected)
              it->second.state = DeviceState::negotiated;
            it->second.kind_doubt = info.kind_doubt;
            bool any = std::any_of(info.shmem_sizes.begin(), info.shmem_sizes.end(),
                                   [](uint64_t s) { return s != 0; });
            if (any) {
              auto w = ShmemWindow::create(info.shmem_sizes);
              if (!w)
                return done(Result<json>(w.error()));
              it->second.window = std::move(w).value();
              caf::anon_send(it->second.dev, mapper_atom_v,
                         std::static_pointer_cast<SharedMemoryMapper>(it->second.window));
            }
            done(Result<json>(info_json(info)));
          },
          [done](caf::error& e) mutable { done(Result<json>(from_caf(e, "negotiate"))); });
}

/// Every active device to sleep: the last VMM went away.
void secure_devices(Self self) {
  for (auto& [id, d] : self->state.devices) {
    auto dev = d.dev;
    auto dev_id = id;
    self->request(dev, device_wait, status_atom_v)
        .then(
            [self, dev, dev_id](const DeviceStatus& s) {
              if (s.state != DeviceState::active)
                return;
              self->request(dev, device_wait, sleep_atom_v)
                  .then([self, dev_id](caf::ok_atom) { log::info(dev_id + ": no VMM attached, put to sleep"); },
                        [self, dev_id](caf::error& e) {
                          log::warning(dev_id + ": no VMM attached; sleep failed: " +
                                        from_caf(e, "sleep").message());
                        });
            },
            [](caf::error&) {});
  }
}

void set_mapper(Self self, Device& d, uint64_t owner) {
  d.setup.shmem_owner = owner;
  std::shared_ptr<SharedMemoryMapper> m;
  if (owner != 0)
    m = std::make_shared<VmmMapper>(caf::actor_cast<caf::actor_addr>(self), d.setup.id);
  else
    m = d.window;
  caf::anon_send(d.dev, mapper_atom_v, m);
}

Result<void> start_listening(Self self) {
  auto& st = self->state;
  auto fd = control::listen_at(st.config.control_path, st.config.control_listen);
  if (!fd)
    return std::move(fd).error();
  st.listen_fd = std::move(fd).value();
  int fl = ::fcntl(st.listen_fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(st.listen_fd.get(), F_SETFL, fl | O_NONBLOCK) != 0)
    return make_error(errc::io_error, "control socket", "O_NONBLOCK", errno);
  auto server = caf::actor_cast<caf::actor_addr>(self);
  const int lfd = st.listen_fd.get();
  auto w = FdWatcher::start({{lfd, 0, POLLIN}}, [server, lfd](int, int, short) {
    auto c = control::accept_from(lfd);
    if (!c)
      return true;  // EAGAIN: the connection went away before accept
    if (auto s = caf::actor_cast<control_server_actor>(server))
      caf::anon_send(s, accept_atom_v, share(std::move(c).value()));
    return true;
  });
  if (!w)
    return std::move(w).error();
  st.acceptor = std::move(w).value();
  st.listening = true;
  return ok();
}

void accept(Self self, const SharedFd& conn) {
  auto& st = self->state;
  auto uid = control::peer_uid(conn->get());
  const uint32_t me = static_cast<uint32_t>(::geteuid());
  bool allowed = uid && (*uid == me || std::find(st.config.allowed_uids.begin(), st.config.allowed_uids.end(),
                                                   *uid) != st.config.allowed_uids.end());
  if (!allowed) {
    std::string who = uid ? "uid " + std::to_string(*uid) : "a peer of unknown uid";
    log::warning("refused a connection from " + who);
    auto e = make_error(errc::permission_denied, "connect",
                        who + " may not use this control socket (allowed: uid " + std::to_string(me) +
                            " and --allow-uid)");
    (void)control::send_packet(conn->get(),
                               control::to_wire(control::make_event("refused", std::nullopt,
                                                                    {{"error", control::error_json(e)}})),
                               {}, control::Clock::now() + refuse_deadline);
    return;
  }
  uint64_t id = st.next_session++;
  // Monitored, not linked: the server ends its sessions itself when it ends.
  FilePolicy files;
  files.peer_uid = *uid;
  files.own_uid = me;
  files.snapshot_dir = st.config.snapshot_dir;
  files.snapshot_dir_path = st.config.snapshot_dir_path;
  auto s = self->spawn<caf::detached + caf::monitored>(control_session_impl, control_server_actor{self}, id,
                                                       conn, std::move(files));
  st.sessions.emplace(id, s);
  log::info("session " + std::to_string(id) + ": uid " + std::to_string(*uid) + " attached");
}

// ---- the handlers ---------------------------------------------------------------------

/// An exit: a device's own end is logged; the attach command's shutdown ends
/// the sessions and the server.
void on_exit(Self self, caf::exit_msg& em) {
  auto& st = self->state;
  for (auto it = st.devices.begin(); it != st.devices.end(); ++it)
    if (em.source == it->second.dev.address() || em.source == it->second.relay.address() ||
        (it->second.port && em.source == it->second.port.address())) {
      log::info(it->first + ": device actor ended (" + caf::to_string(em.reason) + ")");
      return;
    }
  if (em.reason == caf::exit_reason::normal)
    return;
  // The attach command's shutdown: a start still under way fails, the
  // sessions end with the server (the devices are linked and end with it
  // anyway).
  if (st.start_promise.pending())
    st.start_promise.deliver(to_caf(make_error(errc::cancelled, "start", "vufront attach is stopping")));
  for (const auto& [id, s] : st.sessions)
    caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  self->quit(em.reason);
}

/// A session ended: its shared memory goes back to vufront; the last one
/// puts every active device to sleep.
void on_session_down(Self self, caf::down_msg& dm) {
  auto& st = self->state;
  for (auto it = st.sessions.begin(); it != st.sessions.end(); ++it) {
    if (it->second.address() != dm.source)
      continue;
    uint64_t id = it->first;
    st.sessions.erase(it);
    log::info("session " + std::to_string(id) + ": detached");
    for (auto& [dev_id, d] : st.devices)
      if (d.setup.shmem_owner == id)
        set_mapper(self, d, 0);
    if (st.sessions.empty())
      secure_devices(self);
    return;
  }
}

/// Starts the VMM socket of every device that has one (--vmm-socket), one
/// after another; `done` gets the first failure, naming its device.
template <class Done>
void start_ports(Self self, Done done) {
  auto ids = std::make_shared<std::vector<std::string>>();
  for (const auto& [id, d] : self->state.devices)
    if (!d.setup.vmm_socket.empty())
      ids->push_back(id);
  auto step = std::make_shared<std::function<void(size_t)>>();
  *step = [self, ids, step, done](size_t i) mutable {
    if (i == ids->size()) {
      done(ok());
      *step = nullptr;
      return;
    }
    const std::string id = (*ids)[i];
    auto& d = self->state.devices.at(id);
    VmmPortConfig pc;
    pc.id = id;
    pc.path = d.setup.vmm_socket;
    pc.listen = self->state.config.vmm_listen;
    pc.allowed_uids = self->state.config.allowed_uids;
    pc.device = d.dev;
    pc.send_timeout = self->state.config.timeouts.request;
    pc.hold_timeout = self->state.config.timeouts.request;
    pc.resume_without_inflight = self->state.config.resume_without_inflight;
    d.port = self->spawn<caf::linked>(vmm_port_impl, std::move(pc));
    self->request(d.port, device_wait, start_atom_v)
        .then([step, i](caf::ok_atom) { (*step)(i + 1); },
              [step, done, id](caf::error& e) mutable {
                Error err = from_caf(e, "VMM socket");
                err.op = id + ": " + (err.op.empty() ? "VMM socket" : err.op);
                done(Result<void>(err));
                *step = nullptr;
              });
  };
  (*step)(0);
}

/// start_atom: negotiates every configured device, one after another (a
/// failure names its device and the rest is not tried), then listens.
caf::result<json> on_start(Self self) {
  auto rp = self->make_response_promise<json>();
  self->state.start_promise = rp;
  auto ids = std::make_shared<std::vector<std::string>>();
  for (const auto& [id, d] : self->state.devices)
    ids->push_back(id);
  // One after another, so a failure names its device and the rest is not tried.
  auto step = std::make_shared<std::function<void(size_t)>>();
  *step = [self, rp, ids, step](size_t i) mutable {
    if (i == ids->size()) {
      start_ports(self, [self, rp](Result<void> r) mutable {
        if (r && !self->state.config.control_path.empty())
          r = start_listening(self);
        if (!r) {
          rp.deliver(to_caf(r.error()));
          return;
        }
        rp.deliver(greeting(self->state));
      });
      *step = nullptr;  // breaks the cycle step -> lambda -> step
      return;
    }
    const std::string id = (*ids)[i];
    negotiate(self, id, [rp, id, step, i](Result<json> r) mutable {
      if (!r) {
        Error e = std::move(r).error();
        e.op = id + ": " + (e.op.empty() ? "negotiate" : e.op);
        if (e.request == "negotiate")
          e.request.clear();
        rp.deliver(to_caf(e));
        *step = nullptr;
        return;
      }
      (*step)(i + 1);
    });
  };
  (*step)(0);
  return rp;
}

/// lookup_atom: the device a command names ("" when there is only one).
caf::result<device_actor, DeviceSetup> on_lookup(Self self, const std::string& id) {
  auto& st = self->state;
  if (id.empty()) {
    if (st.devices.size() == 1)
      return {st.devices.begin()->second.dev, st.devices.begin()->second.setup};
    std::string names;
    for (const auto& [k, d] : st.devices)
      names += (names.empty() ? "" : ", ") + k;
    return to_caf(make_error(errc::not_found, "command",
                             "name the device with \"device\" (devices: " +
                                 (names.empty() ? std::string("none") : names) + ")"));
  }
  auto it = st.devices.find(id);
  if (it == st.devices.end())
    return to_caf(make_error(errc::not_found, "command", "no device \"" + id + "\""));
  return {it->second.dev, it->second.setup};
}

caf::result<json> on_add_device(Self self, const DeviceSetup& setup) {
  auto& st = self->state;
  if (st.devices.count(setup.id) != 0)
    return to_caf(make_error(errc::invalid_argument, "add_device",
                             "a device \"" + setup.id + "\" exists already"));
  for (const auto& [id, d] : st.devices)
    if (d.setup.backend == setup.backend)
      return to_caf(make_error(errc::invalid_argument, "add_device",
                               "device \"" + id + "\" uses " + setup.backend + " already"));
  add_device(self, setup);
  auto rp = self->make_response_promise<json>();
  const std::string id = setup.id;
  negotiate(self, id, [self, rp, id](Result<json> r) mutable {
    if (!r) {
      drop_device(self, id);
      rp.deliver(to_caf(r.error()));
      return;
    }
    log::info(id + ": added");
    broadcast(self, control::make_event("device_added", id));
    rp.deliver(std::move(r).value());
  });
  return rp;
}

caf::result<caf::ok_atom> on_remove_device(Self self, const std::string& id) {
  if (self->state.devices.count(id) == 0)
    return to_caf(make_error(errc::not_found, "remove_device", "no device \"" + id + "\""));
  drop_device(self, id);
  log::info(id + ": removed");
  broadcast(self, control::make_event("device_removed", id));
  return caf::ok_atom_v;
}

/// owner_atom: who maps the device's shared memory (a VMM session or vufront).
caf::result<caf::ok_atom> on_owner(Self self, const std::string& id, uint64_t session, bool vmm) {
  auto it = self->state.devices.find(id);
  if (it == self->state.devices.end())
    return to_caf(make_error(errc::not_found, "set_shmem_owner", "no device \"" + id + "\""));
  auto& d = it->second;
  if (vmm && d.setup.shmem_owner != 0 && d.setup.shmem_owner != session)
    return to_caf(make_error(errc::bad_state, "set_shmem_owner",
                             "another VMM connection (session " + std::to_string(d.setup.shmem_owner) +
                                 ") owns the shared memory"));
  if (!vmm && d.setup.shmem_owner != session && d.setup.shmem_owner != 0)
    return to_caf(make_error(errc::bad_state, "set_shmem_owner",
                             "this connection does not own the shared memory"));
  set_mapper(self, d, vmm ? session : 0);
  return caf::ok_atom_v;
}

/// A device's event: logged when it is about the back-end, then to every VMM.
void on_device_event(Self self, const std::string& id, const DeviceEvent& ev) {
  auto it = self->state.devices.find(id);
  if (it == self->state.devices.end())
    return;
  if (ev.kind == DeviceEvent::Kind::state_changed)
    it->second.state = ev.state;
  if (ev.kind == DeviceEvent::Kind::backend_lost)
    log::warning(id + ": back-end lost: " + ev.detail);
  else if (ev.kind == DeviceEvent::Kind::reconnecting)
    log::info(id + ": reconnecting: " + ev.detail);
  else if (ev.kind == DeviceEvent::Kind::resumed)
    log::info(id + ": resumed " + ev.detail);
  else if (ev.kind == DeviceEvent::Kind::resume_failed || ev.kind == DeviceEvent::Kind::backend_notice)
    log::info(id + ": " + ev.detail);
  json e = event_json(id, ev);
  if (!e.is_null())
    broadcast(self, e, ev.fd ? std::vector<SharedFd>{ev.fd} : std::vector<SharedFd>{});
}

/// A shared-memory map/unmap for the VMM session that owns the device's memory.
void on_shmem_forward(Self self, const std::string& id, const json& event, const SharedFd& fd) {
  auto it = self->state.devices.find(id);
  if (it == self->state.devices.end() || it->second.setup.shmem_owner == 0)
    return;
  auto s = self->state.sessions.find(it->second.setup.shmem_owner);
  if (s == self->state.sessions.end())
    return;
  std::vector<SharedFd> fds;
  if (fd)
    fds.push_back(fd);
  self->send(s->second, push_atom_v, event, fds);
}

}  // namespace

control_server_actor::behavior_type control_server_impl(
    control_server_actor::stateful_pointer<ControlServerData> self, ControlServerConfig config) {
  self->state.config = std::move(config);
  self->set_exit_handler([self](caf::exit_msg& em) { on_exit(self, em); });
  self->set_down_handler([self](caf::down_msg& dm) { on_session_down(self, dm); });
  for (const auto& setup : self->state.config.devices)
    add_device(self, setup);
  return {
      [self](start_atom) { return on_start(self); },
      [self](accept_atom, const SharedFd& conn) {
        if (conn)
          accept(self, conn);
      },
      [self](hello_atom) -> json { return greeting(self->state); },
      [self](lookup_atom, const std::string& id) { return on_lookup(self, id); },
      [self](add_dev_atom, const DeviceSetup& setup) { return on_add_device(self, setup); },
      [self](rm_dev_atom, const std::string& id) { return on_remove_device(self, id); },
      [self](owner_atom, const std::string& id, uint64_t session, bool vmm) {
        return on_owner(self, id, session, vmm);
      },
      [self](dev_event_atom, const std::string& id, const DeviceEvent& ev) {
        on_device_event(self, id, ev);
      },
      [self](shmem_fwd_atom, const std::string& id, const json& event, const SharedFd& fd) {
        on_shmem_forward(self, id, event, fd);
      },
  };
}

}  // namespace vufront::actors
