// VhostServer::dispatch: validation and handling of every front-end request
// except the per-vring ones (vhost_rings.cpp).
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "backend/device_state.hpp"
#include "backend/vhost_server.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

namespace {

Error violation(errc code, FrontendReq req, const std::string& detail) {
  return make_error(code, name(req), detail);
}

Result<void> expect(const Message& m, FrontendReq req, size_t size, size_t nfds) {
  if (m.body.size() != size)
    return violation(errc::bad_size, req,
                     "payload is " + std::to_string(m.body.size()) + " bytes, expected " +
                         std::to_string(size));
  if (m.fds.size() != nfds)
    return violation(errc::bad_fds, req,
                     std::to_string(m.fds.size()) + " fds, expected " + std::to_string(nfds));
  return ok();
}

template <class T>
T decode(const Message& m) {
  return *wire::decode_exact<T>(m.body.data(), m.body.size());  // size checked by expect()
}

}  // namespace

VhostServer::Status VhostServer::dispatch(FrontendReq req, Message& m) {
  namespace pf = protocol_feature;
  using Ack = std::optional<uint64_t>;
  auto need = [&](unsigned protocol_bit) -> Result<void> {
    if (!negotiated(protocol_bit))
      return violation(errc::not_negotiated, req,
                       "needs protocol feature " + protocol_feature_name(protocol_bit));
    return ok();
  };
  auto offered = [&](unsigned protocol_bit) -> Result<void> {
    if (!has_bit(offered_protocol_features(opt_, *dev_), protocol_bit))
      return violation(errc::not_negotiated, req,
                       "protocol feature " + protocol_feature_name(protocol_bit) + " not offered");
    return ok();
  };
#define VU_TRY(expr)                  \
  do {                                \
    if (auto r_ = (expr); !r_)        \
      return std::move(r_).error();   \
  } while (0)
#define VU_REPLY(expr) \
  do {                 \
    VU_TRY(expr);      \
    return Ack{};      \
  } while (0)

  switch (req) {
    case FrontendReq::get_features:
      VU_TRY(expect(m, req, 0, 0));
      VU_REPLY(reply_u64(m, offered_features(opt_, *dev_)));
    case FrontendReq::set_features: {
      VU_TRY(expect(m, req, 8, 0));
      const uint64_t f = decode<wire::U64>(m).value;
      if (f & ~offered_features(opt_, *dev_))
        return violation(errc::invalid_payload, req, "acks features that were not offered");
      s_->features = f;
      if (!has_bit(f, feature::protocol_features))
        for (Vring& v : s_->vrings)
          v.enabled = true;  // without bit 30 rings are enabled by SET_FEATURES (§10.1)
      return Ack{0};
    }
    case FrontendReq::set_owner:
      VU_TRY(expect(m, req, 0, 0));
      return Ack{0};
    case FrontendReq::reset_owner:
      VU_TRY(expect(m, req, 0, 0));
      reset_device();
      return Ack{0};
    case FrontendReq::get_protocol_features:
      VU_TRY(expect(m, req, 0, 0));
      VU_REPLY(reply_u64(m, offered_protocol_features(opt_, *dev_)));
    case FrontendReq::set_protocol_features: {
      VU_TRY(expect(m, req, 8, 0));
      const uint64_t f = decode<wire::U64>(m).value;
      if (f & ~offered_protocol_features(opt_, *dev_))
        return violation(errc::invalid_payload, req, "acks protocol features that were not offered");
      s_->protocol = f;
      return Ack{0};
    }
    case FrontendReq::get_queue_num:
      VU_TRY(offered(pf::mq));
      VU_TRY(expect(m, req, 0, 0));
      VU_REPLY(reply_u64(m, dev_->num_vrings()));
    case FrontendReq::get_max_mem_slots:
      VU_TRY(offered(pf::configure_mem_slots));
      VU_TRY(expect(m, req, 0, 0));
      VU_REPLY(reply_u64(m, max_mem_slots));
    case FrontendReq::set_mem_table: {
      wire::MemoryTableHeader h{};
      if (auto p = wire::decode_prefix<wire::MemoryTableHeader>(m.body.data(), m.body.size()))
        h = *p;
      else
        return violation(errc::bad_size, req, "payload shorter than its header");
      if (h.nregions == 0 || h.nregions > wire::max_mem_table_regions)
        return violation(errc::invalid_payload, req,
                         std::to_string(h.nregions) + " regions (1..8 allowed)");
      VU_TRY(expect(m, req, sizeof h + h.nregions * sizeof(wire::MemoryRegion), h.nregions));
      std::vector<wire::MemoryRegion> regions(h.nregions);
      // BOUNDS: the body is exactly header + nregions regions (checked above).
      std::memcpy(regions.data(), m.body.data() + sizeof h, h.nregions * sizeof(wire::MemoryRegion));
      VU_TRY(s_->mem.set_table(regions, std::move(m.fds)));
      rebuild_queues();
      return Ack{0};
    }
    case FrontendReq::add_mem_reg: {
      VU_TRY(need(pf::configure_mem_slots));
      VU_TRY(expect(m, req, sizeof(wire::SingleMemoryRegion), 1));
      VU_TRY(s_->mem.add(decode<wire::SingleMemoryRegion>(m).region, std::move(m.fds[0])));
      rebuild_queues();
      return Ack{0};
    }
    case FrontendReq::rem_mem_reg: {
      VU_TRY(need(pf::configure_mem_slots));
      if (m.fds.size() > 1)
        return violation(errc::bad_fds, req, "more than one fd");
      m.fds.clear();  // tolerated and closed (§5)
      VU_TRY(expect(m, req, sizeof(wire::SingleMemoryRegion), 0));
      // rings may point into the region: stop using translated pointers first
      const wire::MemoryRegion r = decode<wire::SingleMemoryRegion>(m).region;
      for (Vring& v : s_->vrings)
        if (v.queue)
          v.base = v.queue->base(), v.queue.reset();
      const bool removed = static_cast<bool>(s_->mem.remove(r));
      rebuild_queues();
      return Ack{removed ? 0u : 1u};
    }
    case FrontendReq::set_vring_num:
    case FrontendReq::set_vring_addr:
    case FrontendReq::set_vring_base:
    case FrontendReq::get_vring_base:
    case FrontendReq::set_vring_kick:
    case FrontendReq::set_vring_call:
    case FrontendReq::set_vring_err:
    case FrontendReq::set_vring_enable:
      return vring_request(req, m);
    case FrontendReq::set_backend_req_fd:
      VU_TRY(need(pf::backend_req));
      VU_TRY(expect(m, req, 0, 1));
      if (!set_nonblocking(m.fds[0].get(), true))
        return violation(errc::io_error, req, "cannot make the channel non-blocking");
      s_->backend.emplace(std::move(m.fds[0]));
      s_->backend_pending = 0;
      return Ack{0};
    case FrontendReq::get_config:
    case FrontendReq::set_config: {
      VU_TRY(need(pf::config));
      const auto h = wire::decode_prefix<wire::ConfigHeader>(m.body.data(), m.body.size());
      if (!h)
        return violation(errc::bad_size, req, "payload shorter than the config header");
      VU_TRY(expect(m, req, sizeof(wire::ConfigHeader) + uint64_t{h->size}, 0));
      const std::vector<uint8_t> cfg = dev_->config();
      const uint8_t* bytes = cfg.data();
      const bool in_range = h->size > 0 && h->offset <= cfg.size() &&
                            h->size <= cfg.size() - h->offset;
      if (req == FrontendReq::set_config) {
        // Nothing is writable (no CONFIG_WCE): accept only writes that change nothing.
        const bool same = in_range && std::memcmp(bytes + h->offset, m.body.data() + sizeof *h,
                                                  h->size) == 0;
        return Ack{same ? 0u : 1u};
      }
      if (!in_range)
        VU_REPLY(reply(m, nullptr, 0));  // error = zero-size reply (§5)
      std::vector<uint8_t> out(sizeof *h + h->size);
      std::memcpy(out.data(), &*h, sizeof *h);
      // BOUNDS: offset + size <= cfg.size() (in_range).
      std::memcpy(out.data() + sizeof *h, bytes + h->offset, h->size);
      VU_REPLY(reply(m, out.data(), out.size()));
    }
    case FrontendReq::get_inflight_fd: {
      VU_TRY(need(pf::inflight_shmfd));
      VU_TRY(expect(m, req, sizeof(wire::InflightDesc), 0));
      wire::InflightDesc out{};
      auto fd = Inflight::allocate(decode<wire::InflightDesc>(m), out);
      if (!fd)
        return std::move(fd).error();
      const int raw = fd->get();
      VU_REPLY(reply(m, &out, sizeof out, &raw, 1));
    }
    case FrontendReq::set_inflight_fd:
      VU_TRY(need(pf::inflight_shmfd));
      VU_TRY(expect(m, req, sizeof(wire::InflightDesc), 1));
      VU_TRY(s_->inflight.set(decode<wire::InflightDesc>(m), std::move(m.fds[0])));
      return Ack{0};
    case FrontendReq::reset_device:
      VU_TRY(need(pf::reset_device));
      VU_TRY(expect(m, req, 0, 0));
      reset_device();
      return Ack{0};
    case FrontendReq::set_status: {
      VU_TRY(need(pf::status));
      VU_TRY(expect(m, req, 8, 0));
      const uint64_t v = decode<wire::U64>(m).value;
      if (v > 0xff)
        return violation(errc::invalid_payload, req, "status above 0xff");
      if (v == 0) {
        reset_device();
        return Ack{0};
      }
      const bool was_ok = s_->status & status_bit::driver_ok;
      s_->status = static_cast<uint8_t>(v);
      if (!was_ok && (v & status_bit::driver_ok))
        s_->start_pending = true;
      return Ack{0};
    }
    case FrontendReq::get_status:
      VU_TRY(need(pf::status));
      VU_TRY(expect(m, req, 0, 0));
      VU_REPLY(reply_u64(m, s_->status));
    case FrontendReq::set_device_state_fd:
    case FrontendReq::check_device_state:
      VU_TRY(need(pf::device_state));
      return device_state_request(m);
    case FrontendReq::get_shmem_config: {
      VU_TRY(offered(pf::shmem));
      VU_TRY(expect(m, req, 0, 0));
      wire::ShmemConfig c{};
      c.nregions = 1;
      c.sizes[0] = opt_.shmem_size;
      VU_REPLY(reply(m, &c, sizeof c));
    }
    default:
      return violation(errc::unknown_request, req, "request not supported by this back-end");
  }
#undef VU_REPLY
#undef VU_TRY
}

