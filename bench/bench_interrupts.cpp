// vufront-bench-interrupts: interrupt forwarding for VMMs without MSI-X (the
// worker's interrupt loop, actors/worker.*), as a ratio to bare eventfds in
// the same run.
//
// A closed loop: a back-end-like writer signals a queue's call eventfd and
// waits for that interrupt's delivery before it signals the queue again
// (an eventfd is a counter: signals that are not waited for coalesce).
// 1, 8 and 64 queues are in flight at once; one driver thread plays the
// writer of every queue and sees the deliveries.
//   * floor: one reflector thread polls the call eventfds and writes 1 into
//     the queue's ack eventfd (an eventfd round trip through one thread);
//   * worker -> eventfd sink: call eventfd -> call watcher (event loop),
//     whose relay writes the sink eventfd itself while the worker runs (one
//     line, as INTx; actors/call_relay.hpp). Deliveries are
//     counted exactly from the sink's counter; the line does not say which
//     queue, so each delivery acknowledges the oldest outstanding signal
//     whose call eventfd the watcher has already read (it never coalesces);
//   * worker -> actor sink: call eventfd -> call watcher, whose relay sends
//     (interrupt_atom, queue) to the sink actor itself while the worker runs
//     (the worker actor not in between), which writes 1 into that queue's
//     ack eventfd.
// Every round runs the three paths one after the other (the order rotates);
// the ratios are per round, and the medians with interquartile range of the
// rounds are printed. Targets (issue 26): throughput >= 0.5x, latency p50 and
// p99 <= 3x of the floor at the same number of queues in flight.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/messages.hpp"
#include "actors/system.hpp"
#include "actors/worker.hpp"
#include "base/unique_fd.hpp"
#include "bench/stats.hpp"

using namespace vufront;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int deadline_ms = 5000;  // no delivery for this long: the run fails

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vufront-bench-interrupts: %s\n", what.c_str());
  std::exit(1);
}

void signal(int fd) {
  const uint64_t one = 1;
  if (::write(fd, &one, sizeof one) != sizeof one)
    die(std::string("eventfd write: ") + std::strerror(errno));
}

uint64_t take(int fd) {
  uint64_t n = 0;
  if (::read(fd, &n, sizeof n) != sizeof n)
    return 0;
  return n;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

std::vector<UniqueFd> eventfds(size_t n) {
  std::vector<UniqueFd> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back(make_eventfd());
    if (!v.back())
      die("eventfd");
  }
  return v;
}

/// One closed-loop run's result.
struct Run {
  double per_second = 0;
  std::vector<double> latency_us;  ///< per delivered interrupt
};

