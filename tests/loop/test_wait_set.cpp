// A task's fds stay registered across its waits (loop/wait_set.hpp): the
// hazards of keeping them. An fd number the task closes and gets again for
// another file, or that another thread closes and reuses, is watched for
// the new file and never for the old one (the old file is kept alive by a
// duplicate here, as a back-end keeps an eventfd alive); fds that leave the
// set no longer wake the task; interrupt() and the task's end drop the
// registrations; two tasks may wait on one fd. Results come back to the test
// thread through a small queue; every wait has a deadline.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

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
/// How long a task that must stay waiting is given to wake wrongly.
constexpr auto quiet = 50ms;

void drain(int efd) {
  uint64_t v = 0;
  (void)::read(efd, &v, sizeof v);
}

/// What a task reports to the test thread, in order.
class Reports {
public:
  void push(int v) {
    {
      std::lock_guard<std::mutex> g(m_);
      q_.push_back(v);
    }
    cv_.notify_all();
  }
  std::optional<int> pop(std::chrono::milliseconds within) {
    std::unique_lock<std::mutex> g(m_);
    if (!cv_.wait_for(g, within, [&] { return !q_.empty(); }))
      return std::nullopt;
    int v = q_.front();
    q_.pop_front();
    return v;
  }

private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<int> q_;
};

/// The number of ready fds a wait returned, or -1 when the wait returned
/// nothing ready (woken by nothing it waits on: a stale registration).
int reported(int r) { return r > 0 ? r : -1; }

}  // namespace

TEST_CASE("loop: a task that closes a waited fd and gets its number for another file waits on the new one") {
  auto& loop = EventLoop::instance();
  auto reports = std::make_shared<Reports>();
  auto a = std::make_shared<UniqueFd>(make_eventfd(true));
  REQUIRE(*a);
  const int x = a->get();
  UniqueFd old_file = a->duplicate();  // the old file lives on
  REQUIRE(old_file);
  auto t = loop.spawn(
      [a, reports, x] {
        pollfd p{x, POLLIN, 0};
        reports->push(reported(wait_fds(&p, 1, -1)));
        a->reset();  // closed by the task itself
        UniqueFd b = make_eventfd(true);
        reports->push(b.get() == x ? 1 : 0);  // the number came back
        p = pollfd{x, POLLIN, 0};
        const int r = wait_fds(&p, 1, -1);
        // Reading the count orders the test thread's write before b's close
        // for ThreadSanitizer (readiness through epoll does not).
        drain(b.get());
        reports->push(r == 1 && (p.revents & POLLIN) != 0 ? 1 : -1);
      },
      "closes and reopens");
  CHECK(reports->pop(quiet) == std::nullopt);  // the task is in its first wait
  test::signal_eventfd(old_file.get());
  CHECK(reports->pop(test_wait) == 1);
  REQUIRE(reports->pop(test_wait) == 1);
  drain(old_file.get());
  test::signal_eventfd(old_file.get());  // the old file: must not end the wait on the new one
  CHECK(reports->pop(quiet) == std::nullopt);
  test::signal_eventfd(x);  // the new file
  CHECK(reports->pop(test_wait) == 1);
  t.join();
}

TEST_CASE("loop: an fd another thread closes and reuses between a task's waits is watched anew") {
  auto& loop = EventLoop::instance();
  auto reports = std::make_shared<Reports>();
  UniqueFd a = make_eventfd(true);
  UniqueFd go = make_eventfd(true);
  REQUIRE(a);
  REQUIRE(go);
  const int x = a.get(), g = go.get();
  UniqueFd old_file = a.duplicate();
  REQUIRE(old_file);
  auto t = loop.spawn(
      [reports, x, g] {
        for (int round = 0; round < 2; ++round) {
          pollfd p[2] = {{x, POLLIN, 0}, {g, POLLIN, 0}};
          const int r = wait_fds(p, 2, -1);
          if (r <= 0) {
            reports->push(-1);
            return;
          }
          if ((p[1].revents & POLLIN) != 0)
            drain(g);
          reports->push((p[0].revents & POLLIN) != 0 ? 10 + round : round);
        }
      },
      "waits on the same pair");
  CHECK(reports->pop(quiet) == std::nullopt);  // the task is in its first wait
  a.reset();                                    // closed by this thread, while the file lives
  UniqueFd b = make_eventfd(true);
  REQUIRE(b.get() == x);
  test::signal_eventfd(g);
  REQUIRE(reports->pop(test_wait) == 0);  // first wait, ended by `go`
  test::signal_eventfd(old_file.get());                 // must not end the second wait
  CHECK(reports->pop(quiet) == std::nullopt);
  test::signal_eventfd(b.get());
  CHECK(reports->pop(test_wait) == 11);  // second wait, ended by the new file
  t.join();
}

