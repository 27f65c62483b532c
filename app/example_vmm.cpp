// vufront-example-vmm: what a VMM does to use a virtio-blk device through a
// running `vufront attach`, with the client library only (control/client.hpp;
// the CMake package `vufront`). Its "guest" is vufront's guest-side virtqueue
// driver (virtio/guest_driver.hpp): guest RAM in a memfd, one split ring,
// kick and interrupt eventfds, blk requests. The VMM:
//
//   1. connects and reads the greeting, picks the device
//   2. status: the back-end's features, queues, config size
//   3. read_config: the disk's capacity
//   4. set_memory: the guest RAM region and its fd
//   5. activate: the ring's guest addresses, the kick eventfd, and one
//      interrupt eventfd vufront forwards interrupts to (or, --msix, a call
//      eventfd the back-end signals directly)
//   6. writes a pattern through the ring, flushes, reads it back
//   7. sleep; snapshot (when the back-end offers DEVICE_STATE); then restore:
//      into the same back-end after reset, or (--restore-into SOCKET) into a
//      new back-end added with add_device (the old device is then reset); wake
//   8. reads the pattern back (and, on a new back-end, that proves it came
//      from the snapshot), writes and reads once more
//
// Exit status 0 only when every step worked and the data matched; 1 otherwise
// (the step that failed on stderr); 2 for usage errors.
//
//   vufront-example-vmm --control PATH [--device ID] [--restore-into SOCKET]
//                       [--snapshot FILE] [--msix] [--timeout SECONDS]

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "control/client.hpp"
#include "protocol/mem_table.hpp"
#include "virtio/guest_driver.hpp"

using namespace vufront;
using control::json;
using Clock = std::chrono::steady_clock;

namespace {

// virtio feature bits this VMM's guest driver knows.
constexpr unsigned f_blk_flush = 9, f_version_1 = 32;
// vhost-user protocol feature DEVICE_STATE (snapshot / restore of the back-end).
constexpr unsigned pf_device_state = 19;
constexpr uint16_t queue_size_wanted = 128;

bool has(uint64_t v, unsigned b) { return (v >> b) & 1; }
constexpr uint64_t bit(unsigned b) { return uint64_t{1} << b; }

uint64_t number(const json& j) {
  if (j.is_string())
    return std::strtoull(j.get<std::string>().c_str(), nullptr, 0);
  return j.get<uint64_t>();
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(seed * 31 + i * 7 + (i >> 9));
  return v;
}

struct Steps {
  int failed = 0;
  /// Runs one step; prints "ok   name  detail" or "FAIL name: error".
  bool run(const char* name, const std::function<Result<std::string>()>& fn) {
    if (failed)
      return false;
    auto t0 = Clock::now();
    auto r = fn();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!r) {
      std::fprintf(stdout, "FAIL %-16s %7.1f ms  %s\n", name, ms, r.error().message().c_str());
      std::fprintf(stderr, "vufront-example-vmm: %s: %s\n", name, r.error().message().c_str());
      failed = 1;
      return false;
    }
    std::fprintf(stdout, "ok   %-16s %7.1f ms  %s\n", name, ms, r->c_str());
    std::fflush(stdout);
    return true;
  }
};

