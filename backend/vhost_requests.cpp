// VhostServer::dispatch: what the back-end does with every front-end
// request except the per-vring ones (vhost_rings.cpp). The request arrives
// decoded and validated (protocol/frontend_request.hpp): sizes, fds, gates
// and index ranges are the codec's business, the device's behaviour is ours.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "backend/device_state.hpp"
#include "backend/vhost_server.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

namespace {

Error refusal(errc code, FrontendReq req, const std::string& detail) {
  return make_error(code, name(req), detail);
}

}  // namespace

VhostServer::Status VhostServer::set_features(uint64_t f) {
  if (has_bit(f, feature::log_all) && has_bit(f, feature::ring_packed))
    return refusal(errc::invalid_argument, FrontendReq::set_features,
                   "LOG_ALL with packed rings: this back-end does not log the used "
                   "descriptors it writes into the descriptor ring");
  s_->features = f;
  if (!has_bit(f, feature::protocol_features))
    for (Vring& v : s_->vrings)
      v.enabled = true;  // without bit 30 rings are enabled by SET_FEATURES (vhost-user spec, "Ring states")
  return std::optional<uint64_t>{0};
}

VhostServer::Status VhostServer::dispatch(FrontendRequest& r) {
  using Ack = std::optional<uint64_t>;
  const FrontendReq req = r.req;
  const auto u64 = [&r] { return std::get<wire::U64>(r.payload).value; };
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
      VU_REPLY(reply(encode_u64_reply(req, offered_features(opt_, *dev_))));
    case FrontendReq::set_features:
      return set_features(u64());  // the codec refused bits that were not offered
    case FrontendReq::set_owner:
      return Ack{0};
    case FrontendReq::reset_owner:
      reset_device();
      return Ack{0};
    case FrontendReq::get_protocol_features:
      VU_REPLY(reply(encode_u64_reply(req, offered_protocol_features(opt_, *dev_))));
    case FrontendReq::set_protocol_features:
      s_->protocol = u64();
      return Ack{0};
    case FrontendReq::get_queue_num:
      VU_REPLY(reply(encode_u64_reply(req, dev_->num_vrings())));
    case FrontendReq::get_max_mem_slots:
      VU_REPLY(reply(encode_mem_slots_reply(max_mem_slots)));
    case FrontendReq::set_mem_table:
      VU_TRY(s_->mem.set_table(std::get<MemoryTable>(r.payload).regions, std::move(r.fds)));
      rebuild_queues();
      return Ack{0};
    case FrontendReq::add_mem_reg:
      VU_TRY(s_->mem.add(std::get<wire::MemoryRegion>(r.payload), std::move(r.fds[0])));
      rebuild_queues();
      return Ack{0};
    case FrontendReq::rem_mem_reg: {
      // rings may point into the region: stop using translated pointers first
      for (Vring& v : s_->vrings)
        if (v.queue)
          v.base = v.queue->base(), v.queue.reset();
      const auto& region = std::get<wire::MemoryRegion>(r.payload);
      const bool removed = static_cast<bool>(s_->mem.remove(region));
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
      return vring_request(r);
    case FrontendReq::set_backend_req_fd:
      if (!set_nonblocking(r.fds[0].get(), true))
        return refusal(errc::io_error, req, "cannot make the channel non-blocking");
      s_->backend.emplace(std::move(r.fds[0]));
      s_->backend_pending = 0;
      return Ack{0};
    case FrontendReq::get_config:
    case FrontendReq::set_config:
      return config_request(r);
    case FrontendReq::get_inflight_fd: {
      wire::InflightDesc out{};
      auto fd = Inflight::allocate(std::get<wire::InflightDesc>(r.payload), out);
      if (!fd)
        return std::move(fd).error();
      VU_REPLY(reply(encode_inflight_reply(out, fd->get())));
    }
    case FrontendReq::set_log_base:  // LOG_SHMFD acked and one fd (codec)
      VU_TRY(s_->log.set(std::get<wire::Log>(r.payload), std::move(r.fds[0])));
      VU_REPLY(reply(encode_u64_reply(req, 0)));
    case FrontendReq::set_inflight_fd:
      VU_TRY(s_->inflight.set(std::get<wire::InflightDesc>(r.payload), std::move(r.fds[0])));
      return Ack{0};
    case FrontendReq::reset_device:
      reset_device();
      return Ack{0};
    case FrontendReq::set_status: {
      const uint64_t v = u64();  // <= 0xff (codec)
      if (v == 0) {
        // a stop, not a reset: QEMU sends SET_VRING_ENABLE 0 and GET_VRING_BASE
        // next (README.md, "The reference back-end")
        stop_device();
        return Ack{0};
      }
      const bool was_ok = s_->status & status_bit::driver_ok;
      s_->status = static_cast<uint8_t>(v);
      if (!was_ok && (v & status_bit::driver_ok))
        s_->start_pending = true;
      return Ack{0};
    }
    case FrontendReq::get_status:
      VU_REPLY(reply(encode_u64_reply(req, s_->status)));
    case FrontendReq::set_device_state_fd:
    case FrontendReq::check_device_state:
      return device_state_request(r);
    case FrontendReq::get_shmem_config: {
      wire::ShmemConfig c{};
      c.nregions = 1;
      c.sizes[0] = opt_.shmem_size;
      VU_REPLY(reply(encode_shmem_config_reply(c)));
    }
    default:
      return refusal(errc::unknown_request, req, "request not supported by this back-end");
  }
#undef VU_REPLY
#undef VU_TRY
}

