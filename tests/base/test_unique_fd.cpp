#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

#include "base/unique_fd.hpp"
#include "tests/support.hpp"

using vufront::UniqueFd;
using vufront::test::FdCount;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }
bool is_cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

}  // namespace

TEST_CASE("UniqueFd: default is empty, adopt owns and closes") {
  FdCount count;
  UniqueFd empty;
  CHECK_FALSE(empty.valid());
  CHECK_FALSE(static_cast<bool>(empty));
  CHECK(empty.get() == -1);

  int raw = -1;
  {
    auto fd = UniqueFd::adopt(::dup(STDERR_FILENO));
    REQUIRE(fd.valid());
    raw = fd.get();
    CHECK(is_open(raw));
    CHECK(count.open_now() == 1);
  }
  CHECK(count.leaked() == 0);
  CHECK_FALSE(is_open(raw));
  CHECK_FALSE(UniqueFd::adopt(-1).valid());
}

TEST_CASE("UniqueFd: release gives up ownership, reset closes") {
  FdCount count;
  auto fd = vufront::make_eventfd();
  REQUIRE(fd);
  int raw = fd.release();
  CHECK_FALSE(fd.valid());
  CHECK(is_open(raw));
  CHECK(count.open_now() == 1);
  auto again = UniqueFd::adopt(raw);
  again.reset();
  CHECK_FALSE(again.valid());
  CHECK(count.leaked() == 0);
}

TEST_CASE("UniqueFd: move construction and assignment transfer ownership") {
  FdCount count;
  auto a = vufront::make_eventfd();
  auto b = vufront::make_eventfd();
  REQUIRE(a);
  REQUIRE(b);
  const int raw_a = a.get();
  const int raw_b = b.get();
  UniqueFd c(std::move(a));
  CHECK_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  CHECK(c.get() == raw_a);
  c = std::move(b);  // closes raw_a
  CHECK(c.get() == raw_b);
  CHECK_FALSE(is_open(raw_a));
  CHECK(count.open_now() == 1);
  UniqueFd& self = c;
  c = std::move(self);  // self-move keeps the fd
  CHECK(c.get() == raw_b);
  c.reset();
  CHECK(count.leaked() == 0);
}

TEST_CASE("UniqueFd: duplicate is a distinct CLOEXEC fd for the same file") {
  FdCount count;
  auto fd = vufront::make_eventfd(false);
  REQUIRE(fd);
  auto dup = fd.duplicate();
  REQUIRE(dup);
  CHECK(dup.get() != fd.get());
  CHECK(is_cloexec(dup.get()));
  const uint64_t v = 7;
  REQUIRE(::write(fd.get(), &v, sizeof v) == sizeof v);
  uint64_t got = 0;
  REQUIRE(::read(dup.get(), &got, sizeof got) == sizeof got);
  CHECK(got == 7);

  UniqueFd empty;
  errno = 0;
  CHECK_FALSE(empty.duplicate().valid());
  CHECK(errno == EBADF);
  fd.reset();
  dup.reset();
  CHECK(count.leaked() == 0);
}

TEST_CASE("UniqueFd: factories create CLOEXEC fds") {
  FdCount count;
  {
    auto ev = vufront::make_eventfd(true);
    REQUIRE(ev);
    CHECK(is_cloexec(ev.get()));
    CHECK((::fcntl(ev.get(), F_GETFL) & O_NONBLOCK) != 0);
    auto ev_blocking = vufront::make_eventfd(false);
    REQUIRE(ev_blocking);
    CHECK((::fcntl(ev_blocking.get(), F_GETFL) & O_NONBLOCK) == 0);
    REQUIRE(vufront::set_nonblocking(ev_blocking.get(), true));
    CHECK((::fcntl(ev_blocking.get(), F_GETFL) & O_NONBLOCK) != 0);

    auto mem = vufront::make_memfd("test", 8192);
    REQUIRE(mem);
    CHECK(is_cloexec(mem.get()));
    CHECK(::lseek(mem.get(), 0, SEEK_END) == 8192);

    auto pipe = vufront::make_pipe();
    REQUIRE(pipe.read_end);
    REQUIRE(pipe.write_end);
    CHECK(is_cloexec(pipe.read_end.get()));
    const char c = 'x';
    REQUIRE(::write(pipe.write_end.get(), &c, 1) == 1);
    char r = 0;
    REQUIRE(::read(pipe.read_end.get(), &r, 1) == 1);
    CHECK(r == 'x');

    auto sp = vufront::make_socketpair();
    REQUIRE(sp.first);
    REQUIRE(sp.second);
    CHECK(is_cloexec(sp.second.get()));
    CHECK(count.open_now() == 7);
  }
  CHECK(count.leaked() == 0);
  CHECK_FALSE(vufront::set_nonblocking(-1, true));
}

TEST_CASE("UniqueFd: SharedFd closes with its last copy") {
  FdCount count;
  vufront::SharedFd a = vufront::share(vufront::make_eventfd());
  REQUIRE(a->valid());
  const int raw = a->get();
  {
    vufront::SharedFd b = a;
    a.reset();
    CHECK(is_open(raw));
  }
  CHECK_FALSE(is_open(raw));
  CHECK(count.leaked() == 0);
}

TEST_CASE("count_open_fds counts this process's fds") {
  const int before = vufront::count_open_fds();
  REQUIRE(before > 0);
  auto p = vufront::make_pipe();
  CHECK(vufront::count_open_fds() == before + 2);
  p.read_end.reset();
  p.write_end.reset();
  CHECK(vufront::count_open_fds() == before);
}
