#pragma once
// The transport of the attach control protocol (docs/attach-protocol.md): a
// unix SOCK_SEQPACKET socket, one JSON message per packet, fds passed with
// SCM_RIGHTS in the packet they belong to. Both sides use this file: the
// attach server (actors/control_*) and the client library (control/client).
// No CAF, no JSON.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "base/unix_socket.hpp"

namespace vufront::control {

using Clock = std::chrono::steady_clock;

/// Largest packet either side sends or accepts.
inline constexpr size_t max_packet_bytes = 65536;
/// Most fds in one packet.
inline constexpr size_t max_packet_fds = 16;

/// One received packet.
struct Packet {
  std::string text;           ///< the bytes (at most max_packet_bytes)
  std::vector<UniqueFd> fds;  ///< owned, CLOEXEC
  /// The packet was larger than max_packet_bytes (`size` tells how large);
  /// `text` holds its beginning only.
  bool truncated = false;
  size_t size = 0;
  /// More fds than max_packet_fds were sent: the kernel dropped (closed) the
  /// rest; `fds` holds those that arrived.
  bool fds_truncated = false;
};

/// Creates PATH as a listening SOCK_SEQPACKET socket (CLOEXEC) with the
/// mode and group of `opts` (default 0600) set before anyone can connect. An existing socket file that
/// nobody listens on is replaced; any other existing file is an error.
/// Errors: io_error, invalid_argument (path too long), bad_state (in use).
[[nodiscard]] Result<UniqueFd> listen_at(const std::string& path, const ListenOptions& opts,
                                         int backlog = 8);

/// Accepts one connection (CLOEXEC). Errors: io_error (EAGAIN included).
[[nodiscard]] Result<UniqueFd> accept_from(int listen_fd);

/// Connects to PATH, retrying while nobody listens yet until `timeout`.
/// Errors: io_error, timeout, invalid_argument (path too long).
[[nodiscard]] Result<UniqueFd> connect_to(const std::string& path, std::chrono::milliseconds timeout);

/// The uid of the peer (SO_PEERCRED). Errors: io_error.
[[nodiscard]] Result<uint32_t> peer_uid(int fd);

/// Sends one packet (MSG_NOSIGNAL) with `fds`, waiting for room until
/// `deadline`. Errors: oversized (text or fd count over the limits),
/// disconnected (EPIPE / ECONNRESET), timeout, io_error.
[[nodiscard]] Result<void> send_packet(int fd, std::string_view text, const std::vector<int>& fds,
                                       Clock::time_point deadline);

/// Receives one packet, waiting until `deadline`. nullopt: the peer closed
/// the connection (EOF). Errors: timeout, io_error, disconnected (reset).
[[nodiscard]] Result<std::optional<Packet>> receive_packet(int fd, Clock::time_point deadline);

/// Receives one packet if one is waiting (never blocks): nullopt when none
/// is; EOF is errc::disconnected.
[[nodiscard]] Result<std::optional<Packet>> try_receive_packet(int fd);

}  // namespace vufront::control
