#include "app/demo_command.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "actors/system.hpp"
#include "ops/check_report.hpp"
#include "ops/checker.hpp"
#include "ops/child_process.hpp"
#include "ops/demo.hpp"

namespace vufront::app {

namespace {

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
  co.wait_for_backend = true;  // just started: its socket appears once it listens
  if (!opts.json)
    co.on_step = [](const ops::CheckStep& s) { ops::print_step(std::cout, s); };
  actors::SystemConfig cfg;
  bool ok = false;
  std::vector<ops::CheckStep> steps;
  {
    caf::actor_system sys{cfg};
    ops::Checker checker(sys, co);
    ok = ops::run_demo(checker, *backend);
    steps = checker.steps();
  }
  backend->stop();
  if (!ok) {
    // The private directory goes away with us: show the back-end's log now.
    std::ifstream log(dir.path + "/backend.log");
    std::cerr << "vufront demo: reference back-end log:\n" << log.rdbuf();
  }
  if (opts.json) {
    auto j = ops::steps_json(steps);
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
