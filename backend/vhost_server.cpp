#include "backend/vhost_server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "backend/request_log.hpp"
#include "base/unix_socket.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

namespace {

constexpr auto io_deadline = std::chrono::milliseconds(5000);

void log(const char* fmt, const std::string& a, const std::string& b = {}) {
  std::fprintf(stderr, "vufront-backend: ");
  std::fprintf(stderr, fmt, a.c_str(), b.c_str());
  std::fputc('\n', stderr);
}

/// Writes this process's pid to `path` (nothing when empty).
Result<void> write_pidfile(const std::string& path, const char* op) {
  if (path.empty())
    return ok();
  std::ofstream pf(path);
  pf << ::getpid() << "\n";
  if (!pf)
    return make_error(errc::io_error, op, "cannot write pidfile " + path);
  return ok();
}

}  // namespace

uint64_t offered_features(const Options& o, const Device& d) {
  uint64_t f = bit(feature::version_1) | bit(feature::protocol_features) |
               bit(feature::indirect_desc) | bit(feature::log_all) | d.device_features();
  if (o.packed)
    f |= bit(feature::ring_packed);
  for (const Refusal& r : o.refusals)
    if (!r.protocol)
      f &= ~bit(r.bit);
  return f;
}

uint64_t offered_protocol_features(const Options& o, const Device& d) {
  namespace pf = protocol_feature;
  uint64_t f = bit(pf::mq) | bit(pf::reply_ack) | bit(pf::backend_req) | bit(pf::config) |
               bit(pf::configure_mem_slots) | bit(pf::status) | bit(pf::reset_device) |
               bit(pf::inflight_shmfd) | bit(pf::device_state) | bit(pf::log_shmfd);
  if (o.shmem_size > 0 && d.shared_window().fd >= 0)
    f |= bit(pf::shmem);
  for (const Refusal& r : o.refusals)
    if (r.protocol)
      f &= ~bit(r.bit);
  return f;
}

VhostServer::VhostServer(Options options, std::unique_ptr<Device> device)
    : opt_(std::move(options)), dev_(std::move(device)), faults_(opt_.faults) {}

VhostServer::~VhostServer() {
  s_.reset();
  if (listening_) {
    // the socket file only while it is still ours (not replaced meanwhile)
    struct stat sb {};
    if (::stat(opt_.socket_path.c_str(), &sb) == 0 && sb.st_dev == socket_dev_ &&
        sb.st_ino == socket_ino_)
      ::unlink(opt_.socket_path.c_str());
    if (!opt_.pidfile.empty())
      ::unlink(opt_.pidfile.c_str());
  }
}

bool VhostServer::negotiated(unsigned protocol_bit) const {
  return s_ && has_bit(s_->protocol, protocol_bit);
}