TEST_CASE("loop: a task waiting again and again on 64 eventfds, then on half, is woken by each and only by those") {
  auto& loop = EventLoop::instance();
  constexpr int n = 64;
  auto reports = std::make_shared<Reports>();
  auto fds = std::make_shared<std::vector<UniqueFd>>();
  for (int i = 0; i < n; ++i) {
    fds->push_back(make_eventfd(true));
    REQUIRE(fds->back());
  }
  auto t = loop.spawn(
      [fds, reports] {
        for (int half = 0; half < 2; ++half) {
          std::vector<pollfd> p;
          for (int i = 0; i < n; ++i)
            if (half == 0 || i % 2 == 0)
              p.push_back(pollfd{(*fds)[i].get(), POLLIN, 0});
          const int rounds = half == 0 ? n : 2;
          for (int round = 0; round < rounds; ++round) {
            if (wait_fds(p.data(), p.size(), -1) != 1) {
              reports->push(-1);  // woken by nothing, or by two
              return;
            }
            for (size_t i = 0; i < p.size(); ++i)
              if ((p[i].revents & POLLIN) != 0) {
                drain(p[i].fd);
                reports->push(half == 0 ? static_cast<int>(i) : static_cast<int>(2 * i));
              }
          }
        }
      },
      "many fds");
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i)
    order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(26));
  for (int i : order) {
    test::signal_eventfd((*fds)[i].get());
    REQUIRE(reports->pop(test_wait) == i);
  }
  // The task now waits on the even ones: an odd one must not wake it.
  test::signal_eventfd((*fds)[7].get());
  CHECK(reports->pop(quiet) == std::nullopt);
  test::signal_eventfd((*fds)[12].get());
  CHECK(reports->pop(test_wait) == 12);
  test::signal_eventfd((*fds)[40].get());
  CHECK(reports->pop(test_wait) == 40);
  t.join();
}

TEST_CASE("loop: after interrupt() a task waits on its fds again, and two tasks may wait on one fd") {
  auto& loop = EventLoop::instance();
  auto reports = std::make_shared<Reports>();
  auto ev = std::make_shared<UniqueFd>(make_eventfd(true));
  REQUIRE(*ev);
  const int x = ev->get();
  auto waiter = [reports, x](int id, int waits) {
    return [reports, x, id, waits] {
      for (int i = 0; i < waits; ++i) {
        pollfd p{x, POLLIN, 0};
        const int r = wait_fds(&p, 1, -1);
        reports->push(id * 10 + r);
      }
    };
  };
  auto first = loop.spawn(waiter(1, 2), "interrupted, then woken");
  CHECK(reports->pop(quiet) == std::nullopt);
  first.interrupt();
  CHECK(reports->pop(test_wait) == 10);  // interrupted: nothing ready
  auto second = loop.spawn(waiter(2, 1), "same fd");
  CHECK(reports->pop(quiet) == std::nullopt);
  test::signal_eventfd(x);
  auto one = reports->pop(test_wait), other = reports->pop(test_wait);
  REQUIRE(one);
  REQUIRE(other);
  CHECK(std::min(*one, *other) == 11);
  CHECK(std::max(*one, *other) == 21);
  first.join();
  second.join();
}

TEST_CASE("loop: a task's registrations are closed with it") {
  auto& loop = EventLoop::instance();
  test::FdCount count;
  {
    UniqueFd ev = make_eventfd(true);
    auto reports = std::make_shared<Reports>();
    const int x = ev.get();
    auto t = loop.spawn(
        [reports, x] {
          for (int i = 0; i < 3; ++i) {
            pollfd p{x, POLLIN, 0};
            reports->push(wait_fds(&p, 1, -1));
            drain(x);
          }
        },
        "waits three times");
    for (int i = 0; i < 3; ++i) {
      CHECK(reports->pop(quiet) == std::nullopt);
      test::signal_eventfd(x);
      CHECK(reports->pop(test_wait) == 1);
    }
    t.join();
  }
  CHECK_MESSAGE(count.leaked() == 0, test::FdCount::listing());
}
