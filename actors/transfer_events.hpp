#pragma once
// A snapshot's or restore's progress as `transfer_progress` events of the
// attach control protocol (docs/attach-protocol.md, "Events"), for the VMM
// that sent the command: an actor that takes the transfer's (progress_atom,
// done, total) and pushes events to that VMM's control session.

#include <cstdint>
#include <string>

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/messages.hpp"

namespace vufront::actors {

/// The event: {"event": "transfer_progress", "device", "op" ("snapshot",
/// "restore"), "done", "total" (null while unknown: a snapshot learns the
/// state's size at its end), "elapsed_ms", "eta_ms" (null while unknown)}.
/// A restore first checks its whole file, then loads it: `done` starts again
/// from 0 for the load, and so does `elapsed_ms`.
[[nodiscard]] nlohmann::json transfer_progress_event(const std::string& device, const std::string& op,
                                                     uint64_t done, uint64_t total,
                                                     uint64_t elapsed_us);

/// Spawns the relay for one transfer of `device` (`op`: "snapshot" or
/// "restore"; `command`: the command's id, dumped), sending its events to
/// `session`: the first progress, then at most one a second; never an end
/// (done = total): the session sends the last event itself, with the
/// transfer's result, before its reply, and drops the relay's late ones.
[[nodiscard]] caf::actor spawn_transfer_events(caf::local_actor* parent, control_session_actor session,
                                               std::string command, std::string device,
                                               std::string op);

}  // namespace vufront::actors
