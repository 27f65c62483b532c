#include "actors/device_connect.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>

#include "actors/backend_channel.hpp"
#include "actors/device_checks.hpp"
#include "actors/device_steps.hpp"

namespace vufront::actors {

bool ListenSocket::file_is_ours() const {
  struct stat sb {};
  return ::lstat(path.c_str(), &sb) == 0 && static_cast<uint64_t>(sb.st_dev) == dev &&
         static_cast<uint64_t>(sb.st_ino) == ino;
}

ListenSocket::~ListenSocket() {
  if (fd && !path.empty() && file_is_ours())
    ::unlink(path.c_str());
}

namespace {

using namespace device_steps;
using Clock = std::chrono::steady_clock;
using Done = std::function<void(Result<DeviceInfo>)>;

std::string ms_text(milliseconds d) { return std::to_string(d.count()) + " ms"; }

// ---- connect + negotiate ----------------------------------------------------------

/// The connection (negotiate or a reconnect attempt) ends with what a child
/// reported lost meanwhile, if it did: the back-end channel broke during the
/// negotiation, say. Nothing is marked broken then: the device was not
/// connected yet, and the caller fails or tries again.
std::optional<Error> lost_while_connecting(const DeviceData& st) {
  if (st.child_lost.empty())
    return std::nullopt;
  return make_error(errc::broken, "negotiate", "the back-end was lost: " + st.child_lost);
}

/// The new connection's peer process; a lost peer that came back on it
/// (the same process, still running) or has exited needs no fence.
void note_peer(DeviceData& st, const SharedFd& sock) {
  st.peer = {};
  if (auto p = peer_process(sock->get()))
    st.peer.process = std::make_shared<const ProcessHandle>(std::move(p).value());
  else
    st.peer.unknown = p.error().message();
  const pid_t now = st.peer.process ? st.peer.process->pid : 0;
  auto gone = [now](const DeviceData::Peer& lost) {
    return lost.process && (has_exited(*lost.process) || lost.process->pid == now);
  };
  st.lost_peers.erase(std::remove_if(st.lost_peers.begin(), st.lost_peers.end(), gone), st.lost_peers.end());
}

/// After the connection's negotiation: the channel, the hang-up watch, and a
/// round trip to each child so their set-up (threads, fds) is done; a loss
/// any of them reported by then fails it.
void set_up_children(Self self, const DeviceInfo& info, const SharedFd& sock, const SharedFd& ours,
                     Done done) {
  auto& st = self->state;
  if (st.exiting)  // the reply came after the shutdown began: start nothing
    return done(make_error(errc::cancelled, "negotiate", "the device is shutting down"));
  SharedFd channel = info.backend_channel ? ours : SharedFd{};
  st.socket = sock;
  note_peer(st, sock);
  st.channel_socket = channel;
  if (channel) {
    st.channel = self->spawn<caf::linked>(channel_impl, channel, info.protocol_features,
                                          weak(self), st.config.start_threads);
    if (st.mapper)
      self->request(st.channel, local_step, mapper_atom_v, st.mapper, info.shmem_sizes)
          .then([](caf::ok_atom) {}, [](caf::error&) {});
  }
  self->send(st.worker, watch_atom_v, sock, channel);
  auto failed = [self, done](caf::error& e) {
    if (auto lost = lost_while_connecting(self->state))
      return done(*lost);
    done(from_caf(e, "negotiate"));
  };
  auto finish = [self, info, done] {
    if (auto lost = lost_while_connecting(self->state))
      return done(*lost);
    done(info);
  };
  self->request(st.worker, local_step, caf::get_atom_v)
      .then(
          [self, finish, failed](const std::vector<uint64_t>&) {
            if (!self->state.channel)
              return finish();
            self->request(self->state.channel, local_step, caf::get_atom_v)
                .then([finish](uint64_t) { finish(); }, failed);
          },
          failed);
}

}  // namespace

void connect_and_negotiate(Self self, Done done) {
  auto& st = self->state;
  if (st.exiting)
    return done(make_error(errc::cancelled, "negotiate", "the device is shutting down"));
  drop_children(self);
  spawn_children(self);
  if (st.listen && !st.listen->file_is_ours())
    st.listen.reset();  // the socket file was removed or replaced: listen again
  if (st.config.listen && !st.listen) {
    auto l = Connection::listen(st.config.socket, st.config.listen_options);
    if (!l)
      return done(std::move(l).error());
    auto ls = std::make_unique<ListenSocket>();
    ls->fd = share(std::move(l).value());
    ls->path = st.config.socket;
    struct stat sb {};
    if (::fstat(ls->fd->get(), &sb) == 0 && ::lstat(ls->path.c_str(), &sb) == 0) {
      ls->dev = static_cast<uint64_t>(sb.st_dev);
      ls->ino = static_cast<uint64_t>(sb.st_ino);
    }
    st.listen = std::move(ls);
  }
  NegotiateRequest req;
  req.socket = st.config.socket;
  req.connect_timeout_ms = static_cast<uint32_t>(st.config.connect_timeout.count());
  // a first connect says at once that nothing is there; a reconnect waits for
  // the restarted back-end's socket
  req.wait = st.config.wait_for_backend || st.state == DeviceState::reconnecting
                 ? ConnectWait::backend
                 : ConnectWait::socket;
  req.options = st.options;
  req.stop = st.conn_stop;
  if (st.listen)
    req.listen_fd = st.listen->fd;
  SharedFd ours;
  if (st.options.backend_channel) {
    auto pair = make_socketpair();
    if (!pair.first || !pair.second)
      return done(make_error(errc::io_error, "SET_BACKEND_REQ_FD", "socketpair", errno));
    ours = share(std::move(pair.first));
    req.channel_fd = share(std::move(pair.second));
  }
  self->request(st.conn, conn_wait, negotiate_atom_v, std::move(req))
      .then([self, ours, done](const DeviceInfo& info,
                               const SharedFd& sock) { set_up_children(self, info, sock, ours, done); },
            [done](caf::error& e) { done(from_caf(e, "negotiate")); });
  // A renewal keeps the device negotiated: a VMM socket's requests go to the
  // new connection from now on, after its negotiation.
  tell_port_conn(self);
}

// ---- reconnect ------------------------------------------------------------------------

namespace {

/// Why the new back-end cannot take the device's state, if it cannot.
std::optional<std::string> incompatible(const DeviceData& st, const DeviceInfo& now) {
  const DeviceInfo& was = st.info;
  const bool activated = st.lost_from == DeviceState::active || st.lost_from == DeviceState::sleeping;
  const uint64_t needed = activated ? st.acked_features : was.backend_features;
  if (uint64_t missing = needed & ~now.backend_features; missing != 0)
    return "the back-end no longer offers virtio features " + hex(missing) + " (it offers " +
           hex(now.backend_features) + ", the device " + (activated ? "runs with " : "was offered ") +
           hex(needed) + ")";
  if (uint64_t missing = was.protocol_features & ~now.protocol_features; missing != 0)
    return "the back-end no longer offers protocol features " + hex(missing);
  if (now.queue_num < was.queue_num && activated)
    for (const auto& q : st.queues)
      if (q.spec.index >= now.queue_num)
        return "the back-end has " + std::to_string(now.queue_num) + " queues, the device uses queue " +
               std::to_string(q.spec.index);
  if (st.lost_from == DeviceState::active && st.packed && !st.queues.empty() && !st.inflight_fd)
    return std::string("packed rings were lost while running without an in-flight region "
                       "(INFLIGHT_SHMFD): where the back-end stopped lives only in the back-end "
                       "(no used index in guest memory to resume at); the driver must reset the "
                       "device");
  if (now.shmem_sizes != was.shmem_sizes)
    return "the back-end's shared-memory regions changed";
  if (now.max_queue_size < was.max_queue_size && activated)
    for (const auto& q : st.queues)
      if (q.spec.size > now.max_queue_size)
        return "the back-end's queues are smaller now";
  return std::nullopt;
}

void schedule(Self self, milliseconds delay) {
  auto& r = self->state.reconnect;
  self->delayed_send(self, delay, retry_atom_v, r.generation);
}

/// The device stays broken: `why` it cannot resume.
void give_up(Self self, const std::string& why) {
  auto& st = self->state;
  ++st.reconnect.generation;
  st.reconnect.attempting = false;
  drop_children(self);
  st.last_error = "cannot resume: " + why;
  set_state(self, DeviceState::broken);
  emit(self, DeviceEvent{DeviceEvent::Kind::resume_failed, st.state, -1, st.last_error});
}

/// A failed attempt: the next one after a longer delay, or give up.
void attempt_failed(Self self, const Error& e) {
  auto& st = self->state;
  auto& r = st.reconnect;
  r.attempting = false;
  drop_children(self);
  const auto& policy = st.config.reconnect;
  auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - r.since);
  if (policy.give_up_after.count() > 0 && elapsed >= policy.give_up_after)
    return give_up(self, "no back-end to resume with after " + std::to_string(r.attempts) +
                             " attempt(s) in " + ms_text(elapsed) + "; last: " + e.message());
  r.delay = std::min(std::max(r.delay * 2, policy.initial_delay), policy.max_delay);
  emit(self, DeviceEvent{DeviceEvent::Kind::reconnecting, st.state, -1,
                         "attempt " + std::to_string(r.attempts) + " failed: " + e.message() +
                             "; next in " + ms_text(r.delay)});
  schedule(self, r.delay);
}

void resumed(Self self, DeviceState to, std::string what) {
  auto& st = self->state;
  if (!st.child_lost.empty())  // lost again during the replay: not resumed
    return attempt_failed(self, make_error(errc::broken, "reconnect",
                                           "the back-end was lost: " + st.child_lost));
  st.reconnect.attempting = false;
  ++st.reconnects;
  st.last_error.clear();
  set_state(self, to);
  auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - st.reconnect.since);
  emit(self, DeviceEvent{DeviceEvent::Kind::resumed, st.state, -1,
                         std::string(to_string(to)) + " after " + std::to_string(st.reconnect.attempts) +
                             " attempt(s) in " + ms_text(elapsed) + (what.empty() ? "" : "; " + what)});
}

