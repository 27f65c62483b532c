#include "proxy/forward.hpp"

#include <utility>

namespace vufront::proxy {

namespace {

int fd_of(const Forward& f, size_t i = 0) {
  return i < f.fds.size() && f.fds[i] ? f.fds[i]->get() : -1;
}

ForwardResult no_reply() { return ForwardResult{}; }

Result<ForwardResult> from(Result<void> r) {
  if (!r)
    return std::move(r).error();
  return no_reply();
}

Result<ForwardResult> vring_fd(BackendClient& c, const Forward& f) {
  const auto& v = std::get<VringFd>(f.payload);
  const int fd = v.has_fd ? fd_of(f) : -1;
  switch (f.req) {
    case FrontendReq::set_vring_kick:
      return from(c.set_vring_kick(v.index, fd));
    case FrontendReq::set_vring_call:
      return from(c.set_vring_call(v.index, fd));
    default:
      return from(c.set_vring_err(v.index, fd));
  }
}

Result<ForwardResult> vring_state(BackendClient& c, const Forward& f) {
  const auto& s = std::get<wire::VringState>(f.payload);
  switch (f.req) {
    case FrontendReq::set_vring_num:
      return from(c.set_vring_num(s.index, s.num));
    case FrontendReq::set_vring_base:
      return from(c.set_vring_base(s.index, s.num));
    case FrontendReq::set_vring_enable:
      return from(c.set_vring_enable(s.index, s.num != 0));
    default: {  // GET_VRING_BASE
      uint32_t base = 0;
      if (f.packed) {
        auto b = c.get_packed_vring_base(s.index);
        if (!b)
          return std::move(b).error();
        base = b->base;
      } else {
        auto b = c.get_vring_base(s.index, false);
        if (!b)
          return std::move(b).error();
        base = *b;
      }
      ForwardResult out;
      out.has_reply = true;
      out.vring_base = base;
      out.body = encode_vring_base_reply(s.index, base).body;
      return out;
    }
  }
}

Result<ForwardResult> config(BackendClient& c, const Forward& f) {
  const auto& cr = std::get<ConfigRequest>(f.payload);
  if (f.req == FrontendReq::set_config)
    return from(c.set_config(cr.header.offset, cr.data, cr.header.flags));
  auto data = c.get_config(cr.header.offset, cr.header.size, cr.header.flags);
  if (!data)
    return std::move(data).error();
  auto reply = encode_config_reply(cr.header, *data);
  if (!reply)
    return std::move(reply).error();
  ForwardResult out;
  out.has_reply = true;
  out.body = std::move(reply->body);
  return out;
}

Result<ForwardResult> inflight(BackendClient& c, const Forward& f) {
  const auto& d = std::get<wire::InflightDesc>(f.payload);
  if (f.req == FrontendReq::set_inflight_fd)
    return from(c.set_inflight_fd(d, fd_of(f)));
  auto r = c.get_inflight_fd(d.num_queues, d.queue_size);
  if (!r)
    return std::move(r).error();
  ForwardResult out;
  out.has_reply = true;
  out.inflight = r->desc;
  if (r->fd)
    out.fd = share(std::move(r->fd));
  out.body = encode_inflight_reply(r->desc, out.fd ? out.fd->get() : -1).body;
  return out;
}

Result<ForwardResult> u64_reply(FrontendReq req, uint64_t value) {
  ForwardResult out;
  out.has_reply = true;
  out.body = encode_u64_reply(req, value).body;
  return out;
}

}  // namespace

bool forwarded(FrontendReq req) noexcept {
  switch (req) {
    case FrontendReq::set_features:
    case FrontendReq::set_mem_table:
    case FrontendReq::add_mem_reg:
    case FrontendReq::rem_mem_reg:
    case FrontendReq::set_vring_num:
    case FrontendReq::set_vring_addr:
    case FrontendReq::set_vring_base:
    case FrontendReq::get_vring_base:
    case FrontendReq::set_vring_kick:
    case FrontendReq::set_vring_call:
    case FrontendReq::set_vring_err:
    case FrontendReq::set_vring_enable:
    case FrontendReq::get_config:
    case FrontendReq::set_config:
    case FrontendReq::get_inflight_fd:
    case FrontendReq::set_inflight_fd:
    case FrontendReq::set_status:
    case FrontendReq::get_status:
    case FrontendReq::reset_device:
    case FrontendReq::set_log_base:
      return true;
    default:
      return false;
  }
}

Result<ForwardResult> forward(BackendClient& c, const Forward& f) {
  switch (f.req) {
    case FrontendReq::set_features:
      return from(c.set_features(std::get<wire::U64>(f.payload).value));
    case FrontendReq::set_mem_table: {
      std::vector<int> fds;
      for (size_t i = 0; i < f.fds.size(); ++i)
        fds.push_back(fd_of(f, i));
      return from(c.set_mem_table(std::get<MemoryTable>(f.payload).regions, fds));
    }
    case FrontendReq::add_mem_reg:
      return from(c.add_mem_reg(std::get<wire::MemoryRegion>(f.payload), fd_of(f)));
    case FrontendReq::rem_mem_reg:
      return from(c.rem_mem_reg(std::get<wire::MemoryRegion>(f.payload)));
    case FrontendReq::set_vring_num:
    case FrontendReq::set_vring_base:
    case FrontendReq::set_vring_enable:
    case FrontendReq::get_vring_base:
      return vring_state(c, f);
    case FrontendReq::set_vring_addr:
      return from(c.set_vring_addr(std::get<wire::VringAddr>(f.payload)));
    case FrontendReq::set_vring_kick:
    case FrontendReq::set_vring_call:
    case FrontendReq::set_vring_err:
      return vring_fd(c, f);
    case FrontendReq::get_config:
    case FrontendReq::set_config:
      return config(c, f);
    case FrontendReq::get_inflight_fd:
    case FrontendReq::set_inflight_fd:
      return inflight(c, f);
    case FrontendReq::set_status:
      return from(c.set_status(static_cast<uint8_t>(std::get<wire::U64>(f.payload).value)));
    case FrontendReq::get_status: {
      auto s = c.get_status();
      if (!s)
        return std::move(s).error();
      return u64_reply(f.req, *s);
    }
    case FrontendReq::reset_device:
      return from(c.reset_device());
    case FrontendReq::set_log_base: {
      // The VMM's reply only once the back-end replied: QEMU frees its old
      // log after this reply (docs/vmm-proxy.md, "Live migration").
      if (auto r = c.set_log_base(std::get<wire::Log>(f.payload), fd_of(f)); !r)
        return std::move(r).error();
      return u64_reply(f.req, 0);
    }
    default:
      return make_error(errc::invalid_argument, frontend_req_name(static_cast<uint32_t>(f.req)),
                        "not a request vufront forwards to the back-end");
  }
}

std::optional<FrontendReply> vmm_answer(const Forward& f, bool need_reply, const ForwardResult& r) {
  if (r.has_reply)
    return FrontendReply{f.req, r.body, r.fd ? r.fd->get() : -1};
  if (need_reply)
    return encode_ack(f.req, 0);
  return std::nullopt;
}

Result<ForwardResult> forward_and_answer(BackendClient& c, const Forward& f, const Answer& a) {
  auto r = forward(c, f);
  if (!r || !a.to)
    return r;
  r->answered = true;
  if (auto answer = vmm_answer(f, a.need_reply, *r)) {
    // The port's session connection, no dup per answer: `a` holds it; once
    // the session ended its socket is shut down and this send fails.
    if (auto s = send_reply(*a.to, *answer, deadline_in(a.timeout)); !s) {
      r->answer_error = s.error().message();
      return r;
    }
  }
  if (a.sent)
    a.sent();
  return r;
}

}  // namespace vufront::proxy
