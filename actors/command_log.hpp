#pragma once
// CommandLog: what `vufront attach` logs of a VMM connection's commands.
// snapshot, restore and reconnect are logged when they come and again with
// their outcome and time ("session 3: disk0: snapshot: ok (/s/a.snap, 67109496
// state bytes) in 121.8 ms", a warning when they failed); every other
// command at debug level. One per control session; not thread-safe (the
// session actor's).

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "control/protocol.hpp"

namespace vufront::actors {

class CommandLog {
public:
  /// Logs the start of `c` (for `device`) on session `session`; keeps the
  /// ones logged with their outcome, by the command's id.
  void start(uint64_t session, const control::Command& c, const std::string& device);
  /// Logs the outcome of the command `reply` answers, if start() kept it.
  void finish(const nlohmann::json& reply);

private:
  struct Logged {
    std::string what;
    std::chrono::steady_clock::time_point start;
  };
  std::multimap<std::string, Logged> logged_;  ///< by the command's id (JSON text)
};

}  // namespace vufront::actors