/// The bases the queues resume at after a loss while running: the used
/// index in guest memory (split; what the back-end completed), or the last
/// known base (packed: only a device with an in-flight region gets here, and
/// the back-end takes the position from the region; docs/lifecycle.md,
/// "reconnect": Packed rings). Returns what to tell about it.
std::string resume_bases(DeviceData& st) {
  std::string what;
  for (auto& q : st.queues) {
    if (st.packed) {
      what += (what.empty() ? "" : ", ") + std::string("queue ") + std::to_string(q.spec.index) +
              " where the in-flight region says (packed; last known index " + hex(q.base) + ")";
      continue;
    }
    auto used = read_guest_u16(st.memory, q.spec.device + 2);
    if (!used) {
      what += (what.empty() ? "" : ", ") + std::string("queue ") + std::to_string(q.spec.index) +
              " at its last known index " + std::to_string(q.base) + " (" + used.error().message() + ")";
      continue;
    }
    q.base = *used;
    what += (what.empty() ? "" : ", ") + std::string("queue ") + std::to_string(q.spec.index) +
            " at used index " + std::to_string(*used);
  }
  if (!st.queues.empty())
    what += st.inflight_fd ? "; requests in flight: resubmitted by the back-end (INFLIGHT_SHMFD)"
                           : "; requests in flight: processed again from the used index (no INFLIGHT_SHMFD)";
  return what;
}

