#include "actors/credit_gate.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "base/wait.hpp"

namespace vufront::actors {

Result<std::unique_ptr<CreditGate>> CreditGate::create(uint32_t credits, const char* what) {
  UniqueFd stop = make_eventfd();
  if (!stop)
    return make_error(errc::io_error, what, "cannot create the stop eventfd", errno);
  // OWNERSHIP: the new eventfd is owned by `gate` from birth.
  UniqueFd gate = UniqueFd::adopt(::eventfd(credits, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
  if (!gate)
    return make_error(errc::io_error, what, "cannot create the credit eventfd", errno);
  return std::unique_ptr<CreditGate>(new CreditGate(std::move(stop), std::move(gate)));
}

CreditGate::Wake CreditGate::wait_readable(int fd, int& err) const {
  for (;;) {
    if (stopping_.load())
      return Wake::stop;
    pollfd p[2] = {{stop_.get(), POLLIN, 0}, {fd, POLLIN, 0}};
    int r = wait_fds(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return Wake::error;
    }
    if (p[0].revents != 0 || stopping_.load())
      return Wake::stop;
    if (p[1].revents & POLLNVAL) {
      err = EBADF;
      return Wake::error;
    }
    if (p[1].revents != 0)
      return Wake::ready;
  }
}

bool CreditGate::take(int& err) const {
  err = 0;
  for (;;) {
    uint64_t v = 0;
    if (::read(credits_.get(), &v, sizeof v) == static_cast<ssize_t>(sizeof v))
      return true;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      err = errno;
      return false;
    }
    auto w = wait_readable(credits_.get(), err);
    if (w == Wake::stop) {
      err = 0;
      return false;
    }
    if (w == Wake::error)
      return false;
  }
}

void CreditGate::give(uint64_t n) const noexcept { (void)!::write(credits_.get(), &n, sizeof n); }

void CreditGate::stop() noexcept {
  if (stopping_.exchange(true))
    return;
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
}

}  // namespace vufront::actors