/// The writer side of a closed loop over `calls`: issues one signal per
/// queue, and re-issues a queue's signal when it is acknowledged, until
/// `total` were acknowledged. `wait_acks` blocks until at least one
/// acknowledgement and appends the acknowledged queues.
template <class WaitAcks>
Run closed_loop(const std::vector<int>& calls, size_t total, WaitAcks wait_acks) {
  const size_t depth = calls.size();
  std::vector<Clock::time_point> sent(depth);
  size_t issued = 0;
  size_t acked = 0;
  Run run;
  run.latency_us.reserve(total);
  const auto t0 = Clock::now();
  for (size_t q = 0; q < depth && issued < total; ++q, ++issued) {
    sent[q] = Clock::now();
    signal(calls[q]);
  }
  std::vector<size_t> acks;
  while (acked < issued) {
    acks.clear();
    wait_acks(acks);
    const auto now = Clock::now();
    for (size_t q : acks) {
      run.latency_us.push_back(std::chrono::duration<double, std::micro>(now - sent[q]).count());
      ++acked;
      if (issued < total) {
        ++issued;
        sent[q] = Clock::now();
        signal(calls[q]);
      }
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  run.per_second = static_cast<double>(acked) / s;
  return run;
}

/// Waits on per-queue ack eventfds (the floor, the actor sink).
struct AckFds {
  std::vector<pollfd> p;
  explicit AckFds(const std::vector<UniqueFd>& acks) {
    for (const auto& a : acks)
      p.push_back({a.get(), POLLIN, 0});
  }
  void operator()(std::vector<size_t>& out) {
    int r = ::poll(p.data(), p.size(), deadline_ms);
    if (r == 0)
      die("no interrupt delivered within 5 s");
    if (r < 0 && errno != EINTR)
      die("poll");
    for (size_t q = 0; q < p.size(); ++q)
      if ((p[q].revents & POLLIN) != 0 && take(p[q].fd) > 0)
        out.push_back(q);
  }
};

/// The floor: a thread that forwards each call eventfd to its ack eventfd.
class Reflector {
public:
  explicit Reflector(size_t depth)
      : calls_(eventfds(depth)), acks_(eventfds(depth)), stop_(make_eventfd()) {
    thread_ = std::thread([this] { serve(); });
  }
  ~Reflector() {
    signal(stop_.get());
    thread_.join();
  }
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  Run run(size_t total) {
    std::vector<int> calls;
    for (const auto& c : calls_)
      calls.push_back(c.get());
    return closed_loop(calls, total, AckFds(acks_));
  }

private:
  void serve() {
    std::vector<pollfd> p{{stop_.get(), POLLIN, 0}};
    for (const auto& c : calls_)
      p.push_back({c.get(), POLLIN, 0});
    for (;;) {
      if (::poll(p.data(), p.size(), -1) < 0)
        continue;
      if (p[0].revents != 0)
        return;
      for (size_t i = 1; i < p.size(); ++i)
        if ((p[i].revents & POLLIN) != 0 && take(p[i].fd) > 0)
          signal(acks_[i - 1].get());
    }
  }

  std::vector<UniqueFd> calls_;
  std::vector<UniqueFd> acks_;
  UniqueFd stop_;
  std::thread thread_;
};

/// The VMM's actor sink: (interrupt_atom, queue) -> 1 into that ack eventfd.
caf::behavior sink_impl(caf::event_based_actor*, std::shared_ptr<std::vector<UniqueFd>> acks) {
  return {
      [acks](actors::interrupt_atom, int32_t v) {
        if (v >= 0 && static_cast<size_t>(v) < acks->size())
          signal((*acks)[static_cast<size_t>(v)].get());
      },
  };
}

/// A worker forwarding `depth` queues to an eventfd sink or an actor sink.
class WorkerPath {
public:
  WorkerPath(caf::actor_system& sys, size_t depth, bool actor_sink)
      : calls_(eventfds(depth)), acks_(std::make_shared<std::vector<UniqueFd>>()),
        line_(make_eventfd()), actor_sink_(actor_sink) {
    *acks_ = eventfds(depth);
    worker_ = sys.spawn(actors::worker_impl, caf::actor_addr{}, true);
    std::vector<actors::WatchedQueue> queues;
    for (size_t q = 0; q < depth; ++q)
      queues.push_back({static_cast<uint16_t>(q), share(UniqueFd::adopt(::dup(calls_[q].get())))});
    actors::InterruptSink sink;
    if (actor_sink) {
      sink_ = sys.spawn(sink_impl, acks_);
      sink.target = sink_;
    } else {
      sink.eventfd = share(UniqueFd::adopt(::dup(line_.get())));
    }
    caf::scoped_actor self{sys};
    self->request(worker_, std::chrono::seconds(10), actors::start_atom_v, std::move(queues),
                  std::move(sink))
        .receive([](caf::ok_atom) {},
                 [](caf::error& e) { die("worker start: " + caf::to_string(e)); });
  }
  ~WorkerPath() {
    caf::anon_send_exit(worker_, caf::exit_reason::user_shutdown);
    if (sink_)
      caf::anon_send_exit(sink_, caf::exit_reason::user_shutdown);
  }
  WorkerPath(const WorkerPath&) = delete;
  WorkerPath& operator=(const WorkerPath&) = delete;

  Run run(size_t total) {
    std::vector<int> calls;
    for (const auto& c : calls_)
      calls.push_back(c.get());
    if (actor_sink_)
      return closed_loop(calls, total, AckFds(*acks_));
    return closed_loop(calls, total, [this, &calls](std::vector<size_t>& out) {
      wait_line(calls, out);
    });
  }

private:
  /// The eventfd sink: one line for every queue. Each of the `n` deliveries
  /// read acknowledges the oldest outstanding signal whose call eventfd is
  /// no longer readable (the watcher took it), so no signal is re-issued
  /// into an eventfd still holding one (which would coalesce the two).
  void wait_line(const std::vector<int>& calls, std::vector<size_t>& out) {
    if (fresh_)
      reset_fifo(calls.size());
    pollfd p{line_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, deadline_ms);
    if (r == 0)
      die("no interrupt delivered on the sink eventfd within 5 s");
    uint64_t n = r > 0 ? take(line_.get()) : 0;
    for (auto it = fifo_.begin(); n > 0 && it != fifo_.end();) {
      if (readable(calls[*it])) {
        ++it;
        continue;
      }
      out.push_back(*it);
      it = fifo_.erase(it);
      --n;
    }
    if (n > 0)
      die("more deliveries than signals taken by the watcher");
    for (size_t q : out)
      fifo_.push_back(q);  // closed_loop re-issues it (or the run ends)
  }
  void reset_fifo(size_t depth) {
    fresh_ = false;
    fifo_.clear();
    for (size_t q = 0; q < depth; ++q)
      fifo_.push_back(q);
  }

public:
  /// Before each run: every queue gets its first signal in index order.
  void prepare() { fresh_ = true; }

private:
  std::vector<UniqueFd> calls_;
  std::shared_ptr<std::vector<UniqueFd>> acks_;
  UniqueFd line_;
  bool actor_sink_;
  actors::worker_actor worker_;
  caf::actor sink_;
  bool fresh_ = true;
  std::deque<size_t> fifo_;
};

struct Options {
  int rounds = 21;
  size_t count = 2000;  ///< interrupts per run
  std::vector<size_t> depths{1, 8, 64};
  bool quick = false;
};

/// One path's per-round readings, as ratios to the floor of the same round.
struct Ratios {
  std::vector<double> rate, p50, p99;        // ratios
  std::vector<double> abs_rate, abs_p50, abs_p99;  // absolute values
  void add(const Run& r, const Run* floor) {
    const double p50v = bench::quantile(r.latency_us, 0.5);
    const double p99v = bench::quantile(r.latency_us, 0.99);
    abs_rate.push_back(r.per_second);
    abs_p50.push_back(p50v);
    abs_p99.push_back(p99v);
    if (floor == nullptr)
      return;
    rate.push_back(r.per_second / floor->per_second);
    p50.push_back(p50v / bench::quantile(floor->latency_us, 0.5));
    p99.push_back(p99v / bench::quantile(floor->latency_us, 0.99));
  }
};

void print_row(const char* path, size_t depth, const Ratios& x) {
  auto s = [](const std::vector<double>& v) { return bench::spread(v); };
  std::printf("%-22s %5zu %10.0f %8.1f %8.1f", path, depth, bench::median(x.abs_rate),
              bench::median(x.abs_p50), bench::median(x.abs_p99));
  if (x.rate.empty()) {
    std::printf("\n");
    return;
  }
  auto r = s(x.rate), a = s(x.p50), b = s(x.p99);
  std::printf("  %5.2fx [%4.2f-%4.2f]  %5.2fx [%4.2f-%4.2f]  %5.2fx [%4.2f-%4.2f]\n", r.med, r.q1,
              r.q3, a.med, a.q1, a.q3, b.med, b.q1, b.q3);
}

/// Whether the targets are met: issue 26 counts a target as met when the
/// upper quartile of the rounds' ratios meets it (throughput >= 0.5x,
/// latency p50 and p99 <= 3x).
bool meets(const Ratios& x) {
  return bench::quantile(x.rate, 0.75) >= 0.5 && bench::quantile(x.p50, 0.75) <= 3.0 &&
         bench::quantile(x.p99, 0.75) <= 3.0;
}

bool bench_depth(caf::actor_system& sys, size_t depth, const Options& o) {
  Reflector floor(depth);
  WorkerPath line(sys, depth, false);
  WorkerPath actor(sys, depth, true);
  const size_t total = std::max(o.count, depth * 4);
  floor.run(total / 4);  // warm-up of all three
  line.prepare();
  line.run(total / 4);
  actor.run(total / 4);
  Ratios f, l, a;
  for (int round = 0; round < o.rounds; ++round) {
    std::array<Run, 3> runs;
    for (int k = 0; k < 3; ++k) {
      switch ((k + round) % 3) {  // the order rotates from round to round
        case 0: runs[0] = floor.run(total); break;
        case 1: line.prepare(); runs[1] = line.run(total); break;
        default: runs[2] = actor.run(total); break;
      }
    }
    f.add(runs[0], nullptr);
    l.add(runs[1], &runs[0]);
    a.add(runs[2], &runs[0]);
  }
  print_row("floor (eventfd pairs)", depth, f);
  print_row("worker -> eventfd sink", depth, l);
  print_row("worker -> actor sink", depth, a);
  return meets(l) && meets(a);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.rounds = 3;
      o.count = 200;
    } else if (a == "--rounds" && i + 1 < argc) {
      o.rounds = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--queues" && i + 1 < argc) {
      o.depths = {static_cast<size_t>(std::clamp(std::atoi(argv[++i]), 1, 1024))};
    } else if (a == "--count" && i + 1 < argc) {
      o.count = static_cast<size_t>(std::max(1, std::atoi(argv[++i])));
    } else {
      std::printf(
          "usage: %s [--quick] [--rounds N] [--count N] [--queues N]\n"
          "Interrupt forwarding without MSI-X: a closed loop of call eventfd signals\n"
          "through the worker to an eventfd sink and to an actor sink, 1, 8 and 64\n"
          "queues in flight, as ratios to the same loop on bare eventfds in the same\n"
          "run. Medians [interquartile range] of N rounds (default 21) of --count\n"
          "interrupts (default 2000) per path. --queues N: only N queues in flight.\n"
          "--quick: 3 rounds of 200 (smoke test).\n",
          argv[0]);
      std::exit(a == "--help" ? 0 : 2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  std::printf("%d rounds, %zu interrupts per path and round; ratios to the floor of the same "
              "round: median [q1-q3]\n",
              o.rounds, o.count);
  std::printf("%-22s %5s %10s %8s %8s  %-20s  %-20s  %-20s\n", "path", "queues", "irq/s",
              "p50 us", "p99 us", "throughput ratio", "p50 ratio", "p99 ratio");
  bool met = true;
  for (size_t depth : o.depths)
    met = bench_depth(sys, depth, o) && met;
  std::printf("targets (throughput >= 0.5x, p50 and p99 <= 3x): %s\n",
              met ? "all met" : "some missed");
  return 0;
}
