#include "app/attach_command.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/control_server.hpp"
#include "actors/error.hpp"
#include "actors/system.hpp"
#include "app/backend_wait.hpp"
#include "app/service.hpp"
#include "ops/cancel_on_signal.hpp"
#include "base/listen_options.hpp"
#include "base/log.hpp"
#include "base/unix_socket.hpp"
#include "control/protocol.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::app {

namespace {

constexpr const char* kOpt = "vufront attach";

/// "ID=VALUE" -> (ID, VALUE); "VALUE" -> ("", VALUE).
std::pair<std::string, std::string> split_id(const std::string& s) {
  auto eq = s.find('=');
  if (eq == std::string::npos)
    return {"", s};
  return {s.substr(0, eq), s.substr(eq + 1)};
}

std::string default_prefix(DeviceKind k) {
  switch (k) {
    case DeviceKind::blk: return "disk";
    case DeviceKind::net: return "net";
    case DeviceKind::fs: return "fs";
    default: return "dev";
  }
}

}  // namespace

Result<std::vector<actors::DeviceSetup>> device_setups(const std::vector<std::string>& backends,
                                                       const std::vector<std::string>& kinds,
                                                       const std::vector<std::string>& queues,
                                                       uint32_t max_queue_size) {
  if (backends.empty())
    return make_error(errc::invalid_argument, kOpt, "--backend: at least one back-end socket");
  // Kinds and queue counts by id ("" = for every device without its own).
  std::map<std::string, DeviceKind> kind_of;
  for (const auto& k : kinds) {
    auto [id, v] = split_id(k);
    auto kind = device_kind_from_string(v);
    if (!kind || *kind == DeviceKind::generic)
      return make_error(errc::invalid_argument, kOpt, "--device " + k + ": the kind is blk, net or fs");
    kind_of[id] = *kind;
  }
  std::map<std::string, uint16_t> queues_of;
  for (const auto& q : queues) {
    auto [id, v] = split_id(q);
    char* end = nullptr;
    unsigned long n = std::strtoul(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 0x8000)
      return make_error(errc::invalid_argument, kOpt, "--queues " + q + ": a count 1..32768");
    queues_of[id] = static_cast<uint16_t>(n);
  }
  std::vector<actors::DeviceSetup> out;
  std::set<std::string> ids, sockets;
  std::map<std::string, int> numbered;
  for (const auto& b : backends) {
    auto [id, socket] = split_id(b);
    if (socket.empty() || socket.size() > max_unix_path)
      return make_error(errc::invalid_argument, kOpt, "--backend " + b + ": a socket path of 1..107 bytes");
    DeviceKind kind = DeviceKind::blk;
    if (!id.empty() && kind_of.count(id))
      kind = kind_of[id];
    else if (kind_of.count(""))
      kind = kind_of[""];
    if (id.empty()) {
      std::string prefix = default_prefix(kind);
      do
        id = prefix + std::to_string(numbered[prefix]++);
      while (ids.count(id));
    }
    if (!control::valid_device_id(id))
      return make_error(errc::invalid_argument, kOpt,
                        "--backend " + b + ": a device id is 1..32 letters, digits, '-', '_', '.'");
    if (!ids.insert(id).second)
      return make_error(errc::invalid_argument, kOpt, "--backend " + b + ": device id " + id + " given twice");
    if (!sockets.insert(socket).second)
      return make_error(errc::invalid_argument, kOpt, "--backend " + b + ": socket " + socket + " given twice");
    actors::DeviceSetup s;
    s.id = id;
    s.backend = socket;
    s.negotiate.kind = kind;
    s.negotiate.queues = queues_of.count(id) ? queues_of[id] : (queues_of.count("") ? queues_of[""] : 1);
    s.negotiate.max_queue_size = static_cast<uint16_t>(max_queue_size);
    s.negotiate.inflight = true;  // a restarted back-end resubmits what was in flight
    out.push_back(std::move(s));
  }
  for (const auto& [id, k] : kind_of)
    if (!id.empty() && !ids.count(id))
      return make_error(errc::invalid_argument, kOpt, "--device " + id + "=...: no --backend " + id + "=...");
  for (const auto& [id, n] : queues_of)
    if (!id.empty() && !ids.count(id))
      return make_error(errc::invalid_argument, kOpt, "--queues " + id + "=...: no --backend " + id + "=...");
  return out;
}

