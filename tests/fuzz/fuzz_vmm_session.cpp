// libFuzzer target: a whole VMM session on `vufront attach --vmm-socket`
// (docs/vmm-proxy.md): every message goes through decode_frontend_request in
// the shadow's context, what vufront answers itself is applied as
// actors/vmm_port.cpp's local_reply does (SET_PROTOCOL_FEATURES, the
// back-end channel), the rest through proxy::Shadow::prepare and, as if the
// back-end accepted it, Shadow::commit; at the end Shadow::teardown() and
// clear(). The first refused message ends the session, as it ends the VMM's
// connection.
//
// Input: [selector] then messages, each [fds][12-byte header][body], where
// the body is the header's `size` bytes (a size above the wire's 4096, or an
// input that ends inside a body, ends the session as Connection::receive
// would). `fds % 9` real fds come with the message: memfds (4 KiB) for
// SET_MEM_TABLE, ADD_MEM_REG, SET_LOG_BASE and SET_INFLIGHT_FD, eventfds for
// anything else. Selector (the back-end offer proxy::vmm_offer turns into
// the VMM's): a blk back-end offering what qemu-storage-daemon 7.2 does
// (features 0x175007e46, protocol features 0x8f2b) and what vufront-backend
// adds (STATUS, RESET_DEVICE, INFLIGHT_SHMFD, DEVICE_STATE), so every
// recorded QEMU session decodes; bit 0: RING_PACKED offered too;
// bits 1-2: 1 + n queues; bit 3: 8 memory slots (else 32); bit 4: vufront
// holds the back-end's channel (so BACKEND_REQ is offered).
// tests/fuzz/vmm_corpus.py records the seeds from QEMU 7.2.
//
// Checks (abort on violation): every user address the back-end would get
// (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG, SET_VRING_ADDR) lies in the
// synthetic range of its region (proxy_user_base + guest physical address)
// and is never the VMM's own address unless that was already in the range;
// the shadow's regions never overlap and stay within the slots; teardown
// touches only started rings; clear() forgets everything; the process has
// as many fds at the end of an input as at its start.

#include <dirent.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "protocol/frontend_request.hpp"
#include "proxy/offer.hpp"
#include "proxy/shadow.hpp"

namespace {

using namespace vufront;
using proxy::proxy_user_base;
using proxy::Shadow;

void check(bool cond) {
  if (!cond)
    std::abort();  // a broken promise is a finding
}

size_t open_fds() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d))
      n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

Negotiated offer(uint8_t s) {
  proxy::BackendOffer b;
  b.kind = DeviceKind::blk;
  b.features = 0x175007e46ULL | ((s & 0x01) ? bit(feature::ring_packed) : 0);
  namespace pf = protocol_feature;
  b.protocol_features = 0x8f2b | bit(pf::status) | bit(pf::reset_device) | bit(pf::inflight_shmfd) |
                        bit(pf::device_state);
  b.queue_num = 1 + ((s >> 1) & 3);
  b.max_mem_slots = (s & 0x08) ? 8 : 32;
  b.backend_channel = (s & 0x10) != 0;
  auto n = proxy::vmm_offer(b);
  check(n.ok());  // the offer carries CONFIG and PROTOCOL_FEATURES
  return *n;
}

bool wants_memfd(uint32_t code) {
  switch (static_cast<FrontendReq>(code)) {
    case FrontendReq::set_mem_table:
    case FrontendReq::add_mem_reg:
    case FrontendReq::set_log_base:
    case FrontendReq::set_inflight_fd:
      return true;
    default:
      return false;
  }
}

/// The next message of the input at `pos`, or nullopt when the stream ends
/// (the VMM hung up, or sent what Connection::receive refuses).
std::optional<Message> next_message(const uint8_t* data, size_t size, size_t& pos) {
  if (size - pos < 1 + sizeof(wire::Header))
    return std::nullopt;
  const size_t nfds = data[pos] % (max_fds_per_message + 1);
  Message m;
  std::memcpy(&m.header, data + pos + 1, sizeof(wire::Header));
  pos += 1 + sizeof(wire::Header);
  if (m.header.size > frontend_request_max_body || m.header.size > size - pos)
    return std::nullopt;
  m.body.assign(data + pos, data + pos + m.header.size);
  pos += m.header.size;
  for (size_t i = 0; i < nfds; ++i)
    m.fds.push_back(wants_memfd(m.header.request) ? make_memfd("fuzz-vmm", 4096) : make_eventfd());
  return m;
}

/// A user address the back-end is told for `vmm` (an address of the VMM's
/// inside `region`): exactly the region's synthetic counterpart.
void check_translated(const wire::MemoryRegion& region, uint64_t vmm, uint64_t translated) {
  const uint64_t synthetic = proxy_user_base + region.guest_phys_addr;
  check(synthetic >= proxy_user_base);  // no wrap below the range
  check(vmm >= region.user_addr && vmm - region.user_addr < region.memory_size);
  check(translated == synthetic + (vmm - region.user_addr));
  check(translated >= synthetic && translated - synthetic < region.memory_size);
  check(translated != vmm || vmm >= proxy_user_base);
}