/// After a successful negotiation with a compatible back-end: what was set
/// up before the loss.
void replay(Self self, uint64_t gen) {
  auto& st = self->state;
  const DeviceState to = st.lost_from;
  if (to != DeviceState::active && to != DeviceState::sleeping) {
    forget_activation(st);
    return resumed(self, DeviceState::negotiated, st.memory.empty() ? "" : "guest memory kept");
  }
  const ReplayTo replay_to = to == DeviceState::active ? ReplayTo::running : ReplayTo::rings_stopped;
  // the rings resume where the guest is (the used index), or stay stopped
  // at their saved bases until wake
  std::string what = to == DeviceState::active ? resume_bases(st)
                                               : "rings stopped at their saved indices";
  if (st.dirty_log) {
    // a crash may separate a data write from its log bit: every page once
    st.dirty_log->mark_all();
    what += "; dirty log replayed (the same log), every page marked dirty once";
  }
  ActivateRequest req = replay_request(st, replay_to, st.acked_features);
  const uint8_t status = replayed_status(replay_to);
  self->request(st.conn, conn_wait, activate_atom_v, std::move(req))
      .then(
          [self, gen, to, what, status](caf::ok_atom) {
            auto& now = self->state;
            if (now.reconnect.generation != gen)
              return;
            if (has_bit(now.info.protocol_features, protocol_feature::status))
              now.virtio_status = status;
            if (to == DeviceState::sleeping) {
              now.driver_ok_pending = true;
              return resumed(self, DeviceState::sleeping, what);
            }
            self->request(now.worker, local_step, start_atom_v, watched_queues(now), now.sink)
                .then(
                    [self, gen, what](caf::ok_atom) {
                      if (self->state.reconnect.generation == gen)
                        resumed(self, DeviceState::active, what);
                    },
                    [self, gen](caf::error& e) {
                      if (self->state.reconnect.generation == gen)
                        attempt_failed(self, from_caf(e, "reconnect: worker"));
                    });
          },
          [self, gen](caf::error& e) {
            if (self->state.reconnect.generation == gen)
              attempt_failed(self, from_caf(e, "reconnect: replay"));
          });
}

}  // namespace