Result<void> assign_vmm_sockets(std::vector<actors::DeviceSetup>& devices,
                               const std::vector<std::string>& vmm_sockets) {
  std::set<std::string> paths;
  for (const auto& d : devices)
    paths.insert(d.backend);
  for (const auto& v : vmm_sockets) {
    auto [id, path] = split_id(v);
    if (path.empty() || path.size() > max_unix_path)
      return make_error(errc::invalid_argument, kOpt, "--vmm-socket " + v + ": a socket path of 1..107 bytes");
    if (id.empty() && devices.size() != 1)
      return make_error(errc::invalid_argument, kOpt,
                        "--vmm-socket " + v + ": name the device (ID=PATH) when there are several");
    actors::DeviceSetup* dev = nullptr;
    for (auto& d : devices)
      if (id.empty() || d.id == id)
        dev = &d;
    if (dev == nullptr)
      return make_error(errc::invalid_argument, kOpt, "--vmm-socket " + v + ": no --backend " + id + "=...");
    if (!dev->vmm_socket.empty())
      return make_error(errc::invalid_argument, kOpt,
                        "--vmm-socket " + v + ": device " + dev->id + " has a VMM socket already");
    if (!paths.insert(path).second)
      return make_error(errc::invalid_argument, kOpt, "--vmm-socket " + v + ": " + path + " is used twice");
    dev->vmm_socket = path;
  }
  return ok();
}

