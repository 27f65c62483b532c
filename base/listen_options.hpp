#pragma once
// The command line's words for who may connect to a socket vufront listens
// on (ListenOptions in base/unix_socket.hpp), and the one rule that turns
// them into a mode and a group. Used for the attach control socket
// (--control-mode, --control-group) and the client-mode back-end sockets
// (--listen-mode, --listen-group); the VMM-facing sockets to come use them too.

#include <cstdint>
#include <optional>
#include <string>

#include "base/error.hpp"
#include "base/unix_socket.hpp"

namespace vufront {

/// An octal mode of a socket file, "0660" or "660": 0..0777, the digits
/// 0-7 only. Errors: invalid_argument naming `option`.
[[nodiscard]] Result<unsigned> parse_socket_mode(const std::string& text, const std::string& option);

/// A group by name ("kvm") or number ("36"). Errors: invalid_argument
/// naming `option` (no such group, or a malformed number).
[[nodiscard]] Result<uint32_t> parse_group(const std::string& text, const std::string& option);

/// A user by name ("qemu", getpwnam) or number ("107"), as --allow-uid takes
/// it. Errors: invalid_argument naming `option` (no such user, or a
/// malformed number).
[[nodiscard]] Result<uint32_t> parse_user(const std::string& text, const std::string& option);

/// The rule, in one place:
///   * a mode given is used as given;
///   * else a group given: 0660 (the group may connect);
///   * else other uids must be able to connect (attach --allow-uid): 0666,
///     and the peer-uid check (SO_PEERCRED) stays the real gate;
///   * else 0600 (only vufront's own uid).
[[nodiscard]] ListenOptions listen_options(std::optional<unsigned> mode, std::optional<uint32_t> group,
                                           bool other_uids_connect);

/// "mode 0660, group 36" for logs.
[[nodiscard]] std::string describe(const ListenOptions& o);

}  // namespace vufront
