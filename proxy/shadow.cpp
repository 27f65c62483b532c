#include "proxy/shadow.hpp"

#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <limits>
#include <utility>

#include "proxy/log_base.hpp"
#include "proxy/offer.hpp"
#include "virtio/inflight_packed.hpp"

namespace vufront::proxy {

namespace {

using json = nlohmann::json;

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Error bad(FrontendReq req, const std::string& why) {
  return make_error(errc::invalid_payload, frontend_req_name(static_cast<uint32_t>(req)), why);
}

/// Whether [a, a + alen) and [b, b + blen) share a byte. Compares last bytes:
/// a range may end exactly at 2^64 (the decoder allows it), where a + alen is 0.
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  if (alen == 0 || blen == 0)
    return false;
  return a <= b + (blen - 1) && b <= a + (alen - 1);
}

uint64_t synthetic_of(const wire::MemoryRegion& r) { return proxy_user_base + r.guest_phys_addr; }

}  // namespace

Shadow::Shadow(Negotiated offer) : ctx_(offer) { rings_.resize(ctx_.num_queues); }

bool Shadow::reply_ack() const noexcept {
  return has_bit(ctx_.acked_protocol_features, protocol_feature::reply_ack);
}

bool Shadow::packed() const noexcept { return has_bit(ctx_.acked_features, feature::ring_packed); }

std::optional<uint64_t> Shadow::to_synthetic(uint64_t vmm_addr, uint64_t len) const {
  for (const auto& r : regions_) {
    const uint64_t start = r.vmm.user_addr;
    if (vmm_addr >= start && vmm_addr - start < r.vmm.memory_size &&
        len <= r.vmm.memory_size - (vmm_addr - start))
      return r.synthetic + (vmm_addr - start);
  }
  return std::nullopt;
}

Result<void> Shadow::check_new_region(const wire::MemoryRegion& r,
                                      const std::vector<Region>& others) const {
  for (const auto& o : others) {
    if (overlaps(r.guest_phys_addr, r.memory_size, o.vmm.guest_phys_addr, o.vmm.memory_size))
      return make_error(errc::invalid_payload, "memory table",
                        "region at guest address " + hex(r.guest_phys_addr) +
                            " overlaps the region at " + hex(o.vmm.guest_phys_addr));
    if (overlaps(r.user_addr, r.memory_size, o.vmm.user_addr, o.vmm.memory_size))
      return make_error(errc::invalid_payload, "memory table",
                        "region at guest address " + hex(r.guest_phys_addr) +
                            " overlaps another in the VMM's address space");
  }
  // Its synthetic range must not wrap: not at its start (proxy_user_base +
  // a guest address near 2^64 would be a low address, outside the range the
  // back-end is told about) nor at its end.
  constexpr uint64_t room = std::numeric_limits<uint64_t>::max() - proxy_user_base;
  if (r.guest_phys_addr > room || r.memory_size > room - r.guest_phys_addr)
    return make_error(errc::invalid_payload, "memory table",
                      "region at guest address " + hex(r.guest_phys_addr) + " is too high");
  return ok();
}

std::optional<wire::VringAddr> Shadow::translate(const wire::VringAddr& a) const {
  // The smallest sizes that must lie inside guest memory (one element each).
  auto desc = to_synthetic(a.desc, 16);
  auto used = to_synthetic(a.used, 4);
  auto avail = to_synthetic(a.avail, 4);
  if (!desc || !used || !avail)
    return std::nullopt;
  wire::VringAddr t = a;
  t.desc = *desc;
  t.used = *used;
  t.avail = *avail;
  return t;
}

std::vector<Shadow::Prepared> Shadow::take_ready() {
  std::vector<Prepared> out;
  for (auto& ring : rings_) {
    if (!ring.addr_pending)
      continue;
    auto t = translate(ring.vmm_addr);
    if (!t)
      continue;
    Prepared p;
    p.forward.req = FrontendReq::set_vring_addr;
    p.forward.payload = *t;
    p.original = ring.vmm_addr;
    out.push_back(std::move(p));
    ring.addr_pending = false;
  }
  return out;
}