Result<void> VhostServer::listen() {
  constexpr const char* op = "listen";
  auto addr = unix_address(opt_.socket_path, op);
  if (!addr)
    return std::move(addr).error();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGHUP);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0)
    return make_error(errc::io_error, op, "sigprocmask", errno);
  // Writes into a state pipe whose reader is gone (--state-endless, a front-end
  // giving up) must fail with EPIPE, not kill the daemon.
  ::signal(SIGPIPE, SIG_IGN);
  // OWNERSHIP: adopted at once.
  signal_fd_ = UniqueFd::adopt(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_)
    return make_error(errc::io_error, op, "signalfd", errno);
  if (opt_.connect) {
    if (auto r = write_pidfile(opt_.pidfile, op); !r)
      return r;
    if (opt_.verbose)
      log("connecting to %s%s", opt_.socket_path);
    return ok();
  }
  // Only a stale socket file (nobody listens on it) is replaced: a live
  // back-end's socket or any other file at the path is left alone.
  const mode_t umask_now = ::umask(0);
  ::umask(umask_now);
  ListenFailure why{};
  listen_fd_ = make_listening_socket(opt_.socket_path, SOCK_STREAM, 0, ListenOptions{0777 & ~umask_now, -1}, 4, why);
  // A listener that goes within a second was a back-end on its way out
  // (killed, or _exit in progress: its fds close a moment after its peers
  // see the connection drop); a restart right after it takes the socket.
  for (int i = 0; i < 50 && why == ListenFailure::in_use; ++i) {
    ::usleep(20000);
    listen_fd_ = make_listening_socket(opt_.socket_path, SOCK_STREAM, 0, ListenOptions{0777 & ~umask_now, -1}, 4, why);
  }
  const std::string what = "listen " + opt_.socket_path;
  switch (why) {
    case ListenFailure::none: break;
    case ListenFailure::bad_path:
      return make_error(errc::invalid_argument, what, "socket path must be 1..107 bytes");
    case ListenFailure::in_use:
      return make_error(errc::bad_state, what,
                        "another process listens on this socket already (left as it is)");
    case ListenFailure::not_a_socket:
      return make_error(errc::invalid_argument, what,
                        "the path exists and is not a socket (left as it is)");
    case ListenFailure::system:
      return make_error(errc::io_error, what, "cannot listen", errno);
  }
  struct stat sb {};
  if (::stat(opt_.socket_path.c_str(), &sb) == 0) {
    socket_dev_ = sb.st_dev;
    socket_ino_ = sb.st_ino;
  }
  listening_ = true;
  if (auto r = write_pidfile(opt_.pidfile, op); !r)
    return r;
  if (opt_.verbose)
    log("listening on %s%s", opt_.socket_path);
  return ok();
}

