// vufront-backend: the project's reference vhost-user back-end (virtio-blk
// disk, virtio-net echo). Parsing and wiring only; see backend/vhost_server.hpp.
#include <cstdio>
#include <memory>

#include "backend/blk_device.hpp"
#include "backend/net_device.hpp"
#include "backend/options.hpp"
#include "backend/vhost_server.hpp"

int main(int argc, char** argv) {
  using namespace vufront::backend;
  ParseOutcome parsed = parse_options(argc, argv);
  if (!parsed.options)
    return parsed.exit_code;
  Options& o = *parsed.options;
  std::unique_ptr<Device> dev;
  if (o.device == vufront::DeviceKind::net) {
    dev = std::make_unique<NetDevice>(static_cast<uint16_t>(o.queues), o.mac);
  } else {
    auto blk = BlkDevice::open(o.size, o.image, static_cast<uint16_t>(o.queues));
    if (!blk) {
      std::fprintf(stderr, "vufront-backend: %s\n", blk.error().message().c_str());
      return 1;
    }
    dev = std::make_unique<BlkDevice>(std::move(blk).value());
  }
  VhostServer server(o, std::move(dev));
  if (auto r = server.listen(); !r) {
    std::fprintf(stderr, "vufront-backend: %s\n", r.error().message().c_str());
    return 1;
  }
  return server.run();
}