VhostServer::Status VhostServer::config_request(const FrontendRequest& r) {
  using Ack = std::optional<uint64_t>;
  const auto& c = std::get<ConfigRequest>(r.payload);  // size <= 256, data.size() == size
  const wire::ConfigHeader& h = c.header;
  const std::vector<uint8_t> cfg = dev_->config();
  const bool in_range = h.size > 0 && h.offset <= cfg.size() && h.size <= cfg.size() - h.offset;
  if (r.req == FrontendReq::set_config) {
    // Nothing is writable (no CONFIG_WCE): accept only writes that change nothing.
    const bool same =
        in_range && std::equal(c.data.begin(), c.data.end(), cfg.begin() + h.offset);
    return Ack{same ? 0u : 1u};
  }
  Result<void> sent = ok();
  if (!in_range) {
    sent = reply(encode_config_refusal());  // error = zero-size reply (vhost-user spec, VHOST_USER_GET_CONFIG)
  } else {
    // in_range: offset + size <= cfg.size()
    const std::vector<uint8_t> part(cfg.begin() + h.offset, cfg.begin() + h.offset + h.size);
    auto out = encode_config_reply(h, part);
    if (!out)
      return std::move(out).error();
    sent = reply(*out);
  }
  if (!sent)
    return std::move(sent).error();
  return Ack{};
}

VhostServer::Status VhostServer::device_state_request(FrontendRequest& fr) {
  if (fr.req == FrontendReq::check_device_state) {
    if (auto s = reply(encode_u64_reply(fr.req, last_state_ok_ ? 0 : 1)); !s)
      return std::move(s).error();
    return std::optional<uint64_t>{};
  }
  const auto t = std::get<wire::DeviceStateTransfer>(fr.payload);  // direction, phase: codec
  const bool save = t.direction == wire::device_state_save;
  UniqueFd pipe = std::move(fr.fds[0]);
  bool running = false;
  for (const Vring& v : s_->vrings)
    running = running || v.started;
  last_state_ok_ = false;
  if (running) {
    // precondition (vhost-user spec, VHOST_USER_SET_DEVICE_STATE_FD): device suspended
    if (auto s = reply(encode_device_state_reply(1)); !s)
      return std::move(s).error();
    return std::optional<uint64_t>{};
  }
  UniqueFd given;  // --state-own-fd: the end of our own pipe the reply carries
  if (opt_.state_faults.own_fd) {
    pipe.reset();  // the front-end's end goes unused
    Pipe own = make_pipe();
    if (!own.read_end) {
      std::fprintf(stderr, "vufront-backend: --state-own-fd: pipe2: %s\n", std::strerror(errno));
      if (auto s = reply(encode_device_state_reply(1)); !s)
        return std::move(s).error();
      return std::optional<uint64_t>{};
    }
    // save: we write, the front-end reads; load: the other way round
    pipe = std::move(save ? own.write_end : own.read_end);
    given = std::move(save ? own.read_end : own.write_end);
  }
  // bit 8 clear = the reply carries the back-end's fd (vhost-user spec, VHOST_USER_SET_DEVICE_STATE_FD)
  if (auto s = reply(encode_device_state_reply(0, given.get())); !s)
    return std::move(s).error();
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