bool VhostServer::handle_signal() {
  signalfd_siginfo si{};
  while (::read(signal_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (si.ssi_signo == SIGUSR1) {
      if (s_ && s_->backend && negotiated(protocol_feature::config))
        send_backend(BackendReq::config_change_msg, nullptr, 0, -1);
      else
        log("SIGUSR1: no back-end channel with CONFIG, config change not sent%s%s", "");
    } else if (si.ssi_signo == SIGUSR2) {
      if (s_)
        toggle_shmem();
    } else if (si.ssi_signo == SIGHUP) {
      if (s_) {
        log("SIGHUP: dropping the front-end connection%s%s", "");
        drop_ = true;
      }
    } else {
      stop_ = true;
    }
  }
  return stop_;
}

UniqueFd VhostServer::connect_to_frontend() {
  auto addr = unix_address(opt_.socket_path, "connect");
  if (!addr) {  // listen() checked the path already
    log("%s%s", addr.error().message());
    return {};
  }
  while (!stop_) {
    UniqueFd s = make_unix_socket(SOCK_STREAM);
    if (s && unix_connect(s.get(), *addr))
      return s;
    pollfd p{signal_fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0 && handle_signal())
      break;
  }
  return {};
}

int VhostServer::run() {
  while (opt_.connect && !stop_) {
    UniqueFd s = connect_to_frontend();
    if (!s)
      break;
    serve(std::move(s));
    if (opt_.once)
      break;
  }
  while (!opt_.connect && !stop_) {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {signal_fd_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      log("poll: %s%s", std::strerror(errno));
      return 1;
    }
    if ((p[1].revents & POLLIN) && handle_signal())
      break;
    if (!(p[0].revents & POLLIN))
      continue;
    // OWNERSHIP: adopted at once.
    UniqueFd client = UniqueFd::adopt(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client)
      continue;
    serve(std::move(client));
    if (opt_.once)
      break;
  }
  if (opt_.verbose)
    log("exiting%s%s", "");
  return 0;
}

void VhostServer::serve(UniqueFd client) {
  if (!set_nonblocking(client.get(), true))
    return;
  s_ = std::make_unique<Session>(Connection(std::move(client)));
  dev_->reset();
  init_vrings();
  if (opt_.verbose)
    log("front-end connected%s%s", "");
  while (!stop_) {
    std::vector<pollfd> p;
    p.push_back({signal_fd_.get(), POLLIN, 0});
    p.push_back({s_->conn.fd(), POLLIN, 0});
    p.push_back({s_->backend ? s_->backend->fd() : -1, POLLIN, 0});
    for (const Vring& v : s_->vrings)
      p.push_back({v.started && v.kick ? v.kick.get() : -1, POLLIN, 0});
    if (::poll(p.data(), p.size(), -1) < 0) {
      if (errno == EINTR)
        continue;
      log("poll: %s%s", std::strerror(errno));
      break;
    }
    if ((p[0].revents & POLLIN) && handle_signal())
      break;
    if (drop_) {
      drop_ = false;
      break;
    }
    if (p[2].revents != 0)
      on_backend_readable();
    for (size_t i = 0; i < s_->vrings.size(); ++i)
      if (p[3 + i].revents & POLLIN) {
        uint64_t v = 0;
        [[maybe_unused]] const ssize_t n = ::read(s_->vrings[i].kick.get(), &v, sizeof v);
        process_ring(static_cast<uint32_t>(i));
      }
    if (p[1].revents != 0) {
      auto m = s_->conn.receive(wire::max_payload_size, max_fds_per_message,
                                deadline_in(io_deadline), "request");
      if (!m) {
        if (m.error().code != errc::disconnected)
          log("dropping front-end: %s%s", m.error().message());
        break;
      }
      if (on_message(std::move(*m)) == Next::drop)
        break;
      for (uint32_t i = 0; i < s_->vrings.size(); ++i)
        if (s_->vrings[i].resubmit && ready(i)) {
          s_->vrings[i].resubmit = false;
          process_ring(i);  // no kick comes for requests the guest already made
        }
      if (s_->start_pending) {
        s_->start_pending = false;
        device_started();
      }
    }
  }
  if (opt_.verbose)
    log("front-end disconnected%s%s", dev_->summary().empty() ? "" : "; " + dev_->summary());
  s_.reset();
}

Result<void> VhostServer::reply(const FrontendReply& r) {
  return send_reply(s_->conn, r, deadline_in(io_deadline));
}

Negotiated VhostServer::context() const {
  Negotiated n;
  n.offered_features = offered_features(opt_, *dev_);
  n.acked_features = s_->features;
  n.offered_protocol_features = offered_protocol_features(opt_, *dev_);
  n.acked_protocol_features = s_->protocol;
  n.num_queues = static_cast<uint32_t>(s_->vrings.size());
  n.max_mem_slots = max_mem_slots;
  return n;
}

VhostServer::Next VhostServer::on_message(Message&& m) {
  const uint32_t code = m.header.request;
  const std::string name = frontend_req_name(code);
  const FaultAction fa = faults_.on_request(code);
  if (fa.crash) {
    log("--crash-at %s: exiting without cleanup%s", name);
    crash_now();
  }
  if (fa.close) {
    log("--close-at %s: closing the connection%s", name);
    return Next::drop;
  }
  if (fa.oversize)
    send_oversized_backend_request(name);
  if (fa.delay_ms > 0) {
    log("--delay-reply %s: %s ms before the answer", name, std::to_string(fa.delay_ms));
    std::this_thread::sleep_for(std::chrono::milliseconds(fa.delay_ms));
  }
  if (opt_.verbose) {
    const auto known = frontend_req_from_code(code);
    log("<- %s%s", name, " (" + std::to_string(m.header.size) + " bytes)" +
                             (known ? request_summary(*known, m) : std::string()));
  }
  auto req = decode_frontend_request(std::move(m), context());
  if (!req) {
    log("dropping front-end: %s%s", req.error().message());
    return Next::drop;
  }
  Status st = dispatch(*req);
  if (!st) {
    log("dropping front-end: %s%s", st.error().message());
    return Next::drop;
  }
  if (st->has_value() && req->need_reply) {
    if (auto r = reply(encode_ack(req->req, **st)); !r) {
      log("dropping front-end: %s%s", r.error().message());
      return Next::drop;
    }
  } else if (st->has_value() && **st != 0) {
    log("%s failed (no ack requested)%s", name);
  }
  return Next::keep;
}

}  // namespace vufront::backend
