// base/unix_socket: addresses and their length check, sockets, listening,
// and SCM_RIGHTS framing (fds passed, CLOEXEC, truncation, surplus closed).
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/unix_socket.hpp"
#include "tests/support.hpp"

using namespace vufront;
using vufront::test::FdCount;
using vufront::test::TempDir;

namespace {

bool is_cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

SocketPair pair_of(int type) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
  return {UniqueFd::adopt(sv[0]), UniqueFd::adopt(sv[1])};
}

/// `n` fresh eventfds and their raw numbers (still owned by `owned`).
std::vector<int> eventfds(size_t n, std::vector<UniqueFd>& owned) {
  std::vector<int> raw;
  for (size_t i = 0; i < n; ++i) {
    owned.push_back(make_eventfd());
    REQUIRE(owned.back().valid());
    raw.push_back(owned.back().get());
  }
  return raw;
}

}  // namespace

TEST_CASE("unix_address: a path of 1..107 bytes, the error names the path") {
  SUBCASE("empty") {
    auto a = unix_address("", "connect");
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().code == errc::invalid_argument);
    CHECK(a.error().request == "connect");
    CHECK(a.error().detail == "socket path must be 1..107 bytes, got 0: ");
  }
  SUBCASE("too long") {
    const std::string path = "/tmp/" + std::string(103, 'x');  // 108 bytes
    auto a = unix_address(path, "listen");
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().code == errc::invalid_argument);
    CHECK(a.error().detail == "socket path must be 1..107 bytes, got 108: " + path);
  }
  SUBCASE("the longest") {
    const std::string path(max_unix_path, 'y');
    auto a = unix_address(path, "connect");
    REQUIRE(a.ok());
    CHECK(a->addr.sun_family == AF_UNIX);
    CHECK(std::string(a->addr.sun_path) == path);  // NUL-terminated
    CHECK(UnixAddress::size() == sizeof(sockaddr_un));
  }
}

