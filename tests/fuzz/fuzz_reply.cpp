// libFuzzer target: main-channel reply validation (protocol/reply.hpp).
// Input: [FrontendReq selector][12-byte header][body][n fds] (fuzz_input.hpp).
// The selector's low bits pick the pending request (1..45); bit 7 picks a
// packed ring for GET_VRING_BASE. Every parse_* must return an Error or a
// value, never crash, leak or read out of bounds.

#include <cstddef>
#include <cstdint>

#include "protocol/reply.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

using vufront::FrontendReq;
namespace reply = vufront::reply;

void run(FrontendReq req, bool packed, vufront::Message& m) {
  (void)reply::max_body(req, 8);
  (void)reply::max_fds(req);
  auto header = reply::check_header(req, m.header);
  if (!header)
    (void)reply::is_refusal(header.error());
  switch (req) {
    case FrontendReq::get_queue_num: (void)reply::parse_queue_num(m); break;
    case FrontendReq::get_max_mem_slots: (void)reply::parse_max_mem_slots(m); break;
    case FrontendReq::get_status: (void)reply::parse_status(m); break;
    case FrontendReq::get_vring_base:
    case FrontendReq::get_vring_base_skip_drain:
      (void)reply::parse_vring_base(m, 1, packed);
      break;
    case FrontendReq::get_config: {
      auto r = reply::parse_config(m, 0, 8);
      if (!r)
        (void)reply::is_refusal(r.error());
      break;
    }
    case FrontendReq::get_inflight_fd: (void)reply::parse_inflight(m, 2, 256); break;
    case FrontendReq::get_shmem_config: (void)reply::parse_shmem_config(m); break;
    case FrontendReq::set_device_state_fd: (void)reply::parse_device_state(m); break;
    case FrontendReq::get_features:
    case FrontendReq::get_protocol_features:
    case FrontendReq::set_log_base:
    case FrontendReq::check_device_state: (void)reply::parse_u64(req, m); break;
    default: {
      auto r = reply::parse_ack(req, m);
      if (!r)
        (void)reply::is_refusal(r.error());
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = vufront::fuzz::split_input(data, size);
  if (!in)
    return 0;
  const uint32_t code = 1 + (in->selector & 0x7f) % vufront::frontend_req_max;
  const auto req = vufront::frontend_req_from_code(code);
  if (!req)
    return 0;
  run(*req, (in->selector & 0x80) != 0, in->message);
  return 0;
}
