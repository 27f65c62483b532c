#include "ops/demo.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <string>
#include <vector>

namespace vufront::ops {

namespace {

constexpr auto event_wait = std::chrono::seconds(5);

}  // namespace

bool run_demo(Checker& c, ChildProcess& backend) {
  bool ok = c.negotiate() && c.read_config() && c.set_memory() && c.activate() && c.io("I/O");
  ok = ok && c.step("shared memory", [&]() -> Result<std::string> {
    auto ev = c.session().wait_event(actors::DeviceEvent::Kind::shmem_mapped, event_wait);
    if (!ev)
      return make_error(errc::timeout, "SHMEM_MAP", "the back-end did not map its window");
    ShmemWindow* w = c.window();
    if (w == nullptr)
      return make_error(errc::not_negotiated, "SHMEM_MAP", "no shared-memory region");
    // The back-end maps its disk into the window: data written through the
    // ring shows up there.
    std::vector<uint8_t> data(4096);
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = static_cast<uint8_t>(i * 7 + 3);
    constexpr uint64_t sector = 64;
    if (auto r = c.guest()->blk_write(0, sector, data); !r)
      return std::move(r).error();
    const uint8_t* view = w->data(0) + sector * 512;
    if (!std::equal(data.begin(), data.end(), view))
      return make_error(errc::invalid_payload, "SHMEM_MAP",
                        "the window does not show the data written through the ring");
    return ev->detail + "; the window shows data written through the ring";
  });
  ok = ok && c.step("config change", [&]() -> Result<std::string> {
    if (auto r = backend.signal(SIGUSR1); !r)
      return std::move(r).error();
    auto ev = c.session().wait_event(actors::DeviceEvent::Kind::config_changed, event_wait);
    if (!ev)
      return make_error(errc::timeout, "CONFIG_CHANGE_MSG", "no config-changed event");
    auto cfg = c.session().read_config(0, c.info().config_size);
    if (!cfg)
      return std::move(cfg).error();
    return std::string("CONFIG_CHANGE_MSG served, config re-read (") + std::to_string(cfg->size()) +
           " bytes)";
  });
  return ok && c.sleep() && c.wake() && c.io("I/O after wake") && c.reset() &&
         c.activate("activate again") && c.io("I/O after reset");
}


}  // namespace vufront::ops
