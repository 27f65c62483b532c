// The worker: the interrupt loop (forwarding, counting, pending interrupts
// across stop/start, draining at stop) and the hang-up watch.
// Deterministic cases run without threads and inject the watcher's messages;
// threaded cases use real eventfds and sockets. The test's scoped actor plays
// the interrupt target and the device. Nothing sleeps: every wait is a
// receive or poll() with a deadline.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <initializer_list>
#include <memory>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <unistd.h>

#include <caf/actor_cast.hpp>
#include <caf/after.hpp>
#include <caf/system_messages.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include "actors/call_relay.hpp"
#include "actors/fd_watcher.hpp"
#include "actors/worker.hpp"
#include "base/unique_fd.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/support.hpp"

// A failed count check prints the counts, not {?}.
template <>
struct doctest::StringMaker<std::vector<uint64_t>> {
  static doctest::String convert(const std::vector<uint64_t>& v) {
    std::string out = "{";
    for (size_t i = 0; i < v.size(); ++i)
      out += (i ? ", " : "") + std::to_string(v[i]);
    return (out + "}").c_str();
  }
};

using namespace vufront;
using namespace vufront::actors;
using namespace std::chrono_literals;

namespace {

using Counts = std::vector<uint64_t>;
using Vectors = std::vector<int32_t>;
using Queues = std::vector<WatchedQueue>;

SharedFd new_eventfd(bool nonblocking = true) {
  auto fd = make_eventfd(nonblocking);
  REQUIRE(fd);
  return share(std::move(fd));
}

void signal(const SharedFd& fd, uint64_t n = 1) {
  REQUIRE(::write(fd->get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n));
}

uint64_t take(const SharedFd& fd) {
  return drain_eventfd(fd->get());
}

bool wait_readable(const SharedFd& fd, int timeout_ms) {
  pollfd p{fd->get(), POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0 && (p.revents & POLLIN) != 0;
}

bool wait_live_threads(int n) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (FdWatcher::live_watchers() != n) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::yield();
  }
  return true;
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

/// What both fixtures need from the test's scoped actor.
template <class Self>
InterruptSink sink_to(Self& self, SharedFd eventfd = {}) {
  InterruptSink s;
  s.eventfd = std::move(eventfd);
  s.target = caf::actor_cast<caf::actor>(self);
  return s;
}

/// Every (interrupt_atom, vector) already in the mailbox, in order.
template <class Self>
Vectors received_interrupts(Self& self) {
  Vectors out;
  bool more = true;
  while (more)
    self->receive([&](interrupt_atom, int32_t v) { out.push_back(v); },
                  caf::after(0ms) >> [&] { more = false; });
  return out;
}

/// Every (lost_atom, reason) already in the mailbox.
template <class Self>
std::vector<std::string> received_losses(Self& self) {
  std::vector<std::string> out;
  bool more = true;
  while (more)
    self->receive([&](lost_atom, const caf::actor_addr&, std::string& why) { out.push_back(why); },
                  caf::after(0ms) >> [&] { more = false; });
  return out;
}

// ---- deterministic ------------------------------------------------------------

struct DetWorker : test::DetFixture {
  worker_actor worker;

  void setup(caf::actor_addr device = {}) {
    worker = spawn(worker_impl, std::move(device), false);
    sched.run();
  }

  template <class... Ts>
  void inject(Ts... xs) {
    caf::anon_send(worker, xs...);
    sched.run();
  }

  /// Request answered with ok: "" or the error's message.
  template <class... Ts>
  std::string call(Ts... xs) {
    auto rh = self->request(worker, caf::infinite, xs...);
    sched.run();
    std::string out = "no reply";
    rh.receive([&](caf::ok_atom) { out.clear(); },
               [&](caf::error& e) { out = from_caf(e, "worker").message(); });
    return out;
  }

  /// The call watcher's relay of the current queues (the test plays the
  /// watcher: no task runs without threads).
  std::shared_ptr<CallRelay> relay() {
    auto* p = caf::actor_cast<caf::abstract_actor*>(worker);
    REQUIRE(p != nullptr);
    auto& st = dynamic_cast<worker_actor::stateful_base<WorkerState>&>(*p).state;
    REQUIRE(st.relay);
    return st.relay;
  }

  /// One wake of the call watcher in which the call eventfds of `slots`
  /// were ready; returns how many messages the actors handled afterwards.
  size_t wake(std::initializer_list<size_t> slots) {
    auto r = relay();
    for (size_t slot : slots)
      CHECK(r->on_ready(slot, POLLIN));
    r->end_of_wake();
    return sched.run();
  }

