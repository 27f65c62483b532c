// VhostServer: per-vring requests (vhost-user spec, "Ring states"), ring processing (the Rings
// the device pops and pushes through), device reset, and the back-end
// channel (SHMEM_MAP, CONFIG_CHANGE_MSG; --backend-req-oversize).
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "backend/faults.hpp"
#include "backend/vhost_server.hpp"
#include "virtio/ring_layout.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

namespace {

constexpr auto backend_deadline = std::chrono::milliseconds(5000);

Error violation(errc code, FrontendReq req, const std::string& detail) {
  return make_error(code, name(req), detail);
}

}  // namespace

VhostServer::Status VhostServer::vring_request(FrontendRequest& r) {
  using Ack = std::optional<uint64_t>;
  const FrontendReq req = r.req;
  // The codec checked size, fds, reserved bits and index < vrings.size().
  if (const auto* f = std::get_if<VringFd>(&r.payload)) {
    Vring& v = s_->vrings[f->index];
    UniqueFd fd = f->has_fd ? std::move(r.fds[0]) : UniqueFd{};
    switch (req) {
      case FrontendReq::set_vring_kick:
        v.kick = std::move(fd);
        if (v.kick && !set_nonblocking(v.kick.get(), true))
          return violation(errc::io_error, req, "kick fd unusable");
        if (auto s = start_ring(f->index); !s)
          return std::move(s).error();
        process_ring(f->index);
        return Ack{0};
      case FrontendReq::set_vring_call: v.call = std::move(fd); return Ack{0};
      default: v.err = std::move(fd); return Ack{0};  // SET_VRING_ERR
    }
  }
  if (const auto* a = std::get_if<wire::VringAddr>(&r.payload)) {
    // flags: the codec allows LOG only with LOG_ALL acked; log_writes() uses it
    Vring& v = s_->vrings[a->index];
    v.addr = *a;
    v.addr_set = true;
    return Ack{0};
  }
  const auto state = std::get<wire::VringState>(r.payload);
  const uint32_t index = state.index;
  Vring& v = s_->vrings[index];
  switch (req) {
    case FrontendReq::set_vring_num:
      static_assert(frontend_max_queue_size == virtio::max_queue_size);
      v.num = static_cast<uint16_t>(state.num);  // 1..32768 (codec): fits
      return Ack{0};
    case FrontendReq::set_vring_base:
      v.base = state.num;
      v.base_set = true;
      return Ack{0};
    case FrontendReq::get_vring_base: {
      stop_ring(index);  // num == 0 (codec)
      uint32_t base = v.base;
      if (opt_.short_vring_base && has_bit(s_->features, feature::ring_packed))
        base &= 0xffffu;  // DPDK's short form: the avail half only
      if (auto s = reply(encode_vring_base_reply(index, base)); !s)
        return std::move(s).error();
      return Ack{};
    }
    case FrontendReq::set_vring_enable:  // bit 30 acked, num 0/1 (codec)
      v.enabled = state.num == 1;
      process_ring(index);
      return Ack{0};
    default:
      return violation(errc::invalid_argument, req, "not a vring request");
  }
}

Result<void> VhostServer::start_ring(uint32_t index) {
  Vring& v = s_->vrings[index];
  const auto kind = has_bit(s_->features, feature::ring_packed) ? virtio::RingKind::packed
                                                                : virtio::RingKind::split;
  if (v.num == 0 || !v.addr_set)
    return make_error(errc::bad_state, "SET_VRING_KICK",
                      "vring " + std::to_string(index) + " started before SET_VRING_NUM/ADDR");
  if (!v.base_set)
    v.base = kind == virtio::RingKind::packed ? virtio::packed_fresh_base : 0;
  v.started = true;
  v.queue.reset();
  const BackendMemory* mem = &s_->mem;
  virtio::DeviceQueueConfig c;
  c.kind = kind;
  c.size = v.num;
  c.desc_addr = v.addr.desc;
  c.driver_addr = v.addr.avail;
  c.device_addr = v.addr.used;
  c.base = v.base;
  auto q = virtio::DeviceQueue::create(
      [mem](uint64_t a, uint64_t l) { return mem->uva_to_ptr(a, l); },
      [mem](uint64_t a, uint64_t l) { return mem->gpa_to_ptr(a, l); }, c);
  if (!q)
    return make_error(errc::invalid_payload, "SET_VRING_KICK",
                      "vring " + std::to_string(index) + ": " + q.error().message());
  v.queue.emplace(std::move(q).value());
  if (kind == virtio::RingKind::split && s_->inflight.active()) {
    const uint8_t* used = s_->mem.uva_to_ptr(v.addr.used, 4);
    const uint16_t used_idx =
        used != nullptr ? virtio::ring_load(reinterpret_cast<const uint16_t*>(used + 2)) : 0;
    auto heads = s_->inflight.start_queue(static_cast<uint16_t>(index), v.num, used_idx);
    if (heads && !heads->empty()) {
      if (auto r = v.queue->resubmit(*heads); !r)
        return make_error(errc::invalid_payload, "SET_VRING_KICK",
                          "vring " + std::to_string(index) + ": " + r.error().message());
      std::fprintf(stderr,
                   "vufront-backend: vring %u: resubmitting %zu request(s) a previous back-end "
                   "left in flight (ring continues at %u)\n",
                   index, heads->size(), v.queue->base());
      v.resubmit = true;
    }
  }
  if (kind == virtio::RingKind::packed && s_->inflight.active())
    if (auto r = start_packed_tracking(index); !r)
      return r;
  if (!(s_->status & status_bit::driver_ok))
    s_->start_pending = true;  // first kick set-up counts as device start
  return ok();
}

