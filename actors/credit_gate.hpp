#pragma once
// CreditGate: what a reader thread needs to hand what it reads to an actor
// without flooding its mailbox, and to be stopped at any moment: a number
// of credits (an EFD_SEMAPHORE eventfd; the thread takes one per message it
// sends, the actor gives it back when it handled the message) and a stop
// eventfd every wait also watches. Used by the back-end channel's reader
// (actors/backend_channel.cpp) and the attach control reader
// (actors/control_reader.cpp). No mutex: two eventfds and an atomic flag.

#include <atomic>
#include <cstdint>
#include <memory>

#include "base/unique_fd.hpp"
#include "base/error.hpp"

namespace vufront::actors {

class CreditGate {
public:
  /// `credits` >= 1. Errors: io_error (eventfd), request `what`.
  [[nodiscard]] static Result<std::unique_ptr<CreditGate>> create(uint32_t credits, const char* what);

  enum class Wake { ready, stop, error };
  /// Waits until `fd` is readable (or hung up) or stop() was called. On
  /// error, `err` is the errno (EBADF for POLLNVAL).
  [[nodiscard]] Wake wait_readable(int fd, int& err) const;
  /// Takes one credit, waiting for one to come back if needed. false: stop
  /// (err 0) or the eventfd failed (err = errno).
  [[nodiscard]] bool take(int& err) const;
  /// Gives `n` credits back (any thread).
  void give(uint64_t n) const noexcept;

  /// Tells every wait to return Wake::stop / false; idempotent, any thread.
  void stop() noexcept;
  [[nodiscard]] bool stopping() const noexcept { return stopping_.load(); }

private:
  CreditGate(UniqueFd stop, UniqueFd credits) : stop_(std::move(stop)), credits_(std::move(credits)) {}

  UniqueFd stop_;     ///< eventfd; readable = stop
  UniqueFd credits_;  ///< EFD_SEMAPHORE | EFD_NONBLOCK eventfd
  std::atomic<bool> stopping_{false};
};

}  // namespace vufront::actors
