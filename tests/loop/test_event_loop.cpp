// The event loop (loop/event_loop.hpp): tasks run on one thread, a task's
// wait_fds() suspends it while others run, waits end on readiness, on their
// timeout or on interrupt(), join() waits for a task's end, and hundreds of
// tasks waiting at once need no thread of their own. Results come back to
// the test thread through std::promise; every wait here has a deadline.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <poll.h>
#include <unistd.h>

#include "base/unique_fd.hpp"
#include "base/wait.hpp"
#include "loop/event_loop.hpp"
#include "tests/eventfd.hpp"
#include "tests/support.hpp"

using namespace vufront;
using loop::EventLoop;
using namespace std::chrono_literals;
using vufront::test::scaled;

namespace {

const auto test_wait = scaled(5s);

int threads_of_process() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.')
        ++n;
    ::closedir(d);
  }
  return n;
}

}  // namespace

TEST_CASE("loop: a waiting task is suspended, the others run, readiness resumes it") {
  auto& loop = EventLoop::instance();
  UniqueFd ev = make_eventfd(true);
  REQUIRE(ev);
  std::promise<int> waited, other;
  auto w = waited.get_future(), o = other.get_future();
  std::thread::id first_thread, second_thread;
  auto a = loop.spawn(
      [&] {
        first_thread = std::this_thread::get_id();
        pollfd p{ev.get(), POLLIN, 0};
        const int r = wait_fds(&p, 1, -1);
        waited.set_value(r == 1 && (p.revents & POLLIN) != 0 ? 1 : -1);
      },
      "waiter");
  auto b = loop.spawn(
      [&] {
        second_thread = std::this_thread::get_id();
        other.set_value(1);
      },
      "other");
  REQUIRE(o.wait_for(test_wait) == std::future_status::ready);  // ran while the first waits
  CHECK(w.wait_for(50ms) == std::future_status::timeout);
  test::signal_eventfd(ev.get());
  REQUIRE(w.wait_for(test_wait) == std::future_status::ready);
  CHECK(w.get() == 1);
  a.join();
  b.join();
  CHECK(a.done());
  CHECK((first_thread == second_thread));  // one thread for both
  CHECK((first_thread != std::this_thread::get_id()));
}

TEST_CASE("loop: a wait ends at its timeout with 0, and a sleep without fds works") {
  auto& loop = EventLoop::instance();
  UniqueFd ev = make_eventfd(true);
  std::promise<std::pair<int, int>> done;
  auto f = done.get_future();
  auto t = loop.spawn(
      [&] {
        pollfd p{ev.get(), POLLIN, 0};
        const int timed_out = wait_fds(&p, 1, 20);
        const int slept = wait_fds(nullptr, 0, 10);
        done.set_value({timed_out, slept});
      },
      "timeouts");
  REQUIRE(f.wait_for(test_wait) == std::future_status::ready);
  CHECK(f.get() == std::make_pair(0, 0));
  t.join();
}

TEST_CASE("loop: interrupt() ends a wait without a timeout, join() waits for the end") {
  auto& loop = EventLoop::instance();
  UniqueFd ev = make_eventfd(true);
  auto stop = std::make_shared<std::atomic<bool>>(false);
  std::promise<void> started;
  auto s = started.get_future();
  std::atomic<int> waits{0};
  auto t = loop.spawn(
      [&, stop] {
        started.set_value();
        do {
          pollfd p{ev.get(), POLLIN, 0};
          (void)wait_fds(&p, 1, -1);  // no timeout: only interrupt() ends it
          ++waits;
        } while (!stop->load());
      },
      "interrupted");
  REQUIRE(s.wait_for(test_wait) == std::future_status::ready);
  stop->store(true);
  // posted: it reaches the loop once the task is suspended in its wait
  t.interrupt();
  t.join();
  CHECK(t.done());
  CHECK(waits.load() == 1);
}

TEST_CASE("loop: a wait on a closed fd reports POLLNVAL as poll() does") {
  auto& loop = EventLoop::instance();
  int closed = -1;
  {
    UniqueFd ev = make_eventfd(true);
    closed = ev.get();
  }
  std::promise<short> seen;
  auto f = seen.get_future();
  auto t = loop.spawn(
      [&] {
        pollfd p{closed, POLLIN, 0};
        const int r = wait_fds(&p, 1, 1000);
        seen.set_value(r == 1 ? p.revents : short{0});
      },
      "closed fd");
  REQUIRE(f.wait_for(test_wait) == std::future_status::ready);
  CHECK((f.get() & POLLNVAL) != 0);
  t.join();
}

TEST_CASE("loop: five hundred tasks waiting at once run on the one loop thread") {
  auto& loop = EventLoop::instance();
  const int threads_before = threads_of_process();
  const int tasks_before = EventLoop::live_tasks();
  constexpr int n = 500;  // one eventfd each, well under the usual 1024 fds
  std::vector<UniqueFd> fds;
  std::vector<loop::TaskHandle> tasks;
  auto woken = std::make_shared<std::atomic<int>>(0);
  // Tasks start one after another on the loop thread, so when the last one
  // starts, every other is suspended in its wait.
  auto started = std::make_shared<int>(0);
  auto all_waiting = std::make_shared<std::promise<void>>();
  auto waiting = all_waiting->get_future();
  for (int i = 0; i < n; ++i) {
    fds.push_back(make_eventfd(true));
    REQUIRE(fds.back());
    const int fd = fds.back().get();
    tasks.push_back(loop.spawn(
        [fd, woken, started, all_waiting] {
          if (++*started == n)
            all_waiting->set_value();
          pollfd p{fd, POLLIN, 0};
          if (wait_fds(&p, 1, -1) == 1)
            ++*woken;
        },
        "one of many"));
  }
  REQUIRE(waiting.wait_for(test_wait) == std::future_status::ready);
  CHECK(EventLoop::live_tasks() == tasks_before + n);
  CHECK(threads_of_process() == threads_before);
  for (auto& fd : fds)
    test::signal_eventfd(fd.get());
  for (auto& t : tasks)
    t.join();
  CHECK(woken->load() == n);
  CHECK(EventLoop::live_tasks() == tasks_before);
}
