#pragma once
// Ctrl-C for the commands: SIGINT and SIGTERM turned into a call on a thread
// of its own, a second one ending the process.

#include <functional>
#include <mutex>
#include <thread>

#include "base/unique_fd.hpp"

namespace vufront::ops {

/// Turns SIGINT and SIGTERM into a call of `on_signal` (first signal) on a
/// thread of its own; a second signal ends the process at once (exit 130).
/// Construct it before the actor system, so every thread inherits the
/// blocked signals; the destructor restores the signal mask.
class CancelOnSignal {
public:
  /// `what` names what the first signal does in the line it prints
  /// ("cancelling", "stopping"). With `on_hangup`, SIGHUP is caught too and
  /// calls it (on the signal thread) instead of ending the process.
  explicit CancelOnSignal(const char* what = "cancelling", std::function<void()> on_hangup = {});
  ~CancelOnSignal();
  CancelOnSignal(const CancelOnSignal&) = delete;
  CancelOnSignal& operator=(const CancelOnSignal&) = delete;

  /// What the first signal does (e.g. DeviceSession::cancel); replaceable.
  void on_signal(std::function<void()> fn);

private:
  void run();

  std::mutex mutex_;  // guards fn_ and signalled_ (the signal thread calls fn_)
  std::function<void()> fn_;
  std::function<void()> on_hangup_;  // set once, before the thread starts
  bool signalled_ = false;
  UniqueFd signal_fd_;
  UniqueFd stop_fd_;
  bool mask_changed_ = false;
  const char* what_ = "cancelling";
  std::thread thread_;
};

}  // namespace vufront::ops