VhostServer::Status VhostServer::device_state_request(Message& m) {
  const FrontendReq req = frontend_req_from_code(m.header.request).value_or(FrontendReq::set_device_state_fd);
  if (req == FrontendReq::check_device_state) {
    if (auto r = expect(m, req, 0, 0); !r)
      return std::move(r).error();
    if (auto r = reply_u64(m, last_state_ok_ ? 0 : 1); !r)
      return std::move(r).error();
    return std::optional<uint64_t>{};
  }
  if (auto r = expect(m, req, sizeof(wire::DeviceStateTransfer), 1); !r)
    return std::move(r).error();
  const auto t = decode<wire::DeviceStateTransfer>(m);
  if (t.direction > wire::device_state_load || t.phase != wire::device_state_phase_stopped)
    return violation(errc::invalid_payload, req, "bad direction or phase");
  const bool save = t.direction == wire::device_state_save;
  UniqueFd pipe = std::move(m.fds[0]);
  bool running = false;
  for (const Vring& v : s_->vrings)
    running = running || v.started;
  last_state_ok_ = false;
  if (running) {
    // precondition (§15): device suspended
    if (auto r = reply_u64(m, 1); !r)
      return std::move(r).error();
    return std::optional<uint64_t>{};
  }
  UniqueFd given;  // --state-own-fd: the end of our own pipe the reply carries
  if (opt_.state_faults.own_fd) {
    pipe.reset();  // the front-end's end goes unused
    Pipe own = make_pipe();
    if (!own.read_end) {
      std::fprintf(stderr, "vufront-backend: --state-own-fd: pipe2: %s\n", std::strerror(errno));
      if (auto r = reply_u64(m, 1); !r)
        return std::move(r).error();
      return std::optional<uint64_t>{};
    }
    // save: we write, the front-end reads; load: the other way round
    pipe = std::move(save ? own.write_end : own.read_end);
    given = std::move(save ? own.read_end : own.write_end);
  }
  // bit 8 clear = the reply carries the back-end's fd (§15)
  if (auto r = reply_u64(m, given ? 0 : wire::device_state_nofd, given.get()); !r)
    return std::move(r).error();
  given.reset();  // our copy of the end given away, or EOF / EPIPE never come
  const TransferPlan plan = state_transfer_plan(opt_.state_faults, save);
  const std::vector<uint8_t> cfg = dev_->config();
  if (save) {
    DeviceState st;
    st.features = s_->features;
    st.status = s_->status;
    st.config = cfg;
    for (const Vring& v : s_->vrings)
      st.vring_bases.push_back(v.base);
    auto r = save_state(pipe.get(), st, dev_->state_data(), dev_->state_bytes(), plan);
    last_state_ok_ = r.ok();
    if (!r)
      std::fprintf(stderr, "vufront-backend: state save failed: %s\n", r.error().message().c_str());
  } else {
    auto r = load_state(pipe.get(), dev_->state_data(), dev_->state_bytes(),
                        static_cast<uint32_t>(s_->vrings.size()),
                        static_cast<uint32_t>(cfg.size()), plan);
    if (r && r->config != cfg)
      r = make_error(errc::invalid_payload, "SET_DEVICE_STATE_FD(load)", "config space differs");
    last_state_ok_ = r.ok();
    if (r) {
      for (size_t i = 0; i < s_->vrings.size(); ++i) {
        s_->vrings[i].base = r->vring_bases[i];
        s_->vrings[i].base_set = true;
      }
      s_->status = r->status;
    } else {
      std::fprintf(stderr, "vufront-backend: state load failed: %s\n", r.error().message().c_str());
    }
  }
  return std::optional<uint64_t>{};
}

}  // namespace vufront::backend