namespace {

/// --snapshot-dir opened (O_DIRECTORY) with its canonical path.
Result<std::pair<SharedFd, std::string>> open_snapshot_dir(const std::string& dir) {
  char* real = ::realpath(dir.c_str(), nullptr);
  if (real == nullptr)
    return make_error(errc::invalid_argument, "--snapshot-dir", dir, errno);
  std::string canonical(real);
  std::free(real);
  // OWNERSHIP: owned from birth; the sessions share it.
  UniqueFd fd = UniqueFd::adopt(::open(canonical.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd)
    return make_error(errc::invalid_argument, "--snapshot-dir", dir, errno);
  return std::make_pair(share(std::move(fd)), canonical);
}

/// What the start-up log says about who may connect and name files.
std::string access_line(const AttachOptions& opts) {
  std::string uids = std::to_string(::geteuid());
  for (auto u : opts.allowed_uids)
    uids += ", " + std::to_string(u);
  std::string sockets = opts.control.empty() ? "no control socket" : "control socket " + describe(opts.control_listen);
  for (const auto& d : opts.devices)
    if (!d.vmm_socket.empty()) {
      sockets += "; VMM sockets " + describe(opts.vmm_listen);
      break;
    }
  return sockets + "; uids allowed: " + uids +
         "; snapshot files: " +
         (opts.snapshot_dir.empty() ? "fds, and paths from uid " + std::to_string(::geteuid())
                                    : "fds, and paths under " + opts.snapshot_dir);
}

actors::ControlServerConfig server_config(const AttachOptions& opts, SharedFd snapshot_dir,
                                          std::string snapshot_dir_path) {
  actors::ControlServerConfig sc;
  sc.control_path = opts.control;
  sc.allowed_uids = opts.allowed_uids;
  sc.control_listen = opts.control_listen;
  sc.backend_listen = opts.backend_listen;
  sc.vmm_listen = opts.vmm_listen;
  sc.snapshot_dir = std::move(snapshot_dir);
  sc.snapshot_dir_path = std::move(snapshot_dir_path);
  sc.devices = opts.devices;
  sc.connect_timeout = opts.timeout;
  sc.wait_for_backend = opts.wait_for_backend;
  sc.timeouts.request = opts.timeout;
  sc.timeouts.drain = opts.drain_timeout;
  sc.reconnect = opts.reconnect;
  sc.fence_kill = opts.fence_kill;
  sc.resume_without_inflight = opts.resume_without_inflight;
  return sc;
}

/// "serving disk0 (blk, /tmp/a.sock[, VMM socket V]), ... on CONTROL (protocol N)", from the server's hello.
std::string serving_line(const nlohmann::json& hello, const AttachOptions& opts) {
  std::string list;
  for (const auto& d : hello["devices"])
    list += std::string(list.empty() ? "" : ", ") + d["id"].get<std::string>() + " (" +
            d["kind"].get<std::string>() + ", " + d["backend"].get<std::string>() +
            (d.contains("vmm_socket") ? ", VMM socket " + d["vmm_socket"].get<std::string>() : "") + ")";
  if (opts.control.empty())
    return "serving " + list + " (no control socket)";
  return "serving " + list + " on " + opts.control + " (protocol " +
         std::to_string(control::protocol_version) + ")";
}

/// Waits until the server ends (a signal ends it); 1 when it failed.
int serve_until_down(caf::actor_system& sys, caf::scoped_actor& self) {
  int status = 0;
  bool down = false;
  while (!down)
    self->receive([&](caf::down_msg& dm) {
      down = true;
      if (dm.reason && dm.reason != caf::exit_reason::user_shutdown) {
        log::error("the server ended: " + sys.render(dm.reason));
        status = 1;
      }
    });
  return status;
}

}  // namespace

int attach_main(const AttachOptions& opts) {
  SharedFd snapshot_dir;
  std::string snapshot_dir_path;
  if (!opts.snapshot_dir.empty()) {
    auto d = open_snapshot_dir(opts.snapshot_dir);
    if (!d) {
      log::error(d.error().message());
      return 2;
    }
    std::tie(snapshot_dir, snapshot_dir_path) = std::move(d).value();
  }
  std::optional<PidFile> pidfile;
  if (!opts.pidfile.empty()) {
    auto p = PidFile::claim(opts.pidfile);
    if (!p) {
      log::error(p.error().message());
      return 1;
    }
    pidfile.emplace(std::move(p).value());
  }
  // Before the actor system: its threads inherit the mask. SIGHUP (a closed
  // terminal, a service manager's reload) does not end the daemon: it is
  // logged and ignored; SIGINT and SIGTERM stop it cleanly.
  ops::CancelOnSignal signals("stopping", [] {
    log::info("SIGHUP: ignored (vufront attach keeps serving; SIGINT or SIGTERM stops it)");
  });
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  if (opts.wait_for_backend)
    for (const auto& d : opts.devices)
      if (auto note = backend_wait_note(d.backend, opts.timeout); !note.empty() && !d.listen)
        log::info(d.id + ": " + note);
  notify_status("connecting to " + std::to_string(opts.devices.size()) + " back-end(s)");
  auto server = sys.spawn(actors::control_server_impl,
                          server_config(opts, snapshot_dir, snapshot_dir_path));
  int status = 0;
  bool listening = false;
  {
    caf::scoped_actor self{sys};
    self->monitor(server);
    // Before the start: a signal while the back-ends are still being
    // connected (each up to --timeout) ends the start at once.
    signals.on_signal([server] { caf::anon_send_exit(server, caf::exit_reason::user_shutdown); });
    // the server answers once every device is negotiated, each bounded by its
    // own connect and request deadlines
    self->request(server, caf::infinite, actors::start_atom_v)
        .receive(
            [&](const nlohmann::json& hello) {
              // the sockets listen: the pid file, then readiness
              signals.on_signal([server] {
                notify_stopping();
                caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
              });
              listening = true;
              if (pidfile)
                if (auto w = pidfile->write(); !w) {
                  log::error(w.error().message());
                  status = 1;
                  return;
                }
              for (const auto& d : hello["devices"])
                if (d.contains("kind_doubt"))
                  log::warning(d["id"].get<std::string>() + ": " + d["kind_doubt"].get<std::string>());
              const std::string line = serving_line(hello, opts);
              log::info(line);
              log::info(access_line(opts));
              notify_ready(line);
            },
            [&](caf::error& e) {
              if (signals.interrupted()) {
                log::info("stopped before serving");
                status = ops::CancelOnSignal::exit_interrupted;
                return;
              }
              log::error(actors::from_caf(e, "start").message());
              status = 1;
            });
    if (status == 0)
      status = serve_until_down(sys, self);
    else
      caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
    signals.on_signal(nullptr);
  }
  notify_stopping();
  if (listening) {
    if (!opts.control.empty())
      ::unlink(opts.control.c_str());  // ours: the server refuses a path in use
    for (const auto& d : opts.devices)
      if (!d.vmm_socket.empty())
        ::unlink(d.vmm_socket.c_str());
  }
  if (status == 0)
    log::info("stopped");
  return status;
}

}  // namespace vufront::app
