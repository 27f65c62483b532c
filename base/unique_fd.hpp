#pragma once
// Ownership of file descriptors. No owning bare `int` exists anywhere in the
// project: an fd is born inside a UniqueFd (a named factory or `adopt`) and is
// closed when its owner goes away. Everything is created O_CLOEXEC.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace vufront {

/// Move-only owner of one file descriptor.
class UniqueFd {
public:
  UniqueFd() noexcept = default;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other)
      reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  /// OWNERSHIP: takes `fd` (which must be open or -1); it is closed with this object.
  [[nodiscard]] static UniqueFd adopt(int fd) noexcept { return UniqueFd{fd}; }

  /// The raw descriptor, still owned by this object (-1 when empty).
  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  /// Gives up ownership; the caller must close the result.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the owned fd (if any).
  void reset() noexcept { reset(-1); }

  /// A new owner of a duplicate (F_DUPFD_CLOEXEC); empty on failure (errno set).
  [[nodiscard]] UniqueFd duplicate() const noexcept;

private:
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  void reset(int fd) noexcept;

  int fd_ = -1;
};

/// Copyable, reference-counted fd: what travels where copies are required
/// (CAF messages); closed when the last copy goes away.
using SharedFd = std::shared_ptr<const UniqueFd>;

inline SharedFd share(UniqueFd fd) {
  return std::make_shared<const UniqueFd>(std::move(fd));
}

// ---- named factories. Each returns an empty UniqueFd on failure with errno set.

/// eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0)).
[[nodiscard]] UniqueFd make_eventfd(bool nonblocking = true) noexcept;

/// memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING) resized to `size` bytes.
[[nodiscard]] UniqueFd make_memfd(const char* name, uint64_t size) noexcept;

/// A pipe2(O_CLOEXEC); both ends empty on failure.
struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};
[[nodiscard]] Pipe make_pipe() noexcept;

/// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC); both empty on failure.
struct SocketPair {
  UniqueFd first;
  UniqueFd second;
};
[[nodiscard]] SocketPair make_socketpair() noexcept;

/// Number of fds open in this process (reads /proc/self/fd); -1 on failure.
/// Used by tests and soak checks to prove nothing leaks.
[[nodiscard]] int count_open_fds() noexcept;

/// Sets or clears O_NONBLOCK; returns false (errno set) on failure.
[[nodiscard]] bool set_nonblocking(int fd, bool on) noexcept;

} // namespace vufront
