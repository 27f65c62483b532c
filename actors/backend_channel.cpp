#include "actors/backend_channel.hpp"

#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/credit_gate.hpp"
#include "actors/error.hpp"
#include "actors/handoff.hpp"
#include "loop/event_loop.hpp"
#include "protocol/backend_request.hpp"
#include "protocol/messages.hpp"

namespace vufront::actors {

namespace {

std::atomic<int> live_readers{0};

constexpr const char* kChannel = "back-end channel";

/// A failure status: -errno as u64 (what crosvm and rust-vmm send).
uint64_t failure(int err) {
  return static_cast<uint64_t>(-static_cast<int64_t>(err));
}

/// The errno a refusal is answered with.
int errno_for(const Error& e) {
  switch (e.code) {
    case errc::io_error: return e.sys_errno != 0 ? e.sys_errno : EIO;
    case errc::not_negotiated:
    case errc::unknown_request: return ENOSYS;
    case errc::bad_fds: return EBADF;
    case errc::bad_state: return ENODEV;
    default: return EINVAL;
  }
}

uint64_t page_size() {
  long v = ::sysconf(_SC_PAGESIZE);
  return v > 0 ? static_cast<uint64_t>(v) : uint64_t{4096};
}

/// Writes the u64 reply to back-end request `code` (encode_backend_reply),
/// waiting at most `wait` for room in the socket.
Result<void> send_reply(Connection& conn, uint32_t code, uint64_t status,
                        std::chrono::milliseconds wait) {
  const std::vector<uint8_t> bytes = encode_backend_reply(code, status);
  wire::Header h{};
  // BOUNDS: encode_backend_reply returns header + u64, more than sizeof h.
  std::memcpy(&h, bytes.data(), sizeof h);
  return conn.send(h.request, h.flags, bytes.data() + sizeof h, bytes.size() - sizeof h, nullptr,
                   0, deadline_in(wait),
                   std::string("reply to ") + backend_req_name(code));
}

}  // namespace

// ---- the reader task -------------------------------------------------------------

/// Everything the reader task touches. Shared with the state, so a task
/// whose reader was destroyed on the loop thread (last strong reference
/// dropped in a task) never sees closed fds or freed memory.
struct ReaderCore {
  ReaderCore(UniqueFd sock, std::unique_ptr<CreditGate> g, caf::actor_addr owner_addr,
             uint64_t acked_features, std::shared_ptr<ChannelCounters> c)
      : conn(std::move(sock)),
        gate(std::move(g)),
        owner(std::move(owner_addr)),
        acked(acked_features),
        counters(std::move(c)) {}