TEST_CASE("unix sockets: created CLOEXEC, connect and listen") {
  TempDir dir;
  FdCount leak;
  {
    auto s = make_unix_socket(SOCK_STREAM, SOCK_NONBLOCK);
    REQUIRE(s.valid());
    CHECK(is_cloexec(s.get()));
    CHECK((::fcntl(s.get(), F_GETFL) & O_NONBLOCK) != 0);

    const std::string path = dir.file("l.sock");
    auto addr = unix_address(path, "connect");
    REQUIRE(addr.ok());
    auto c = make_unix_socket(SOCK_STREAM);
    bool connected = unix_connect(c.get(), *addr);  // nobody listens yet
    int err = errno;
    CHECK_FALSE(connected);
    CHECK(err == ENOENT);

    ListenFailure why{};
    auto l = make_listening_socket(path, SOCK_STREAM, 0, ListenOptions{}, 4, why);
    REQUIRE(l.valid());
    CHECK(why == ListenFailure::none);
    CHECK(is_cloexec(l.get()));
    CHECK(unix_connect(c.get(), *addr));

    auto again = make_listening_socket(path, SOCK_STREAM, 0, ListenOptions{}, 4, why);
    CHECK_FALSE(again.valid());
    CHECK(why == ListenFailure::in_use);

    auto b = make_unix_socket(SOCK_STREAM);
    bool bound = unix_bind(b.get(), *addr);  // the file exists
    err = errno;
    CHECK_FALSE(bound);
    CHECK(err == EADDRINUSE);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("make_listening_socket: bad paths, other files, stale sockets") {
  TempDir dir;
  ListenFailure why{};
  CHECK_FALSE(make_listening_socket("", SOCK_SEQPACKET, 0, ListenOptions{}, 4, why).valid());
  CHECK(why == ListenFailure::bad_path);
  CHECK_FALSE(make_listening_socket(std::string(108, 'z'), SOCK_SEQPACKET, 0, ListenOptions{}, 4, why).valid());
  CHECK(why == ListenFailure::bad_path);

  const std::string file = dir.file("plain");
  { auto f = UniqueFd::adopt(::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600)); }
  CHECK_FALSE(make_listening_socket(file, SOCK_SEQPACKET, 0, ListenOptions{}, 4, why).valid());
  CHECK(why == ListenFailure::not_a_socket);

  const std::string path = dir.file("stale.sock");
  { auto l = make_listening_socket(path, SOCK_SEQPACKET, 0, ListenOptions{}, 4, why); REQUIRE(l.valid()); }
  auto l = make_listening_socket(path, SOCK_SEQPACKET, 0, ListenOptions{}, 4, why);  // the file stayed
  CHECK(l.valid());
  CHECK(why == ListenFailure::none);
}

TEST_CASE("send_with_fds / recv_with_fds: fds passed and received CLOEXEC") {
  FdCount leak;
  {
    auto sp = pair_of(SOCK_STREAM);
    std::vector<UniqueFd> mine;
    auto raw = eventfds(3, mine);
    const char text[] = "abc";
    CHECK(send_with_fds(sp.first.get(), text, 3, raw.data(), raw.size(), 0) == 3);

    char buf[8] = {};
    std::vector<UniqueFd> got;
    RecvInfo info;
    REQUIRE(recv_with_fds(sp.second.get(), buf, sizeof buf, 8, 0, got, info) == 3);
    CHECK(std::string(buf, 3) == "abc");
    CHECK_FALSE(info.fds_truncated());
    REQUIRE(got.size() == 3);
    for (size_t i = 0; i < got.size(); ++i) {
      CHECK(is_cloexec(got[i].get()));
      // The same eventfd: what is written through one is read through the other.
      uint64_t v = i + 1;
      REQUIRE(::write(got[i].get(), &v, sizeof v) == sizeof v);
      uint64_t r = 0;
      REQUIRE(::read(raw[i], &r, sizeof r) == sizeof r);
      CHECK(r == i + 1);
    }

    SUBCASE("no fds: no control data") {
      CHECK(send_with_fds(sp.first.get(), text, 2, nullptr, 0, 0) == 2);
      std::vector<UniqueFd> none;
      REQUIRE(recv_with_fds(sp.second.get(), buf, sizeof buf, 8, 0, none, info) == 2);
      CHECK(none.empty());
    }
    SUBCASE("two buffers in one message") {
      const char a[] = "he", b[] = "llo";
      iovec iov[2] = {{const_cast<char*>(a), 2}, {const_cast<char*>(b), 3}};
      CHECK(send_with_fds(sp.first.get(), iov, 2, raw.data(), 1, 0) == 5);
      std::vector<UniqueFd> one;
      REQUIRE(recv_with_fds(sp.second.get(), buf, sizeof buf, 8, 0, one, info) == 5);
      CHECK(std::string(buf, 5) == "hello");
      CHECK(one.size() == 1);
    }
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("recv_with_fds: truncated control data detected, surplus fds closed") {
  FdCount leak;
  {
    auto sp = pair_of(SOCK_SEQPACKET);
    std::vector<UniqueFd> mine;
    auto raw = eventfds(5, mine);
    REQUIRE(send_with_fds(sp.first.get(), "x", 1, raw.data(), raw.size(), 0) == 1);
    mine.clear();  // the five are in flight only now

    char buf[4];
    std::vector<UniqueFd> got;
    RecvInfo info;
    REQUIRE(recv_with_fds(sp.second.get(), buf, sizeof buf, 2, 0, got, info) == 1);
    CHECK(info.fds_truncated());
    CHECK(got.size() <= 2);  // those there was room for; the kernel closed the rest
  }
  // Every fd (the received ones with `got`, the dropped ones by the kernel) is closed.
  CHECK(leak.leaked() == 0);
}

TEST_CASE("recv_with_fds: a packet longer than the buffer is flagged") {
  auto sp = pair_of(SOCK_SEQPACKET);
  REQUIRE(send_with_fds(sp.first.get(), "0123456789", 10, nullptr, 0, 0) == 10);
  char buf[4];
  std::vector<UniqueFd> got;
  RecvInfo info;
  CHECK(recv_with_fds(sp.second.get(), buf, sizeof buf, 0, MSG_TRUNC, got, info) == 10);
  CHECK(info.truncated());
  CHECK_FALSE(info.fds_truncated());
}

TEST_CASE("send_with_fds: too many fds, a closed peer (no SIGPIPE), EAGAIN left to the caller") {
  auto sp = pair_of(SOCK_STREAM);
  std::vector<int> many(max_send_fds + 1, sp.first.get());
  ssize_t n = send_with_fds(sp.first.get(), "x", 1, many.data(), many.size(), 0);
  int err = errno;
  CHECK(n == -1);
  CHECK(err == EINVAL);

  char big[4096] = {};
  std::vector<UniqueFd> got;
  RecvInfo info;
  n = recv_with_fds(sp.second.get(), big, sizeof big, 4, MSG_DONTWAIT, got, info);
  err = errno;
  CHECK(n == -1);
  CHECK(err == EAGAIN);

  sp.second.reset();
  n = send_with_fds(sp.first.get(), "x", 1, nullptr, 0, 0);  // MSG_NOSIGNAL: we live on
  err = errno;
  CHECK(n == -1);
  CHECK(err == EPIPE);
}
