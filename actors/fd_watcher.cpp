#include "actors/fd_watcher.hpp"

#include <cerrno>
#include <new>
#include <utility>

#include <poll.h>
#include <unistd.h>

#include "base/wait.hpp"
#include "loop/event_loop.hpp"

namespace vufront::actors {

std::atomic<int> FdWatcher::live_{0};

struct FdWatcher::Core {
  std::vector<Entry> entries;
  std::vector<pollfd> pfds;  // [0] = stop_fd, [i + 1] = entries[i]; built before the thread starts
  Callback cb;
  WakeEnd wake_end;
  UniqueFd stop_fd;
  std::atomic<bool> stopping{false};
  std::atomic<bool> active{true};

  void run() noexcept;
  void end_wake() noexcept;
};

void FdWatcher::Core::end_wake() noexcept {
  if (!wake_end)
    return;
  try {
    wake_end();
  } catch (...) {
  }
}

void FdWatcher::Core::run() noexcept {
  size_t watched = 0;
  for (size_t i = 1; i < pfds.size(); ++i)
    if (pfds[i].fd >= 0)
      ++watched;
  while (watched > 0 && !stopping.load()) {
    int n = wait_fds(pfds.data(), pfds.size(), -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;  // EINVAL/ENOMEM: give up; active() tells the owner
    }
    if (pfds[0].revents != 0)
      break;  // stop requested
    for (size_t i = 1; i < pfds.size(); ++i) {
      const short revents = pfds[i].revents;
      if (pfds[i].fd < 0 || revents == 0)
        continue;
      bool keep = false;
      try {
        keep = cb(entries[i - 1].tag, pfds[i].fd, revents);
      } catch (...) {
        keep = false;
      }
      // The owner may be gone now (or be joining us): its fds may be closed,
      // so touch none of them again.
      if (stopping.load()) {
        end_wake();
        active.store(false);
        return;
      }
      if (!keep || (revents & POLLNVAL) != 0) {
        pfds[i].fd = -1;  // poll() ignores negative fds
        --watched;
      }
    }
    end_wake();
  }
  active.store(false);
}

FdWatcher::FdWatcher(std::shared_ptr<Core> core) : core_(std::move(core)) {}

Result<std::unique_ptr<FdWatcher>> FdWatcher::start(std::vector<Entry> entries, Callback cb,
                                                    WakeEnd wake_end) {
  std::unique_ptr<FdWatcher> watcher;
  try {
    auto core = std::make_shared<Core>();
    core->stop_fd = make_eventfd(true);
    if (!core->stop_fd)
      return make_error(errc::io_error, "fd watcher", "cannot create the stop eventfd", errno);
    core->pfds.reserve(entries.size() + 1);
    core->pfds.push_back(pollfd{core->stop_fd.get(), POLLIN, 0});
    for (const auto& e : entries)
      core->pfds.push_back(pollfd{e.fd, e.events, 0});
    core->entries = std::move(entries);
    core->cb = std::move(cb);
    core->wake_end = std::move(wake_end);
    watcher.reset(new FdWatcher(core));
    ++live_;
    watcher->task_ = loop::EventLoop::instance().spawn(
        [c = std::move(core)] {
          c->run();
          --live_;
        },
        "fd watcher");
  } catch (const std::bad_alloc&) {
    return make_error(errc::io_error, "fd watcher", "out of memory", ENOMEM);
  }
  return Result<std::unique_ptr<FdWatcher>>(std::move(watcher));
}

FdWatcher::~FdWatcher() {
  stop();
  // The owner's last strong reference may be dropped inside the callback:
  // then this destructor runs on the loop thread, and join() does not wait
  // but ends the task's wait at once, so it touches none of the watched
  // fds again; the task returns when it resumes (stopping).
  task_.join();
}

void FdWatcher::stop() noexcept {
  core_->stopping.store(true);
  // The stop eventfd is non-blocking (make_eventfd(true)); a full counter
  // (EAGAIN) is non-zero already: the task wakes anyway.
  (void)add_to_eventfd(core_->stop_fd.get(), 1, true);
}

bool FdWatcher::active() const noexcept {
  return core_->active.load();
}

}  // namespace vufront::actors
