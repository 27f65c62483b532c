#pragma once
// WaitSet: the fds a task of the event loop (loop/event_loop.hpp) waits on,
// registered once and kept across its waits.
//
// A task that waits on the same fds again and again (the call and hang-up
// watchers, a connection step reading one reply after another) would
// otherwise register every fd with the loop's epoll and remove it again on
// each wait: three epoll_ctl and an ioctl per fd and wait (BENCHMARKS.md,
// "Interrupt forwarding"). Here each task has an epoll instance of its own
// (level-triggered, created at its first wait that must suspend), which is
// the only fd the loop's io_context watches for it. A wait adds the fds that
// are new to the set, changes the events of those whose events changed and
// removes those that left it; an unchanged set costs no epoll_ctl on it, and
// one (Asio's re-arm) on the loop's epoll for the whole set.
//
// An fd number must never stay registered for a file it no longer names:
//  * a close through UniqueFd calls note_fd_closing() (base/wait.hpp) first:
//    on the loop thread inside the task, forget() removes the registration
//    while the number is still valid; everywhere it also counts the close
//    in fd_closes(fd), and a wait that finds a registered fd's count changed
//    (closed by another thread, or outside the task) throws this epoll
//    instance away and builds a new one, since epoll would keep reporting a
//    closed number whose file lives on elsewhere (an eventfd the back-end
//    holds) and could not remove it any more;
//  * a removal that fails (the number was closed without UniqueFd) does the
//    same.
// clear() drops every registration (TaskHandle::interrupt, the task's end).

#include <cstdint>
#include <optional>
#include <vector>

#include <poll.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront::loop {

class WaitSet {
public:
  explicit WaitSet(boost::asio::io_context& io) : io_(io) {}
  ~WaitSet() { clear(); }
  WaitSet(const WaitSet&) = delete;
  WaitSet& operator=(const WaitSet&) = delete;

  /// Makes the registrations those of fds[0..n) (negative fds ignored, the
  /// same fd twice watched for the union of its events). Errors name the fd.
  Result<void> update(const pollfd* fds, nfds_t n);

  /// Calls `handler(error_code)` once any registered fd is ready (or on
  /// cancel()). update() first, with at least one fd.
  template <class Handler>
  void async_wait(Handler&& handler) {
    desc_->async_wait(boost::asio::posix::descriptor_base::wait_read,
                      std::forward<Handler>(handler));
  }

  /// Ends a pending async_wait (its handler runs with operation_aborted);
  /// the registrations stay.
  void cancel() noexcept;

  /// Drops every registration and the epoll instance.
  void clear() noexcept;

  /// `fd` is about to be closed by this task: unregister it while the number
  /// still names its file.
  void forget(int fd) noexcept;

  /// Registered fds (tests, the loop's counters).
  [[nodiscard]] size_t size() const noexcept { return entries_.size(); }

private:
  struct Entry {
    int fd;
    uint32_t events;  ///< epoll events (poll's bits have the same values)
    uint32_t closes;  ///< fd_closes(fd) when registered
  };

  [[nodiscard]] bool unchanged(const pollfd* fds, nfds_t n) const noexcept;
  Result<void> open();
  Result<void> rebuild(std::vector<Entry> wanted);
  Result<void> control(int op, const Entry& e);

  boost::asio::io_context& io_;
  UniqueFd epoll_;
  std::optional<boost::asio::posix::stream_descriptor> desc_;
  std::vector<Entry> entries_;  ///< in the order of the last wait's fds
};

}  // namespace vufront::loop
