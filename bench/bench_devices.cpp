// vufront-bench-devices: many devices in one process. N devices (1, 64, 256;
// one queue each, interrupts through the worker as in vufront-bench-lifecycle)
// are spawned in one actor system, the same device actors `vufront attach`
// spawns, against bench/instant_peer (one raw peer thread serving every
// connection, answering at once). Measured per round:
//   * activation of all N at once: negotiate (connect included), set memory and
//     activate sent to every device before any reply is awaited, one phase
//     after the other, against the same requests replayed N times one device
//     after the other with blocking socket calls (target <= 1.0x);
//   * sleep -> wake of all N at once against N sequential raw replays of one
//     device's sleep -> wake requests (target <= 1.0x);
//   * threads of the process with N devices active (target: independent of N);
//   * RSS per device: (RssAnon(N) - RssAnon(0)) / N, guest memory (memfd,
//     counted as RssShmem) excluded; every guest is made before RssAnon(0)
//     (target <= 128 KiB at N = 256). Later rounds reuse heap the earlier ones
//     freed, so the first round's value is printed too.
// Ratios are per round; medians with the interquartile range of the rounds.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/device.hpp"
#include "actors/error.hpp"
#include "actors/session.hpp"
#include "actors/system.hpp"
#include "bench/instant_peer.hpp"
#include "bench/stats.hpp"

using namespace vufront;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto request_timeout = std::chrono::seconds(60);

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vufront-bench-devices: %s\n", what.c_str());
  std::exit(1);
}

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

int thread_count() {
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr)
    return -1;
  int n = 0;
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.')
      ++n;
  ::closedir(d);
  return n;
}

/// RssAnon of this process in KiB (guest memory is a memfd: RssShmem).
double rss_anon_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("RssAnon:", 0) == 0)
      return std::atof(line.c_str() + 8);
  return -1;
}

/// Every device gets up to 8 fds here and the peer's end of its socket.
void raise_fd_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

struct Guests {
  std::vector<std::unique_ptr<virtio::GuestDriver>> g;
  explicit Guests(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      auto r = virtio::GuestDriver::create(virtio::GuestDriverOptions{});
      if (!r)
        die("guest: " + r.error().message());
      g.push_back(std::move(r).value());
    }
  }
};

/// N device actors; every request is sent to all before any reply is awaited.
class Fleet {
public:
  Fleet(caf::actor_system& sys, const std::string& socket, size_t n) : self_(sys) {
    for (size_t i = 0; i < n; ++i) {
      actors::DeviceConfig c;
      c.socket = socket;
      devices_.push_back(sys.spawn(actors::device_impl, std::move(c)));
    }
  }
  ~Fleet() {
    for (auto& d : devices_) {
      self_->monitor(d);
      caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
    }
    for (size_t down = 0; down < devices_.size();)
      self_->receive([&](caf::down_msg&) { ++down; },
                     caf::after(std::chrono::seconds(30)) >> [&] { die("a device did not exit"); });
  }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  /// Sends make(i)'s message to device i for every i, then awaits every reply.
  template <class Reply, class Make>
  void all(const char* op, Make make) {
    using Handle = decltype(make(*this, size_t{0}));
    std::vector<std::optional<Handle>> pending;
    pending.reserve(devices_.size());
    for (size_t i = 0; i < devices_.size(); ++i)
      pending.emplace_back(make(*this, i));
    for (auto& h : pending)
      h->receive([](Reply&) {}, [op](caf::error& e) {
        die(std::string(op) + ": " + actors::from_caf(e, op).message());
      });
  }
  template <class... Ts>
  auto ask(size_t i, Ts&&... xs) {
    return self_->request(devices_[i], request_timeout, std::forward<Ts>(xs)...);
  }

  void activate(Guests& guests) {
    actors::NegotiateOptions n;
    n.queues = 1;
    all<actors::DeviceInfo>("negotiate", [&](Fleet& f, size_t i) {
      return f.ask(i, actors::negotiate_atom_v, n);
    });
    all<caf::ok_atom>("set_memory", [&](Fleet& f, size_t i) {
      return f.ask(i, actors::memory_atom_v, actors::memory_spec(guests.g[i]->memory()));
    });
    all<caf::ok_atom>("activate", [&](Fleet& f, size_t i) {
      return f.ask(i, actors::activate_atom_v,
                   actors::activate_spec(*guests.g[i], bit(feature::version_1), false));
    });
  }
  void sleep_wake() {
    all<caf::ok_atom>("sleep", [](Fleet& f, size_t i) { return f.ask(i, actors::sleep_atom_v); });
    all<caf::ok_atom>("wake", [](Fleet& f, size_t i) { return f.ask(i, actors::wake_atom_v); });
  }

private:
  caf::scoped_actor self_;
  std::vector<actors::device_actor> devices_;
};

struct Recording {
  std::vector<bench::Recorded> activation;
  std::vector<bench::Recorded> sleep_wake;
};

/// One device's requests, as the peer saw them, for the raw replays.
Recording record(caf::actor_system& sys, bench::InstantPeer& peer, Guests& guests) {
  Recording r;
  actors::DeviceConfig c;
  c.socket = peer.socket();
  actors::DeviceSession s(sys, c);
  actors::NegotiateOptions n;
  n.queues = 1;
  peer.record();
  auto step = [](Result<void> x, const char* what) {
    if (!x)
      die(std::string(what) + ": " + x.error().message());
  };
  auto info = s.negotiate(n);
  if (!info)
    die("negotiate: " + info.error().message());
  step(s.set_memory(actors::memory_spec(guests.g[0]->memory())), "set_memory");
  step(s.activate(actors::activate_spec(*guests.g[0], bit(feature::version_1), false)), "activate");
  r.activation = peer.recorded();
  peer.record();
  step(s.sleep(), "sleep");
  step(s.wake(), "wake");
  r.sleep_wake = peer.recorded();
  peer.stop_recording();
  return r;
}