Result<void> VhostServer::start_packed_tracking(uint32_t index) {
  Vring& v = s_->vrings[index];
  virtio::DeviceQueue& q = *v.queue;
  auto started = s_->inflight.start_packed(static_cast<uint16_t>(index), v.num, v.base,
                                           [&q](uint16_t idx) { return q.ring_flags(idx); });
  if (!started)
    return ok();  // the region does not cover this ring
  if (!*started)
    return make_error(errc::invalid_payload, "SET_VRING_KICK",
                      "vring " + std::to_string(index) + ": " + started->error().message());
  virtio::PackedResume& at = started->value();
  if (!at.recovered)
    return ok();
  // The region knows where the ring stands; SET_VRING_BASE's value is the
  // front-end's last known one (docs/lifecycle.md, "reconnect": Packed rings).
  const size_t chains = at.chains.size();
  if (auto r = q.resubmit_packed(at.avail, at.used, std::move(at.chains)); !r)
    return make_error(errc::invalid_payload, "SET_VRING_KICK",
                      "vring " + std::to_string(index) + ": " + r.error().message());
  if (q.base() != v.base || chains != 0)
    std::fprintf(stderr,
                 "vufront-backend: vring %u: packed ring resumed from the in-flight region at "
                 "0x%08x (SET_VRING_BASE said 0x%08x)%s\n",
                 index, q.base(), v.base,
                 chains == 0 ? ""
                             : ("; resubmitting " + std::to_string(chains) +
                                " request(s) a previous back-end left in flight")
                                   .c_str());
  v.resubmit = chains != 0;
  return ok();
}

void VhostServer::stop_ring(uint32_t index) {
  Vring& v = s_->vrings[index];
  if (v.queue) {
    process_ring(index);  // drain what is available before stopping (vhost-user spec, "Ring states")
    v.base = v.queue->base();
    v.base_set = true;
  }
  v.queue.reset();
  v.started = false;
  v.kick.reset();
}

void VhostServer::rebuild_queues() {
  for (uint32_t i = 0; i < s_->vrings.size(); ++i) {
    Vring& v = s_->vrings[i];
    if (!v.started)
      continue;
    if (v.queue) {
      v.base = v.queue->base();
      v.base_set = true;
    }
    v.queue.reset();
    if (s_->mem.region_count() == 0)
      continue;
    if (auto r = start_ring(i); !r)
      std::fprintf(stderr, "vufront-backend: %s\n", r.error().message().c_str());
  }
}

void VhostServer::process_ring(uint32_t index) {
  Vring& v = s_->vrings[index];
  if (!v.queue || !v.enabled || v.queue->broken())
    return;
  dev_->process(index, *this);
  // one interrupt per ring the device completed chains on (net: TX and RX)
  for (Vring& r : s_->vrings) {
    if (!r.notify)
      continue;
    r.notify = false;
    if (r.call) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(r.call.get(), &one, sizeof one);
    }
  }
}

bool VhostServer::ready(uint32_t index) const {
  if (!s_ || index >= s_->vrings.size())
    return false;
  const Vring& v = s_->vrings[index];
  return v.queue && v.enabled && !v.queue->broken();
}

