#include "app/demo_command.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "actors/system.hpp"
#include "app/check_command.hpp"
#include "ops/checker.hpp"
#include "ops/child_process.hpp"

namespace vufront::app {

namespace {

constexpr auto event_wait = std::chrono::seconds(5);

/// A private directory, removed with its contents.
struct PrivateDir {
  std::string path;
  PrivateDir() {
    char tmpl[] = "/tmp/vufront-demo.XXXXXX";
    if (::mkdtemp(tmpl) != nullptr)
      path = tmpl;
  }
  ~PrivateDir() {
    std::error_code ec;
    if (!path.empty())
      std::filesystem::remove_all(path, ec);
  }
};

/// The demo's own steps on top of the standard check.
bool run_demo(ops::Checker& c, ops::ChildProcess& backend) {
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

}  // namespace

int demo_main(const DemoOptions& opts) {
  std::string backend_path =
      opts.backend.empty() ? ops::executable_dir() + "/vufront-backend" : opts.backend;
  if (::access(backend_path.c_str(), X_OK) != 0) {
    std::cerr << "vufront demo: cannot run the reference back-end " << backend_path
              << " (build it, or pass --backend PATH)\n";
    return 1;
  }
  PrivateDir dir;
  if (dir.path.empty()) {
    std::cerr << "vufront demo: cannot create a private directory in /tmp\n";
    return 1;
  }
  std::string socket = dir.path + "/blk.sock";
  auto backend = ops::ChildProcess::spawn({backend_path, "--socket", socket, "--size", "16M", "--queues",
                                      "2", "--shmem-size", "1M"},
                                     dir.path + "/backend.log");
  if (!backend) {
    std::cerr << "vufront demo: " << backend.error().message() << '\n';
    return 1;
  }
  if (!opts.json)
    std::cout << "vufront demo: reference back-end (pid " << backend->pid() << ") on " << socket
              << "\n";
  ops::CheckOptions co;
  co.socket = socket;
  co.device = DeviceKind::blk;
  co.queues = 2;
  if (!opts.json)
    co.on_step = [](const ops::CheckStep& s) { print_step(std::cout, s); };
  actors::SystemConfig cfg;
  bool ok = false;
  std::vector<ops::CheckStep> steps;
  {
    caf::actor_system sys{cfg};
    ops::Checker checker(sys, co);
    ok = run_demo(checker, *backend);
    steps = checker.steps();
  }
  backend->stop();
  if (!ok) {
    // The private directory goes away with us: show the back-end's log now.
    std::ifstream log(dir.path + "/backend.log");
    std::cerr << "vufront demo: reference back-end log:\n" << log.rdbuf();
  }
  if (opts.json) {
    auto j = steps_json(steps);
    j["ok"] = ok;
    std::cout << j.dump(2) << '\n';
  } else {
    std::cout << (ok ? "demo: every step worked: negotiate, memory, activate, I/O on 2 queues, a "
                       "shared-memory mapping,\n      a config change, sleep/wake with rings "
                       "resuming, reset and re-activation.\n"
                     : "demo: FAILED (see the step marked FAIL above and the back-end log on "
                       "stderr)\n");
  }
  return ok ? 0 : 1;
}

}  // namespace vufront::app