Result<Shadow::Prepared> Shadow::prepare(FrontendRequest&& r) const {
  Prepared p;
  p.need_reply = r.need_reply;
  p.original = r.payload;
  p.forward.req = r.req;
  p.forward.payload = std::move(r.payload);
  for (auto& fd : r.fds)
    p.forward.fds.push_back(share(std::move(fd)));
  p.forward.packed = packed();
  switch (r.req) {
    case FrontendReq::set_mem_table: {
      auto& table = std::get<MemoryTable>(p.forward.payload);
      std::vector<Region> seen;
      for (auto& region : table.regions) {
        if (auto c = check_new_region(region, seen); !c)
          return bad(r.req, c.error().detail);
        seen.push_back(Region{region, 0, nullptr});
        region.user_addr = synthetic_of(region);
      }
      break;
    }
    case FrontendReq::add_mem_reg: {
      auto& region = std::get<wire::MemoryRegion>(p.forward.payload);
      if (regions_.size() >= ctx_.max_mem_slots)
        return bad(r.req, "all " + std::to_string(ctx_.max_mem_slots) + " memory slots are in use");
      if (auto c = check_new_region(region, regions_); !c)
        return bad(r.req, c.error().detail);
      region.user_addr = synthetic_of(region);
      break;
    }
    case FrontendReq::rem_mem_reg: {
      auto& region = std::get<wire::MemoryRegion>(p.forward.payload);
      bool found = false;
      for (const auto& o : regions_)
        if (o.vmm.guest_phys_addr == region.guest_phys_addr && o.vmm.memory_size == region.memory_size) {
          region.user_addr = o.synthetic;
          region.mmap_offset = o.vmm.mmap_offset;
          found = true;
        }
      if (!found)
        return bad(r.req, "no region of " + hex(region.memory_size) + " bytes at guest address " +
                              hex(region.guest_phys_addr));
      break;
    }
    case FrontendReq::set_vring_addr: {
      auto& a = std::get<wire::VringAddr>(p.forward.payload);
      if (auto t = translate(a))
        a = *t;
      else
        p.deferred = true;  // forwarded once its memory is there (take_ready)
      break;
    }
    case FrontendReq::set_log_base: {
      // the decoder saw exactly one fd (LOG_SHMFD acked)
      const int fd = p.forward.fds.empty() || !p.forward.fds[0] ? -1 : p.forward.fds[0]->get();
      if (auto c = check_log_base(std::get<wire::Log>(p.forward.payload), fd, memory_end()); !c)
        return std::move(c).error();
      break;
    }
    case FrontendReq::set_vring_kick: {
      const auto& v = std::get<VringFd>(p.forward.payload);
      const auto& ring = rings_.at(v.index);
      if (ring.addr_pending)
        return bad(r.req, "ring " + std::to_string(v.index) + " started while its addresses (desc " +
                              hex(ring.vmm_addr.desc) + ", used " + hex(ring.vmm_addr.used) + ", avail " +
                              hex(ring.vmm_addr.avail) + ") lie in no memory region");
      break;
    }
    default:
      break;
  }
  return p;
}

void Shadow::reset_rings() {
  for (auto& ring : rings_)
    ring = Ring{};
}