  Counts counts() {
    auto rh = self->request(worker, caf::infinite, caf::get_atom_v);
    sched.run();
    Counts out;
    rh.receive([&](Counts& v) { out = v; },
               [&](caf::error& e) { FAIL(from_caf(e, "get").message()); });
    return out;
  }
};

// ---- threaded -----------------------------------------------------------------

struct RtWorker : test::RtFixture {
  worker_actor spawn_worker(caf::actor_addr device = {}) {
    return spawn(worker_impl, std::move(device), true);
  }

  std::optional<int32_t> next_interrupt(std::chrono::milliseconds timeout = 2s) {
    std::optional<int32_t> out;
    self->receive([&](interrupt_atom, int32_t v) { out = v; }, caf::after(timeout) >> [] {});
    return out;
  }

  Counts counts(const worker_actor& w, std::chrono::milliseconds timeout = 2s) {
    auto [v, err] = ask<Counts>(w, timeout, caf::get_atom_v);
    REQUIRE_MESSAGE(v.has_value(), err);
    return *v;
  }

  /// Exits `w` and waits for its termination (its threads are joined by then).
  bool exit_and_wait(const worker_actor& w) {
    self->monitor(w);
    caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    bool down = false;
    self->receive([&](caf::down_msg&) { down = true; }, caf::after(5s) >> [] {});
    return down;
  }
};

}  // namespace

