#include "actors/progress_line.hpp"

#include <chrono>
#include <cstdio>
#include <string>

#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

namespace vufront::actors {

namespace {

using Clock = std::chrono::steady_clock;

struct ProgressLine {
  ProgressRender render;
  Clock::time_point start = Clock::now();
  bool drawn = false;
  bool closed = false;
};

caf::behavior progress_line_impl(caf::stateful_actor<ProgressLine>* self, ProgressRender render) {
  self->state.render = std::move(render);
  return {
      [self](progress_atom, uint64_t done, uint64_t total) {
        auto& st = self->state;
        if (st.closed)
          return;
        auto us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - st.start).count());
        const std::string line = st.render(done, total, us);
        std::fprintf(stderr, "\r\x1b[K%s", line.c_str());
        std::fflush(stderr);
        st.drawn = true;
      },
      [self](caf::close_atom) {
        auto& st = self->state;
        if (st.drawn && !st.closed) {
          std::fputs("\r\x1b[K", stderr);
          std::fflush(stderr);
        }
        st.closed = true;
        self->quit();
        return caf::ok_atom_v;
      },
  };
}

}  // namespace

caf::actor spawn_progress_line(caf::actor_system& sys, ProgressRender render) {
  return sys.spawn(progress_line_impl, std::move(render));
}

void close_progress_line(caf::actor_system& sys, const caf::actor& line) {
  if (!line)
    return;
  caf::scoped_actor self{sys};
  self->request(line, std::chrono::seconds(1), caf::close_atom_v)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});
}

}  // namespace vufront::actors
