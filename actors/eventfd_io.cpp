#include "actors/eventfd_io.hpp"

#include <cerrno>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace vufront::actors {

namespace {

/// Whether `fd` reports `events` now (poll with zero timeout).
bool ready_now(int fd, short events) noexcept {
  pollfd p{fd, events, 0};
  int r;
  do
    r = ::poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  return r > 0 && (p.revents & events) != 0;
}

}  // namespace

bool fd_nonblocking(int fd) noexcept {
  const int flags = fd >= 0 ? ::fcntl(fd, F_GETFL) : -1;
  return flags >= 0 && (flags & O_NONBLOCK) != 0;
}

uint64_t read_eventfd(int fd, bool nonblocking) noexcept {
  if (fd < 0 || (!nonblocking && !ready_now(fd, POLLIN)))
    return 0;
  uint64_t value = 0;
  ssize_t got;
  do
    got = ::read(fd, &value, sizeof value);
  while (got < 0 && errno == EINTR);
  return got == static_cast<ssize_t>(sizeof value) ? value : 0;
}

bool add_to_eventfd(int fd, uint64_t n, bool nonblocking) noexcept {
  if (fd < 0 || (!nonblocking && !ready_now(fd, POLLOUT)))
    return false;
  ssize_t put;
  do
    put = ::write(fd, &n, sizeof n);
  while (put < 0 && errno == EINTR);
  return put == static_cast<ssize_t>(sizeof n);
}

uint64_t drain_eventfd(int fd) noexcept {
  return read_eventfd(fd, false);
}

}  // namespace vufront::actors