std::optional<virtio::Chain> VhostServer::pop(uint32_t index) {
  if (!ready(index))
    return std::nullopt;
  Vring& v = s_->vrings[index];
  auto c = v.queue->pop();
  if (!c) {
    std::fprintf(stderr, "vufront-backend: vring %u: %s; device needs reset\n", index,
                 c.error().message().c_str());
    s_->status |= status_bit::device_needs_reset;
    return std::nullopt;
  }
  if (c->has_value())
    log_writes(v, nullptr);  // EVENT_IDX: avail_event in the used area
  if (c->has_value() && !has_bit(s_->features, feature::ring_packed))
    s_->inflight.begin(static_cast<uint16_t>(index), (*c)->id);
  else if (c->has_value() && !(*c)->resubmitted)
    if (auto* t = s_->inflight.packed(static_cast<uint16_t>(index)))
      t->begin((*c)->descs);
  if (c->has_value() && opt_.crash_in_request != 0 && ++popped_ >= opt_.crash_in_request &&
      (popped_ == opt_.crash_in_request || opt_.crash_outstanding != 0) &&
      v.queue->outstanding() >= opt_.crash_outstanding) {
    std::fprintf(stderr,
                 "vufront-backend: --crash-in-request %u: exiting with a request in flight (ring %u: "
                 "%u requests outstanding)\n",
                 opt_.crash_in_request, index, static_cast<unsigned>(v.queue->outstanding()));
    crash_now();
  }
  return std::move(*c);
}

bool VhostServer::unpop(uint32_t index, const virtio::Chain& chain) {
  Vring& v = s_->vrings.at(index);
  if (!v.queue)
    return false;
  if (auto r = v.queue->unpop(chain.id); !r) {
    std::fprintf(stderr, "vufront-backend: vring %u: %s\n", index, r.error().message().c_str());
    return false;
  }
  if (!has_bit(s_->features, feature::ring_packed))
    s_->inflight.abort(static_cast<uint16_t>(index), chain.id);
  else if (!chain.resubmitted)  // a resubmitted chain stays recorded
    if (auto* t = s_->inflight.packed(static_cast<uint16_t>(index)))
      t->abort(chain.id);
  return true;
}

bool VhostServer::push(uint32_t index, const virtio::Chain& chain, uint32_t written) {
  Vring& v = s_->vrings.at(index);
  if (!v.queue)
    return false;
  virtio::PackedInflight* tracker = has_bit(s_->features, feature::ring_packed)
                                        ? s_->inflight.packed(static_cast<uint16_t>(index))
                                        : nullptr;
  if (tracker != nullptr)
    tracker->complete_begin(chain.id);
  else if (!has_bit(s_->features, feature::ring_packed))
    s_->inflight.prepare_end(static_cast<uint16_t>(index), chain.id);
  if (auto r = v.queue->push(chain.id, written); !r) {
    std::fprintf(stderr, "vufront-backend: vring %u: %s\n", index, r.error().message().c_str());
    s_->status |= status_bit::device_needs_reset;
    return false;
  }
  log_writes(v, &chain);
  v.notify = true;
  if (opt_.crash_in_completion != 0 && ++completed_ == opt_.crash_in_completion) {
    std::fprintf(stderr,
                 "vufront-backend: --crash-in-completion %u: exiting with a completion published "
                 "and not yet recorded\n",
                 opt_.crash_in_completion);
    crash_now();
  }
  if (tracker != nullptr)
    tracker->complete_end(chain.id);
  if (!has_bit(s_->features, feature::ring_packed) && s_->inflight.active()) {
    const uint8_t* used = s_->mem.uva_to_ptr(v.addr.used, 4);
    uint16_t used_idx = 0;
    if (used != nullptr)
      used_idx = virtio::ring_load(reinterpret_cast<const uint16_t*>(used + 2));
    s_->inflight.end(static_cast<uint16_t>(index), chain.id, used_idx);
  }
  return true;
}

void VhostServer::log_writes(const Vring& v, const virtio::Chain* chain) {
  if (!has_bit(s_->features, feature::log_all) || opt_.forget_log)
    return;
  if (chain != nullptr)
    for (const auto& seg : chain->segments)
      if (seg.writable)
        if (auto gpa = s_->mem.ptr_to_gpa(seg.ptr))
          s_->log.mark(*gpa, seg.len);
  if (v.addr.flags & wire::vring_addr_flag_log) {
    // the whole used area (flags, idx, ring, avail_event): split rings only
    // (LOG_ALL with packed rings is refused at SET_FEATURES)
    s_->log.mark(v.addr.log, virtio::device_area(virtio::RingKind::split, v.num).size);
  }
}

void VhostServer::init_vrings() {
  s_->vrings.clear();
  s_->vrings.resize(dev_->num_vrings());
  for (uint32_t i = 0; i < s_->vrings.size(); ++i)
    s_->vrings[i].enabled = dev_->enabled_at_start(i);
}

void VhostServer::reset_device() {
  init_vrings();
  dev_->reset();
  s_->status = 0;
  s_->features = 0;
  s_->shmem_mapped = false;
  s_->start_pending = false;
}

void VhostServer::stop_device() {
  for (uint32_t i = 0; i < s_->vrings.size(); ++i)
    stop_ring(i);
  dev_->reset();
  s_->status = 0;
  s_->shmem_mapped = false;
  s_->start_pending = false;
}