void Shadow::commit(const Prepared& p, const ForwardResult& answer) {
  const auto& f = p.forward;
  if (f.req != FrontendReq::get_config && f.req != FrontendReq::get_status)
    touched_ = true;
  switch (f.req) {
    case FrontendReq::set_features:
      ctx_.acked_features = std::get<wire::U64>(f.payload).value;
      // logging stopped: QEMU lets its log go, and no replay sends it again
      if (!has_bit(ctx_.acked_features, feature::log_all))
        drop_log();
      break;
    case FrontendReq::set_log_base:
      log_ = std::get<wire::Log>(f.payload);
      log_fd_ = f.fds.empty() ? nullptr : f.fds[0];  // the old log's dup goes
      ++log_bases_;
      break;
    case FrontendReq::set_mem_table: {
      const auto& vmm = std::get<MemoryTable>(p.original).regions;
      regions_.clear();
      for (size_t i = 0; i < vmm.size(); ++i)
        regions_.push_back(Region{vmm[i], synthetic_of(vmm[i]), i < f.fds.size() ? f.fds[i] : nullptr});
      break;
    }
    case FrontendReq::add_mem_reg: {
      const auto& vmm = std::get<wire::MemoryRegion>(p.original);
      regions_.push_back(Region{vmm, synthetic_of(vmm), f.fds.empty() ? nullptr : f.fds[0]});
      break;
    }
    case FrontendReq::rem_mem_reg: {
      const auto& vmm = std::get<wire::MemoryRegion>(p.original);
      for (auto it = regions_.begin(); it != regions_.end(); ++it)
        if (it->vmm.guest_phys_addr == vmm.guest_phys_addr && it->vmm.memory_size == vmm.memory_size) {
          regions_.erase(it);
          break;
        }
      break;
    }
    case FrontendReq::set_vring_num:
    case FrontendReq::set_vring_base:
    case FrontendReq::set_vring_enable:
    case FrontendReq::get_vring_base: {
      const auto& s = std::get<wire::VringState>(f.payload);
      auto& ring = rings_.at(s.index);
      if (f.req == FrontendReq::set_vring_num)
        ring.num = s.num;
      else if (f.req == FrontendReq::set_vring_base)
        ring.base = s.num;
      else if (f.req == FrontendReq::set_vring_enable)
        ring.enabled = s.num != 0;
      else {
        ring.base = answer.vring_base;
        ring.started = false;
        ring.enabled = false;
      }
      break;
    }
    case FrontendReq::set_vring_addr: {
      const auto& a = std::get<wire::VringAddr>(p.original);
      auto& ring = rings_.at(a.index);
      ring.vmm_addr = a;
      ring.addr_set = !p.deferred;
      ring.addr_pending = p.deferred;
      break;
    }
    case FrontendReq::set_vring_kick:
    case FrontendReq::set_vring_call:
    case FrontendReq::set_vring_err: {
      const auto& v = std::get<VringFd>(f.payload);
      auto& ring = rings_.at(v.index);
      SharedFd fd = v.has_fd && !f.fds.empty() ? f.fds[0] : nullptr;
      if (f.req == FrontendReq::set_vring_kick) {
        ring.kick = fd;
        ring.started = true;  // a ring starts at its kick fd ("Ring states")
      } else if (f.req == FrontendReq::set_vring_call) {
        ring.call = fd;
      } else {
        ring.err = fd;
      }
      break;
    }
    case FrontendReq::get_inflight_fd:
      inflight_ = answer.inflight;
      inflight_fd_ = answer.fd;
      break;
    case FrontendReq::set_inflight_fd:
      inflight_ = std::get<wire::InflightDesc>(f.payload);
      inflight_fd_ = f.fds.empty() ? nullptr : f.fds[0];
      break;
    case FrontendReq::set_status:
      status_ = static_cast<uint8_t>(std::get<wire::U64>(f.payload).value);
      break;
    case FrontendReq::get_config:
      if (answer.has_reply) {
        const auto& h = std::get<ConfigRequest>(f.payload).header;
        config_cache_[{h.offset, h.size}] = answer.body;
      }
      break;
    case FrontendReq::set_config:
      config_cache_.clear();
      break;
    case FrontendReq::reset_device:
      // The device forgets everything but its memory and protocol features.
      status_ = 0;
      ctx_.acked_features = 0;
      reset_rings();
      drop_log();
      break;
    default:
      break;
  }
}

void Shadow::drop_log() {
  log_ = {};
  log_fd_.reset();
}

uint64_t Shadow::memory_end() const noexcept {
  uint64_t end = 0;
  for (const auto& r : regions_)
    end = std::max(end, r.vmm.guest_phys_addr + r.vmm.memory_size);
  return end;
}

