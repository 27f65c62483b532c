// FdWatcher: readiness reaches the callback on the event loop's thread,
// stopping and destruction end the watcher's task (or, on the loop thread,
// end its wait at once), and events 0 reports only a hang-up. The callbacks
// report to the test thread through a pipe, read with a poll() deadline.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/fd_watcher.hpp"
#include "base/unique_fd.hpp"
#include "tests/eventfd.hpp"
#include "tests/support.hpp"

using namespace vufront;
using vufront::actors::FdWatcher;

namespace {

/// What a callback saw; written as one record into the report pipe.
struct Seen {
  int tag = 0;
  short revents = 0;
  uint64_t value = 0;
};

bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r;
  do
    r = ::poll(&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & POLLIN) != 0;
}

void report(int pipe_fd, const Seen& s) {
  [[maybe_unused]] auto n = ::write(pipe_fd, &s, sizeof s);
}

/// The next record within the deadline (records are far below PIPE_BUF, so
/// each write arrives whole).
std::optional<Seen> next_seen(int pipe_fd, int timeout_ms = 2000) {
  if (!wait_readable(pipe_fd, timeout_ms))
    return std::nullopt;
  Seen s;
  if (::read(pipe_fd, &s, sizeof s) != static_cast<ssize_t>(sizeof s))
    return std::nullopt;
  return s;
}