void device_steps::start_reconnecting(Self self) {
  auto& st = self->state;
  if (st.lost_from == DeviceState::disconnected || st.lost_from == DeviceState::broken ||
      st.lost_from == DeviceState::reconnecting)
    return;  // nothing was negotiated: nothing to resume
  auto& r = st.reconnect;
  ++r.generation;
  r.attempts = 0;
  r.attempting = false;
  r.since = Clock::now();
  r.delay = st.config.reconnect.initial_delay;
  set_state(self, DeviceState::reconnecting);
  emit(self, DeviceEvent{DeviceEvent::Kind::reconnecting, st.state, -1,
                         "the back-end was lost while " + std::string(to_string(st.lost_from)) +
                             "; first attempt in " + ms_text(r.delay)});
  schedule(self, r.delay);
}

void reconnect_attempt(Self self, uint64_t generation) {
  auto& st = self->state;
  auto& r = st.reconnect;
  if (st.exiting || generation != r.generation || st.state != DeviceState::reconnecting ||
      r.attempting)
    return;
  if (!st.busy.empty()) {
    // The operation the loss interrupted is still failing; after it.
    return schedule(self, milliseconds(20));
  }
  r.attempting = true;
  ++r.attempts;
  const uint64_t gen = r.generation;
  connect_and_negotiate(self, [self, gen](Result<DeviceInfo> info) {
    auto& now = self->state;
    if (now.reconnect.generation != gen)
      return;
    if (!info)
      return attempt_failed(self, info.error());
    if (auto why = incompatible(now, *info))
      return give_up(self, *why);
    now.info = *info;
    replay(self, gen);
  });
}

caf::result<caf::ok_atom> reconnect_now(Self self) {
  auto& st = self->state;
  if (st.exiting)
    return to_caf(make_error(errc::bad_state, "reconnect", "the device is shutting down"));
  if (st.state == DeviceState::reconnecting) {
    if (!st.reconnect.attempting) {
      ++st.reconnect.generation;
      st.reconnect.delay = st.config.reconnect.initial_delay;
      schedule(self, milliseconds(0));
    }
    return caf::ok_atom_v;
  }
  if (st.state == DeviceState::broken && st.lost_from != DeviceState::disconnected &&
      st.busy.empty()) {
    start_reconnecting(self);
    if (st.state == DeviceState::reconnecting) {
      ++st.reconnect.generation;
      schedule(self, milliseconds(0));
      return caf::ok_atom_v;
    }
  }
  return to_caf(make_error(errc::bad_state, "reconnect",
                           std::string("the device is ") + to_string(st.state) +
                               (st.state == DeviceState::broken ? " with nothing to resume (negotiate again)"
                                                                : ", not lost")));
}

void cancel_reconnect(DeviceData& st) {
  ++st.reconnect.generation;
  st.reconnect.attempting = false;
  st.lost_from = DeviceState::disconnected;
}

}  // namespace vufront::actors

