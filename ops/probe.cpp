#include "ops/probe.hpp"

#include <cerrno>

#include "protocol/backend_client.hpp"
#include "protocol/bringup.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::ops {

namespace {

/// The bring-up a probe runs: the same ack rule as a device's negotiation.
BringupOptions probe_bringup_options(const ProbeOptions& opts, int channel_fd) {
  BringupOptions o;
  o.kind = opts.device;
  // what a device with a back-end channel and an in-flight region would
  // ack; a probe does no dirty logging, so no LOG_SHMFD
  o.backend_channel = true;
  o.channel_fd = channel_fd;
  o.inflight = true;
  o.dirty_log = false;
  o.config_size = opts.config_size.value_or(virtio::config_size(opts.device));
  // an in-band refusal (e.g. qsd 7.2 refuses GET_CONFIG over 60 bytes): report, go on
  o.record_refusals = true;
  return o;
}

}  // namespace

Result<ProbeResult> run_probe(const ProbeOptions& opts) {
  Timeouts timeouts;
  timeouts.request = opts.timeout;
  auto client_or = BackendClient::connect(
      opts.socket, opts.timeout, timeouts, nullptr,
      opts.wait_for_backend ? ConnectWait::backend : ConnectWait::socket);
  if (!client_or)
    return std::move(client_or).error();
  BackendClient& client = *client_or;

  // The back-end channel: hand over one end of a socketpair, keep the other
  // open until we disconnect (nothing is expected on it during a probe).
  SocketPair channel = make_socketpair();
  if (!channel.first || !channel.second)
    return make_error(errc::io_error, "SET_BACKEND_REQ_FD", "socketpair failed", errno);
  const BringupOptions bopts = probe_bringup_options(opts, channel.second.get());
  auto b = bring_up(client, bopts);
  channel.second.reset();
  if (!b)
    return std::move(b).error();

  ProbeResult r;
  r.socket = opts.socket;
  r.device = opts.device;
  r.features = b->features;
  if (has_bit(b->features, feature::protocol_features)) {
    r.protocol_features = b->protocol_features_offered;
    r.protocol_features_acked = b->protocol_features_acked;
  }
  if (b->backend_queue_num)
    r.queue_num = *b->backend_queue_num;
  if (b->backend_max_mem_slots)
    r.max_mem_slots = *b->backend_max_mem_slots;
  r.backend_channel = b->backend_channel;
  if (const auto* refused = b->refusal(BringupStep::set_backend_req_fd))
    r.backend_channel_error = refused->error.message();
  if (client.protocol_feature(protocol_feature::config))
    r.config_size_requested = *bopts.config_size;
  r.config = std::move(b->config);
  if (const auto* refused = b->refusal(BringupStep::get_config))
    r.config_error = refused->error.message();
  if (b->shmem_sizes) {
    std::vector<std::pair<uint32_t, uint64_t>> regions;
    for (uint32_t id = 0; id < b->shmem_sizes->size(); ++id)
      if ((*b->shmem_sizes)[id] != 0)
        regions.emplace_back(id, (*b->shmem_sizes)[id]);
    r.shmem_regions = std::move(regions);
  }
  if (b->kind.fit == KindVerdict::Fit::could_not_tell)
    r.kind_doubt = b->kind.reason;
  return r;
}

}  // namespace vufront::ops