TEST_CASE_FIXTURE(DetWorker, "worker (det): interrupts while running are forwarded and counted") {
  setup();
  auto call0 = new_eventfd();
  auto call2 = new_eventfd();
  auto sinkfd = new_eventfd();
  CHECK(call(start_atom_v, Queues{{0, call0}, {2, call2}}, sink_to(self, sinkfd)) == "");
  CHECK(counts() == Counts{0, 0, 0});

  inject(irq_atom_v, Vectors{2});  // one wake of the watcher: one interrupt
  CHECK(received_interrupts(self) == Vectors{2});
  CHECK(take(sinkfd) == 1);

  inject(irq_atom_v, Vectors{0});
  inject(irq_atom_v, Vectors{0});
  CHECK(received_interrupts(self) == Vectors{0, 0});
  CHECK(take(sinkfd) == 2);

  inject(interrupt_atom_v, int32_t{-1});  // config change: forwarded, not a queue count
  inject(interrupt_atom_v, int32_t{1});   // BACKEND_VRING_CALL for a queue
  CHECK(received_interrupts(self) == Vectors{-1, 1});
  CHECK(take(sinkfd) == 2);
  CHECK(counts() == Counts{2, 1, 1});

  // One wake with two queues: one message, two interrupts.
  inject(irq_atom_v, Vectors{0, 2});
  CHECK(received_interrupts(self) == Vectors{0, 2});
  CHECK(take(sinkfd) == 2);
  CHECK(counts() == Counts{3, 1, 2});

  // Nonsense is ignored.
  inject(interrupt_atom_v, int32_t{-7});
  inject(interrupt_atom_v, int32_t{1 << 20});
  inject(irq_atom_v, Vectors{});
  inject(irq_atom_v, Vectors{-7});
  CHECK(received_interrupts(self).empty());
  CHECK(counts() == Counts{3, 1, 2});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): interrupts while stopped are pending until start") {
  setup();
  auto call1 = new_eventfd();
  // Before the first start: kept, the same vector coalesces.
  inject(irq_atom_v, Vectors{1});
  inject(interrupt_atom_v, int32_t{-1});
  inject(irq_atom_v, Vectors{1});
  CHECK(received_interrupts(self).empty());

  CHECK(call(start_atom_v, Queues{{1, call1}}, sink_to(self)) == "");
  CHECK(received_interrupts(self) == Vectors{-1, 1});
  CHECK(counts() == Counts{0, 1});

  // After a stop: the thread's last irq arrives late; it is kept, not dropped.
  CHECK(call(stop_atom_v) == "");
  inject(irq_atom_v, Vectors{1});
  inject(interrupt_atom_v, int32_t{-1});
  CHECK(received_interrupts(self).empty());
  CHECK(counts() == Counts{0, 1});

  CHECK(call(start_atom_v, Queues{{1, call1}}, sink_to(self)) == "");
  CHECK(received_interrupts(self) == Vectors{-1, 1});
  CHECK(counts() == Counts{0, 2});
  // Pending interrupts are forwarded once.
  CHECK(call(stop_atom_v) == "");
  CHECK(call(start_atom_v, Queues{{1, call1}}, sink_to(self)) == "");
  CHECK(received_interrupts(self).empty());
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): stop drains the call eventfds, start takes what came while stopped") {
  setup();
  auto call0 = new_eventfd(false);  // blocking: the drain must not block
  auto call3 = new_eventfd();
  auto sinkfd = new_eventfd();
  CHECK(call(start_atom_v, Queues{{0, call0}, {3, call3}}, sink_to(self, sinkfd)) == "");

  // Raised just before sleep and not yet read by a watcher: stop forwards it.
  signal(call3);
  CHECK(call(stop_atom_v) == "");
  CHECK(received_interrupts(self) == Vectors{3});
  CHECK(take(call3) == 0);
  CHECK(take(sinkfd) == 1);

  // Raised during sleep: stays in the eventfd, forwarded (once) at start.
  signal(call0);
  signal(call0);
  CHECK(call(stop_atom_v) == "");  // idempotent, does not touch the fds
  CHECK(received_interrupts(self).empty());
  CHECK(call(start_atom_v, Queues{{0, call0}, {3, call3}}, sink_to(self, sinkfd)) == "");
  CHECK(received_interrupts(self) == Vectors{0});
  CHECK(take(call0) == 0);
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{1, 0, 0, 1});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): start while running fails, bad starts are refused") {
  setup();
  auto call0 = new_eventfd();
  CHECK(call(stop_atom_v) == "");  // stop while stopped: ok

  auto err = call(start_atom_v, Queues{{0, SharedFd{}}}, sink_to(self));
  CHECK(contains(err, "invalid_argument"));
  err = call(start_atom_v, Queues{{0, call0}}, InterruptSink{});
  CHECK(contains(err, "invalid_argument"));

  CHECK(call(start_atom_v, Queues{{0, call0}}, sink_to(self)) == "");
  err = call(start_atom_v, Queues{{0, call0}}, sink_to(self));
  CHECK(contains(err, "worker start"));
  CHECK(contains(err, "bad_state"));
  // Still running with the first start's sink.
  inject(irq_atom_v, Vectors{0});
  CHECK(received_interrupts(self) == Vectors{0});

  CHECK(call(stop_atom_v) == "");
  CHECK(call(stop_atom_v) == "");
  // No queues and no sink: allowed (nothing to forward to, nothing counted).
  CHECK(call(start_atom_v, Queues{}, InterruptSink{}) == "");
  inject(interrupt_atom_v, int32_t{0});
  CHECK(counts() == Counts{1});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): with an eventfd sink a watcher's wake writes the sink itself") {
  setup();
  auto call0 = new_eventfd();
  auto call2 = new_eventfd(false);  // blocking: read after a poll, never blocks
  auto sinkfd = new_eventfd();
  InterruptSink sink;
  sink.eventfd = sinkfd;
  CHECK(call(start_atom_v, Queues{{0, call0}, {2, call2}}, sink) == "");

  signal(call2);
  signal(call0, 3);  // coalesced: one interrupt
  CHECK(wake({0, 1}) == 0);  // no actor ran: the relay wrote the sink
  CHECK(take(sinkfd) == 2);
  CHECK(take(call0) == 0);
  CHECK(take(call2) == 0);
  CHECK(counts() == Counts{1, 0, 1});  // slot 1 is queue 2

  // Ready but already drained (by a stop or start): nothing delivered.
  CHECK(wake({0}) == 0);
  CHECK(take(sinkfd) == 0);

  // Interrupts that come as messages still go through the worker, same counts.
  inject(interrupt_atom_v, int32_t{2});
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{1, 0, 2});
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{2, 0, 2});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): with an actor sink a watcher's wake sends to the target itself") {
  setup();
  auto call0 = new_eventfd();
  auto call2 = new_eventfd();
  auto sinkfd = new_eventfd();
  CHECK(call(start_atom_v, Queues{{0, call0}, {2, call2}}, sink_to(self, sinkfd)) == "");
  signal(call0);
  signal(call2);
  CHECK(wake({1, 0}) == 0);  // the worker did not run: the relay sent, in wake order
  CHECK(received_interrupts(self) == Vectors{2, 0});
  CHECK(take(sinkfd) == 2);  // a sink with both: the relay writes the eventfd too
  CHECK(counts() == Counts{1, 0, 1});
  // A fd reported twice in one wake (a watcher does not) is still one queue.
  auto r = relay();
  signal(call0);
  CHECK(r->on_ready(0, POLLIN));
  signal(call0);
  CHECK(r->on_ready(0, POLLIN));
  r->end_of_wake();
  CHECK(sched.run() == 0);
  CHECK(received_interrupts(self) == Vectors{0});
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{2, 0, 1});
  // Not readable (POLLERR, POLLNVAL): not watched on.
  CHECK_FALSE(r->on_ready(0, POLLERR));
  CHECK_FALSE(r->on_ready(7, POLLIN));  // no such slot
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): after stop has answered nothing reaches the sink until start") {
  setup();
  auto call0 = new_eventfd();
  auto sinkfd = new_eventfd();
  InterruptSink sink;
  sink.eventfd = sinkfd;
  const Queues queues{{0, call0}};
  CHECK(call(start_atom_v, queues, sink) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(take(sinkfd) == 1);

  // Not yet read by the watcher at stop: stop forwards it.
  signal(call0);
  CHECK(call(stop_atom_v) == "");
  CHECK(take(sinkfd) == 1);
  // Read by the watcher after stop: a message to the worker, pending.
  signal(call0);
  CHECK(wake({0}) == 1);
  CHECK(take(sinkfd) == 0);
  signal(call0);
  CHECK(wake({0}) == 1);  // the same queue again: still one pending interrupt
  CHECK(take(sinkfd) == 0);
  CHECK(counts() == Counts{2});

  // Start forwards it once, then the relay writes the sink again.
  CHECK(call(start_atom_v, queues, sink) == "");
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{3});
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{4});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): each start delivers to its own sink, counts survive new queues") {
  setup();
  auto call0 = new_eventfd();
  auto call1 = new_eventfd();
  auto sink_a = new_eventfd();
  auto sink_b = new_eventfd();
  InterruptSink a, b;
  a.eventfd = sink_a;
  b.eventfd = sink_b;
  const Queues queues{{0, call0}};

  CHECK(call(start_atom_v, queues, a) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(call(stop_atom_v) == "");
  CHECK(call(start_atom_v, queues, b) == "");  // same queues: the relay is kept
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(take(sink_a) == 1);
  CHECK(take(sink_b) == 1);

  // An actor sink: the relay sends to it, the eventfds of before see nothing.
  CHECK(call(stop_atom_v) == "");
  CHECK(call(start_atom_v, queues, sink_to(self)) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(received_interrupts(self) == Vectors{0});
  CHECK(take(sink_a) == 0);
  CHECK(take(sink_b) == 0);
  CHECK(counts() == Counts{3});

  // Other queues: a new relay; the old one's counts stay in the worker's.
  CHECK(call(stop_atom_v) == "");
  CHECK(call(start_atom_v, Queues{{1, call1}}, a) == "");
  CHECK(counts() == Counts{3, 0});
  signal(call1);
  CHECK(wake({0}) == 0);  // slot 0 is queue 1 now
  CHECK(take(sink_a) == 1);
  CHECK(counts() == Counts{3, 1});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): an actor-only sink: direct sends, stop exact, pending forwarded at start") {
  setup();
  auto call0 = new_eventfd();
  auto call5 = new_eventfd();
  const Queues queues{{0, call0}, {5, call5}};
  CHECK(call(start_atom_v, queues, sink_to(self)) == "");
  signal(call5);
  CHECK(wake({1}) == 0);
  signal(call0);
  signal(call5);
  CHECK(wake({0, 1}) == 0);
  CHECK(received_interrupts(self) == Vectors{5, 0, 5});
  CHECK(counts() == Counts{1, 0, 0, 0, 0, 2});

  // Not yet read at stop: stop forwards it (the worker sends, before its reply).
  signal(call0);
  CHECK(call(stop_atom_v) == "");
  CHECK(received_interrupts(self) == Vectors{0});
  // Read by the watcher after stop has answered: nothing reaches the target;
  // one message to the worker, pending (both queues, each once).
  signal(call0);
  signal(call5);
  CHECK(wake({0, 1}) == 1);
  signal(call5);
  CHECK(wake({1}) == 1);
  CHECK(received_interrupts(self).empty());
  CHECK(counts() == Counts{2, 0, 0, 0, 0, 2});
  CHECK(relay()->delivered(0) == 1);  // the relay's own: only while running
  CHECK(relay()->delivered(1) == 2);

  // Start forwards the pending ones once (in vector order), then the relay sends again.
  CHECK(call(start_atom_v, queues, sink_to(self)) == "");
  CHECK(received_interrupts(self) == Vectors{0, 5});
  CHECK(counts() == Counts{3, 0, 0, 0, 0, 3});
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(received_interrupts(self) == Vectors{0});
  CHECK(counts() == Counts{4, 0, 0, 0, 0, 3});
  // Messages that do not come through an eventfd still go through the worker.
  inject(interrupt_atom_v, int32_t{-1});
  CHECK(received_interrupts(self) == Vectors{-1});
  CHECK(counts() == Counts{4, 0, 0, 0, 0, 3});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): a new start's target gets the relay's sends, the old one nothing") {
  setup();
  caf::scoped_actor other{sys, true};
  auto call0 = new_eventfd();
  auto sinkfd = new_eventfd();
  const Queues queues{{0, call0}};
  CHECK(call(start_atom_v, queues, sink_to(self)) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(received_interrupts(self) == Vectors{0});

  // Same queues (the relay is kept), another target, with an eventfd.
  CHECK(call(stop_atom_v) == "");
  CHECK(call(start_atom_v, queues, sink_to(other, sinkfd)) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(received_interrupts(self).empty());
  CHECK(received_interrupts(other) == Vectors{0});
  CHECK(take(sinkfd) == 1);

  // Then an eventfd-only sink: no target is sent to any more.
  CHECK(call(stop_atom_v) == "");
  InterruptSink only_fd;
  only_fd.eventfd = sinkfd;
  CHECK(call(start_atom_v, queues, only_fd) == "");
  signal(call0);
  CHECK(wake({0}) == 0);
  CHECK(received_interrupts(self).empty());
  CHECK(received_interrupts(other).empty());
  CHECK(take(sinkfd) == 1);
  CHECK(counts() == Counts{3});
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): a worker that ended leaves its relay closed") {
  setup();
  auto call0 = new_eventfd();
  auto sinkfd = new_eventfd();
  InterruptSink sink;
  sink.eventfd = sinkfd;
  CHECK(call(start_atom_v, Queues{{0, call0}}, sink) == "");
  auto r = relay();  // as a watcher task still running would hold it
  caf::anon_send_exit(worker, caf::exit_reason::user_shutdown);
  sched.run();
  signal(call0);
  CHECK(r->on_ready(0, POLLIN));
  r->end_of_wake();  // closed: a message to a worker that is gone
  sched.run();
  CHECK(take(sinkfd) == 0);
  CHECK(r->delivered(0) == 0);
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): a hang-up is reported to the device once per watch") {
  setup(caf::actor_cast<caf::actor_addr>(self));
  auto main1 = make_socketpair();
  auto chan1 = make_socketpair();
  inject(watch_atom_v, share(std::move(main1.first)), share(std::move(chan1.first)));
  inject(hangup_atom_v, int32_t{0});  // main socket
  inject(hangup_atom_v, int32_t{1});  // channel: same loss, not reported again
  inject(hangup_atom_v, int32_t{0});
  auto losses = received_losses(self);
  REQUIRE(losses.size() == 1);
  CHECK(contains(losses[0], "vhost-user socket"));

  // A new watch (reconnect) re-arms; hang-ups of the old watch are stale.
  auto main2 = make_socketpair();
  inject(watch_atom_v, share(std::move(main2.first)), SharedFd{});
  inject(hangup_atom_v, int32_t{1});
  inject(hangup_atom_v, int32_t{0});
  CHECK(received_losses(self).empty());
  inject(hangup_atom_v, int32_t{(1 << 1) | 1});  // second watch, channel tag
  inject(hangup_atom_v, int32_t{(1 << 1) | 0});
  losses = received_losses(self);
  REQUIRE(losses.size() == 1);
  CHECK(contains(losses[0], "channel"));
}

