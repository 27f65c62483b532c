#include "app/backend_wait.hpp"

#include <cstdio>

#include "base/unix_socket.hpp"

namespace vufront::app {

std::string backend_wait_note(const std::string& socket, std::chrono::milliseconds timeout) {
  const SocketPath now = inspect_socket_path(socket);
  if (now.kind == SocketPathKind::socket)
    return "";
  char secs[32];
  std::snprintf(secs, sizeof secs, "%g", static_cast<double>(timeout.count()) / 1000.0);
  return std::string("waiting up to ") + secs + " s for a back-end to listen at " + socket +
         " (now: " + now.text + ")";
}

}  // namespace vufront::app
