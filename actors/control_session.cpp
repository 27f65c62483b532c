#include "actors/control_session.hpp"

#include <type_traits>
#include <utility>
#include <vector>

#include <caf/send.hpp>

#include "actors/control_commands.hpp"
#include "actors/error.hpp"
#include "actors/handoff.hpp"
#include "base/log.hpp"
#include "actors/transfer_events.hpp"
#include "control/protocol.hpp"

namespace vufront::actors {

namespace {

using Self = control_session_actor::stateful_pointer<ControlSessionData>;
using std::chrono::milliseconds;
using std::chrono::seconds;
using control::Args;
using control::Command;

constexpr uint32_t reader_credits = 4;
/// How long a write to the VMM may wait for room in its socket buffer.
constexpr milliseconds write_deadline{10000};
/// A server lookup (no I/O).
constexpr milliseconds lookup_deadline{10000};
/// A device operation other than snapshot/restore: the device bounds each
/// of its requests itself; this is only the safety net.
constexpr milliseconds device_deadline{180000};

void close_connection(Self self, const std::string& why);

/// Sends one message; a VMM that is gone or does not read ends the session.
void send(Self self, const json& message, const std::vector<int>& fds = {}) {
  auto& st = self->state;
  if (!st.conn)
    return;
  auto r = control::send_packet(st.conn.get(), control::to_wire(message), fds,
                                control::Clock::now() + write_deadline);
  if (!r)
    close_connection(self, "writing to the VMM failed: " + r.error().message());
}

void maybe_quit(Self self) {
  auto& st = self->state;
  if (st.closing && st.in_flight == 0)
    self->quit();
}

/// Stops reading; the session ends once every running command is answered.
void close_connection(Self self, const std::string& why) {
  auto& st = self->state;
  if (!st.closing) {
    st.closing = true;
    log::info("session " + std::to_string(st.id) + ": " + why);
    if (st.reader)
      st.reader->stop();
  }
  maybe_quit(self);
}

/// Answers a command that was counted in flight (with `fds`, if any).
void finish(Self self, const json& reply, const std::vector<int>& fds = {}) {
  auto& st = self->state;
  st.commands.finish(reply);
  if (!st.closing)
    send(self, reply, fds);
  if (st.in_flight > 0)
    --st.in_flight;
  maybe_quit(self);
}

void finish_error(Self self, const json& id, const Error& e) { finish(self, control::error_reply(id, e)); }

void finish_caf(Self self, const json& id, const caf::error& e, const std::string& cmd) {
  finish_error(self, id, from_caf(e, cmd));
}

/// A request to the device whose reply of type R becomes the result.
template <class R, class ToJson, class... Ts>
void ask(Self self, const device_actor& dev, milliseconds deadline, const json& id, const std::string& cmd,
         ToJson to_json, Ts&&... xs) {
  self->request(dev, deadline, std::forward<Ts>(xs)...)
      .then([self, id, to_json](R& r) { finish(self, control::ok_reply(id, to_json(r))); },
            [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
}

template <class... Ts>
void ask_ok(Self self, const device_actor& dev, milliseconds deadline, const json& id,
            const std::string& cmd, Ts&&... xs) {
  ask<caf::ok_atom>(self, dev, deadline, id, cmd, [](caf::ok_atom) { return json::object(); },
                    std::forward<Ts>(xs)...);
}

/// A snapshot or restore: its progress goes to this VMM as
/// `transfer_progress` events (actors/transfer_events.hpp), the last one,
/// with the result, right before the reply.
template <class Options>
void ask_transfer(Self self, const device_actor& dev, const json& id, const std::string& cmd,
                  const std::string& device, Options o) {
  const std::string key = id.dump();
  self->state.transfers.insert(key);
  auto relay = spawn_transfer_events(self, self, key, device, cmd);
  o.progress = relay;
  // from now on no event of this command reaches the VMM: the reply follows
  auto end = [self, key, relay] {
    self->state.transfers.erase(key);
    caf::anon_send_exit(relay, caf::exit_reason::user_shutdown);
  };
  const auto atom = [] {
    if constexpr (std::is_same_v<Options, SnapshotOptions>)
      return snapshot_atom_v;
    else
      return restore_atom_v;
  }();
  self->request(dev, max_transfer_time + device_deadline, atom, std::move(o))
      .then(
          [self, id, cmd, device, end](SnapshotInfo& r) {
            end();
            if (!self->state.closing)
              send(self, transfer_progress_event(device, cmd, r.state_bytes, r.state_bytes,
                                                 r.elapsed_us));
            finish(self, control::ok_reply(id, transfer_json(r)));
          },
          [self, id, cmd, end](caf::error& e) {
            end();
            finish_caf(self, id, e, cmd);
          });
}

/// Seconds without progress that fail a snapshot/restore transfer (`timeout`, default 60).
Result<uint32_t> transfer_timeout_ms(Args& a) {
  auto t = a.u64("timeout", 1, 86400, 60);
  if (!t)
    return std::move(t).error();
  return static_cast<uint32_t>(*t * 1000);
}

/// The handler's names for the parts of `x` (not all are used by each).
#define VUFRONT_DEVICE_COMMAND_NAMES(x)                 \
  [[maybe_unused]] Self self = (x).self;                \
  [[maybe_unused]] const json& id = (x).id;             \
  [[maybe_unused]] const std::string& cmd = (x).cmd;    \
  [[maybe_unused]] const device_actor& dev = (x).dev;   \
  [[maybe_unused]] const DeviceSetup& setup = (x).setup; \
  [[maybe_unused]] FdPool& fds = (x).fds;               \
  [[maybe_unused]] Args& a = (x).a

/// One device command being run: what its handler needs.
struct DeviceCommand {
  Self self;
  const json& id;
  const std::string& cmd;
  const device_actor& dev;
  const DeviceSetup& setup;
  FdPool& fds;
  Args a;
  /// Every argument and fd was used.
  Result<void> no_more() {
    if (auto d = a.done(); !d)
      return d;
    return fds.all_used();
  }
};

Result<void> command_status(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  if (auto r = x.no_more(); !r)
    return r;
  bool vmm = setup.shmem_owner != 0;
  ask<DeviceStatus>(self, dev, device_deadline, id, cmd,
                    [vmm](const DeviceStatus& s) { return status_json(s, vmm); }, status_atom_v);
  return ok();
}

Result<void> command_connect(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto n = negotiate_from(a, setup.negotiate);
  if (!n)
    return std::move(n).error();
  if (auto r = fds.all_used(); !r)
    return r;
  ask<DeviceInfo>(self, dev, device_deadline, id, cmd, [](const DeviceInfo& i) { return info_json(i); },
                  negotiate_atom_v, *n);
  return ok();
}

Result<void> command_set_memory(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto m = memory_from(a, fds);
  if (!m)
    return std::move(m).error();
  if (auto r = fds.all_used(); !r)
    return r;
  ask_ok(self, dev, device_deadline, id, cmd, memory_atom_v, std::move(m).value());
  return ok();
}

Result<void> command_add_memory_region(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto r = region_from(a, fds);
  if (!r)
    return std::move(r).error();
  if (auto u = fds.all_used(); !u)
    return u;
  ask_ok(self, dev, device_deadline, id, cmd, mem_add_atom_v, std::move(r).value());
  return ok();
}

Result<void> command_remove_memory_region(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto gpa = a.u64("gpa", 0, UINT64_MAX);
  if (!gpa)
    return std::move(gpa).error();
  if (auto r = x.no_more(); !r)
    return r;
  ask_ok(self, dev, device_deadline, id, cmd, mem_rm_atom_v, *gpa);
  return ok();
}

Result<void> command_activate(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto spec = activation_from(a, fds);
  if (!spec)
    return std::move(spec).error();
  if (auto r = fds.all_used(); !r)
    return r;
  ask_ok(self, dev, device_deadline, id, cmd, activate_atom_v, std::move(spec).value());
  return ok();
}

Result<void> command_read_config(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto off = a.u64("offset", 0, 0xffff);
  if (!off)
    return std::move(off).error();
  auto size = a.u64("size", 1, 4096);
  if (!size)
    return std::move(size).error();
  if (auto r = x.no_more(); !r)
    return r;
  ask<std::vector<uint8_t>>(
      self, dev, device_deadline, id, cmd,
      [](const std::vector<uint8_t>& d) { return json{{"data", control::to_hex(d)}}; },
      rd_config_atom_v, static_cast<uint32_t>(*off), static_cast<uint32_t>(*size));
  return ok();
}

Result<void> command_write_config(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto off = a.u64("offset", 0, 0xffff);
  if (!off)
    return std::move(off).error();
  auto text = a.string("data", 8192);
  if (!text)
    return std::move(text).error();
  auto data = control::from_hex(*text, "args.data");
  if (!data)
    return std::move(data).error();
  if (auto r = x.no_more(); !r)
    return r;
  ask_ok(self, dev, device_deadline, id, cmd, wr_config_atom_v, static_cast<uint32_t>(*off),
         std::move(data).value());
  return ok();
}

Result<void> command_state_change(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  if (auto r = x.no_more(); !r)
    return r;
  if (cmd == "sleep")
    ask_ok(self, dev, device_deadline, id, cmd, sleep_atom_v);
  else if (cmd == "wake")
    ask_ok(self, dev, device_deadline, id, cmd, wake_atom_v);
  else if (cmd == "reset")
    ask_ok(self, dev, device_deadline, id, cmd, caf::reset_atom_v);
  else if (cmd == "reconnect")
    ask_ok(self, dev, device_deadline, id, cmd, reconnect_atom_v);
  else {
    self->send(dev, cancel_atom_v);
    finish(self, control::ok_reply(id, json::object()));
  }
  return ok();
}

Result<void> command_snapshot(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  SnapshotOptions o;
  auto file = file_from(a, fds, self->state.files, true);
  if (!file)
    return std::move(file).error();
  auto max = a.u64("max_bytes", 1, uint64_t{1} << 62, o.max_bytes);
  if (!max)
    return std::move(max).error();
  auto t = transfer_timeout_ms(a);
  if (!t)
    return std::move(t).error();
  if (auto r = x.no_more(); !r)
    return r;
  o.path = file->path;
  o.target = file->target;
  o.max_bytes = *max;
  o.timeout_ms = *t;
  ask_transfer(self, dev, id, cmd, setup.id, std::move(o));
  return ok();
}

Result<void> command_restore(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  RestoreOptions o;
  auto file = file_from(a, fds, self->state.files, false);
  if (!file)
    return std::move(file).error();
  auto t = transfer_timeout_ms(a);
  if (!t)
    return std::move(t).error();
  if (a.has("activation")) {
    auto act = a.object("activation");
    if (!act)
      return std::move(act).error();
    auto spec = activation_from(*act, fds);
    if (!spec)
      return std::move(spec).error();
    o.activation = std::move(spec).value();
  } else {
    (void)a.u64("activation", 0, 0, 0);  // known, absent
  }
  if (auto r = x.no_more(); !r)
    return r;
  o.path = file->path;
  o.target = file->target;
  o.timeout_ms = *t;
  ask_transfer(self, dev, id, cmd, setup.id, std::move(o));
  return ok();
}

Result<void> command_shared_memory_region(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  if (auto r = x.no_more(); !r)
    return r;
  self->request(dev, device_deadline, shmem_atom_v)
      .then(
          [self, id](uint8_t shmid, uint64_t size) {
            finish(self, control::ok_reply(id, {{"shmid", shmid}, {"size", size}}));
          },
          [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
  return ok();
}

/// dirty_log_start: the log as fd 0 of the reply; dirty_log_stop: nothing.
Result<void> command_dirty_log(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  if (auto r = x.no_more(); !r)
    return r;
  const bool on = cmd == "dirty_log_start";
  self->request(dev, device_deadline, dirty_log_atom_v, on)
      .then(
          [self, id, on](SharedFd& fd, uint64_t size) {
            if (!on || !fd)
              return finish(self, control::ok_reply(id, json::object()));
            finish(self, control::ok_reply(id, {{"fd", 0}, {"size", size}}), {fd->get()});
          },
          [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
  return ok();
}

Result<void> command_set_shmem_owner(DeviceCommand& x) {
  VUFRONT_DEVICE_COMMAND_NAMES(x);
  auto owner = a.one_of("owner", {"vmm", "vufront"});
  if (!owner)
    return std::move(owner).error();
  if (auto r = x.no_more(); !r)
    return r;
  self->request(self->state.server, lookup_deadline, owner_atom_v, setup.id, self->state.id,
                *owner == "vmm")
      .then([self, id](caf::ok_atom) { finish(self, control::ok_reply(id, json::object())); },
            [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
  return ok();
}

/// Runs a command of one device. Returns an error for a command refused
/// before anything was sent (the caller answers it).
Result<void> device_command(Self self, const Command& c, const device_actor& dev,
                            const DeviceSetup& setup, FdPool& fds) {
  using Handler = Result<void> (*)(DeviceCommand&);
  static const std::map<std::string, Handler> handlers = {
      {"status", command_status},
      {"connect", command_connect},
      {"set_memory", command_set_memory},
      {"add_memory_region", command_add_memory_region},
      {"remove_memory_region", command_remove_memory_region},
      {"activate", command_activate},
      {"read_config", command_read_config},
      {"write_config", command_write_config},
      {"sleep", command_state_change},
      {"wake", command_state_change},
      {"reset", command_state_change},
      {"cancel", command_state_change},
      {"reconnect", command_state_change},
      {"snapshot", command_snapshot},
      {"restore", command_restore},
      {"shared_memory_region", command_shared_memory_region},
      {"set_shmem_owner", command_set_shmem_owner},
      {"dirty_log_start", command_dirty_log},
      {"dirty_log_stop", command_dirty_log},
  };
  auto it = handlers.find(c.cmd);
  if (it == handlers.end())
    return make_error(errc::unknown_request, c.cmd, "no such command (see docs/attach-protocol.md)");
  DeviceCommand x{self, c.id, c.cmd, dev, setup, fds, Args(c.args, "args")};
  return it->second(x);
}

/// Commands of the process, not of one device.
bool server_command(Self self, const Command& c, FdPool& fds) {
  const json id = c.id;
  const std::string cmd = c.cmd;
  if (cmd != "hello" && cmd != "add_device" && cmd != "remove_device")
    return false;
  Args a(c.args, "args");
  auto refuse = [&](const Error& e) { finish_error(self, id, e); };
  if (c.device)
    return refuse(make_error(errc::bad_message, "command", "\"" + cmd + "\" takes no \"device\"")), true;
  if (cmd == "hello") {
    if (auto r = a.done(); !r)
      return refuse(r.error()), true;
    if (auto r = fds.all_used(); !r)
      return refuse(r.error()), true;
    self->request(self->state.server, lookup_deadline, hello_atom_v)
        .then([self, id](json& hello) { finish(self, control::ok_reply(id, std::move(hello))); },
              [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
    return true;
  }
  if (cmd == "add_device") {
    auto setup = device_setup_from(a);
    if (!setup)
      return refuse(setup.error()), true;
    if (auto r = fds.all_used(); !r)
      return refuse(r.error()), true;
    self->request(self->state.server, device_deadline, add_dev_atom_v, std::move(setup).value())
        .then([self, id](json& info) { finish(self, control::ok_reply(id, std::move(info))); },
              [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
    return true;
  }
  auto dev_id = a.string("id", 32);
  if (!dev_id)
    return refuse(dev_id.error()), true;
  if (auto r = a.done(); !r)
    return refuse(r.error()), true;
  if (auto r = fds.all_used(); !r)
    return refuse(r.error()), true;
  self->request(self->state.server, device_deadline, rm_dev_atom_v, *dev_id)
      .then([self, id](caf::ok_atom) { finish(self, control::ok_reply(id, json::object())); },
            [self, id, cmd](caf::error& e) { finish_caf(self, id, e, cmd); });
  return true;
}

void handle_packet(Self self, control::Packet& p) {
  auto& st = self->state;
  if (st.closing)
    return;
  if (p.truncated) {
    send(self, control::error_reply(nullptr, make_error(errc::oversized, "command",
                                                        "a message of " + std::to_string(p.size) +
                                                            " bytes, at most " +
                                                            std::to_string(control::max_packet_bytes))));
    return;
  }
  json id;
  auto c = control::parse_command(p.text, id);
  if (!c) {
    send(self, control::error_reply(id, c.error()));
    return;
  }
  if (p.fds_truncated) {
    send(self, control::error_reply(id, make_error(errc::bad_fds, c->cmd,
                                                   "more than " + std::to_string(control::max_packet_fds) +
                                                       " fds in one message")));
    return;
  }
  if (st.in_flight >= control::max_in_flight) {
    send(self, control::error_reply(id, make_error(errc::busy, c->cmd,
                                                   std::to_string(control::max_in_flight) +
                                                       " commands are in flight; wait for a reply")));
    return;
  }
  ++st.in_flight;
  auto fds = std::make_shared<FdPool>(std::move(p.fds));
  if (server_command(self, *c, *fds))
    return;
  const std::string device = c->device.value_or("");
  auto cmd = std::make_shared<Command>(std::move(c).value());
  self->request(st.server, lookup_deadline, lookup_atom_v, device)
      .then(
          [self, cmd, fds](const device_actor& dev, const DeviceSetup& setup) {
            self->state.commands.start(self->state.id, *cmd, setup.id);
            if (auto r = device_command(self, *cmd, dev, setup, *fds); !r) {
              Error e = std::move(r).error();
              if (e.request.empty() || e.request == "command" || e.request == "fds")
                e.request = cmd->cmd;
              finish_error(self, cmd->id, e);
            }
          },
          [self, cmd](caf::error& e) { finish_caf(self, cmd->id, e, cmd->cmd); });
}

/// An event the server pushed, with the fds it carries, to the VMM.
void push_event(Self self, const json& event, const std::vector<SharedFd>& fds) {
  if (self->state.closing)
    return;
  std::vector<int> raw;
  for (const auto& f : fds)
    if (f)
      raw.push_back(f->get());
  send(self, event, raw);
}

}  // namespace

control_session_actor::behavior_type control_session_impl(
    control_session_actor::stateful_pointer<ControlSessionData> self, control_server_actor server,
    uint64_t id, SharedFd conn, FilePolicy files) {
  auto& st = self->state;
  st.server = std::move(server);
  st.id = id;
  st.files = std::move(files);
  st.conn = conn ? conn->duplicate() : UniqueFd{};
  if (!st.conn) {
    log::error("session " + std::to_string(id) + ": cannot keep the connection's fd");
    self->quit();
    return {[](packet_atom, const std::shared_ptr<control::Packet>&) {},
            [](ctl_eof_atom, const std::string&) {},
            [](push_atom, const json&, const std::vector<SharedFd>&) {},
            [](progress_atom, const std::string&, const json&) {}};
  }
  // The greeting goes first; only then are commands read.
  ++st.in_flight;
  self->request(st.server, lookup_deadline, hello_atom_v)
      .then(
          [self](json& hello) {
            auto& now = self->state;
            --now.in_flight;
            send(self, hello);
            now.greeted = true;
            for (auto& [event, fds] : std::exchange(now.early, {}))
              push_event(self, event, fds);
            if (now.closing)
              return maybe_quit(self);
            auto r = ControlReader::start(now.conn.get(), caf::actor_cast<caf::actor_addr>(self),
                                          reader_credits);
            if (!r)
              return close_connection(self, r.error().message());
            now.reader = std::move(r).value();
          },
          [self](caf::error& e) {
            --self->state.in_flight;
            close_connection(self, "no greeting: " + from_caf(e, "hello").message());
          });
  return {
      [self](packet_atom, const std::shared_ptr<control::Packet>& p) {
        taken_over(p.get());
        if (p)
          handle_packet(self, *p);
        if (self->state.reader)
          self->state.reader->packet_done();
      },
      [self](ctl_eof_atom, const std::string& why) { close_connection(self, why); },
      [self](push_atom, const json& event, const std::vector<SharedFd>& fds) {
        if (!self->state.greeted)
          self->state.early.emplace_back(event, fds);
        else
          push_event(self, event, fds);
      },
      [self](progress_atom, const std::string& command, const json& event) {
        if (!self->state.closing && self->state.transfers.count(command) != 0)
          send(self, event);
      },
  };
}

}  // namespace vufront::actors