bool Shadow::logging() const noexcept {
  return log_fd_ && has_bit(ctx_.acked_features, feature::log_all);
}

Shadow::Teardown Shadow::teardown() const {
  Teardown t;
  const bool enable = has_bit(ctx_.acked_features, feature::protocol_features);
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    if (!rings_[i].started)
      continue;
    if (enable)
      t.requests.push_back(Forward{FrontendReq::set_vring_enable, wire::VringState{i, 0}, {}, false});
    t.requests.push_back(Forward{FrontendReq::get_vring_base, wire::VringState{i, 0}, {}, packed()});
  }
  t.renew = touched_;
  return t;
}

void Shadow::clear() {
  Negotiated fresh = ctx_;
  fresh.acked_features = 0;
  fresh.acked_protocol_features = 0;
  ctx_ = fresh;
  regions_.clear();
  reset_rings();
  status_ = 0;
  touched_ = false;
  inflight_ = {};
  inflight_fd_.reset();
  drop_log();
  log_bases_ = 0;
  config_cache_.clear();
}

std::optional<uint16_t> Shadow::used_index(uint32_t ring) const {
  if (ring >= rings_.size() || packed() || !rings_[ring].addr_set)
    return std::nullopt;
  const uint64_t idx_addr = rings_[ring].vmm_addr.used + 2;  // struct vring_used { flags; idx; ... }
  for (const auto& r : regions_) {
    const uint64_t start = r.vmm.user_addr;
    if (!r.fd || idx_addr < start || idx_addr - start + 2 > r.vmm.memory_size)
      continue;
    uint16_t v = 0;
    const auto off = static_cast<off_t>(r.vmm.mmap_offset + (idx_addr - start));
    if (::pread(r.fd->get(), &v, sizeof v, off) != static_cast<ssize_t>(sizeof v))
      return std::nullopt;
    return v;
  }
  return std::nullopt;
}

Result<uint32_t> Shadow::packed_base_from_inflight(uint32_t ring) const {
  const auto fail = [](const std::string& why) { return make_error(errc::invalid_payload, "GET_VRING_BASE", why); };
  if (!inflight_fd_ || inflight_.num_queues == 0 || ring >= inflight_.num_queues)
    return fail("the back-end keeps no in-flight region for it");
  // Regions are laid out queue after queue, each mmap_size / num_queues bytes
  // (as QEMU divides them); the back-end wrote the header, so it is checked.
  const uint64_t per_queue = inflight_.mmap_size / inflight_.num_queues;
  if (per_queue < sizeof(virtio::PackedInflightHeader))
    return fail("its in-flight region is too small for a packed header");
  virtio::PackedInflightHeader h{};
  const auto off = static_cast<off_t>(inflight_.mmap_offset + per_queue * ring);
  if (::pread(inflight_fd_->get(), &h, sizeof h, off) != static_cast<ssize_t>(sizeof h))
    return fail("its in-flight region could not be read");
  if (h.version != 1 || h.desc_num != rings_.at(ring).num || h.old_used_idx >= h.desc_num ||
      h.old_used_wrap_counter > 1)
    return fail("its in-flight region holds no valid packed state (version " + std::to_string(h.version) +
                ", " + std::to_string(h.desc_num) + " descriptors)");
  // The last committed used position, for both halves (the vhost-user
  // spec's packed GET_VRING_BASE): what the dead back-end completed. A
  // back-end given the same region takes its position from the region.
  const uint32_t pos = h.old_used_idx | (uint32_t{h.old_used_wrap_counter} << 15);
  return pos | (pos << 16);
}

std::optional<wire::VringAddr> Shadow::backend_addr(uint32_t ring) const {
  if (ring >= rings_.size() || !rings_[ring].addr_set)
    return std::nullopt;
  return translate(rings_[ring].vmm_addr);
}

bool Shadow::any_started() const noexcept {
  for (const auto& r : rings_)
    if (r.started)
      return true;
  return false;
}

