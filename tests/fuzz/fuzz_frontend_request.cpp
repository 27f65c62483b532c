// libFuzzer target: front-end request decoding (protocol/frontend_request.hpp).
// Input: [context selector][12-byte header][body][n fds] (fuzz_input.hpp).
// Selector bit 0: every virtio feature offered and acked (else VERSION_1 and
// PROTOCOL_FEATURES offered, none acked); bit 1: every protocol feature
// offered; bit 2: every protocol feature acked (else only REPLY_ACK when bit
// 3 is set); bits 4-6: the queue count (0-7); bit 7: 2 memory slots (else 8).
// A decoded request must be consistent with what the decoder promises.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <variant>

#include "protocol/frontend_request.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

namespace pf = vufront::protocol_feature;

vufront::Negotiated context(uint8_t s) {
  constexpr uint64_t all = ~uint64_t{0};
  vufront::Negotiated n;
  n.offered_features = (s & 0x01) ? all
                                  : vufront::bit(vufront::feature::version_1) |
                                        vufront::bit(vufront::feature::protocol_features);
  n.acked_features = (s & 0x01) ? all : 0;
  n.offered_protocol_features = (s & 0x02) ? all : vufront::bit(pf::reply_ack);
  n.acked_protocol_features = (s & 0x04) ? all : (s & 0x08) ? vufront::bit(pf::reply_ack) : 0;
  n.num_queues = (s >> 4) & 7;
  n.max_mem_slots = (s & 0x80) ? 2 : 8;
  return n;
}

void check(bool cond) {
  if (!cond)
    std::abort();  // a broken promise is a finding
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = vufront::fuzz::split_input(data, size);
  if (!in)
    return 0;
  const uint32_t code = in->message.header.request;
  const uint32_t flags = in->message.header.flags;
  const vufront::Negotiated ctx = context(in->selector);
  auto r = vufront::decode_frontend_request(std::move(in->message), ctx);
  // The decoder consumes the message: nothing may be left behind.
  check(in->message.fds.empty());
  if (!r) {
    check(!r.error().request.empty());
    (void)r.error().message();
    return 0;
  }
  check(static_cast<uint32_t>(r->req) == code);
  check(r->flags == flags);
  check(r->fds.size() <= vufront::frontend_request_max_fds);
  if (r->need_reply)
    check((flags & vufront::flag_need_reply) != 0 &&
          vufront::has_bit(ctx.acked_protocol_features, pf::reply_ack) &&
          !vufront::has_native_reply(r->req, ctx.acked_protocol_features));
  if (const auto* t = std::get_if<vufront::MemoryTable>(&r->payload))
    check(t->regions.size() == r->fds.size() && !t->regions.empty() &&
          t->regions.size() <= ctx.max_mem_slots);
  if (const auto* f = std::get_if<vufront::VringFd>(&r->payload))
    check(f->has_fd == (r->fds.size() == 1) && f->index < ctx.num_queues);
  if (const auto* s = std::get_if<vufront::wire::VringState>(&r->payload))
    check(s->index < ctx.num_queues);
  if (const auto* c = std::get_if<vufront::ConfigRequest>(&r->payload)) {
    check(c->data.size() == c->header.size && c->header.size <= vufront::frontend_max_config_size);
    if (r->req == vufront::FrontendReq::get_config) {
      auto reply = vufront::encode_config_reply(c->header, c->data);
      check(reply.ok() && reply->bytes().size() == 12 + 12 + c->data.size());
    }
  }
  if (r->req == vufront::FrontendReq::rem_mem_reg)
    check(r->fds.empty());
  check(vufront::encode_ack(r->req, 0).bytes().size() == 20);
  return 0;
}