Result<std::string> check_equal(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                                const char* what) {
  if (got != want)
    return make_error(errc::invalid_payload, what, "the data read back differs from what was written");
  return std::string(std::to_string(want.size()) + " bytes equal");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"An example VMM for `vufront attach`: guest memory, one virtio-blk queue, I/O,\n"
               "sleep, snapshot, restore, wake, and the data read back (exit 0 only if it matches).",
               "vufront-example-vmm"};
  std::string control_path, device_id, restore_into, snapshot_file;
  bool msix = false;
  double timeout_s = 30;
  cli.add_option("--control", control_path, "The control socket of a running `vufront attach`")->required();
  cli.add_option("--device", device_id, "The device id (default: the only, or the first, device)");
  cli.add_option("--restore-into", restore_into,
                 "Restore into a new back-end on this socket (added with add_device) instead of\n"
                 "the same back-end after a reset");
  cli.add_option("--snapshot", snapshot_file, "Where the snapshot goes (default: a temporary file, removed)");
  cli.add_flag("--msix", msix, "Give the back-end the queue's interrupt eventfd directly");
  cli.add_option("--timeout", timeout_s, "Seconds for each command")->default_val(30)->check(CLI::Range(1.0, 3600.0));
  CLI11_PARSE(cli, argc, argv);

  control::Client::Options co;
  co.reply_timeout = std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000));
  Steps steps;
  std::optional<control::Client> client;
  std::optional<std::string> dev;
  json status;

  steps.run("connect", [&]() -> Result<std::string> {
    auto c = control::Client::connect(control_path, co);
    if (!c)
      return std::move(c).error();
    client.emplace(std::move(c).value());
    auto ids = client->devices();
    if (ids.empty())
      return make_error(errc::not_found, "connect", "vufront attach has no devices");
    dev = device_id.empty() ? ids.front() : device_id;
    return "protocol " + std::to_string(control::protocol_version) + ", device " + *dev;
  });

  uint64_t offered = 0, protocol_features = 0;
  uint16_t qsize = queue_size_wanted;
  steps.run("status", [&]() -> Result<std::string> {
    auto s = client->status(dev);
    if (!s)
      return std::move(s).error();
    status = *s;
    if (status["kind"] != "blk")
      return make_error(errc::invalid_argument, "status", "this example drives blk devices, not " +
                                                              status["kind"].get<std::string>());
    // A device an earlier VMM left (sleeping, active, broken) is reset first.
    std::string state = status["state"].get<std::string>();
    if (state == "active" || state == "sleeping" || state == "broken") {
      if (auto r = client->reset(dev); !r)
        return std::move(r).error();
      if (state == "broken")
        if (auto r = client->call("connect", json::object(), {}, dev); !r)
          return std::move(r).error();
      auto again = client->status(dev);
      if (!again)
        return std::move(again).error();
      status = *again;
    }
    offered = number(status["features"]);
    protocol_features = number(status["protocol_features"]);
    qsize = static_cast<uint16_t>(std::min<uint64_t>(queue_size_wanted, number(status["max_queue_size"])));
    return "state " + status["state"].get<std::string>() + ", features " + hex(offered) + ", " +
           std::to_string(number(status["queue_num"])) + " queue(s)";
  });

  steps.run("read_config", [&]() -> Result<std::string> {
    auto cfg = client->read_config(dev, 0, 8);
    if (!cfg)
      return std::move(cfg).error();
    uint64_t capacity = 0;
    for (int i = 7; i >= 0; --i)
      capacity = capacity << 8 | (*cfg)[static_cast<size_t>(i)];
    return "capacity " + std::to_string(capacity) + " sectors";
  });

  std::unique_ptr<virtio::GuestDriver> guest;
  steps.run("set_memory", [&]() -> Result<std::string> {
    virtio::GuestDriverOptions g;
    g.queues = 1;
    g.queue_size = qsize;
    auto created = virtio::GuestDriver::create(g);
    if (!created)
      return std::move(created).error();
    guest = std::move(created).value();
    std::vector<control::MemoryRegion> regions;
    for (const auto& r : mem_table(guest->memory())) {
      const auto* region = guest->memory().region(r.guest_phys_addr);
      regions.push_back({r.guest_phys_addr, r.memory_size, r.mmap_offset, region->shared_fd()->get()});
    }
    if (auto r = client->set_memory(dev, regions); !r)
      return std::move(r).error();
    return std::to_string(regions.size()) + " region(s), " + std::to_string(regions[0].size >> 20) +
           " MiB at " + hex(regions[0].gpa);
  });

  uint64_t features = offered & (bit(f_version_1) | bit(f_blk_flush));
  control::Activation activation;
  steps.run("activate", [&]() -> Result<std::string> {
    const auto& a = guest->areas(0);
    control::QueueSetup q;
    q.index = 0;
    q.size = guest->queue(0).size();
    q.desc = a.desc;
    q.driver = a.driver;
    q.device = a.device;
    q.kick = guest->kick(0)->get();
    if (msix)
      q.call = guest->call(0)->get();
    activation.features = features;
    activation.queues = {q};
    activation.interrupt_fd = msix ? -1 : guest->intx()->get();
    guest->use_intx(!msix);
    if (auto r = client->activate(dev, activation); !r)
      return std::move(r).error();
    return std::string("features ") + hex(features) + ", queue 0 size " + std::to_string(q.size) +
           (msix ? ", MSI-X" : ", interrupts forwarded");
  });

  const auto data = pattern(64 * 1024, 5);
  steps.run("write + read", [&]() -> Result<std::string> {
    if (auto r = guest->blk_write(0, 8, data); !r)
      return std::move(r).error();
    if (has(features, f_blk_flush))
      if (auto r = guest->blk_flush(0); !r)
        return std::move(r).error();
    auto back = guest->blk_read(0, 8, static_cast<uint32_t>(data.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, data, "read");
  });

  steps.run("sleep", [&]() -> Result<std::string> {
    if (auto r = client->sleep(dev); !r)
      return std::move(r).error();
    return std::string("rings stopped");
  });

  const bool can_snapshot = has(protocol_features, pf_device_state);
  std::string snap_path = snapshot_file;
  char tmpdir[] = "/tmp/vufront-example-vmm.XXXXXX";
  bool made_tmp = false;
  if (!steps.failed && can_snapshot && snap_path.empty()) {
    if (::mkdtemp(tmpdir) == nullptr) {
      std::fprintf(stderr, "vufront-example-vmm: mkdtemp failed\n");
      return 1;
    }
    made_tmp = true;
    snap_path = std::string(tmpdir) + "/disk.vfsnap";
  }
  if (!can_snapshot && !steps.failed)
    std::printf("skip snapshot/restore      the back-end does not offer DEVICE_STATE\n");

  if (can_snapshot) {
    steps.run("snapshot", [&]() -> Result<std::string> {
      auto r = client->snapshot(dev, snap_path);
      if (!r)
        return std::move(r).error();
      return std::to_string(number((*r)["state_bytes"])) + " bytes of state, checksum " +
             (*r)["checksum"].get<std::string>();
    });
    if (restore_into.empty()) {
      steps.run("reset", [&]() -> Result<std::string> {
        if (auto r = client->reset(dev); !r)
          return std::move(r).error();
        return std::string("the back-end's device reset, guest memory kept");
      });
    } else {
      steps.run("add_device", [&]() -> Result<std::string> {
        std::string id = *dev + "-restored";
        auto r = client->call("add_device", {{"id", id}, {"backend", restore_into}, {"kind", "blk"}});
        if (!r)
          return std::move(r).error();
        dev = id;
        std::vector<control::MemoryRegion> regions;
        for (const auto& m : mem_table(guest->memory()))
          regions.push_back({m.guest_phys_addr, m.memory_size, m.mmap_offset,
                             guest->memory().region(m.guest_phys_addr)->shared_fd()->get()});
        if (auto s = client->set_memory(dev, regions); !s)
          return std::move(s).error();
        return "device " + id + " on " + restore_into + ", guest memory set";
      });
    }
    const auto source = dev;
    steps.run("restore", [&]() -> Result<std::string> {
      auto r = client->restore(dev, snap_path, activation);
      if (!r)
        return std::move(r).error();
      if (dev != source)  // moved: the old back-end's device is done
        if (auto reset = client->reset(source); !reset)
          return std::move(reset).error();
      return std::to_string(number((*r)["state_bytes"])) + " bytes of state, checksum " +
             (*r)["checksum"].get<std::string>() + ", device sleeping at the snapshot's rings";
    });
  }

  steps.run("wake", [&]() -> Result<std::string> {
    if (auto r = client->wake(dev); !r)
      return std::move(r).error();
    return std::string("rings running");
  });

  steps.run("read back", [&]() -> Result<std::string> {
    auto back = guest->blk_read(0, 8, static_cast<uint32_t>(data.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, data, "read back");
  });

  steps.run("write + read", [&]() -> Result<std::string> {
    auto more = pattern(4096, 9);
    if (auto r = guest->blk_write(0, 1024, more); !r)
      return std::move(r).error();
    auto back = guest->blk_read(0, 1024, static_cast<uint32_t>(more.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, more, "read");
  });

  steps.run("take down", [&]() -> Result<std::string> {
    if (auto r = client->sleep(dev); !r)
      return std::move(r).error();
    if (auto r = client->reset(dev); !r)
      return std::move(r).error();
    if (!restore_into.empty())
      if (auto r = client->call("remove_device", {{"id", *dev}}); !r)
        return std::move(r).error();
    return std::string("sleep, reset");
  });

  if (made_tmp) {
    ::unlink(snap_path.c_str());
    ::rmdir(tmpdir);
  }
  std::printf("%s\n", steps.failed ? "result: FAILED" : "result: ok, the data matched");
  return steps.failed;
}
