#include "loop/wait_set.hpp"

#include <cerrno>
#include <string>
#include <utility>

#include <sys/epoll.h>

#include "base/wait.hpp"

namespace vufront::loop {

namespace {

/// poll()'s event bits a wait may ask for; epoll's have the same values.
uint32_t epoll_events(short events) noexcept {
  constexpr unsigned asked =
      POLLIN | POLLPRI | POLLOUT | POLLRDNORM | POLLRDBAND | POLLWRNORM | POLLWRBAND | POLLRDHUP;
  return static_cast<uint16_t>(events) & asked;
}

template <class Entries>
auto find_fd(Entries& entries, int fd) noexcept {
  for (auto it = entries.begin(); it != entries.end(); ++it)
    if (it->fd == fd)
      return it;
  return entries.end();
}

}  // namespace

bool WaitSet::unchanged(const pollfd* fds, nfds_t n) const noexcept {
  if (!epoll_)
    return false;
  size_t k = 0;
  for (nfds_t i = 0; i < n; ++i) {
    if (fds[i].fd < 0)
      continue;
    if (k == entries_.size())
      return false;
    const Entry& e = entries_[k++];
    if (e.fd != fds[i].fd || e.events != epoll_events(fds[i].events) ||
        e.closes != fd_closes(e.fd))
      return false;
  }
  return k == entries_.size();
}

Result<void> WaitSet::update(const pollfd* fds, nfds_t n) {
  if (unchanged(fds, n))
    return ok();
  std::vector<Entry> wanted;
  wanted.reserve(n);
  for (nfds_t i = 0; i < n; ++i) {
    if (fds[i].fd < 0)
      continue;
    if (auto w = find_fd(wanted, fds[i].fd); w != wanted.end())
      w->events |= epoll_events(fds[i].events);
    else
      wanted.push_back(Entry{fds[i].fd, epoll_events(fds[i].events), fd_closes(fds[i].fd)});
  }
  if (!epoll_)
    return rebuild(std::move(wanted));
  // A registered number closed since (not through forget()): its old file
  // may still be in the epoll instance, beyond removal by number.
  for (const auto& e : entries_)
    if (e.closes != fd_closes(e.fd))
      return rebuild(std::move(wanted));
  for (const auto& e : entries_)
    if (find_fd(wanted, e.fd) == wanted.end() && !control(EPOLL_CTL_DEL, e))
      return rebuild(std::move(wanted));  // closed without UniqueFd
  for (const auto& w : wanted) {
    auto old = find_fd(entries_, w.fd);
    if (old == entries_.end()) {
      if (auto r = control(EPOLL_CTL_ADD, w); !r)
        return r;
    } else if (old->events != w.events) {
      if (auto r = control(EPOLL_CTL_MOD, w); !r)
        return r;
    }
  }
  entries_ = std::move(wanted);
  return ok();
}

Result<void> WaitSet::rebuild(std::vector<Entry> wanted) {
  clear();
  if (auto r = open(); !r)
    return r;
  for (const auto& w : wanted)
    if (auto r = control(EPOLL_CTL_ADD, w); !r)
      return r;
  entries_ = std::move(wanted);
  return ok();
}

Result<void> WaitSet::open() {
  epoll_ = UniqueFd::adopt(::epoll_create1(EPOLL_CLOEXEC));  // OWNERSHIP: a new fd
  if (!epoll_)
    return make_error(errc::io_error, "event loop", "epoll_create1", errno);
  boost::system::error_code ec;
  desc_.emplace(io_);
  desc_->assign(epoll_.get(), ec);
  if (ec) {
    desc_.reset();
    epoll_.reset();
    return make_error(errc::io_error, "event loop", "cannot watch a task's epoll fd", ec.value());
  }
  return ok();
}

Result<void> WaitSet::control(int op, const Entry& e) {
  epoll_event ev{};
  ev.events = e.events;
  ev.data.fd = e.fd;
  if (::epoll_ctl(epoll_.get(), op, e.fd, &ev) == 0)
    return ok();
  return make_error(errc::io_error, "event loop", "cannot watch fd " + std::to_string(e.fd), errno);
}

void WaitSet::cancel() noexcept {
  if (desc_) {
    boost::system::error_code ec;
    desc_->cancel(ec);
  }
}

void WaitSet::clear() noexcept {
  entries_.clear();  // first: closing the epoll fd comes back through forget()
  if (desc_) {
    boost::system::error_code ec;
    desc_->cancel(ec);
    (void)desc_->release();  // the fd is epoll_'s to close
    desc_.reset();
  }
  epoll_.reset();
}

void WaitSet::forget(int fd) noexcept {
  auto e = find_fd(entries_, fd);
  if (e == entries_.end())
    return;
  if (!control(EPOLL_CTL_DEL, *e)) {
    clear();  // cannot happen while the number names the file; start afresh
    return;
  }
  entries_.erase(e);
}

}  // namespace vufront::loop