  Connection conn;   ///< reads; writes only refusals, while holding every credit
  std::unique_ptr<CreditGate> gate;  ///< channel_credits credits, and the stop signal
  caf::actor_addr owner;  ///< weak
  uint64_t acked;
  std::shared_ptr<ChannelCounters> counters;
};

namespace {

void report_eof(const ReaderCore& c, std::string reason) {
  if (c.gate->stopping())
    return;
  if (auto hdl = caf::actor_cast<channel_actor>(c.owner))
    caf::anon_send(hdl, channel_eof_atom_v, std::move(reason));
}

/// Takes one credit, waiting for the actor to give one back if needed.
/// false: stop (or the eventfd failed, which was reported).
bool take_credit(const ReaderCore& c) {
  int err = 0;
  if (c.gate->take(err))
    return true;
  if (err != 0)
    report_eof(c, std::string("reader credit eventfd failed: ") + std::strerror(err));
  return false;
}

void give_credits(const ReaderCore& c, uint64_t n) noexcept { c.gate->give(n); }

/// Answers a request decode refused, in order: first waits until it holds
/// every credit (the actor has nothing queued and wrote all its replies).
bool refuse_in_order(ReaderCore& c, uint32_t code, uint64_t status) {
  for (uint32_t held = 1; held < channel_credits; ++held)
    if (!take_credit(c)) {
      give_credits(c, held - 1);
      return false;
    }
  auto r = send_reply(c.conn, code, status, channel_reply_timeout);
  give_credits(c, channel_credits - 1);  // keep the one for the next receive
  if (!r) {
    report_eof(c, r.error().message());
    return false;
  }
  return true;
}

/// Why the channel broke while framing a message: the request its header
/// named (with its flags and size), when a header was read, then the reason
/// ("BACKEND_CONFIG_CHANGE_MSG (flags 0x9, 65536 bytes): oversized: header announces
/// ...; body not read"; "disconnected: peer closed the connection").
std::string framing_failure(const Error& e, const std::optional<wire::Header>& header) {
  std::string out;
  if (header)
    out = backend_req_name(header->request) + " (flags " + hex(header->flags) + ", " +
          std::to_string(header->size) + " bytes): ";
  out += to_string(e.code);
  if (!e.detail.empty())
    out += ": " + e.detail;
  if (e.sys_errno != 0)
    out += std::string(" (") + std::strerror(e.sys_errno) + ")";
  return out;
}

void note_queued(ChannelCounters& k) {
  const uint64_t now = ++k.queued;
  uint64_t seen = k.high_water.load();
  while (now > seen && !k.high_water.compare_exchange_weak(seen, now)) {
  }
}

void read_loop(ReaderCore& c) {
  bool have_credit = false;
  while (!c.gate->stopping()) {
    if (!have_credit) {
      if (!take_credit(c))
        return;
      have_credit = true;
    }
    int err = 0;
    auto w = c.gate->wait_readable(c.conn.fd(), err);
    if (w == CreditGate::Wake::stop)
      return;
    if (w == CreditGate::Wake::error) {
      report_eof(c, std::string("poll() failed: ") + std::strerror(err));
      return;
    }
    auto m = c.conn.receive(backend_request_max_body, backend_request_max_fds,
                            deadline_in(channel_message_timeout), kChannel);
    if (!m) {
      report_eof(c, framing_failure(m.error(), c.conn.last_header()));
      return;
    }
    ++c.counters->received;
    const uint32_t code = m->header.request;
    const uint32_t flags = m->header.flags;
    auto req = decode_backend_request(std::move(m).value(), c.acked);
    if (!req) {
      // Flags that are not vhost-user v1 mean the stream cannot be trusted.
      if (req.error().code == errc::bad_flags) {
        report_eof(c, req.error().message());
        return;
      }
      ++c.counters->refused;
      if ((flags & flag_need_reply) != 0 &&
          !refuse_in_order(c, code, failure(errno_for(req.error()))))
        return;
      continue;  // the credit stays with us for the next message
    }
    auto owner = caf::actor_cast<channel_actor>(c.owner);
    if (!owner)
      return;
    note_queued(*c.counters);
    auto request = std::make_shared<BackendRequest>(std::move(req).value());
    handed_over(request.get());
    caf::anon_send(owner, backend_req_atom_v, std::move(request));
    have_credit = false;  // travels with the request; the actor gives it back
  }
}

void run_reader(std::shared_ptr<ReaderCore> core) {
  ++live_readers;
  try {
    read_loop(*core);
  } catch (...) {
    try {
      report_eof(*core, "reader failed (out of memory?)");
    } catch (...) {
    }
  }
  --live_readers;
}

}  // namespace

class ChannelReader {
public:
  /// Errors: io_error (dup or eventfd failed), request "back-end channel".
  /// `trace`: the request trace the writer shares (null while it is off).
  static Result<std::unique_ptr<ChannelReader>> start(const SharedFd& channel, uint64_t acked,
                                                      caf::actor_addr owner,
                                                      std::shared_ptr<ChannelCounters> counters,
                                                      std::shared_ptr<MessageTrace> trace) {
    if (!channel || !channel->valid())
      return make_error(errc::invalid_argument, kChannel, "no channel socket");
    UniqueFd sock = channel->duplicate();
    if (!sock)
      return make_error(errc::io_error, kChannel, "cannot dup the channel socket", errno);
    auto gate = CreditGate::create(channel_credits, kChannel);
    if (!gate)
      return std::move(gate).error();
    auto core = std::make_shared<ReaderCore>(std::move(sock), std::move(gate).value(), std::move(owner),
                                             acked, std::move(counters));
    core->conn.trace_with(std::move(trace));
    std::unique_ptr<ChannelReader> out(new ChannelReader(core));
    out->task_ = loop::EventLoop::instance().spawn([core] { run_reader(core); }, kChannel);
    return out;
  }