void check_region(const wire::MemoryRegion& vmm, const wire::MemoryRegion& fwd) {
  check(fwd.guest_phys_addr == vmm.guest_phys_addr && fwd.memory_size == vmm.memory_size &&
        fwd.mmap_offset == vmm.mmap_offset);
  check_translated(vmm, vmm.user_addr, fwd.user_addr);
  check(fwd.user_addr + fwd.memory_size > fwd.user_addr);  // the range does not wrap
}

const Shadow::Region* holding(const Shadow& sh, uint64_t vmm_addr) {
  for (const auto& r : sh.regions())
    if (vmm_addr >= r.vmm.user_addr && vmm_addr - r.vmm.user_addr < r.vmm.memory_size)
      return &r;
  return nullptr;
}

/// What prepare() made of a request, against the shadow it was prepared in.
void check_prepared(const Shadow& sh, const Shadow::Prepared& p) {
  const auto& f = p.forward;
  switch (f.req) {
    case FrontendReq::set_mem_table: {
      const auto& vmm = std::get<MemoryTable>(p.original).regions;
      const auto& fwd = std::get<MemoryTable>(f.payload).regions;
      check(vmm.size() == fwd.size() && fwd.size() == f.fds.size());
      for (size_t i = 0; i < vmm.size(); ++i)
        check_region(vmm[i], fwd[i]);
      break;
    }
    case FrontendReq::add_mem_reg:
      check(f.fds.size() == 1);
      check_region(std::get<wire::MemoryRegion>(p.original), std::get<wire::MemoryRegion>(f.payload));
      break;
    case FrontendReq::rem_mem_reg: {
      const auto& fwd = std::get<wire::MemoryRegion>(f.payload);
      bool known = false;
      for (const auto& r : sh.regions())
        known |= r.vmm.guest_phys_addr == fwd.guest_phys_addr && r.vmm.memory_size == fwd.memory_size &&
                 r.synthetic == fwd.user_addr && r.vmm.mmap_offset == fwd.mmap_offset;
      check(known);
      break;
    }
    case FrontendReq::set_vring_addr: {
      const auto& vmm = std::get<wire::VringAddr>(p.original);
      const auto& fwd = std::get<wire::VringAddr>(f.payload);
      check(fwd.index == vmm.index && fwd.flags == vmm.flags && fwd.log == vmm.log);
      const std::pair<uint64_t, uint64_t> pairs[] = {
          {vmm.desc, fwd.desc}, {vmm.used, fwd.used}, {vmm.avail, fwd.avail}};
      for (const auto& [from, to] : pairs) {
        const auto* r = holding(sh, from);
        check(r != nullptr && r->synthetic == proxy_user_base + r->vmm.guest_phys_addr);
        check_translated(r->vmm, from, to);
      }
      break;
    }
    default:
      check(f.payload.index() == p.original.index());
      break;
  }
}

/// Whether [a, a + alen) and [b, b + blen) share no byte; both non-empty and
/// not wrapping (the decoder's promise), though one may end at 2^64.
bool disjoint(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a + (alen - 1) < b || b + (blen - 1) < a;
}

/// What the shadow holds after every commit.
void check_shadow(const Shadow& sh) {
  const auto& ctx = sh.context();
  const auto& regions = sh.regions();
  check(regions.size() <= ctx.max_mem_slots);
  check(sh.rings().size() == ctx.num_queues);
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto& a = regions[i];
    check(a.fd != nullptr && a.synthetic == proxy_user_base + a.vmm.guest_phys_addr &&
          a.synthetic >= proxy_user_base);
    for (size_t j = i + 1; j < regions.size(); ++j) {
      const auto& b = regions[j].vmm;
      check(disjoint(a.vmm.guest_phys_addr, a.vmm.memory_size, b.guest_phys_addr, b.memory_size));
      check(disjoint(a.vmm.user_addr, a.vmm.memory_size, b.user_addr, b.memory_size));
    }
  }
}