/// Waits (bounded, without sleeping) until the live-thread counter reaches
/// `n`; needed only where a thread ends on its own after detaching.
bool wait_live_watchers(int n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (FdWatcher::live_watchers() != n) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

TEST_CASE("fd watcher: delivers eventfd readiness and stops cleanly") {
  test::FdCount fds;
  {
    const int live0 = FdWatcher::live_watchers();
    auto ev = make_eventfd();
    auto pipe = make_pipe();
    REQUIRE(ev);
    REQUIRE(pipe.write_end);
    const int out = pipe.write_end.get();
    auto w = FdWatcher::start({{ev.get(), 7, POLLIN}}, [out](int tag, int fd, short revents) {
      report(out, Seen{tag, revents, actors::drain_eventfd(fd)});
      return true;
    });
    REQUIRE(w.ok());
    CHECK(FdWatcher::live_watchers() == live0 + 1);
    CHECK(w.value()->active());

    test::signal_eventfd(ev.get(), 3);
    auto s = next_seen(pipe.read_end.get());
    REQUIRE(s);
    CHECK(s->tag == 7);
    CHECK((s->revents & POLLIN) != 0);
    CHECK(s->value == 3);

    test::signal_eventfd(ev.get(), 1);
    s = next_seen(pipe.read_end.get());
    REQUIRE(s);
    CHECK(s->value == 1);

    w.value()->stop();
    w.value()->stop();  // idempotent
    w.value().reset();  // joins
    CHECK(FdWatcher::live_watchers() == live0);
    // Nothing reads the eventfd any more.
    test::signal_eventfd(ev.get(), 1);
    CHECK(actors::drain_eventfd(ev.get()) == 1);
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("fd watcher: the end-of-wake callback runs once after the callbacks of a wake") {
  auto a = make_eventfd();
  auto b = make_eventfd();
  auto pipe = make_pipe();
  const int out = pipe.write_end.get();
  // Both ready before the task first waits: one wake for both.
  test::signal_eventfd(a.get());
  test::signal_eventfd(b.get(), 2);
  auto w = FdWatcher::start(
      {{a.get(), 1, POLLIN}, {b.get(), 2, POLLIN}},
      [out](int tag, int fd, short revents) {
        report(out, Seen{tag, revents, actors::drain_eventfd(fd)});
        return true;
      },
      [out] { report(out, Seen{-1, 0, 0}); });
  REQUIRE(w.ok());
  for (int expected : {1, 2, -1}) {
    auto s = next_seen(pipe.read_end.get());
    REQUIRE(s);
    CHECK(s->tag == expected);
  }
  // The next wake: one callback, one end.
  test::signal_eventfd(b.get());
  for (int expected : {2, -1}) {
    auto s = next_seen(pipe.read_end.get());
    REQUIRE(s);
    CHECK(s->tag == expected);
  }
  w.value().reset();
  CHECK_FALSE(wait_readable(pipe.read_end.get(), 0));  // stopping is no wake
}

TEST_CASE("fd watcher: a callback returning false stops watching that fd only") {
  auto a = make_eventfd();
  auto b = make_eventfd();
  auto pipe = make_pipe();
  const int out = pipe.write_end.get();
  auto w = FdWatcher::start({{a.get(), 1, POLLIN}, {b.get(), 2, POLLIN}},
                            [out](int tag, int fd, short revents) {
                              report(out, Seen{tag, revents, actors::drain_eventfd(fd)});
                              return tag != 1;  // drop `a` after its first signal
                            });
  REQUIRE(w.ok());
  test::signal_eventfd(a.get());
  auto s = next_seen(pipe.read_end.get());
  REQUIRE(s);
  CHECK(s->tag == 1);

  // `a` is ready again before `b`: were it still watched, its record would
  // come no later than b's (same or earlier poll round, lower index).
  test::signal_eventfd(a.get());
  test::signal_eventfd(b.get());
  s = next_seen(pipe.read_end.get());
  REQUIRE(s);
  CHECK(s->tag == 2);
  CHECK_FALSE(wait_readable(pipe.read_end.get(), 0));
  CHECK(actors::drain_eventfd(a.get()) == 1);  // still unread
  CHECK(w.value()->active());
}

TEST_CASE("fd watcher: the thread ends by itself when no fd is left") {
  const int live0 = FdWatcher::live_watchers();
  auto ev = make_eventfd();
  auto pipe = make_pipe();
  const int out = pipe.write_end.get();
  auto w = FdWatcher::start({{ev.get(), 0, POLLIN}}, [out](int tag, int fd, short revents) {
    report(out, Seen{tag, revents, actors::drain_eventfd(fd)});
    return false;
  });
  REQUIRE(w.ok());
  test::signal_eventfd(ev.get());
  REQUIRE(next_seen(pipe.read_end.get()));
  CHECK(wait_live_watchers(live0));
  CHECK_FALSE(w.value()->active());
  w.value().reset();  // joining a finished thread is fine
  CHECK(FdWatcher::live_watchers() == live0);
}

TEST_CASE("fd watcher: events 0 reports the hang-up of a socket whose peer closed") {
  test::FdCount fds;
  {
    auto sp = make_socketpair();
    REQUIRE(sp.first);
    auto pipe = make_pipe();
    const int out = pipe.write_end.get();
    auto w = FdWatcher::start({{sp.first.get(), 5, 0}}, [out](int tag, int, short revents) {
      report(out, Seen{tag, revents, 0});
      return false;
    });
    REQUIRE(w.ok());
    // Data alone does not wake a hang-up watch, and the watch reads nothing.
    REQUIRE(::send(sp.second.get(), "x", 1, MSG_NOSIGNAL) == 1);
    sp.second.reset();  // the peer goes away
    auto s = next_seen(pipe.read_end.get());
    REQUIRE(s);
    CHECK(s->tag == 5);
    CHECK((s->revents & POLLHUP) != 0);
    CHECK((s->revents & POLLIN) == 0);
    CHECK_FALSE(wait_readable(pipe.read_end.get(), 0));  // exactly one report
    char c = 0;
    CHECK(::recv(sp.first.get(), &c, 1, MSG_DONTWAIT) == 1);  // the byte is still there
    CHECK(c == 'x');
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("fd watcher: destroyed inside its own callback, the thread detaches and ends") {
  const int live0 = FdWatcher::live_watchers();
  auto ev = make_eventfd();
  auto pipe = make_pipe();
  const int out = pipe.write_end.get();
  std::atomic<FdWatcher*> owner{nullptr};
  auto w = FdWatcher::start({{ev.get(), 3, POLLIN}}, [out, &owner](int tag, int fd, short revents) {
    const uint64_t n = actors::drain_eventfd(fd);
    delete owner.exchange(nullptr);  // like the actor's last reference dropped here
    report(out, Seen{tag, revents, n});
    return true;
  });
  REQUIRE(w.ok());
  owner.store(w.value().release());
  test::signal_eventfd(ev.get());
  auto s = next_seen(pipe.read_end.get());
  REQUIRE(s);
  CHECK(s->value == 1);
  CHECK(owner.load() == nullptr);
  CHECK(wait_live_watchers(live0));
}

TEST_CASE("fd watcher: many start/stop rounds leak neither fds nor threads") {
  test::FdCount fds;
  const int live0 = FdWatcher::live_watchers();
  {
    auto ev = make_eventfd();
    for (int i = 0; i < 300; ++i) {
      auto w = FdWatcher::start({{ev.get(), i, POLLIN}},
                                [](int, int fd, short) { return actors::drain_eventfd(fd) > 0; });
      REQUIRE(w.ok());
    }
    // An fd list with nothing valid in it ends at once and is still joinable.
    auto w = FdWatcher::start({{-1, 0, POLLIN}}, [](int, int, short) { return true; });
    REQUIRE(w.ok());
  }
  CHECK(FdWatcher::live_watchers() == live0);
  CHECK(fds.leaked() == 0);
}

TEST_CASE("fd watcher: drain_eventfd never blocks, also on a blocking eventfd") {
  auto ev = make_eventfd(false);
  REQUIRE(ev);
  CHECK(actors::drain_eventfd(ev.get()) == 0);
  test::signal_eventfd(ev.get(), 2);
  test::signal_eventfd(ev.get(), 5);
  CHECK(actors::drain_eventfd(ev.get()) == 7);
  CHECK(actors::drain_eventfd(ev.get()) == 0);
  CHECK(actors::drain_eventfd(-1) == 0);
}