  ~ChannelReader() {
    stop();
    task_.join();  // on the loop thread (the last reference went in a task): ends its wait instead
  }

  ChannelReader(const ChannelReader&) = delete;
  ChannelReader& operator=(const ChannelReader&) = delete;

  /// Tells the task to finish; does not wait. Idempotent.
  void stop() noexcept { core_->gate->stop(); }

  /// The actor finished one request: one credit back, one fewer queued.
  void request_done() noexcept {
    auto& q = core_->counters->queued;
    uint64_t n = q.load();
    while (n > 0 && !q.compare_exchange_weak(n, n - 1)) {
    }
    give_credits(*core_, 1);
  }

private:
  explicit ChannelReader(std::shared_ptr<ReaderCore> core) : core_(std::move(core)) {}

  std::shared_ptr<ReaderCore> core_;
  loop::TaskHandle task_;
};

ChannelState::ChannelState() : counters(std::make_shared<ChannelCounters>()) {}
ChannelState::~ChannelState() = default;

int live_channel_readers() noexcept {
  return live_readers.load();
}

std::shared_ptr<const ChannelCounters> channel_counters(const channel_actor& h) {
  auto* ptr = caf::actor_cast<caf::abstract_actor*>(h);
  auto* sa = dynamic_cast<channel_actor::stateful_base<ChannelState>*>(ptr);
  if (sa == nullptr)
    return nullptr;
  return sa->state.counters;
}

// ---- the actor -------------------------------------------------------------------

namespace {

using Self = channel_actor::stateful_pointer<ChannelState>;

/// The channel is lost: the device is told (once), then the channel is
/// closed at once. shutdown() ends the socket for every copy of it (the
/// worker's hang-up watch holds one until the device drops it), so the
/// back-end sees EOF now; the reader task is stopped and joined (it only
/// reports and returns by now) and the writer closed, so the actor holds no
/// fd of the channel any more.
void report_lost(Self self, const std::string& reason) {
  auto& st = self->state;
  if (st.lost)
    return;
  st.lost = true;
  tell_device(st.device, lost_atom_v, caf::actor_cast<caf::actor_addr>(self), "back-end channel: " + reason);
  if (st.writer && st.writer->fd() >= 0)
    ::shutdown(st.writer->fd(), SHUT_RDWR);
  st.writer.reset();
  if (st.reader) {
    st.reader->stop();
    st.reader.reset();
  }
}

/// The range must lie in region `shmid` and be page-aligned.
Result<void> check_range(const ChannelState& st, const char* what, uint8_t shmid,
                         uint64_t offset, uint64_t len) {
  if (shmid >= st.shmem_sizes.size() || st.shmem_sizes[shmid] == 0)
    return make_error(errc::invalid_payload, what,
                      "no shared memory region " + std::to_string(shmid));
  const uint64_t size = st.shmem_sizes[shmid];
  const uint64_t page = page_size();
  if (len == 0 || offset % page != 0 || len % page != 0)
    return make_error(errc::invalid_payload, what,
                      "shm_offset " + hex(offset) + " / len " + hex(len) +
                          " not page-aligned or empty");
  if (len > size || offset > size - len)  // overflow-safe offset + len <= size
    return make_error(errc::invalid_payload, what,
                      "range " + hex(offset) + "+" + hex(len) + " is outside region " +
                          std::to_string(shmid) + " of " + hex(size) + " bytes");
  return ok();
}

/// The start of a tracked mapping overlapping [off, off+len), if any.
std::optional<uint64_t> overlap(const std::map<uint64_t, uint64_t>& maps, uint64_t off,
                                uint64_t len) {
  auto it = maps.lower_bound(off);
  if (it != maps.end() && it->first - off < len)
    return it->first;
  if (it != maps.begin()) {
    auto prev = std::prev(it);
    if (off - prev->first < prev->second)
      return prev->first;
  }
  return std::nullopt;
}

/// Drops [off, off+len) from the tracked mappings, trimming those it cuts.
void trim(std::map<uint64_t, uint64_t>& maps, uint64_t off, uint64_t len) {
  const uint64_t end = off + len;
  auto it = maps.lower_bound(off);
  if (it != maps.begin()) {
    auto prev = std::prev(it);
    if (off - prev->first < prev->second)
      it = prev;
  }
  while (it != maps.end() && it->first < end) {
    const uint64_t s = it->first;
    const uint64_t e = s + it->second;
    it = maps.erase(it);
    if (s < off)
      maps.emplace(s, off - s);
    if (e > end)
      it = maps.emplace(end, e - end).first;
  }
}

std::string describe(uint8_t shmid, uint64_t off, uint64_t len) {
  return "shmid=" + std::to_string(shmid) + " offset=" + hex(off) + " len=" + hex(len);
}

void emit(const ChannelState& st, DeviceEvent::Kind kind, std::string detail) {
  DeviceEvent ev;
  ev.kind = kind;
  ev.detail = std::move(detail);
  tell_device(st.device, event_atom_v, std::move(ev));
}

Result<void> shmem_map(ChannelState& st, const BackendRequest& req) {
  const char* what = name(BackendReq::shmem_map);
  const auto* m = std::get_if<wire::ShmemMap>(&req.payload);
  if (m == nullptr)
    return make_error(errc::invalid_payload, what, "no SHMEM payload");
  if (!st.mapper)
    return make_error(errc::bad_state, what, "no shared memory mapper is set");
  if (req.fds.size() != 1 || !req.fds[0].valid())
    return make_error(errc::bad_fds, what, "needs exactly one fd");
  if (auto r = check_range(st, what, m->shmid, m->shm_offset, m->len); !r)
    return r;
  if (m->fd_offset % page_size() != 0 || m->fd_offset > UINT64_MAX - m->len)
    return make_error(errc::invalid_payload, what,
                      "fd_offset " + hex(m->fd_offset) + " not page-aligned or overflowing");
  if (auto found = st.mappings.find(m->shmid); found != st.mappings.end())
    if (auto at = overlap(found->second, m->shm_offset, m->len))
      return make_error(errc::invalid_payload, what,
                        describe(m->shmid, m->shm_offset, m->len) +
                            " overlaps the mapping at " + hex(*at));
  if (auto r = st.mapper->map(m->shmid, m->shm_offset, req.fds[0].get(), m->fd_offset, m->len,
                              (m->flags & wire::shmem_map_flag_rw) != 0);
      !r)
    return r;
  st.mappings[m->shmid].emplace(m->shm_offset, m->len);
  emit(st, DeviceEvent::Kind::shmem_mapped, describe(m->shmid, m->shm_offset, m->len));
  return ok();
}

Result<void> shmem_unmap(ChannelState& st, const BackendRequest& req) {
  const char* what = name(BackendReq::shmem_unmap);
  const auto* m = std::get_if<wire::ShmemMap>(&req.payload);
  if (m == nullptr)
    return make_error(errc::invalid_payload, what, "no SHMEM payload");
  if (!st.mapper)
    return make_error(errc::bad_state, what, "no shared memory mapper is set");
  if (auto r = check_range(st, what, m->shmid, m->shm_offset, m->len); !r)
    return r;
  if (auto r = st.mapper->unmap(m->shmid, m->shm_offset, m->len); !r)
    return r;
  if (auto found = st.mappings.find(m->shmid); found != st.mappings.end()) {
    trim(found->second, m->shm_offset, m->len);
    if (found->second.empty())
      st.mappings.erase(found);
  }
  emit(st, DeviceEvent::Kind::shmem_unmapped, describe(m->shmid, m->shm_offset, m->len));
  return ok();
}

/// Unmaps every tracked mapping through the mapper; the first error, if any.
Result<void> unmap_all(ChannelState& st) {
  Result<void> first = ok();
  if (st.mapper)
    for (const auto& [shmid, maps] : st.mappings)
      for (const auto& [off, len] : maps)
        if (auto r = st.mapper->unmap(shmid, off, len); !r && first.ok())
          first = std::move(r).error();
  st.mappings.clear();
  return first;
}

/// Handles one request; the reply status.
uint64_t serve(ChannelState& st, const BackendRequest& req) {
  auto status_of = [&st](Result<void> r) {
    if (r)
      return uint64_t{0};
    ++st.counters->refused;
    return failure(errno_for(r.error()));
  };
  switch (req.type) {
    case BackendReq::config_change_msg:
      return tell_device(st.device, cfg_change_atom_v) ? 0 : failure(ENODEV);
    case BackendReq::vring_call:
    case BackendReq::vring_err: {
      const auto* s = std::get_if<wire::VringState>(&req.payload);
      if (s == nullptr || s->index > 0xff)
        return status_of(make_error(errc::invalid_payload, name(req.type), "bad ring index"));
      const auto index = static_cast<uint16_t>(s->index);
      bool sent = req.type == BackendReq::vring_call
                      ? tell_device(st.device, vring_call_atom_v, index)
                      : tell_device(st.device, vring_err_atom_v, index);
      return sent ? 0 : failure(ENODEV);
    }
    case BackendReq::shmem_map: return status_of(shmem_map(st, req));
    case BackendReq::shmem_unmap: return status_of(shmem_unmap(st, req));
    default:
      return status_of(make_error(errc::not_negotiated, name(req.type), "not served by vufront"));
  }
}

void on_request(Self self, const std::shared_ptr<BackendRequest>& req) {
  auto& st = self->state;
  if (st.lost || !req)
    return;
  uint64_t status = failure(EIO);
  try {
    status = serve(st, *req);
  } catch (...) {
    ++st.counters->refused;
  }
  ++st.served;
  if (!req->need_reply || !st.writer)
    return;
  // Never waits: the actor runs on CAF's scheduler. A back-end waits for
  // each reply it asked for, so a full socket means it stopped reading.
  auto r = send_reply(*st.writer, static_cast<uint32_t>(req->type), status,
                      std::chrono::milliseconds(0));
  if (!r)
    report_lost(self, r.error().message());
}

caf::error caf_error(errc code, const std::string& what, const std::string& detail) {
  return to_caf(make_error(code, what, detail));
}

}  // namespace

channel_actor::behavior_type channel_impl(channel_actor::stateful_pointer<ChannelState> self,
                                          SharedFd channel, uint64_t acked_protocol_features,
                                          caf::actor_addr device, bool start_reader) {
  auto& st = self->state;
  st.device = std::move(device);
  st.acked_protocol_features = acked_protocol_features;
  st.writer.emplace(channel ? channel->duplicate() : UniqueFd{});
  // --trace: the reader's requests and the writer's replies on one trace,
  // so each reply is timed from its request
  auto trace = MessageTrace::if_tracing(MessageTrace::Channel::backend, kChannel);
  st.writer->trace_with(trace);
  if (start_reader) {
    auto r = ChannelReader::start(channel, acked_protocol_features,
                                  caf::actor_cast<caf::actor_addr>(self), st.counters, trace);
    if (r)
      st.reader = std::move(r).value();
    else
      report_lost(self, r.error().message());
  }
  return {
      [self](backend_req_atom, const std::shared_ptr<BackendRequest>& req) {
        taken_over(req.get());
        try {
          on_request(self, req);
        } catch (...) {
          report_lost(self, "failed to handle a request (out of memory?)");
        }
        if (self->state.reader)
          self->state.reader->request_done();
      },
      [self](channel_eof_atom, const std::string& reason) {
        try {
          report_lost(self, reason);
        } catch (...) {
        }
      },
      [self](mapper_atom, const std::shared_ptr<SharedMemoryMapper>& mapper,
             const std::vector<uint64_t>& sizes) -> caf::result<caf::ok_atom> {
        try {
          if (sizes.size() > 256)
            return caf_error(errc::invalid_argument, "set shared memory mapper",
                             std::to_string(sizes.size()) + " regions, at most 256");
          auto& s = self->state;
          // Mappings made through the old mapper go with it.
          (void)unmap_all(s);
          s.mapper = mapper;
          s.shmem_sizes = sizes;
          return caf::ok_atom_v;
        } catch (...) {
          return caf_error(errc::io_error, "set shared memory mapper", "out of memory");
        }
      },
      [self](caf::reset_atom) -> caf::result<caf::ok_atom> {
        try {
          if (auto r = unmap_all(self->state); !r)
            return to_caf(r.error());
          return caf::ok_atom_v;
        } catch (...) {
          return caf_error(errc::io_error, "reset back-end channel", "out of memory");
        }
      },
      [self](caf::get_atom) -> uint64_t { return self->state.served; },
  };
}

}  // namespace vufront::actors
