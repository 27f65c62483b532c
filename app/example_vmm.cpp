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
//                       [--snapshot FILE [--by-path]] [--msix] [--dirty-log]
//                       [--timeout SECONDS]
//
// --dirty-log: after step 6, the device's dirty log (dirty_log_start), one
// read, and every page the back-end wrote must be marked; then dirty_log_stop.
//
// The snapshot file is opened by this VMM, with its own rights, and passed to
// vufront as an fd (SCM_RIGHTS), as a VMM running as another user than
// vufront must (docs/attach-protocol.md, "Snapshot files").

#include <fcntl.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/command_line.hpp"

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

/// A snapshot's or restore's `transfer_progress` event, as one line:
/// "     restore 1048576 of 67108864 bytes, 12 ms, ETA 790 ms" (the total is
/// unknown during a snapshot: "of ?").
void print_progress(const control::Event& e) {
  const json& m = e.message;
  auto text = [](const json& v, const char* unit) {
    return v.is_number_unsigned() ? std::to_string(v.get<uint64_t>()) + unit : std::string("?");
  };
  std::fprintf(stdout, "     %s %s of %s bytes, %s, ETA %s\n", m.value("op", "?").c_str(),
               text(m.value("done", json()), "").c_str(),
               text(m.value("total", json()), "").c_str(),
               text(m.value("elapsed_ms", json()), " ms").c_str(),
               text(m.value("eta_ms", json()), " ms").c_str());
  std::fflush(stdout);
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

/// What the command line asks for.
struct VmmOptions {
  std::string control_path, device_id, restore_into, snapshot_file;
  bool msix = false;
  bool by_path = false;  ///< name the file to vufront instead of passing an fd
  bool dirty_log = false;  ///< check the dirty log after the first I/O
  double timeout_s = 30;
};

/// Declares the command line's options on `cli`, parsed into `o`.
void add_options(CLI::App& cli, VmmOptions& o) {
  cli.add_option("--control", o.control_path, "The control socket of a running `vufront attach`")
      ->required()
      ->check(vufront::cli::socket_path());
  cli.add_option("--device", o.device_id, "The device id (default: the only, or the first, device)");
  cli.add_option("--restore-into", o.restore_into,
                 "Restore into a new back-end on this socket (added with add_device) instead of\n"
                 "the same back-end after a reset");
  cli.add_option("--snapshot", o.snapshot_file,
                 "Where the snapshot goes (default: a temporary file, removed). This VMM opens\n"
                 "it and passes the fd: written to FILE.tmp.XXXXXX, renamed to FILE when done");
  cli.add_flag("--by-path", o.by_path,
               "Send --snapshot's path for vufront to open instead (beneath vufront's\n"
               "--snapshot-dir, or any path when this VMM runs as vufront's own uid)");
  cli.add_flag("--msix", o.msix, "Give the back-end the queue's interrupt eventfd directly");
  cli.add_flag("--dirty-log", o.dirty_log,
               "After the first I/O: dirty_log_start, one read, check that every page the\n"
               "back-end wrote is in the log, dirty_log_stop");
  cli.add_option("--timeout", o.timeout_s, "Seconds for each command")->default_val(30)->check(CLI::Range(1.0, 3600.0));
}

/// The VMM: its control client, the device it drives, its guest, and what
/// each step learned for the next ones. Each step is one member function
/// returning what it prints on success or the error that failed it; a step
/// runs only when the earlier ones worked (Steps::run).
class Vmm {
 public:
  explicit Vmm(VmmOptions o) : o_(std::move(o)) {}

  /// Connects to vufront attach and picks the device.
  Result<std::string> connect() {
    control::Client::Options co;
    co.reply_timeout = std::chrono::milliseconds(static_cast<long long>(o_.timeout_s * 1000));
    auto c = control::Client::connect(o_.control_path, co);
    if (!c)
      return std::move(c).error();
    client_.emplace(std::move(c).value());
    client_->on_progress(print_progress);
    auto ids = client_->devices();
    if (ids.empty())
      return make_error(errc::not_found, "connect", "vufront attach has no devices");
    dev_ = o_.device_id.empty() ? ids.front() : o_.device_id;
    return "protocol " + std::to_string(control::protocol_version) + ", device " + *dev_;
  }

  /// The device's status (a device an earlier VMM left is reset first): its
  /// features, protocol features and queue size.
  Result<std::string> status() {
    auto s = client_->status(dev_);
    if (!s)
      return std::move(s).error();
    status_ = *s;
    if (status_["kind"] != "blk")
      return make_error(errc::invalid_argument, "status", "this example drives blk devices, not " +
                                                              status_["kind"].get<std::string>());
    // A device an earlier VMM left (sleeping, active, broken) is reset first.
    std::string state = status_["state"].get<std::string>();
    if (state == "active" || state == "sleeping" || state == "broken") {
      if (auto r = client_->reset(dev_); !r)
        return std::move(r).error();
      if (state == "broken")
        if (auto r = client_->call("connect", json::object(), {}, dev_); !r)
          return std::move(r).error();
      auto again = client_->status(dev_);
      if (!again)
        return std::move(again).error();
      status_ = *again;
    }
    offered_ = number(status_["features"]);
    protocol_features_ = number(status_["protocol_features"]);
    qsize_ = static_cast<uint16_t>(std::min<uint64_t>(queue_size_wanted, number(status_["max_queue_size"])));
    return "state " + status_["state"].get<std::string>() + ", features " + hex(offered_) + ", " +
           std::to_string(number(status_["queue_num"])) + " queue(s)";
  }

  /// Reads the disk's capacity from the config space.
  Result<std::string> read_config() {
    auto cfg = client_->read_config(dev_, 0, 8);
    if (!cfg)
      return std::move(cfg).error();
    uint64_t capacity = 0;
    for (int i = 7; i >= 0; --i)
      capacity = capacity << 8 | (*cfg)[static_cast<size_t>(i)];
    return "capacity " + std::to_string(capacity) + " sectors";
  }

  /// Creates the guest (its RAM in a memfd, one ring) and gives vufront its memory.
  Result<std::string> set_memory() {
    virtio::GuestDriverOptions g;
    g.queues = 1;
    g.queue_size = qsize_;
    auto created = virtio::GuestDriver::create(g);
    if (!created)
      return std::move(created).error();
    guest_ = std::move(created).value();
    std::vector<control::MemoryRegion> regions = guest_regions();
    if (auto r = client_->set_memory(dev_, regions); !r)
      return std::move(r).error();
    return std::to_string(regions.size()) + " region(s), " + std::to_string(regions[0].size >> 20) +
           " MiB at " + hex(regions[0].gpa);
  }

  /// Activates the device with the guest's ring and its eventfds.
  Result<std::string> activate() {
    features_ = offered_ & (bit(f_version_1) | bit(f_blk_flush));
    const auto& a = guest_->areas(0);
    control::QueueSetup q;
    q.index = 0;
    q.size = guest_->queue(0).size();
    q.desc = a.desc;
    q.driver = a.driver;
    q.device = a.device;
    q.kick = guest_->kick(0)->get();
    if (o_.msix)
      q.call = guest_->call(0)->get();
    activation_.features = features_;
    activation_.queues = {q};
    activation_.interrupt_fd = o_.msix ? -1 : guest_->intx()->get();
    guest_->use_intx(!o_.msix);
    if (auto r = client_->activate(dev_, activation_); !r)
      return std::move(r).error();
    return std::string("features ") + hex(features_) + ", queue 0 size " + std::to_string(q.size) +
           (o_.msix ? ", MSI-X" : ", interrupts forwarded");
  }

  /// Writes the pattern through the ring, flushes (when offered), reads it back.
  Result<std::string> write_and_read() {
    if (auto r = guest_->blk_write(0, 8, data_); !r)
      return std::move(r).error();
    if (has(features_, f_blk_flush))
      if (auto r = guest_->blk_flush(0); !r)
        return std::move(r).error();
    auto back = guest_->blk_read(0, 8, static_cast<uint32_t>(data_.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, data_, "read");
  }

  /// --dirty-log: starts the device's dirty log (mapped as a VMM maps it),
  /// reads once through the ring and checks that every page the back-end
  /// wrote (the data, the status byte, the used index) is marked, reading
  /// and clearing each 64-bit word with an atomic exchange; then stops it.
  Result<std::string> dirty_log() {
    auto log = client_->dirty_log_start(dev_);
    if (!log)
      return std::move(log).error();
    void* p = ::mmap(nullptr, log->size, PROT_READ | PROT_WRITE, MAP_SHARED, log->fd.get(), 0);
    if (p == MAP_FAILED)
      return make_error(errc::io_error, "dirty log", "mmap of the log", errno);
    auto* words = static_cast<uint64_t*>(p);
    auto take = [&] {
      std::vector<uint64_t> pages;
      for (uint64_t i = 0; i < log->size / 8; ++i)
        for (uint64_t w = __atomic_exchange_n(&words[i], uint64_t{0}, __ATOMIC_SEQ_CST); w != 0; w &= w - 1)
          pages.push_back(i * 64 + static_cast<uint64_t>(__builtin_ctzll(w)));
      return pages;
    };
    (void)take();
    std::vector<uint64_t> written;
    auto read = one_read(written);
    auto marked = take();
    ::munmap(p, log->size);
    if (!read)
      return std::move(read).error();
    std::string missing;
    for (auto page : written)
      if (std::find(marked.begin(), marked.end(), page) == marked.end())
        missing += (missing.empty() ? "" : ", ") + hex(page);
    if (!missing.empty())
      return make_error(errc::invalid_payload, "dirty log",
                        "pages the back-end wrote are not in the log: " + missing);
    if (auto r = client_->dirty_log_stop(dev_); !r)
      return std::move(r).error();
    return std::to_string(log->size) + "-byte log, " + std::to_string(marked.size()) +
           " page(s) marked, the " + std::to_string(written.size()) + " written among them; stopped";
  }

  /// Stops the rings.
  Result<std::string> sleep() {
    if (auto r = client_->sleep(dev_); !r)
      return std::move(r).error();
    return std::string("rings stopped");
  }

  /// Whether the back-end offers DEVICE_STATE (snapshot and restore).
  bool can_snapshot() const { return has(protocol_features_, pf_device_state); }

  /// Saves the device's state into `path`: by default a temporary next to
  /// it that this VMM opens (with its own rights) and passes as an fd,
  /// renamed to `path` once vufront has written it; --by-path: vufront opens
  /// `path` itself.
  Result<std::string> snapshot(const std::string& path) {
    Result<json> r = json();
    if (o_.by_path) {
      r = client_->snapshot(dev_, path);
    } else {
      std::string tmp = path + ".tmp.XXXXXX";
      // OWNERSHIP: owned from birth; vufront gets a duplicate with the command.
      UniqueFd fd = UniqueFd::adopt(::mkostemp(tmp.data(), O_CLOEXEC));
      if (!fd)
        return make_error(errc::io_error, "snapshot", "cannot create " + tmp, errno);
      r = client_->snapshot_to_fd(dev_, fd.get());
      if (r && ::rename(tmp.c_str(), path.c_str()) != 0)
        r = make_error(errc::io_error, "snapshot", "rename " + tmp + " to " + path, errno);
      if (!r)
        ::unlink(tmp.c_str());
    }
    if (!r)
      return std::move(r).error();
    return std::to_string(number((*r)["state_bytes"])) + " bytes of state, checksum " +
           (*r)["checksum"].get<std::string>() + (o_.by_path ? " (path)" : " (fd)");
  }

  /// Resets the device, to restore into the same back-end.
  Result<std::string> reset() {
    if (auto r = client_->reset(dev_); !r)
      return std::move(r).error();
    return std::string("the back-end's device reset, guest memory kept");
  }

  /// Adds a device on the --restore-into back-end, gives it the guest's
  /// memory, and drives it from now on.
  Result<std::string> add_device() {
    std::string id = *dev_ + "-restored";
    auto r = client_->call("add_device", {{"id", id}, {"backend", o_.restore_into}, {"kind", "blk"}});
    if (!r)
      return std::move(r).error();
    dev_ = id;
    if (auto s = client_->set_memory(dev_, guest_regions()); !s)
      return std::move(s).error();
    return "device " + id + " on " + o_.restore_into + ", guest memory set";
  }

  /// The device driven now (which add_device changes).
  const std::optional<std::string>& device() const { return dev_; }
  const VmmOptions& options() const { return o_; }

  /// Loads the state in `path` into the device (left sleeping); when the
  /// device is no longer `source`, resets `source`.
  Result<std::string> restore(const std::string& path, const std::optional<std::string>& source) {
    Result<json> r = json();
    if (o_.by_path) {
      r = client_->restore(dev_, path, activation_);
    } else {
      // OWNERSHIP: owned from birth; vufront gets a duplicate with the command.
      UniqueFd fd = UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd)
        return make_error(errc::io_error, "restore", "cannot open " + path, errno);
      r = client_->restore_from_fd(dev_, fd.get(), activation_);
    }
    if (!r)
      return std::move(r).error();
    if (dev_ != source)  // moved: the old back-end's device is done
      if (auto reset = client_->reset(source); !reset)
        return std::move(reset).error();
    return std::to_string(number((*r)["state_bytes"])) + " bytes of state, checksum " +
           (*r)["checksum"].get<std::string>() + ", device sleeping at the snapshot's rings";
  }

  /// Starts the rings again.
  Result<std::string> wake() {
    if (auto r = client_->wake(dev_); !r)
      return std::move(r).error();
    return std::string("rings running");
  }

  /// Reads the pattern written before the sleep back.
  Result<std::string> read_back() {
    auto back = guest_->blk_read(0, 8, static_cast<uint32_t>(data_.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, data_, "read back");
  }

  /// Writes another pattern elsewhere and reads it back.
  Result<std::string> write_and_read_more() {
    auto more = pattern(4096, 9);
    if (auto r = guest_->blk_write(0, 1024, more); !r)
      return std::move(r).error();
    auto back = guest_->blk_read(0, 1024, static_cast<uint32_t>(more.size()));
    if (!back)
      return std::move(back).error();
    return check_equal(*back, more, "read");
  }

  /// Sleeps and resets the device (and removes it when this VMM added it).
  Result<std::string> take_down() {
    if (auto r = client_->sleep(dev_); !r)
      return std::move(r).error();
    if (auto r = client_->reset(dev_); !r)
      return std::move(r).error();
    if (!o_.restore_into.empty())
      if (auto r = client_->call("remove_device", {{"id", *dev_}}); !r)
        return std::move(r).error();
    return std::string("sleep, reset");
  }

 private:
  /// The guest's memory regions as set_memory takes them.
  std::vector<control::MemoryRegion> guest_regions() const {
    std::vector<control::MemoryRegion> regions;
    for (const auto& r : mem_table(guest_->memory())) {
      const auto* region = guest_->memory().region(r.guest_phys_addr);
      regions.push_back({r.guest_phys_addr, r.memory_size, r.mmap_offset, region->shared_fd()->get()});
    }
    return regions;
  }

  VmmOptions o_;
  /// One read of the pattern through the ring; `written`: the pages the
  /// back-end writes for it (data, status, used index).
  Result<void> one_read(std::vector<uint64_t>& written) {
    guest_->scratch(0).reset();
    auto req = virtio::blk_read(guest_->scratch(0), 8, static_cast<uint32_t>(data_.size()));
    if (!req)
      return std::move(req).error();
    auto used = guest_->submit(0, req->chain);
    if (!used)
      return std::move(used).error();
    if (auto st = virtio::blk_status(guest_->scratch(0), *req, used->len); !st)
      return st;
    auto add = [&written](uint64_t gpa, uint64_t len) {
      for (uint64_t pg = gpa / 4096; pg <= (gpa + len - 1) / 4096; ++pg)
        written.push_back(pg);
    };
    add(req->data_gpa, req->data_len);
    add(req->status_gpa, 1);
    add(guest_->areas(0).device + 2, 2);
    return ok();
  }

  std::optional<control::Client> client_;
  std::optional<std::string> dev_;
  json status_;
  uint64_t offered_ = 0, protocol_features_ = 0;
  uint16_t qsize_ = queue_size_wanted;
  std::unique_ptr<virtio::GuestDriver> guest_;
  uint64_t features_ = 0;
  control::Activation activation_;
  const std::vector<uint8_t> data_ = pattern(64 * 1024, 5);
};

/// Where the snapshot goes: --snapshot, or a file in a temporary directory
/// removed at the end.
class SnapshotPath {
 public:
  SnapshotPath(const SnapshotPath&) = delete;
  SnapshotPath& operator=(const SnapshotPath&) = delete;
  explicit SnapshotPath(std::string path) : path_(std::move(path)) {}

  /// Makes the temporary directory when no --snapshot was given; false when
  /// that failed (after saying so on stderr).
  bool make_temporary_if_unset() {
    if (!path_.empty())
      return true;
    if (::mkdtemp(tmpdir_) == nullptr) {
      std::fprintf(stderr, "vufront-example-vmm: mkdtemp failed\n");
      return false;
    }
    made_tmp_ = true;
    path_ = std::string(tmpdir_) + "/disk.vfsnap";
    return true;
  }

  /// Removes the temporary file and directory, if made.
  void remove_temporary() {
    if (made_tmp_) {
      ::unlink(path_.c_str());
      ::rmdir(tmpdir_);
    }
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  char tmpdir_[32] = "/tmp/vufront-example-vmm.XXXXXX";
  bool made_tmp_ = false;
};

/// Steps 1-6 and the sleep: connect, status, config, memory, activate, I/O, sleep.
void bring_up(Vmm& vmm, Steps& steps) {
  steps.run("connect", [&] { return vmm.connect(); });
  steps.run("status", [&] { return vmm.status(); });
  steps.run("read_config", [&] { return vmm.read_config(); });
  steps.run("set_memory", [&] { return vmm.set_memory(); });
  steps.run("activate", [&] { return vmm.activate(); });
  steps.run("write + read", [&] { return vmm.write_and_read(); });
  if (vmm.options().dirty_log)
    steps.run("dirty log", [&] { return vmm.dirty_log(); });
  steps.run("sleep", [&] { return vmm.sleep(); });
}

/// Step 7: snapshot, then reset (or add a device on --restore-into), restore.
void snapshot_and_restore(Vmm& vmm, Steps& steps, const std::string& path, bool new_backend) {
  steps.run("snapshot", [&] { return vmm.snapshot(path); });
  if (!new_backend)
    steps.run("reset", [&] { return vmm.reset(); });
  else
    steps.run("add_device", [&] { return vmm.add_device(); });
  const auto source = vmm.device();
  steps.run("restore", [&] { return vmm.restore(path, source); });
}

/// Step 8 and the end: wake, the data read back, more I/O, sleep and reset.
void resume_and_take_down(Vmm& vmm, Steps& steps) {
  steps.run("wake", [&] { return vmm.wake(); });
  steps.run("read back", [&] { return vmm.read_back(); });
  steps.run("write + read", [&] { return vmm.write_and_read_more(); });
  steps.run("take down", [&] { return vmm.take_down(); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"An example VMM for `vufront attach`: guest memory, one virtio-blk queue, I/O,\n"
               "sleep, snapshot, restore, wake, and the data read back (exit 0 only if it matches).",
               "vufront-example-vmm"};
  VmmOptions options;
  add_options(cli, options);
  vufront::cli::add_version_flags(cli, "vufront-example-vmm " VUFRONT_VERSION);
  if (auto rc = vufront::cli::parse(cli, argc, argv))
    return *rc;

  Vmm vmm(options);
  Steps steps;
  bring_up(vmm, steps);

  const bool can_snapshot = vmm.can_snapshot();
  SnapshotPath snap(options.snapshot_file);
  if (!steps.failed && can_snapshot && !snap.make_temporary_if_unset())
    return 1;
  if (!can_snapshot && !steps.failed)
    std::printf("skip snapshot/restore      the back-end does not offer DEVICE_STATE\n");
  if (can_snapshot)
    snapshot_and_restore(vmm, steps, snap.path(), !options.restore_into.empty());

  resume_and_take_down(vmm, steps);

  snap.remove_temporary();
  std::printf("%s\n", steps.failed ? "result: FAILED" : "result: ok, the data matched");
  return steps.failed;
}
