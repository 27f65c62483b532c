#include "ops/cancel_on_signal.hpp"

#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "base/log.hpp"

namespace vufront::ops {

namespace {
sigset_t cancel_signals(bool hangup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (hangup)
    sigaddset(&set, SIGHUP);
  return set;
}
sigset_t saved_mask;  // the mask before the first CancelOnSignal (one at a time)
}  // namespace

CancelOnSignal::CancelOnSignal(const char* what, std::function<void()> on_hangup)
    : on_hangup_(std::move(on_hangup)), what_(what) {
  sigset_t set = cancel_signals(static_cast<bool>(on_hangup_));
  if (::pthread_sigmask(SIG_BLOCK, &set, &saved_mask) != 0)
    return;
  mask_changed_ = true;
  signal_fd_ = UniqueFd::adopt(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  stop_fd_ = make_eventfd();
  if (signal_fd_ && stop_fd_)
    thread_ = std::thread([this] { run(); });
}

CancelOnSignal::~CancelOnSignal() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
  }
  if (mask_changed_)
    ::pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
}

void CancelOnSignal::on_signal(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  fn_ = std::move(fn);
}

void CancelOnSignal::on_quit(std::function<std::string()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  quit_fn_ = std::move(fn);
}

void CancelOnSignal::run() {
  pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  for (;;) {
    int r = ::poll(fds, 2, -1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 || (fds[1].revents & POLLIN))
      return;
    signalfd_siginfo info{};
    if (::read(signal_fd_.get(), &info, sizeof info) != static_cast<ssize_t>(sizeof info))
      continue;
    if (info.ssi_signo == SIGHUP) {
      if (on_hangup_)
        on_hangup_();
      continue;
    }
    // Under the lock: on_signal(nullptr) then waits until a call in progress
    // is over, so whatever fn_ refers to may be destroyed right after it.
    std::lock_guard<std::mutex> lock(mutex_);
    // A terminal may show a progress line (actors/progress_line.hpp): the
    // log line starts on a line of its own.
    if (::isatty(STDERR_FILENO) == 1)
      std::fputc('\n', stderr);
    if (signalled_) {
      log::warning("interrupted again, quitting at once");
      const std::string left = quit_fn_ ? quit_fn_() : std::string();
      if (!left.empty())
        log::warning(left);
      std::_Exit(exit_interrupted);
    }
    signalled_ = true;
    interrupted_.store(true);
    log::warning(std::string(what_) + " (interrupt again to quit at once)");
    if (fn_)
      fn_();
  }
}

}  // namespace vufront::ops