/// Per-round readings of one device count.
struct Readings {
  std::vector<double> act_us, act_raw_us, act_ratio;
  std::vector<double> sw_us, sw_raw_us, sw_ratio;
  std::vector<double> threads, rss_per_device_kib;
};

void round_of(caf::actor_system& sys, bench::InstantPeer& peer, Guests& guests,
              const Recording& rec, size_t n, Readings& out) {
  const double rss0 = rss_anon_kib();
  double act = 0, sw = 0;
  {
    Fleet fleet(sys, peer.socket(), n);
    auto t0 = Clock::now();
    fleet.activate(guests);
    act = us_since(t0);
    out.threads.push_back(thread_count());
    out.rss_per_device_kib.push_back((rss_anon_kib() - rss0) / static_cast<double>(n));
    t0 = Clock::now();
    fleet.sleep_wake();
    sw = us_since(t0);
  }
  auto t0 = Clock::now();
  for (size_t i = 0; i < n; ++i)
    if (!bench::replay(peer.socket(), rec.activation))
      die("raw activation replay failed");
  const double act_raw = us_since(t0);
  bench::RawClient raw(peer.socket());
  if (!raw.ok())
    die("raw connect failed");
  t0 = Clock::now();
  for (size_t i = 0; i < n; ++i)
    if (!raw.replay(rec.sleep_wake))
      die("raw sleep -> wake replay failed");
  const double sw_raw = us_since(t0);
  out.act_us.push_back(act);
  out.act_raw_us.push_back(act_raw);
  out.act_ratio.push_back(act / act_raw);
  out.sw_us.push_back(sw);
  out.sw_raw_us.push_back(sw_raw);
  out.sw_ratio.push_back(sw / sw_raw);
}

void print_ratio(const char* what, size_t n, const std::vector<double>& a,
                 const std::vector<double>& raw, const std::vector<double>& ratio,
                 const char* target) {
  auto s = bench::spread(ratio);
  std::printf("%-22s %5zu %12.0f %12.0f %7.2fx [%4.2f-%4.2f]  %s\n", what, n, bench::median(a),
              bench::median(raw), s.med, s.q1, s.q3, target);
}

struct Options {
  int rounds = 21;
  std::vector<size_t> counts{1, 64, 256};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      o.rounds = 1;
      o.counts = {1, 16};
    } else if (a == "--rounds" && i + 1 < argc) {
      o.rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--devices" && i + 1 < argc) {
      o.counts = {static_cast<size_t>(std::clamp(std::atoi(argv[++i]), 1, 1024))};
    } else {
      std::printf(
          "usage: %s [--quick] [--rounds N] [--devices N]\n"
          "Many devices in one process: activation and sleep->wake of 1, 64 and 256\n"
          "devices at once (one queue each) against the same requests replayed one\n"
          "device after the other with blocking socket calls; threads of the process\n"
          "and RSS per device. Medians [interquartile range] of N rounds (default 21).\n"
          "--devices N: only N devices. --quick: one round of 1 and 16 devices (smoke test).\n",
          argv[0]);
      std::exit(a == "--help" ? 0 : 2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  raise_fd_limit();
  char dir[] = "/tmp/vufront-bench-devices.XXXXXX";
  if (::mkdtemp(dir) == nullptr)
    die("mkdtemp");
  const std::string socket = std::string(dir) + "/peer.sock";
  size_t most = 1;
  for (size_t n : o.counts)
    most = std::max(most, n);
  std::vector<std::pair<size_t, Readings>> results;
  int threads0 = 0;
  {
    bench::InstantPeer peer(socket);
    actors::SystemConfig cfg;
    caf::actor_system sys{cfg};
    Guests guests(most);  // before any RSS(0): guest memory is not counted
    const Recording rec = record(sys, peer, guests);
    threads0 = thread_count();
    for (size_t n : o.counts) {
      Readings r;
      for (int round = 0; round < o.rounds; ++round)
        round_of(sys, peer, guests, rec, n, r);
      results.emplace_back(n, std::move(r));
    }
  }
  ::rmdir(dir);
  std::printf("%d rounds; ratio = at once / one after the other: median [q1-q3]\n", o.rounds);
  std::printf("%-22s %5s %12s %12s %20s\n", "sequence", "devs", "vufront (us)", "raw seq (us)",
              "ratio");
  for (const auto& [n, r] : results)
    print_ratio("activation, all", n, r.act_us, r.act_raw_us, r.act_ratio, "target <= 1.0x");
  for (const auto& [n, r] : results)
    print_ratio("sleep -> wake, all", n, r.sw_us, r.sw_raw_us, r.sw_ratio, "target <= 1.0x");
  std::printf("threads with no device: %d (the peer's thread included)\n", threads0);
  for (const auto& [n, r] : results) {
    auto rs = bench::spread(r.rss_per_device_kib);
    std::printf("%5zu devices active: %4.0f threads, RSS per device %6.1f KiB [%.1f-%.1f], "
                "first round %.1f KiB%s\n",
                n, bench::median(r.threads), rs.med, rs.q1, rs.q3, r.rss_per_device_kib.front(),
                n == most ? " (target <= 128 KiB)" : "");
  }
  return 0;
}
