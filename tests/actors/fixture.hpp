#pragma once
// Fixtures for actor tests (CAF 0.17).
//
// RtFixture: the real scheduler (SystemConfig); talk to actors from the test
//   thread with `self` (a scoped_actor) and always a finite timeout, so a lost
//   message fails the test instead of hanging it.
// DetFixture: CAF's test_coordinator (TestSystemConfig): nothing runs until
//   the test calls sched.run()/run_once(); detached actors still get threads,
//   so use scheduled actors and fakes there.
// Both remember what they spawn (weakly) and send it an exit at the end:
// a pending timer holds a strong reference and would make ~actor_system wait.

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/messages.hpp"
#include "actors/system.hpp"

namespace vufront::test {

class ActorTracker {
public:
  template <class Handle>
  void track(const Handle& h) {
    tracked_.push_back(caf::actor_cast<caf::actor_addr>(h));
  }
  void exit_all() {
    for (auto& a : tracked_)
      if (auto h = caf::actor_cast<caf::actor>(a))
        caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    tracked_.clear();
  }

private:
  std::vector<caf::actor_addr> tracked_;
};

struct RtFixture : ActorTracker {
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};

  ~RtFixture() { exit_all(); }

  template <caf::spawn_options Os = caf::no_spawn_options, class F, class... Ts>
  auto spawn(F fn, Ts&&... xs) {
    auto h = sys.spawn<Os>(fn, std::forward<Ts>(xs)...);
    track(h);
    return h;
  }

  /// Blocking request with a deadline; the value, or the error as a message.
  template <class T, class Handle, class... Args>
  std::pair<std::optional<T>, std::string> ask(const Handle& h, std::chrono::milliseconds timeout,
                                               Args&&... args) {
    std::pair<std::optional<T>, std::string> out;
    self->request(h, timeout, std::forward<Args>(args)...)
        .receive([&](T& v) { out.first = std::move(v); },
                 [&](caf::error& e) { out.second = actors::from_caf(e, "request").message(); });
    return out;
  }

  /// For requests answered with ok_atom: "" on success, else the error.
  template <class Handle, class... Args>
  std::string ask_ok(const Handle& h, std::chrono::milliseconds timeout, Args&&... args) {
    std::string err;
    self->request(h, timeout, std::forward<Args>(args)...)
        .receive([&](caf::ok_atom) {},
                 [&](caf::error& e) { err = actors::from_caf(e, "request").message(); });
    return err;
  }
};

struct DetFixture : ActorTracker {
  actors::TestSystemConfig cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys, true};
  caf::scheduler::test_coordinator& sched;

  DetFixture() : sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {}
  ~DetFixture() {
    exit_all();
    sched.run();
  }

  template <caf::spawn_options Os = caf::no_spawn_options, class F, class... Ts>
  auto spawn(F fn, Ts&&... xs) {
    auto h = sys.spawn<Os>(fn, std::forward<Ts>(xs)...);
    track(h);
    return h;
  }
};

}  // namespace vufront::test
