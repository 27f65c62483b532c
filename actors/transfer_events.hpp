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
/// "restore"), "phase" ("save"; a restore: "check" its file, then "load"),
/// "done", "total" (null while unknown: a snapshot learns the state's size
/// at its end), "elapsed_ms" (of the phase), "eta_ms" (null while unknown)}.
[[nodiscard]] nlohmann::json transfer_progress_event(const std::string& device, const std::string& op,
                                                     const std::string& phase, uint64_t done,
                                                     uint64_t total, uint64_t elapsed_us);

/// Spawns the relay for one transfer of `device` (`op`: "snapshot" or
/// "restore"), pushing to `session`: the first progress of each phase, then at
/// most one a second. The session sends the last event itself, with the
/// transfer's result, before its reply; it ends the relay then.
[[nodiscard]] caf::actor spawn_transfer_events(caf::local_actor* parent, control_session_actor session,
                                               std::string device, std::string op);

}  // namespace vufront::actors