bool Shadow::answer_due(const Prepared& p) const noexcept {
  return p.need_reply || has_native_reply(p.forward.req, ctx_.acked_protocol_features);
}

Shadow::StandIn Shadow::stand_in(const Prepared& p) const {
  StandIn s;
  const auto& f = p.forward;
  switch (f.req) {
    case FrontendReq::get_config: {
      const auto& h = std::get<ConfigRequest>(f.payload).header;
      auto it = config_cache_.find({h.offset, h.size});
      if (it == config_cache_.end()) {
        s.kind = StandIn::Kind::hold;
        return s;
      }
      s.result.has_reply = true;
      s.result.body = it->second;
      return s;  // what the back-end said last: no fence needed
    }
    case FrontendReq::get_status:
      s.result.has_reply = true;
      s.result.body = encode_u64_reply(f.req, status_).body;
      return s;
    case FrontendReq::get_inflight_fd:
    case FrontendReq::set_config:
      s.kind = StandIn::Kind::hold;
      return s;
    case FrontendReq::set_log_base:
      // recorded for the replay, which sends it before any ring starts; the
      // reply says the log is in place, so only once the lost one is fenced
      s.fence = true;
      s.result.has_reply = true;
      s.result.body = encode_u64_reply(f.req, 0).body;
      return s;
    case FrontendReq::get_vring_base: {
      const uint32_t i = std::get<wire::VringState>(f.payload).index;
      const Ring& ring = rings_.at(i);
      uint32_t base = ring.base;
      if (ring.started) {
        s.fence = true;  // the old back-end must not move the ring on after this answer
        if (packed()) {
          auto b = packed_base_from_inflight(i);
          if (!b) {
            s.kind = StandIn::Kind::refuse;
            s.why = "GET_VRING_BASE of packed ring " + std::to_string(i) +
                    " while its back-end is away: a packed ring keeps no used index in guest memory, "
                    "and " + b.error().detail;
            return s;
          }
          s.result.has_reply = true;
          s.result.vring_base = *b;
          s.result.body = encode_vring_base_reply(i, *b).body;
          return s;
        }
        auto used = used_index(i);
        if (!used) {
          s.kind = StandIn::Kind::refuse;
          s.why = "GET_VRING_BASE of ring " + std::to_string(i) +
                  " while its back-end is away: its used index could not be read from guest memory";
          return s;
        }
        base = *used;
      }
      s.result.has_reply = true;
      s.result.vring_base = base;
      s.result.body = encode_vring_base_reply(i, base).body;
      return s;
    }
    default:
      // Set-up the next back-end gets in the replay: recorded, and acked when
      // asked. The ack says the set-up is in place, so a back-end that could
      // still act on the old one must be gone first.
      s.fence = true;
      return s;
  }
}

json Shadow::to_json() const {
  json queues = json::array();
  for (uint32_t i = 0; i < rings_.size(); ++i) {
    const auto& r = rings_[i];
    if (r.num == 0 && !r.started && !r.call)
      continue;
    json q = {{"index", i}, {"size", r.num}, {"started", r.started}, {"enabled", r.enabled},
              {"base", r.base}};
    if (auto u = used_index(i))
      q["used_index"] = *u;
    queues.push_back(std::move(q));
  }
  json regions = json::array();
  for (const auto& r : regions_)
    regions.push_back({{"gpa", hex(r.vmm.guest_phys_addr)}, {"size", hex(r.vmm.memory_size)}});
  return {{"features", hex(ctx_.acked_features)},
          {"protocol_features", protocol_feature_list(ctx_.acked_protocol_features)},
          {"status", status_},
          {"regions", std::move(regions)},
          {"inflight", static_cast<bool>(inflight_fd_)},
          {"logging", logging()},
          {"log", log_fd_ ? json(log_.mmap_size) : json(nullptr)},
          {"log_bases", log_bases_},
          {"queues", std::move(queues)}};
}

}  // namespace vufront::proxy
