// vufront-bench-lifecycle: the cost of the actor layer, as a ratio to the
// floor measured in the same run. Against InstantPeer (a raw C++ back-end
// that answers at once):
//   * activation: negotiate + set memory + activate (1 and 64 queues), each
//     on a fresh connection, through DeviceSession and the actors;
//   * a sleep -> wake cycle of an active device (1 and 64 queues).
// The floor is the very same sequence of requests, recorded at the peer and
// replayed with plain blocking socket calls. Medians of interleaved runs, and
// the median [interquartile range] of the runs' ratios (run i against run i).
// Targets (issue 5): activation <= 1.3x, sleep -> wake <= 1.5x.
// Then where a 1-queue device's time goes (issue 26): status (caller ->
// device -> caller), read_config (plus one connection step and one request),
// sleep and wake, each against the raw replay of its own requests.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "bench/instant_peer.hpp"
#include "bench/stats.hpp"

using namespace vufront;
using Clock = std::chrono::steady_clock;

namespace {

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

using bench::median;

/// Run i of the actors against run i of the raw replay (they alternate).
std::vector<double> ratios(const std::vector<double>& a, const std::vector<double>& r) {
  std::vector<double> out;
  for (size_t i = 0; i < a.size() && i < r.size(); ++i)
    out.push_back(a[i] / r[i]);
  return out;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vufront-bench-lifecycle: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r)
    die(std::string(what) + ": " + r.error().message());
  return std::move(r).value();
}
void must(Result<void> r, const char* what) {
  if (!r)
    die(std::string(what) + ": " + r.error().message());
}

struct Row {
  std::string name;
  double actors_us;
  double raw_us;
  size_t requests;
  double target;
  bench::Spread ratio;  ///< of the runs' ratios (actors run i / raw run i)
};

actors::DeviceConfig config_for(const std::string& socket) {
  actors::DeviceConfig c;
  c.socket = socket;
  return c;
}

/// negotiate + memory + activate through the actors; returns microseconds.
double activate_once(caf::actor_system& sys, const std::string& socket, virtio::GuestDriver& g,
                     uint16_t queues) {
  actors::DeviceSession s(sys, config_for(socket));
  actors::NegotiateOptions n;
  n.queues = queues;
  auto t0 = Clock::now();
  must(s.negotiate(n), "negotiate");
  must(s.set_memory(actors::memory_spec(g.memory())), "set_memory");
  must(s.activate(actors::activate_spec(g, bit(feature::version_1), false)), "activate");
  return us_since(t0);
}

Row bench_activation(caf::actor_system& sys, bench::InstantPeer& peer, uint16_t queues, int runs) {
  virtio::GuestDriverOptions go;
  go.queues = queues;
  auto g = must(virtio::GuestDriver::create(go), "guest");
  peer.record();
  activate_once(sys, peer.socket(), *g, queues);  // warm-up, and the recording
  auto msgs = peer.recorded();
  std::vector<double> a, r;
  for (int i = 0; i < runs; ++i) {
    a.push_back(activate_once(sys, peer.socket(), *g, queues));
    auto t0 = Clock::now();
    if (!bench::replay(peer.socket(), msgs))
      die("raw replay failed");
    r.push_back(us_since(t0));
  }
  return {"activation, " + std::to_string(queues) + " queue(s)", median(a), median(r), msgs.size(),
          1.3, bench::spread(ratios(a, r))};
}

Row bench_sleep_wake(caf::actor_system& sys, bench::InstantPeer& peer, uint16_t queues, int runs) {
  virtio::GuestDriverOptions go;
  go.queues = queues;
  auto g = must(virtio::GuestDriver::create(go), "guest");
  actors::DeviceSession s(sys, config_for(peer.socket()));
  actors::NegotiateOptions n;
  n.queues = queues;
  must(s.negotiate(n), "negotiate");
  must(s.set_memory(actors::memory_spec(g->memory())), "set_memory");
  must(s.activate(actors::activate_spec(*g, bit(feature::version_1), false)), "activate");
  peer.record();
  must(s.sleep(), "sleep");
  must(s.wake(), "wake");
  auto msgs = peer.recorded();
  bench::RawClient raw(peer.socket());
  if (!raw.ok())
    die("raw connect failed");
  std::vector<double> a, r;
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    must(s.sleep(), "sleep");
    must(s.wake(), "wake");
    a.push_back(us_since(t0));
    t0 = Clock::now();
    if (!raw.replay(msgs))
      die("raw replay failed");
    r.push_back(us_since(t0));
  }
  return {"sleep -> wake, " + std::to_string(queues) + " queue(s)", median(a), median(r),
          msgs.size(), 1.5, bench::spread(ratios(a, r))};
}

/// One piece of a 1-queue device's work, against the raw replay of its own
/// requests (none for `status`): where a sleep -> wake's time goes.
struct Piece {
  std::string name;
  double actors_us;
  double raw_us;
  size_t requests;
};

/// `op` (after a recording run) alternated with the raw replay of what the
/// peer received during it; medians.
template <class Op>
Piece measure_piece(const char* name, bench::InstantPeer& peer, bench::RawClient& raw, int runs,
                    Op op) {
  peer.record();
  op();
  auto msgs = peer.recorded();
  peer.stop_recording();
  std::vector<double> a, r;
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    op();
    a.push_back(us_since(t0));
    t0 = Clock::now();
    if (!msgs.empty() && !raw.replay(msgs))
      die("raw replay failed");
    r.push_back(us_since(t0));
  }
  return {name, median(a), msgs.empty() ? 0.0 : median(r), msgs.size()};
}

