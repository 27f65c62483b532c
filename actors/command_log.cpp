#include "actors/command_log.hpp"

#include <cstdio>

#include "base/log.hpp"

namespace vufront::actors {

namespace {

using json = nlohmann::json;

/// The commands attach logs with their outcome (the others at debug level).
bool logged_command(const std::string& cmd) {
  return cmd == "snapshot" || cmd == "restore" || cmd == "reconnect";
}

/// "ok (PATH, N state bytes)" or "failed: MESSAGE" of a reply.
std::string outcome(const json& reply) {
  if (reply.value("ok", false)) {
    const json r = reply.value("result", json::object());
    std::string out = "ok";
    if (r.contains("path") && r["path"].is_string())
      out += " (" + r["path"].get<std::string>() + ", " + r.value("state_bytes", json()).dump() +
             " state bytes)";
    return out;
  }
  const json e = reply.value("error", json::object());
  return "failed: " + (e.contains("message") && e["message"].is_string()
                           ? e["message"].get<std::string>()
                           : e.dump());
}

}  // namespace

void CommandLog::start(uint64_t session, const control::Command& c, const std::string& device) {
  const std::string what = "session " + std::to_string(session) + ": " + device + ": " + c.cmd;
  if (!logged_command(c.cmd)) {
    log::debug(what + " (id " + c.id.dump() + ")");
    return;
  }
  log::info(what + " (id " + c.id.dump() + ")");
  logged_.emplace(c.id.dump(), Logged{what, std::chrono::steady_clock::now()});
}

void CommandLog::finish(const json& reply) {
  if (logged_.empty() || !reply.is_object() || !reply.contains("id"))
    return;
  auto it = logged_.find(reply["id"].dump());
  if (it == logged_.end())
    return;
  const std::chrono::duration<double, std::milli> took =
      std::chrono::steady_clock::now() - it->second.start;
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.1f ms", took.count());
  const bool ok = reply.value("ok", false);
  const std::string line = it->second.what + ": " + outcome(reply) + " in " + ms;
  logged_.erase(it);
  if (ok)
    log::info(line);
  else
    log::warning(line);
}

}  // namespace vufront::actors
