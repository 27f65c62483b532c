#pragma once
// The request trace (`--trace`): one log line per vhost-user message each
// way, written by Connection (protocol/connection.hpp) where the message is
// framed. A Connection has a MessageTrace only while the trace is on
// (log::tracing() when it was made), so with the trace off a message costs
// one null-pointer test.
//
//   trace: /tmp/b.sock -> GET_FEATURES (flags 0x1, 0 bytes, 0 fds)
//   trace: /tmp/b.sock <- GET_FEATURES reply (flags 0x5, 8 bytes, 0 fds) after 0.084 ms
//   trace: back-end channel <- BACKEND_SHMEM_MAP (flags 0x9, 40 bytes, 1 fd)
//   trace: back-end channel -> BACKEND_SHMEM_MAP reply (flags 0x5, 8 bytes, 0 fds) after 0.051 ms
//
// A reply's time runs from when its request last went the other way. The
// back-end channel's reader and writer are two Connections that share one
// MessageTrace, so its replies are timed too.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace vufront {

class MessageTrace {
public:
  /// Whose requests flow on the connection: the front-end's (vhost-user
  /// socket) or the back-end's (the back-end channel); names the codes.
  enum class Channel : uint8_t { frontend, backend };

  MessageTrace(Channel channel, std::string label);

  /// A message sent (outgoing) or received, as framed.
  void sent(uint32_t request, uint32_t flags, size_t size, size_t nfds);
  void received(uint32_t request, uint32_t flags, size_t size, size_t nfds);

  /// The name lines start with (the socket's path, "back-end channel").
  void relabel(std::string label);

  /// A MessageTrace when the trace is on (log::tracing()), else null.
  [[nodiscard]] static std::shared_ptr<MessageTrace> if_tracing(Channel channel, std::string label);

private:
  using Clock = std::chrono::steady_clock;
  void line(bool outgoing, uint32_t request, uint32_t flags, size_t size, size_t nfds);

  const Channel channel_;
  std::mutex mutex_;  ///< the channel's reader and writer share a MessageTrace
  std::string label_;
  /// Request code -> when it last went out (front-end) or came in (back-end channel).
  std::map<uint32_t, Clock::time_point> pending_;
};

}  // namespace vufront
