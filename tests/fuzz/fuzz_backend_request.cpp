// libFuzzer target: back-end request decoding (protocol/backend_request.hpp).
// Input: [feature selector][12-byte header][body][n fds] (fuzz_input.hpp).
// Selector bits 0-6 each ack one protocol feature the back-end channel cares
// about (BACKEND_REQ, REPLY_ACK, CONFIG, HOST_NOTIFIER, INBAND_NOTIFICATIONS,
// SHARED_OBJECT, SHMEM); bit 7 acks every bit. A decoded request must be
// consistent with what the decoder promises.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <variant>

#include "protocol/backend_request.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

namespace pf = vufront::protocol_feature;

uint64_t features(uint8_t selector) {
  if (selector & 0x80)
    return ~uint64_t{0};
  static constexpr unsigned bits[] = {pf::backend_req,   pf::reply_ack,
                                      pf::config,        pf::host_notifier,
                                      pf::inband_notifications, pf::shared_object,
                                      pf::shmem};
  uint64_t out = 0;
  for (unsigned i = 0; i < 7; ++i)
    if (selector & (1u << i))
      out |= vufront::bit(bits[i]);
  return out;
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
  auto r = vufront::decode_backend_request(std::move(in->message), features(in->selector));
  // The decoder consumes the message: nothing may be left behind.
  check(in->message.fds.empty());
  if (!r) {
    check(!r.error().request.empty());
    (void)r.error().message();
    (void)vufront::encode_backend_reply(code, 1);
    return 0;
  }
  check(static_cast<uint32_t>(r->type) == code);
  check(r->fds.size() <= 1);
  if (r->type == vufront::BackendReq::shmem_map)
    check(r->fds.size() == 1 && std::holds_alternative<vufront::wire::ShmemMap>(r->payload));
  if (r->type == vufront::BackendReq::config_change_msg)
    check(std::holds_alternative<std::monostate>(r->payload));
  const auto reply = vufront::encode_backend_reply(code, 0);
  check(reply.size() == 20);
  return 0;
}