void VhostServer::device_started() {
  const SharedWindow window = dev_->shared_window();
  if (!s_->backend || s_->shmem_mapped || !negotiated(protocol_feature::shmem) ||
      opt_.shmem_size == 0 || window.fd < 0)
    return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  wire::ShmemMap map{};
  map.shmid = 0;
  map.fd_offset = 0;
  map.shm_offset = 0;
  map.len = std::min(opt_.shmem_size, window.size) & ~(page - 1);
  map.flags = wire::shmem_map_flag_rw;
  if (map.len == 0)
    return;
  s_->shmem_mapped = true;
  send_backend(BackendReq::shmem_map, &map, sizeof map, window.fd);
}

void VhostServer::toggle_shmem() {
  if (!s_->shmem_mapped) {
    device_started();
    return;
  }
  if (!s_->backend)
    return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  wire::ShmemMap unmap{};
  unmap.shmid = 0;
  unmap.len = std::min(opt_.shmem_size, dev_->shared_window().size) & ~(page - 1);
  s_->shmem_mapped = false;
  send_backend(BackendReq::shmem_unmap, &unmap, sizeof unmap, -1);
}

void VhostServer::send_backend(BackendReq req, const void* body, size_t size, int fd) {
  const bool ack = negotiated(protocol_feature::reply_ack);
  const uint32_t flags = flag_version | (ack ? flag_need_reply : 0);
  auto r = s_->backend->send(static_cast<uint32_t>(req), flags,
                             static_cast<const uint8_t*>(body), size, fd >= 0 ? &fd : nullptr,
                             fd >= 0 ? 1 : 0, deadline_in(backend_deadline), name(req));
  if (!r) {
    std::fprintf(stderr, "vufront-backend: back-end channel: %s\n", r.error().message().c_str());
    s_->backend.reset();
    return;
  }
  if (opt_.verbose)
    std::fprintf(stderr, "vufront-backend: -> %s on the back-end channel\n", name(req));
  if (ack)
    ++s_->backend_pending;
}

void VhostServer::send_oversized_backend_request(const std::string& during) {
  const char* flag = "vufront-backend: --backend-req-oversize";
  if (!s_->backend) {
    std::fprintf(stderr, "%s %s: no back-end channel, nothing sent\n", flag, during.c_str());
    return;
  }
  // A header only: CONFIG_CHANGE_MSG, NEED_REPLY, 65536 body bytes announced
  // (more than any back-end request may carry); no body follows.
  const uint32_t header[3] = {static_cast<uint32_t>(BackendReq::config_change_msg),
                              flag_version | flag_need_reply, 0x10000};
  const int fd = s_->backend->fd();
  if (::send(fd, header, sizeof header, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof header)) {
    std::fprintf(stderr, "%s %s: send failed: %s\n", flag, during.c_str(), std::strerror(errno));
    s_->backend.reset();
    return;
  }
  std::fprintf(stderr, "%s %s: sent CONFIG_CHANGE_MSG announcing 65536 body bytes\n", flag,
               during.c_str());
  // The front-end must close the channel: EOF (or a reset) within 5 s.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool closed = false;
  while (!closed) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          until - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0)
      break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0)
      continue;
    uint8_t scratch[64];
    const ssize_t n = ::recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
    closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  }
  std::fprintf(stderr, "%s %s: %s\n", flag, during.c_str(),
               closed ? "the front-end closed the back-end channel"
                      : "the front-end did not close the back-end channel within 5 s");
  s_->backend.reset();
}

void VhostServer::on_backend_readable() {
  auto m = s_->backend->receive(8, 0, deadline_in(backend_deadline), "back-end channel reply");
  if (!m) {
    if (m.error().code != errc::disconnected)
      std::fprintf(stderr, "vufront-backend: back-end channel: %s\n", m.error().message().c_str());
    s_->backend.reset();
    return;
  }
  const auto req = backend_req_from_code(m->header.request);
  const std::string what = req ? name(*req) : backend_req_name(m->header.request);
  uint64_t v = 0;
  const bool well_formed = m->header.flags == (flag_version | flag_reply) && m->body.size() == 8 &&
                           s_->backend_pending > 0;
  if (well_formed)
    std::memcpy(&v, m->body.data(), 8);  // BOUNDS: body is 8 bytes
  if (!well_formed) {
    std::fprintf(stderr, "vufront-backend: unexpected message on the back-end channel (%s)\n",
                 what.c_str());
    s_->backend.reset();
    return;
  }
  --s_->backend_pending;
  if (v != 0)
    std::fprintf(stderr, "vufront-backend: front-end refused %s (status %llu)\n", what.c_str(),
                 static_cast<unsigned long long>(v));
  else if (opt_.verbose)
    std::fprintf(stderr, "vufront-backend: front-end acked %s\n", what.c_str());
}

}  // namespace vufront::backend