TEST_CASE_FIXTURE(DetWorker, "worker (det): without a device a hang-up goes nowhere") {
  setup();
  inject(hangup_atom_v, int32_t{0});
  inject(hangup_atom_v, int32_t{-3});
  CHECK(received_losses(self).empty());
  CHECK(counts().empty());
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): a call signal reaches the sink eventfd and the target") {
  auto w = spawn_worker();
  auto call0 = new_eventfd();
  auto call1 = new_eventfd(false);  // a blocking call fd works too
  auto sinkfd = new_eventfd();
  REQUIRE(ask_ok(w, 2s, start_atom_v, Queues{{0, call0}, {1, call1}}, sink_to(self, sinkfd)) ==
          "");
  CHECK(FdWatcher::live_watchers() == 1);

  signal(call1);
  auto v = next_interrupt();
  REQUIRE(v);
  CHECK(*v == 1);
  CHECK(wait_readable(sinkfd, 2000));
  CHECK(take(sinkfd) == 1);

  signal(call0, 3);  // one write of 3: one wakeup, one interrupt
  v = next_interrupt();
  REQUIRE(v);
  CHECK(*v == 0);
  CHECK(counts(w) == Counts{1, 1});
  CHECK(take(sinkfd) == 1);

  CHECK(ask_ok(w, 2s, stop_atom_v) == "");
  CHECK(FdWatcher::live_watchers() == 1);  // kept for the next start
  CHECK(exit_and_wait(w));
  CHECK(FdWatcher::live_watchers() == 0);  // joined when the worker ends
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): an interrupt raised during sleep is not lost") {
  auto w = spawn_worker();
  auto call0 = new_eventfd();
  const Queues queues{{0, call0}};
  REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink_to(self)) == "");
  REQUIRE(ask_ok(w, 2s, stop_atom_v) == "");
  CHECK(FdWatcher::live_watchers() == 1);  // kept, but nothing is forwarded

  signal(call0);  // during sleep: read by the kept thread, held as pending
  CHECK(counts(w) == Counts{0});
  CHECK(received_interrupts(self).empty());

  REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink_to(self)) == "");
  auto v = next_interrupt();
  REQUIRE(v);
  CHECK(*v == 0);
  CHECK(counts(w) == Counts{1});
  REQUIRE(ask_ok(w, 2s, stop_atom_v) == "");
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): a signal racing with stop is forwarded exactly once") {
  auto w = spawn_worker();
  auto call0 = new_eventfd();
  const Queues queues{{0, call0}};
  REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink_to(self)) == "");
  // Drained by stop, drained by start, or read by the thread: then its irq
  // message may still be on its way when start has answered (the thread
  // read the eventfd and was preempted before sending), and is forwarded
  // when it arrives. Whichever way, each signal arrives once, and only once.
  for (uint64_t i = 1; i <= 100; ++i) {
    signal(call0);
    REQUIRE(ask_ok(w, 2s, stop_atom_v) == "");
    REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink_to(self)) == "");
    auto v = next_interrupt(test::scaled(2s));
    REQUIRE_MESSAGE(v, "signal ", i, " was not forwarded");
    REQUIRE(*v == 0);
    REQUIRE(counts(w) == Counts{i});
  }
  CHECK(ask_ok(w, 2s, stop_atom_v) == "");
  // Every signal was taken: nothing more is in flight, nothing came twice.
  CHECK(received_interrupts(self).empty());
  CHECK(counts(w) == Counts{100});
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): an eventfd sink is written from the loop thread, counted exactly") {
  auto w = spawn_worker();
  auto call0 = new_eventfd();
  auto call1 = new_eventfd(false);
  auto sinkfd = new_eventfd();
  InterruptSink sink;
  sink.eventfd = sinkfd;
  const Queues queues{{0, call0}, {1, call1}};
  REQUIRE(ask_ok(w, test::scaled(2s), start_atom_v, queues, sink) == "");
  for (int i = 0; i < 50; ++i) {
    signal(i % 2 ? call1 : call0);
    REQUIRE(wait_readable(sinkfd, static_cast<int>(test::scaled(2000ms).count())));
    REQUIRE(take(sinkfd) == 1);
  }
  CHECK(counts(w, test::scaled(2s)) == Counts{25, 25});

  // A writer signals both queues in bursts of 200 that race with each stop
  // (bounded: while stopped, each signal read is a message to the worker):
  // whatever reached the sink is what the worker counts once stop has
  // answered, and nothing reaches it while stopped (a delivery after stop
  // would be counted before it is written, so it would show).
  std::atomic<int> bursts{0};
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    const uint64_t one = 1;
    int done = 0;
    while (writing.load()) {
      if (bursts.load() == done) {
        std::this_thread::yield();
        continue;
      }
      for (int k = 0; k < 100; ++k) {
        [[maybe_unused]] auto a = ::write(call0->get(), &one, sizeof one);
        [[maybe_unused]] auto b = ::write(call1->get(), &one, sizeof one);
      }
      ++done;
    }
  });
  uint64_t seen = 50;
  for (int i = 0; i < 50; ++i) {
    bursts.fetch_add(1);
    REQUIRE(ask_ok(w, test::scaled(2s), stop_atom_v) == "");
    seen += take(sinkfd);
    const auto c = counts(w, test::scaled(2s));
    REQUIRE(c.size() == 2);
    REQUIRE(c[0] + c[1] == seen);
    REQUIRE(take(sinkfd) == 0);  // stopped: nothing came since
    REQUIRE(ask_ok(w, test::scaled(2s), start_atom_v, queues, sink) == "");
  }
  writing.store(false);
  writer.join();
  REQUIRE(ask_ok(w, test::scaled(2s), stop_atom_v) == "");
  seen += take(sinkfd);
  const auto c = counts(w, test::scaled(2s));
  CHECK(c[0] + c[1] == seen);
  CHECK(exit_and_wait(w));
  CHECK(FdWatcher::live_watchers() == 0);
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): a worker that exits while its watcher delivers") {
  test::FdCount fds;
  {
    auto w = spawn_worker();
    std::vector<SharedFd> calls;
    Queues queues;
    for (uint16_t q = 0; q < 8; ++q) {
      calls.push_back(new_eventfd());
      queues.push_back({q, calls.back()});
    }
    auto sinkfd = new_eventfd();
    InterruptSink sink;
    sink.eventfd = sinkfd;
    REQUIRE(ask_ok(w, test::scaled(2s), start_atom_v, queues, sink) == "");
    std::atomic<bool> writing{true};
    std::thread writer([&] {
      const uint64_t one = 1;
      while (writing.load())
        for (const auto& c : calls)
          [[maybe_unused]] auto n = ::write(c->get(), &one, sizeof one);
    });
    // Delivering now: the first interrupts arrived.
    CHECK(wait_readable(sinkfd, static_cast<int>(test::scaled(2000ms).count())));
    CHECK(exit_and_wait(w));  // the watcher is joined before the fds go
    CHECK(FdWatcher::live_watchers() == 0);
    const uint64_t after_exit = take(sinkfd);
    writing.store(false);
    writer.join();
    CHECK(after_exit > 0);
    CHECK(take(sinkfd) == 0);  // nothing delivered once the worker was gone
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("call relay (threaded): after close() returns nothing reaches the sink") {
  auto call0 = new_eventfd();
  auto sinkfd = new_eventfd();
  auto relay = std::make_shared<CallRelay>(
      std::vector<CallRelay::Queue>{{0, call0->get(), true}}, caf::actor_addr{});
  std::atomic<uint64_t> wakes{0};
  std::atomic<bool> running{true};
  // Plays the loop thread: one signal and one wake after another.
  std::thread loop([&] {
    const uint64_t one = 1;
    while (running.load()) {
      [[maybe_unused]] auto n = ::write(call0->get(), &one, sizeof one);
      relay->on_ready(0, POLLIN);
      relay->end_of_wake();
      wakes.fetch_add(1);
    }
  });
  // Waits (bounded) until the loop thread has finished `n` more wakes.
  auto more_wakes = [&](uint64_t n) {
    const uint64_t target = wakes.load() + n;
    const auto deadline = std::chrono::steady_clock::now() + test::scaled(5s);
    while (wakes.load() < target)
      if (std::chrono::steady_clock::now() > deadline)
        return false;
    return true;
  };
  uint64_t total = 0;
  for (int i = 0; i < 200; ++i) {
    relay->open(sinkfd->get(), true);
    REQUIRE(more_wakes(2));
    relay->close();
    total += take(sinkfd);
    REQUIRE(relay->delivered(0) == total);  // counted before written, all written
    REQUIRE(more_wakes(2));                 // closed: these wakes write nothing
    REQUIRE(take(sinkfd) == 0);
  }
  running.store(false);
  loop.join();
  CHECK(total >= 200);
  CHECK(relay->delivered(0) == total);
}

TEST_CASE_FIXTURE(RtWorker, "call relay (threaded): after close() returns nothing is sent to the target") {
  auto call0 = new_eventfd();
  auto relay = std::make_shared<CallRelay>(
      std::vector<CallRelay::Queue>{{3, call0->get(), true}}, caf::actor_addr{});
  std::atomic<uint64_t> wakes{0};
  std::atomic<bool> running{true};
  std::thread loop([&] {
    const uint64_t one = 1;
    while (running.load()) {
      [[maybe_unused]] auto n = ::write(call0->get(), &one, sizeof one);
      relay->on_ready(0, POLLIN);
      relay->end_of_wake();
      wakes.fetch_add(1);
    }
  });
  auto more_wakes = [&](uint64_t n) {
    const uint64_t target = wakes.load() + n;
    const auto deadline = std::chrono::steady_clock::now() + test::scaled(5s);
    while (wakes.load() < target)
      if (std::chrono::steady_clock::now() > deadline)
        return false;
    return true;
  };
  // A send is in the mailbox when anon_send returns: once close() has
  // returned, the mailbox holds every interrupt counted, and no more come.
  auto received = [&] {
    const Vectors v = received_interrupts(self);
    for (int32_t x : v)
      REQUIRE(x == 3);
    return static_cast<uint64_t>(v.size());
  };
  uint64_t total = 0;
  for (int i = 0; i < 100; ++i) {
    relay->open(-1, false, caf::actor_cast<caf::actor>(self));
    REQUIRE(more_wakes(2));
    relay->close();
    total += received();
    REQUIRE(relay->delivered(0) == total);
    REQUIRE(more_wakes(2));  // closed: these wakes send nothing to the target
    REQUIRE(received() == 0);
  }
  running.store(false);
  loop.join();
  CHECK(total >= 100);
}

TEST_CASE("call relay (threaded): a blocking call fd read by the worker and the loop thread at once") {
  // Both read with a poll first; were the two reads not kept apart, one
  // could read the counter the other just emptied and block (a hang: the
  // ctest time limit). Every signal is read by exactly one of them.
  auto call0 = new_eventfd(false);
  auto relay = std::make_shared<CallRelay>(
      std::vector<CallRelay::Queue>{{0, call0->get(), false}}, caf::actor_addr{});
  std::atomic<bool> running{true};
  std::thread loop([&] {
    while (running.load()) {
      relay->on_ready(0, POLLIN);  // as if the wait had said readable
      relay->end_of_wake();
    }
  });
  uint64_t taken = 0;
  for (int i = 0; i < 20000; ++i) {
    signal(call0);
    taken += relay->take(0);
  }
  running.store(false);
  loop.join();
  CHECK(taken <= 20000);
  CHECK(relay->take(0) == 0);  // nothing left unread
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): a hang-up is reported to the device exactly once") {
  auto w = spawn_worker(caf::actor_cast<caf::actor_addr>(self));
  auto main_sp = make_socketpair();
  auto chan_sp = make_socketpair();
  REQUIRE(main_sp.first);
  REQUIRE(chan_sp.first);
  caf::anon_send(w, watch_atom_v, share(std::move(main_sp.first)), share(std::move(chan_sp.first)));
  // Both peers go away: two hang-ups, one loss.
  main_sp.second.reset();
  chan_sp.second.reset();
  std::string reason;
  self->receive([&](lost_atom, const caf::actor_addr&, std::string& why) { reason = why; },
                caf::after(2s) >> [] { FAIL("no lost message"); });
  CHECK((contains(reason, "vhost-user socket") || contains(reason, "channel")));
  // The watch thread ends after reporting both fds; once the worker has
  // handled everything it sent (get round trip), no second loss may exist.
  CHECK(wait_live_threads(0));
  CHECK(counts(w).empty());
  CHECK(received_losses(self).empty());
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): a live socket is not reported, its hang-up later is") {
  auto w = spawn_worker(caf::actor_cast<caf::actor_addr>(self));
  auto main_sp = make_socketpair();
  caf::anon_send(w, watch_atom_v, share(std::move(main_sp.first)), SharedFd{});
  // Traffic on the socket is not a hang-up (and the watch does not read it).
  char byte = 'v';
  REQUIRE(::write(main_sp.second.get(), &byte, 1) == 1);
  CHECK(counts(w).empty());
  CHECK(received_losses(self).empty());
  main_sp.second.reset();
  std::string reason;
  self->receive([&](lost_atom, const caf::actor_addr&, std::string& why) { reason = why; },
                caf::after(2s) >> [] { FAIL("no lost message"); });
  CHECK(contains(reason, "vhost-user socket"));
  CHECK(exit_and_wait(w));
  CHECK(FdWatcher::live_watchers() == 0);
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): 1,000 start/stop cycles leak neither fds nor threads") {
  test::FdCount fds;
  {
    auto w = spawn_worker(caf::actor_cast<caf::actor_addr>(self));
    auto call0 = new_eventfd();
    auto call1 = new_eventfd();
    auto sinkfd = new_eventfd();
    auto sp = make_socketpair();
    caf::anon_send(w, watch_atom_v, share(std::move(sp.first)), SharedFd{});
    const Queues queues{{0, call0}, {1, call1}};
    InterruptSink sink;
    sink.eventfd = sinkfd;
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink) == "");
      if (i % 100 == 0)
        signal(call0);
      REQUIRE(ask_ok(w, 2s, stop_atom_v) == "");
    }
    // Whatever the last stop left pending goes out with this start; a signal
    // the thread has read may still be on its way: wait for all ten.
    REQUIRE(ask_ok(w, 2s, start_atom_v, queues, sink) == "");
    uint64_t delivered = 0;
    while (delivered < 10 && wait_readable(sinkfd, static_cast<int>(test::scaled(2000ms).count())))
      delivered += take(sinkfd);
    CHECK(delivered == 10);
    CHECK(counts(w) == Counts{10, 0});
    CHECK(ask_ok(w, 2s, stop_atom_v) == "");
    CHECK(take(sinkfd) == 0);  // none twice
    // the hang-up watch and the call watcher kept since the first start:
    // a thousand cycles created no other thread
    CHECK(FdWatcher::live_watchers() == 2);
    CHECK(exit_and_wait(w));
    CHECK(FdWatcher::live_watchers() == 0);
    CHECK(received_losses(self).empty());
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE_FIXTURE(RtWorker, "worker (threaded): dropping the last handle ends the worker and its threads") {
  std::optional<caf::actor_addr> addr;
  // The peer outlives the worker: a hang-up now would let the watcher thread
  // hold the last reference, and the worker would end on that thread (then
  // it detaches, and the thread count drops only a moment after the down).
  auto sp = make_socketpair();
  {
    auto w = spawn_worker();
    auto call0 = new_eventfd();
    caf::anon_send(w, watch_atom_v, share(std::move(sp.first)), SharedFd{});
    REQUIRE(ask_ok(w, 2s, start_atom_v, Queues{{0, call0}}, sink_to(self)) == "");
    CHECK(FdWatcher::live_watchers() == 2);
    self->monitor(w);
    addr = caf::actor_cast<caf::actor_addr>(w);
  }  // the last strong handle goes away here
  caf::error reason;
  bool down = false;
  self->receive(
      [&](caf::down_msg& dm) {
        down = true;
        reason = dm.reason;
      },
      caf::after(5s) >> [] {});
  REQUIRE(down);
  CHECK(reason == caf::exit_reason::unreachable);
  CHECK(FdWatcher::live_watchers() == 0);
  CHECK_FALSE(caf::actor_cast<caf::actor>(*addr));
}
