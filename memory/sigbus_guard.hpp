#pragma once
// SigbusGuard: survives the SIGBUS of reading a mapped file that another
// process truncated. Touching a page of a MAP_SHARED file mapping that now
// lies past the file's end raises SIGBUS (BUS_ADRERR) instead of failing a
// read(2); without a guard the process dies.
//
// One process-wide SIGBUS handler, installed on the first guard (never
// removed; installed again by a later guard if something replaced it), and a fixed registry of kSlots guarded ranges (lock-free slots:
// state, start, length, fault count; std::atomic, so the handler may read
// them). A BUS_ADRERR fault inside an active range maps an anonymous,
// read-only zero page over the faulting page (mmap MAP_FIXED), counts the
// fault in the slot and returns: the access is retried and reads zeros, the
// copy or hash goes on, and the owner asks faulted() afterwards to fail with
// a clear error. Any other SIGBUS (outside every range, a machine-check
// code, one sent with kill) goes to the handler that was installed before
// ours: called if it was a function, the default action (the process dies
// by SIGBUS, core dump as usual) if it was SIG_DFL.
//
// The kernel's own copies from such a mapping (write(2) from it into a pipe)
// do not raise SIGBUS: they fail with EFAULT, which callers handle themselves.
//
// Thread safety: guard() and the destructor from any thread; the handler
// runs in the faulting thread. A range must stay mapped while it is guarded
// (release the guard, then munmap).

#include <cstddef>

#include "base/error.hpp"

namespace vufront {

class SigbusGuard {
public:
  /// Ranges guarded at the same time, process-wide.
  static constexpr int kSlots = 16;

  /// Installs the handler if it is not yet (chaining to the one before) and
  /// guards [start, start+len). Errors (request "SIGBUS guard"):
  /// invalid_argument (null start or len 0), io_error (sigaction failed),
  /// busy (all kSlots slots in use).
  [[nodiscard]] static Result<SigbusGuard> guard(const void* start, size_t len);

  SigbusGuard() = default;
  ~SigbusGuard();
  SigbusGuard(SigbusGuard&& other) noexcept;
  SigbusGuard& operator=(SigbusGuard&& other) noexcept;
  SigbusGuard(const SigbusGuard&) = delete;
  SigbusGuard& operator=(const SigbusGuard&) = delete;

  /// Pages of the range that faulted (and now read as zeros) so far.
  [[nodiscard]] unsigned faults() const noexcept;
  [[nodiscard]] bool faulted() const noexcept { return faults() > 0; }
  [[nodiscard]] bool active() const noexcept { return slot_ >= 0; }

  /// Stops guarding (the slot is free again); idempotent.
  void release() noexcept;

  /// Slots in use now (tests).
  [[nodiscard]] static int slots_in_use() noexcept;

private:
  explicit SigbusGuard(int slot) : slot_(slot) {}
  int slot_ = -1;
};

}  // namespace vufront
