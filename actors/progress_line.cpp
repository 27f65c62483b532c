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
  uint64_t last_done = 0;
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
        if (done < st.last_done)
          st.start = Clock::now();  // the next phase of the transfer
        st.last_done = done;
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

std::optional<uint64_t> eta_us(uint64_t done, uint64_t total, uint64_t elapsed_us) {
  if (total == 0 || done == 0)
    return std::nullopt;
  if (done >= total)
    return uint64_t{0};
  const double rate = static_cast<double>(done) / static_cast<double>(elapsed_us ? elapsed_us : 1);
  return static_cast<uint64_t>(static_cast<double>(total - done) / rate);
}

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
