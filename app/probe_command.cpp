#include "app/probe_command.hpp"

#include <iostream>

#include "app/probe_report.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::app {

Result<ProbeResult> run_probe(const ProbeOptions& opts) {
  Timeouts timeouts;
  timeouts.request = opts.timeout;
  auto client_or = BackendClient::connect(opts.socket, opts.timeout, timeouts);
  if (!client_or)
    return std::move(client_or).error();
  BackendClient& client = *client_or;

  ProbeResult r;
  r.socket = opts.socket;
  r.device = opts.device;

  if (auto res = client.set_owner(); !res)
    return std::move(res).error();
  auto features = client.get_features();
  if (!features)
    return std::move(features).error();
  r.features = *features;

  if (has_bit(r.features, feature::protocol_features)) {
    auto offered = client.get_protocol_features();
    if (!offered)
      return std::move(offered).error();
    r.protocol_features = *offered;
    // ack only what vufront implements; never bits it would mishandle
    uint64_t acked = *offered & supported_protocol_features;
    if (auto res = client.set_protocol_features(acked); !res)
      return std::move(res).error();
    r.protocol_features_acked = acked;
  }

  if (client.protocol_feature(protocol_feature::mq)) {
    auto n = client.get_queue_num();
    if (!n)
      return std::move(n).error();
    r.queue_num = *n;
  }
  if (client.protocol_feature(protocol_feature::configure_mem_slots)) {
    auto n = client.get_max_mem_slots();
    if (!n)
      return std::move(n).error();
    r.max_mem_slots = *n;
  }

  // The back-end channel: hand over one end of a socketpair, keep the other
  // open until we disconnect (nothing is expected on it during a probe).
  SocketPair channel;
  if (client.protocol_feature(protocol_feature::backend_req)) {
    channel = make_socketpair();
    if (!channel.first)
      return make_error(errc::io_error, "SET_BACKEND_REQ_FD", "socketpair failed", errno);
    if (auto res = client.set_backend_req_fd(channel.second.get()); !res)
      return std::move(res).error();
    channel.second.reset();
    r.backend_channel = true;
  }

  if (client.protocol_feature(protocol_feature::config)) {
    r.config_size_requested = opts.config_size.value_or(virtio::config_size(opts.device));
    auto cfg = client.get_config(0, r.config_size_requested);
    if (cfg) {
      r.config = std::move(*cfg);
    } else if (!client.broken()) {
      // an in-band refusal (e.g. qsd 7.2 refuses more than 60 bytes): report, go on
      r.config_error = cfg.error().message();
    } else {
      return std::move(cfg).error();
    }
  }

  if (client.protocol_feature(protocol_feature::shmem)) {
    auto shm = client.get_shmem_config();
    if (!shm)
      return std::move(shm).error();
    std::vector<std::pair<uint32_t, uint64_t>> regions;
    for (uint32_t id = 0; id < wire::max_shmem_regions; ++id)
      if (shm->sizes[id] != 0)
        regions.emplace_back(id, shm->sizes[id]);
    r.shmem_regions = std::move(regions);
  }
  return r;
}

int probe_main(const ProbeOptions& opts) {
  auto result = run_probe(opts);
  if (!result) {
    std::cerr << "vufront probe: " << result.error().message() << "\n";
    return 1;
  }
  if (opts.json)
    std::cout << probe_json(*result).dump(2) << "\n";
  else
    print_probe_text(std::cout, *result);
  return 0;
}

}  // namespace vufront::app
