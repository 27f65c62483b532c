#include "actors/transfer_events.hpp"

#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/progress_line.hpp"
#include "control/protocol.hpp"

namespace vufront::actors {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds event_every{1};

struct TransferEvents {
  control_session_actor session;
  std::string command;
  std::string device;
  std::string op;
  bool sent = false;
  uint64_t last_done = 0;
  Clock::time_point part_start = Clock::now();
  Clock::time_point last_sent;
};

caf::behavior transfer_events_impl(caf::stateful_actor<TransferEvents>* self,
                                   control_session_actor session, std::string command,
                                   std::string device, std::string op) {
  auto& init = self->state;
  init.session = std::move(session);
  init.command = std::move(command);
  init.device = std::move(device);
  init.op = std::move(op);
  return {
      [self](progress_atom, uint64_t done, uint64_t total) {
        auto& st = self->state;
        const auto now = Clock::now();
        if (done < st.last_done)  // a restore's load after its check
          st.part_start = now;
        st.last_done = done;
        if (total > 0 && done >= total)  // an end: the session reports the last one
          return;
        if (st.sent && now - st.last_sent < event_every)
          return;
        st.sent = true;
        st.last_sent = now;
        const auto us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now - st.part_start).count());
        self->send(st.session, progress_atom_v, st.command,
                   transfer_progress_event(st.device, st.op, done, total, us));
      },
  };
}

}  // namespace

nlohmann::json transfer_progress_event(const std::string& device, const std::string& op,
                                       uint64_t done, uint64_t total, uint64_t elapsed_us) {
  const auto eta = eta_us(done, total, elapsed_us);
  return control::make_event(
      "transfer_progress", device,
      {{"op", op},
       {"done", done},
       {"total", total ? nlohmann::json(total) : nlohmann::json(nullptr)},
       {"elapsed_ms", elapsed_us / 1000},
       {"eta_ms", eta ? nlohmann::json(*eta / 1000) : nlohmann::json(nullptr)}});
}

caf::actor spawn_transfer_events(caf::local_actor* parent, control_session_actor session,
                                 std::string command, std::string device, std::string op) {
  return parent->spawn(transfer_events_impl, std::move(session), std::move(command),
                       std::move(device), std::move(op));
}

}  // namespace vufront::actors