/// status: caller -> device -> caller; read_config: the same plus one
/// connection step (device -> connection -> a task on the loop -> connection
/// -> device) with one request; sleep: a step with the queues' requests,
/// then the worker's stop (device -> worker -> device); wake: a step, then
/// the worker's start.
std::vector<Piece> bench_breakdown(caf::actor_system& sys, bench::InstantPeer& peer, int runs) {
  virtio::GuestDriverOptions go;
  go.queues = 1;
  auto g = must(virtio::GuestDriver::create(go), "guest");
  actors::DeviceSession s(sys, config_for(peer.socket()));
  actors::NegotiateOptions n;
  n.queues = 1;
  must(s.negotiate(n), "negotiate");
  must(s.set_memory(actors::memory_spec(g->memory())), "set_memory");
  must(s.activate(actors::activate_spec(*g, bit(feature::version_1), false)), "activate");
  bench::RawClient raw(peer.socket());
  if (!raw.ok())
    die("raw connect failed");
  std::vector<Piece> out;
  out.push_back(measure_piece("status (no request)", peer, raw, runs,
                              [&] { (void)must(s.status(), "status"); }));
  out.push_back(measure_piece("read_config (1 request)", peer, raw, runs,
                              [&] { (void)must(s.read_config(0, 8), "read_config"); }));
  // sleep and wake alternate: each piece's op is the pair, timed apart below
  std::vector<double> sl, wk;
  peer.record();
  must(s.sleep(), "sleep");
  auto sleep_msgs = peer.recorded();
  peer.record();
  must(s.wake(), "wake");
  auto wake_msgs = peer.recorded();
  peer.stop_recording();
  std::vector<double> rs, rw;
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    must(s.sleep(), "sleep");
    sl.push_back(us_since(t0));
    t0 = Clock::now();
    must(s.wake(), "wake");
    wk.push_back(us_since(t0));
    t0 = Clock::now();
    if (!raw.replay(sleep_msgs))
      die("raw replay failed");
    rs.push_back(us_since(t0));
    t0 = Clock::now();
    if (!raw.replay(wake_msgs))
      die("raw replay failed");
    rw.push_back(us_since(t0));
  }
  out.push_back({"sleep", median(sl), median(rs), sleep_msgs.size()});
  out.push_back({"wake", median(wk), median(rw), wake_msgs.size()});
  return out;
}

void print_breakdown(const std::vector<Piece>& pieces) {
  std::printf("\nwhere a 1-queue device's time goes (medians):\n%-26s %9s %12s %10s %12s\n", "piece",
              "requests", "actors (us)", "raw (us)", "extra (us)");
  for (const auto& p : pieces)
    std::printf("%-26s %9zu %12.1f %10.1f %12.1f\n", p.name.c_str(), p.requests, p.actors_us,
                p.raw_us, p.actors_us - p.raw_us);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::printf("usage: %s [--quick]\n"
                  "Measures activation and sleep->wake through vufront's actors against a\n"
                  "peer that answers at once, as a ratio to the same requests sent with\n"
                  "plain blocking socket calls in the same run; then where a 1-queue device's\n"
                  "time goes (status, read_config, sleep, wake, each against the raw replay of\n"
                  "its own requests). --quick: few runs (smoke test).\n",
                  argv[0]);
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  char dir[] = "/tmp/vufront-bench.XXXXXX";
  if (::mkdtemp(dir) == nullptr)
    die("mkdtemp");
  std::string socket = std::string(dir) + "/peer.sock";
  std::vector<Row> rows;
  std::vector<Piece> pieces;
  {
    bench::InstantPeer peer(socket);
    actors::SystemConfig cfg;
    caf::actor_system sys{cfg};
    int n = quick ? 5 : 1;
    rows.push_back(bench_activation(sys, peer, 1, quick ? n : 300));
    rows.push_back(bench_activation(sys, peer, 64, quick ? n : 60));
    rows.push_back(bench_sleep_wake(sys, peer, 1, quick ? n : 2000));
    rows.push_back(bench_sleep_wake(sys, peer, 64, quick ? n : 200));
    pieces = bench_breakdown(sys, peer, quick ? n : 1000);
  }
  ::rmdir(dir);
  std::printf("%-28s %9s %12s %12s %7s %8s %14s\n", "sequence", "requests", "actors (us)",
              "raw (us)", "ratio", "target", "run ratios");
  bool met = true;
  for (const auto& r : rows) {
    double ratio = r.actors_us / r.raw_us;
    met = met && ratio <= r.target;
    std::printf("%-28s %9zu %12.1f %12.1f %6.2fx %7s%.1fx  %5.2fx [%4.2f-%4.2f]\n", r.name.c_str(),
                r.requests, r.actors_us, r.raw_us, ratio, ratio <= r.target ? "<=" : "> ", r.target,
                r.ratio.med, r.ratio.q1, r.ratio.q3);
  }
  std::printf("ratio: of the medians; run ratios: median [q1-q3] of actors run i / raw run i\n");
  std::printf("%s\n", met ? "all targets met" : "some targets missed");
  print_breakdown(pieces);
  return 0;
}
