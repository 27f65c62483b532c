// vufront-bench-migrate: live migration (Checker::migrate, ops/migration.hpp)
// of a running blk device with 256 MiB and 1 GiB of guest memory, I/O
// running during the copy, against a stop-and-copy of the same memory
// measured in the same run:
//
//   * stop-and-copy (the baseline a migration without a dirty log has): the
//     rings stopped (sleep), all guest memory copied into a destination
//     memory prepared beforehand, the rings started again (wake). Its
//     downtime is its whole time.
//   * migrate: pre-copy rounds with blk I/O between 1 MiB chunks, the rings
//     stopped, the final copy of the pages both dirty logs marked, the
//     byte-for-byte check, the state (a 16 MiB disk) saved and restored into
//     the other vufront-backend, woken there. Downtime: from the stop of the
//     rings to their start at the destination; total: the whole step.
//
// The device moves back and forth between two vufront-backend processes;
// rounds alternate between the two methods. The table shows, per size, the
// median and interquartile range of the rounds.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "bench/stats.hpp"
#include "ops/checker.hpp"
#include "ops/child_process.hpp"
#include "ops/migration.hpp"
#include "ops/units.hpp"

using namespace vufront;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vufront-bench-migrate: %s\n", what.c_str());
  std::exit(1);
}

void must(bool ok, const ops::Checker& c) {
  if (!ok)
    die(c.steps().back().name + ": " + c.steps().back().detail);
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct TempDir {
  TempDir() : path("/tmp/vufront-bench-migrate.XXXXXX") {
    if (::mkdtemp(path.data()) == nullptr)
      die("mkdtemp: " + std::string(std::strerror(errno)));
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  std::string path;
};

struct Backend {
  Backend(const std::string& dir, const std::string& name)
      : socket(dir + "/" + name + ".sock"),
        proc([&] {
          auto p = ops::ChildProcess::spawn({ops::executable_dir() + "/vufront-backend", "--socket",
                                             socket, "--size", "16M", "--queues", "1"},
                                            dir + "/" + name + ".log");
          if (!p)
            die("start vufront-backend: " + p.error().message());
          return std::move(p).value();
        }()) {}
  std::string socket;
  ops::ChildProcess proc;
};

/// One stop-and-copy of the device's memory: sleep, copy all, wake; ms.
double stop_and_copy(ops::Checker& c) {
  auto dest = ops::same_layout(c.guest()->memory());
  if (!dest)
    die("destination memory: " + dest.error().message());
  for (const GuestRegion* r : dest->regions())  // prepared beforehand, as a VMM's destination
    std::memset(dest->host_ptr(r->gpa(), r->size()), 0, r->size());
  const auto t0 = Clock::now();
  if (auto r = c.session().sleep(); !r)
    die("sleep: " + r.error().message());
  for (const GuestRegion* r : c.guest()->memory().regions())
    std::memcpy(dest->host_ptr(r->gpa(), r->size()), r->host_base(), r->size());
  if (auto r = c.session().wake(); !r)
    die("wake: " + r.error().message());
  return ms_since(t0);
}

struct Sample {
  std::vector<double> baseline, downtime, stop_copy, verify, switching, total, rounds, final_pages, io;
};

void print_spread(const char* what, const std::vector<double>& v, const char* unit) {
  const auto s = bench::spread(v);
  std::printf("  %-32s %10.1f %s  [%.1f-%.1f]\n", what, s.med, unit, s.q1, s.q3);
}

Sample run_size(caf::actor_system& sys, const std::string& dir, uint64_t ram, int rounds) {
  Backend a(dir, "a"), b(dir, "b");
  ops::CheckOptions o;
  o.socket = a.socket;
  o.ram_bytes = ram;
  o.wait_for_backend = true;
  ops::Checker c(sys, o);
  must(c.negotiate() && c.set_memory() && c.activate() && c.io("I/O"), c);
  // the guest's RAM holds data: every page touched, none the same
  uint8_t* p = c.guest()->memory().host_ptr(c.guest()->ram_gpa(), ram);
  for (uint64_t off = 0; off < ram; off += 8)
    std::memcpy(p + off, &off, 8);
  Sample s;
  const std::string* target = &b.socket;
  for (int i = 0; i < rounds; ++i) {
    s.baseline.push_back(stop_and_copy(c));
    ops::MigrateOptions m;
    m.socket = *target;
    m.state_dir = dir;
    must(c.migrate(m), c);
    const auto& info = c.last_migration();
    s.downtime.push_back(info.downtime_ms);
    s.stop_copy.push_back(info.stop_copy_ms);
    s.verify.push_back(info.verify_ms);
    s.switching.push_back(info.switch_ms);
    s.total.push_back(info.total_ms);
    s.rounds.push_back(static_cast<double>(info.round_pages.size()));
    s.final_pages.push_back(static_cast<double>(info.final_pages));
    s.io.push_back(static_cast<double>(info.io_requests));
    target = target == &b.socket ? &a.socket : &b.socket;
  }
  must(c.io("I/O after the migrations"), c);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"vufront-bench-migrate: live migration with I/O running vs stop-and-copy"};
  bool quick = false;
  int rounds = 5;
  std::vector<std::string> sizes{"256M", "1G"};
  cli.add_flag("--quick", quick, "Smoke run: 64M of guest memory, one round");
  cli.add_option("--rounds", rounds, "Rounds per size")->check(CLI::Range(1, 1000));
  cli.add_option("--sizes", sizes, "Guest memory sizes (K, M, G)");
  CLI11_PARSE(cli, argc, argv);
  if (quick) {
    rounds = 1;
    sizes = {"64M"};
  }
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  TempDir dir;
  std::printf("live migration (pre-copy, blk I/O between 1 MiB chunks, state of a 16 MiB disk\n"
              "restored into the other back-end) vs stop-and-copy (sleep, copy all, wake);\n"
              "%d round(s) per size, median [interquartile range]\n",
              rounds);
  for (const auto& text : sizes) {
    auto bytes = ops::parse_size(text);
    if (!bytes)
      die("--sizes: " + bytes.error().message());
    Sample s = run_size(sys, dir.path, *bytes, rounds);
    std::printf("\nguest memory %s (+ 2 MiB of rings and request buffers)\n", text.c_str());
    print_spread("stop-and-copy downtime", s.baseline, "ms");
    print_spread("migrate downtime", s.downtime, "ms");
    print_spread("  of it: stop and final copy", s.stop_copy, "ms");
    print_spread("  of it: byte-for-byte check", s.verify, "ms");
    print_spread("  of it: switch (state moved)", s.switching, "ms");
    print_spread("migrate total", s.total, "ms");
    print_spread("migrate rounds", s.rounds, "");
    print_spread("migrate final copy", s.final_pages, "pages");
    print_spread("I/O requests during the copy", s.io, "");
    std::vector<double> ratio;
    for (size_t i = 0; i < s.baseline.size(); ++i)
      ratio.push_back(s.baseline[i] / s.downtime[i]);
    print_spread("downtime: stop-and-copy / migrate", ratio, "x");
    std::vector<double> copy_ratio;
    for (size_t i = 0; i < s.baseline.size(); ++i)
      copy_ratio.push_back(s.baseline[i] / s.stop_copy[i]);
    print_spread("stop-and-copy / (stop + final copy)", copy_ratio, "x");
  }
  return 0;
}
