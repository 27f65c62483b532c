#pragma once
// The control session actor: one VMM connection of `vufront attach`
// (docs/attach-protocol.md). Detached (it writes to the VMM's socket, each
// write bounded by a short deadline). It sends the greeting, then reads
// packets through its ControlReader, checks each command (envelope, args,
// fds), asks the server for the device and sends the device the matching
// request; every command gets exactly one reply, in whatever order they
// finish. Events from the server are written as they come.
//
// When the VMM closes the connection (or stops reading, or sends garbage
// the transport cannot frame) the session stops reading, waits for the
// commands still running to be answered by their devices, then quits; the
// server then puts the devices to sleep if no VMM is left.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/control_commands.hpp"
#include "actors/command_log.hpp"
#include "actors/control_reader.hpp"
#include "actors/messages.hpp"
#include "base/unique_fd.hpp"

namespace vufront::actors {

struct ControlSessionData {
  static inline const char* name = "vufront.control_session";

  control_server_actor server;
  uint64_t id = 0;
  FilePolicy files;  ///< who may name snapshot files by path (this connection's uid)
  /// What is logged of its commands (snapshot, restore and reconnect with their outcome).
  CommandLog commands;
  size_t in_flight = 0;
  std::set<std::string> transfers;  ///< ids (dumped) of snapshot/restore commands running
  bool closing = false;
  /// Events the server pushed before the greeting went out: sent right after
  /// it, in order (the greeting is the first message of every connection).
  bool greeted = false;
  std::vector<std::pair<json, std::vector<SharedFd>>> early;
  UniqueFd conn;                          ///< before `reader`: it outlives the thread
  std::unique_ptr<ControlReader> reader;  ///< LAST: joined first
};

/// `conn` is the accepted connection (the session keeps a duplicate);
/// `files` its peer's uid and --snapshot-dir.
[[nodiscard]] control_session_actor::behavior_type control_session_impl(
    control_session_actor::stateful_pointer<ControlSessionData> self, control_server_actor server,
    uint64_t id, SharedFd conn, FilePolicy files);

}  // namespace vufront::actors