/// What a back-end that accepted the request would have answered.
proxy::ForwardResult accepted(const Shadow& sh, const proxy::Forward& f) {
  proxy::ForwardResult out;
  switch (f.req) {
    case FrontendReq::get_vring_base: {
      const auto& s = std::get<wire::VringState>(f.payload);
      out.has_reply = true;
      out.vring_base = sh.rings().at(s.index).base;
      out.body = encode_vring_base_reply(s.index, out.vring_base).body;
      break;
    }
    case FrontendReq::get_inflight_fd: {
      const auto& d = std::get<wire::InflightDesc>(f.payload);
      out.has_reply = true;
      out.inflight = wire::InflightDesc{4096, 0, d.num_queues, d.queue_size, {}};
      out.fd = share(make_memfd("fuzz-inflight", 4096));
      out.body = encode_inflight_reply(out.inflight, out.fd->get()).body;
      break;
    }
    case FrontendReq::get_config: {
      const auto& c = std::get<ConfigRequest>(f.payload);
      auto reply = encode_config_reply(c.header, std::vector<uint8_t>(c.header.size));
      check(reply.ok());
      out.has_reply = true;
      out.body = std::move(reply->body);
      break;
    }
    case FrontendReq::get_status:
      out.has_reply = true;
      out.body = encode_u64_reply(f.req, sh.status()).body;
      break;
    case FrontendReq::set_log_base:
      out.has_reply = true;
      out.body = encode_u64_reply(f.req, 0).body;
      break;
    default:
      break;
  }
  return out;
}

/// What vufront answers itself (actors/vmm_port.cpp, local_reply); false
/// when the request is not one of those.
bool local(Shadow& sh, FrontendRequest& r, std::optional<UniqueFd>& channel) {
  const auto& ctx = sh.context();
  switch (r.req) {
    case FrontendReq::get_features:
      check(encode_u64_reply(r.req, ctx.offered_features).body.size() == 8);
      return true;
    case FrontendReq::get_protocol_features:
    case FrontendReq::get_queue_num:
    case FrontendReq::get_max_mem_slots:
      return true;
    case FrontendReq::set_protocol_features:
      sh.set_protocol_features(std::get<wire::U64>(r.payload).value);
      return true;
    case FrontendReq::set_owner:
    case FrontendReq::reset_owner:
      return true;
    case FrontendReq::set_backend_req_fd:
      channel.emplace(std::move(r.fds.at(0)));
      return true;
    default:
      return false;
  }
}

/// With VUFRONT_FUZZ_TRACE set: one line per message on stderr (how far a
/// seed gets, and why its session ends).
bool tracing() {
  static const bool on = std::getenv("VUFRONT_FUZZ_TRACE") != nullptr;
  return on;
}

bool trace(uint32_t code, const char* what, const std::string& detail = "") {
  if (tracing())
    std::fprintf(stderr, "%s: %s%s%s\n", frontend_req_name(code).c_str(), what,
                 detail.empty() ? "" : ": ", detail.c_str());
  return false;
}

/// One VMM message; false when it ends the session.
bool step(Shadow& sh, Message m, std::optional<UniqueFd>& channel) {
  const uint32_t code = m.header.request;
  auto r = decode_frontend_request(std::move(m), sh.context());
  check(m.fds.empty());
  if (!r)
    return trace(code, "refused", r.error().message());
  if (local(sh, *r, channel))
    return !trace(code, "answered by vufront");
  if (!proxy::forwarded(r->req))
    return trace(code, "not proxied");
  auto p = sh.prepare(std::move(*r));
  if (!p)
    return trace(code, "refused", p.error().message());
  if (p->deferred) {  // a ring before its memory: kept, not forwarded yet
    check(p->forward.req == FrontendReq::set_vring_addr);
    trace(code, "deferred until its memory comes");
    sh.commit(*p, {});
    check_shadow(sh);
    return true;
  }
  trace(code, "forwarded");
  check_prepared(sh, *p);
  sh.commit(*p, accepted(sh, p->forward));
  check_shadow(sh);
  // rings whose memory just came go out, translated, as the port sends them
  for (auto& ready : sh.take_ready()) {
    check_prepared(sh, ready);
    sh.commit(ready, {});
    check_shadow(sh);
  }
  return true;
}

void end_session(Shadow& sh) {
  (void)sh.to_json();
  const auto t = sh.teardown();
  for (const auto& f : t.requests) {
    const auto& s = std::get<wire::VringState>(f.payload);
    check(s.index < sh.rings().size() && sh.rings()[s.index].started && s.num == 0);
    check(f.req == FrontendReq::set_vring_enable || f.req == FrontendReq::get_vring_base);
  }
  sh.clear();
  check(sh.regions().empty() && sh.status() == 0 && sh.acked_features() == 0);
  check(sh.context().acked_protocol_features == 0);
  for (const auto& ring : sh.rings())
    check(!ring.started && !ring.kick && !ring.call && !ring.err && !ring.addr_set && !ring.addr_pending);
  const auto again = sh.teardown();
  check(again.requests.empty() && !again.renew);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  const size_t fds_before = open_fds();
  {
    Shadow sh(offer(data[0]));
    std::optional<UniqueFd> channel;
    size_t pos = 1;
    while (auto m = next_message(data, size, pos))
      if (!step(sh, std::move(*m), channel))
        break;
    end_session(sh);
  }
  check(open_fds() == fds_before);  // every fd the session got is closed
  return 0;
}
