#pragma once
// One error type for the whole non-actor code base: a code, the request (or
// operation) that failed, errno where a syscall failed, and a detail line.
// Functions return Result<T>; nothing throws across module boundaries.

#include <cassert>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace vufront {

enum class errc : unsigned char {
  io_error = 1,        ///< a syscall failed (sys_errno says which)
  disconnected,        ///< the peer closed the connection (EOF)
  timeout,             ///< a deadline passed before the peer answered
  broken,              ///< the connection was marked broken by an earlier error
  oversized,           ///< a header announced more bytes than that message may carry
  bad_size,            ///< a body had the wrong size for its message
  bad_flags,           ///< version/reply/reserved flag bits wrong
  unexpected_reply,    ///< a reply for a different request than the pending one
  bad_fds,             ///< missing, surplus or truncated file descriptors
  invalid_payload,     ///< the body's values are out of range or inconsistent
  unknown_request,     ///< a request code this side does not know
  backend_failure,     ///< the back-end answered with a failure status
  not_negotiated,      ///< the request needs a feature that was not negotiated
  invalid_argument,    ///< the caller passed something unusable
  bad_state,           ///< not valid in the current state
  cancelled,           ///< the caller cancelled the operation
  bad_message,         ///< a control message that is not what the protocol says
  not_found,           ///< no such device (control protocol)
  busy,                ///< too much in progress; try again later
  permission_denied,   ///< the peer is not allowed (control socket)
};

/// The code named `name` (to_string's inverse), if there is one.
[[nodiscard]] bool errc_from_string(const std::string& name, errc& out) noexcept;

/// Stable lower_snake name of a code ("timeout", "bad_fds", ...).
[[nodiscard]] const char* to_string(errc code) noexcept;

struct Error {
  errc code = errc::io_error;
  /// The operation the request was part of ("sleep", "snapshot"), when the
  /// error crossed an operation: a field, so nobody glues or cuts strings.
  std::string op;
  std::string request;  ///< the request/operation that failed, e.g. "GET_CONFIG"
  int sys_errno = 0;    ///< errno for io_error, 0 otherwise
  std::string detail;   ///< what exactly was wrong, for a human

  /// Whether reconnecting to the back-end (a new connection, state replayed)
  /// can help: true for transport failures and protocol violations of a
  /// back-end that may be restarted, false for caller errors and refusals.
  [[nodiscard]] bool reconnect_may_help() const noexcept;

  /// One line: "GET_CONFIG: bad_size: reply body is 8 bytes, expected 72",
  /// with the operation in front when there is one ("sleep: GET_VRING_BASE: ...").
  [[nodiscard]] std::string message() const;
};

/// `e` as part of operation `op`: op set (unless it already names one), and a
/// request that only repeated the operation's name cleared.
[[nodiscard]] Error in_operation(Error e, const std::string& op);

[[nodiscard]] Error make_error(errc code, std::string request, std::string detail,
                               int sys_errno = 0);

/// "0x1f": lower-case hex for error details and reports.
[[nodiscard]] std::string hex(uint64_t v);

/// A value or an Error. Minimal on purpose (C++17 has no std::expected and
/// Debian 12 packages no implementation of it).
template <class T>
class [[nodiscard]] Result {
public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error err) : v_(std::in_place_index<1>, std::move(err)) {}

  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& { assert(!ok()); return std::get<1>(v_); }
  Error&& error() && { assert(!ok()); return std::get<1>(std::move(v_)); }

private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(Error err) : err_(std::move(err)), failed_(true) {}

  [[nodiscard]] bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const& { assert(failed_); return err_; }
  Error&& error() && { assert(failed_); return std::move(err_); }

private:
  Error err_;
  bool failed_ = false;
};

/// Result<void> success value, for readability: `return ok();`
inline Result<void> ok() { return {}; }

} // namespace vufront
