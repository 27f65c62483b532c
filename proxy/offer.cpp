#include "proxy/offer.hpp"

namespace vufront::proxy {

uint64_t withheld_features() noexcept { return bit(feature::access_platform); }

uint64_t proxied_protocol_features() noexcept {
  namespace p = protocol_feature;
  return bit(p::mq) | bit(p::reply_ack) | bit(p::backend_req) | bit(p::config) |
         bit(p::inflight_shmfd) | bit(p::reset_device) | bit(p::configure_mem_slots) |
         bit(p::status) | bit(p::log_shmfd);
}

Result<Negotiated> vmm_offer(const BackendOffer& b) {
  if (!has_bit(b.features, feature::protocol_features))
    return make_error(errc::not_negotiated, "VMM socket",
                      "the back-end offers no PROTOCOL_FEATURES (bit 30); vufront proxies only "
                      "back-ends that do");
  if (b.kind == DeviceKind::blk && !has_bit(b.protocol_features, protocol_feature::config))
    return make_error(errc::not_negotiated, "VMM socket",
                      "the blk back-end has no CONFIG protocol feature: QEMU refuses a "
                      "vhost-user-blk device without it");
  Negotiated n;
  n.offered_features = b.features & ~withheld_features();
  uint64_t proto = b.protocol_features & proxied_protocol_features();
  // Requests of the back-end reach the VMM only through vufront's channel.
  if (!b.backend_channel)
    proto &= ~bit(protocol_feature::backend_req);
  // Dirty logging goes through only whole: LOG_ALL with the shared log
  // (LOG_SHMFD). QEMU without LOG_SHMFD would send SET_LOG_BASE without an
  // fd and without waiting for a reply; without LOG_ALL it refuses
  // `migrate` itself.
  const bool log = has_bit(b.features, feature::log_all) && has_bit(proto, protocol_feature::log_shmfd);
  if (!log) {
    n.offered_features &= ~bit(feature::log_all);
    proto &= ~bit(protocol_feature::log_shmfd);
  }
  n.offered_protocol_features = proto;
  n.num_queues = b.queue_num;
  n.max_mem_slots = b.max_mem_slots;
  return n;
}

std::string protocol_feature_list(uint64_t features) {
  std::string out;
  for (const auto& name : protocol_feature_names(features))
    out += (out.empty() ? "" : "|") + name;
  return out.empty() ? "none" : out;
}

}  // namespace vufront::proxy
