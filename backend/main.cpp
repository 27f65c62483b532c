// vufront-backend: the project's reference vhost-user virtio-blk back-end.
// Parsing and wiring only; see backend/vhost_server.hpp.
#include <cstdio>

#include "backend/blk_device.hpp"
#include "backend/options.hpp"
#include "backend/vhost_server.hpp"

int main(int argc, char** argv) {
  using namespace vufront::backend;
  ParseOutcome parsed = parse_options(argc, argv);
  if (!parsed.options)
    return parsed.exit_code;
  Options& o = *parsed.options;
  auto dev = BlkDevice::open(o.size, o.image, static_cast<uint16_t>(o.queues));
  if (!dev) {
    std::fprintf(stderr, "vufront-backend: %s\n", dev.error().message().c_str());
    return 1;
  }
  VhostServer server(o, std::move(dev).value());
  if (auto r = server.listen(); !r) {
    std::fprintf(stderr, "vufront-backend: %s\n", r.error().message().c_str());
    return 1;
  }
  return server.run();
}
