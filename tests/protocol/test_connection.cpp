// Connection: framing, fd passing, deadlines and the broken state.

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/unix_socket.hpp"
#include "protocol/connection.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace std::chrono_literals;
using vufront::test::FdCount;

namespace {

struct Pair {
  Connection a;
  Connection b;
};

Pair connected_pair() {
  auto sp = make_socketpair();
  REQUIRE(sp.first.valid());
  return {Connection(std::move(sp.first)), Connection(std::move(sp.second))};
}

/// A connection and the raw (blocking) peer socket, to write arbitrary bytes.
struct RawPair {
  Connection conn;
  UniqueFd peer;
};

RawPair raw_pair() {
  auto sp = make_socketpair();
  REQUIRE(sp.first.valid());
  return {Connection(std::move(sp.first)), std::move(sp.second)};
}

size_t unread(int fd) {
  int n = 0;
  REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
  return static_cast<size_t>(n);
}

/// Writes `bytes` (with `fds` on the first sendmsg) in one go.
void write_raw(int fd, const std::vector<uint8_t>& bytes, const std::vector<int>& fds = {}) {
  REQUIRE(send_with_fds(fd, bytes.data(), bytes.size(), fds.data(), fds.size(), 0) ==
          static_cast<ssize_t>(bytes.size()));
}

/// Writes one byte at a time, each only after the reader (watching
/// `reader_fd`) has consumed the previous one, so every recvmsg is short.
/// Waits are bounded by a deadline and only yield the CPU.
void write_bytewise(int fd, int reader_fd, const std::vector<uint8_t>& bytes,
                    const std::vector<int>& fds_on_byte0 = {}, size_t late_fd_at = SIZE_MAX,
                    int late_fd = -1) {
  auto deadline = deadline_in(5000ms);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::vector<int> fds;
    if (i == 0)
      fds = fds_on_byte0;
    if (i == late_fd_at)
      fds = {late_fd};
    write_raw(fd, {bytes[i]}, fds);
    if (i == late_fd_at)
      break;  // the reader fails on this byte and reads no further
    int n = 1;
    while (Clock::now() < deadline && ::ioctl(reader_fd, FIONREAD, &n) == 0 && n > 0)
      std::this_thread::yield();
  }
}

}  // namespace

TEST_CASE("connection: send/receive with 0, 1 and 8 fds") {
  FdCount leak;
  for (size_t nfds : {size_t{0}, size_t{1}, size_t{8}}) {
    CAPTURE(nfds);
    auto p = connected_pair();
    std::vector<UniqueFd> mine;
    std::vector<int> raw;
    for (size_t i = 0; i < nfds; ++i) {
      mine.push_back(make_eventfd());
      raw.push_back(mine.back().get());
    }
    std::vector<uint8_t> body = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    REQUIRE(p.a.send(5, 0x9, body.data(), body.size(), raw.data(), raw.size(), deadline_in(1000ms),
                     "TEST").ok());
    auto m = p.b.receive(64, 8, deadline_in(1000ms), "TEST");
    REQUIRE(m.ok());
    CHECK(m->header.request == 5);
    CHECK(m->header.flags == 0x9);
    CHECK(m->header.size == 9);
    CHECK(m->body == body);
    REQUIRE(m->fds.size() == nfds);
    for (size_t i = 0; i < nfds; ++i) {
      // the received fd is the same eventfd: a write on ours is readable there
      uint64_t one = 1, got = 0;
      REQUIRE(::write(mine[i].get(), &one, 8) == 8);
      REQUIRE(::read(m->fds[i].get(), &got, 8) == 8);
      CHECK(got == 1);
      CHECK((::fcntl(m->fds[i].get(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    // header-only message
    REQUIRE(p.a.send(1, 0x1, nullptr, 0, nullptr, 0, deadline_in(1000ms), "TEST").ok());
    auto e = p.b.receive(0, 0, deadline_in(1000ms), "TEST");
    REQUIRE(e.ok());
    CHECK(e->body.empty());
    CHECK_FALSE(p.a.broken());
    CHECK_FALSE(p.b.broken());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("connection: short reads of header and body, fds on the first byte") {
  FdCount leak;
  {
    auto p = raw_pair();
    auto efd = make_eventfd();
    auto bytes = vufront::test::raw_message(24, 0x5, 4, {9, 8, 7, 6});
    std::thread writer(
        [&] { write_bytewise(p.peer.get(), p.conn.fd(), bytes, {efd.get()}); });
    auto m = p.conn.receive(16, 1, deadline_in(5000ms), "TEST");
    writer.join();
    REQUIRE(m.ok());
    CHECK(m->header.request == 24);
    CHECK(m->header.size == 4);
    CHECK(m->body == std::vector<uint8_t>{9, 8, 7, 6});
    CHECK(m->fds.size() == 1);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("connection: fds after the first chunk are bad_fds and closed") {
  FdCount leak;
  for (size_t at : {size_t{5}, size_t{13}}) {  // in the header, in the body
    CAPTURE(at);
    auto p = raw_pair();
    auto efd = make_eventfd();
    auto bytes = vufront::test::raw_message(1, 0x5, 4, {1, 2, 3, 4});
    std::thread writer([&] {
      write_bytewise(p.peer.get(), p.conn.fd(), bytes, {}, at, efd.get());
    });
    auto m = p.conn.receive(16, 1, deadline_in(5000ms), "TEST");
    writer.join();
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::bad_fds);
    CHECK(p.conn.broken());
  }
  CHECK(leak.leaked() == 0);
}

namespace {
// The handler counts each signal and says so on a pipe (write() is
// async-signal-safe), so the test waits for the handler, not for a time.
std::atomic<int> g_signals{0};
int g_signal_pipe = -1;
void on_signal(int) {
  g_signals.fetch_add(1);
  const char c = 's';
  [[maybe_unused]] auto n = ::write(g_signal_pipe, &c, 1);
}

/// The scheduler state of thread `tid` of this process ('R', 'S', ...), from
/// /proc/self/task/TID/stat; '?' if it cannot be read.
char thread_state(pid_t tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
  auto fd = UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return '?';
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return '?';
  buf[n] = 0;
  const char* close_paren = std::strrchr(buf, ')');  // the name may hold spaces
  return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}
}  // namespace

TEST_CASE("connection: signals (EINTR) do not disturb a waiting receive") {
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  auto signal_r = UniqueFd::adopt(pfd[0]);
  auto signal_w = UniqueFd::adopt(pfd[1]);
  g_signal_pipe = signal_w.get();
  g_signals = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR
  struct sigaction old {};
  REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);

  auto p = raw_pair();
  std::promise<pid_t> tid;
  auto fut = std::async(std::launch::async, [&] {
    tid.set_value(static_cast<pid_t>(::syscall(SYS_gettid)));
    return p.conn.receive(8, 0, deadline_in(vufront::test::scaled(10000ms)), "TEST");
  });
  const pid_t t = tid.get_future().get();
  // Each signal is sent while the receiving thread sleeps (blocked in poll(),
  // the only place it can sleep before the reply is written), and is handled
  // before the next one: so every one of them interrupts the wait.
  constexpr int kSignals = 5;
  for (int i = 0; i < kSignals; ++i) {
    CAPTURE(i);
    const auto until = Clock::now() + vufront::test::scaled(5s);
    while (thread_state(t) != 'S' && Clock::now() < until) std::this_thread::yield();
    REQUIRE(thread_state(t) == 'S');
    REQUIRE(::syscall(SYS_tgkill, ::getpid(), t, SIGUSR1) == 0);
    struct pollfd pf {signal_r.get(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, static_cast<int>(vufront::test::scaled(5000ms).count())) == 1);
    char c;
    REQUIRE(::read(signal_r.get(), &c, 1) == 1);
  }
  CHECK(fut.wait_for(0s) == std::future_status::timeout);  // still waiting
  write_raw(p.peer.get(), vufront::test::reply_u64(FrontendReq::get_features, 42));
  REQUIRE(fut.wait_for(vufront::test::scaled(5s)) == std::future_status::ready);
  auto m = fut.get();
  ::sigaction(SIGUSR1, &old, nullptr);
  g_signal_pipe = -1;
  REQUIRE(m.ok());
  CHECK(m->header.request == static_cast<uint32_t>(FrontendReq::get_features));
  CHECK(m->body.size() == 8);
  CHECK(g_signals.load() == kSignals);
}

TEST_CASE("connection: receive times out, then the connection is broken") {
  auto p = raw_pair();
  auto start = Clock::now();
  auto m = p.conn.receive(8, 0, deadline_in(50ms), "GET_FEATURES");
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().code == errc::timeout);
  CHECK(m.error().request == "GET_FEATURES");
  CHECK(Clock::now() - start >= 50ms);
  CHECK(Clock::now() - start < 2s);
  CHECK(p.conn.broken());
  // a late message is never read: the connection stays broken
  write_raw(p.peer.get(), vufront::test::reply_u64(FrontendReq::get_features, 1));
  auto again = p.conn.receive(8, 0, deadline_in(1000ms), "GET_STATUS");
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == errc::broken);
  CHECK(again.error().request == "GET_STATUS");
  CHECK(again.error().detail.find("GET_FEATURES: timeout") != std::string::npos);
  auto s = p.conn.send(1, 1, nullptr, 0, nullptr, 0, deadline_in(100ms), "SET_OWNER");
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == errc::broken);
  CHECK(unread(p.conn.fd()) == 20);
}

TEST_CASE("connection: EOF at the start, mid-header and mid-body") {
  FdCount leak;
  SUBCASE("no bytes") {
    auto p = raw_pair();
    p.peer.reset();
    auto m = p.conn.receive(8, 0, deadline_in(1000ms), "TEST");
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::disconnected);
  }
  SUBCASE("mid-header") {
    auto p = raw_pair();
    write_raw(p.peer.get(), {1, 0, 0, 0, 5});
    p.peer.reset();
    auto m = p.conn.receive(8, 0, deadline_in(1000ms), "TEST");
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::disconnected);
    CHECK(m.error().detail.find("7 of 12 header bytes missing") != std::string::npos);
  }
  SUBCASE("mid-body") {
    auto p = raw_pair();
    write_raw(p.peer.get(), vufront::test::raw_message(1, 5, 8, {1, 2, 3}));
    p.peer.reset();
    auto m = p.conn.receive(8, 0, deadline_in(1000ms), "TEST");
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::disconnected);
    CHECK(m.error().detail.find("5 of 8 body bytes missing") != std::string::npos);
    CHECK(p.conn.broken());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("connection: oversized header is refused before the body is read") {
  auto p = raw_pair();
  write_raw(p.peer.get(), vufront::test::raw_message(1, 5, 100, std::vector<uint8_t>(100, 0)));
  auto m = p.conn.receive(8, 0, deadline_in(1000ms), "GET_FEATURES");
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().code == errc::oversized);
  CHECK(unread(p.conn.fd()) == 100);  // not a byte of the body was read
  CHECK(p.conn.broken());
}

TEST_CASE("connection: surplus and truncated fds are bad_fds and all closed") {
  FdCount leak;
  struct Row {
    size_t sent;
    size_t allowed;
  };
  for (auto row : {Row{1, 0}, Row{9, 8}, Row{40, 8}}) {  // 40 > the 32-fd control buffer
    CAPTURE(row.sent);
    auto p = raw_pair();
    {
      std::vector<UniqueFd> owned;
      std::vector<int> raw;
      for (size_t i = 0; i < row.sent; ++i) {
        owned.push_back(make_eventfd());
        raw.push_back(owned.back().get());
      }
      write_raw(p.peer.get(), vufront::test::reply_u64(FrontendReq::get_features, 0), raw);
    }
    auto m = p.conn.receive(8, row.allowed, deadline_in(1000ms), "TEST");
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::bad_fds);
    CHECK(p.conn.broken());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("connection: send to a closed peer is disconnected, close() breaks") {
  auto p = raw_pair();
  p.peer.reset();
  uint8_t b[8] = {};
  auto r = p.conn.send(2, 1, b, sizeof(b), nullptr, 0, deadline_in(1000ms), "SET_FEATURES");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::disconnected);
  CHECK(r.error().request == "SET_FEATURES");

  auto q = connected_pair();
  q.a.close();
  CHECK(q.a.broken());
  auto s = q.a.send(3, 1, nullptr, 0, nullptr, 0, deadline_in(100ms), "SET_OWNER");
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == errc::broken);
}

TEST_CASE("connection: send times out when the peer never reads") {
  auto p = raw_pair();
  int small = 4096;
  ::setsockopt(p.conn.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  std::vector<uint8_t> body(wire::max_payload_size, 0xAB);
  Result<void> r;
  for (int i = 0; i < 100000 && r.ok(); ++i)
    r = p.conn.send(25, 1, body.data(), body.size(), nullptr, 0, deadline_in(30ms), "SET_CONFIG");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == errc::timeout);
  CHECK(p.conn.broken());
}

TEST_CASE("connection: connect() and accept() waiting for a back-end give up when told to stop") {
  vufront::test::TempDir dir;
  FdCount leak;
  for (bool before : {true, false}) {  // set before the call, or while it waits
    CAPTURE(before);
    std::atomic<bool> stop{before};
    std::thread stopper;
    if (!before)
      stopper = std::thread([&stop] {
        std::this_thread::yield();
        stop = true;
      });
    // a deadline the test never reaches: only the stop can end these waits
    auto c = Connection::connect(dir.file("nobody.sock"), deadline_in(600s), &stop,
                                 ConnectWait::backend);
    if (stopper.joinable())
      stopper.join();
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::cancelled);
    CHECK(c.error().request == "connect " + dir.file("nobody.sock"));

    auto lfd = Connection::listen(dir.file("l.sock"));
    REQUIRE(lfd.ok());
    std::atomic<bool> stop2{before};
    if (!before)
      stopper = std::thread([&stop2] {
        std::this_thread::yield();
        stop2 = true;
      });
    auto a = Connection::accept(lfd->get(), deadline_in(600s), dir.file("l.sock"), &stop2);
    if (stopper.joinable())
      stopper.join();
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().code == errc::cancelled);
    ::unlink(dir.file("l.sock").c_str());
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("connection: a receive or send waiting on a silent peer gives up when told to stop") {
  // a deadline the test never reaches: only the stop can end these waits
  {
    auto p = raw_pair();
    auto stop = std::make_shared<std::atomic<bool>>(false);
    p.conn.stop_when(stop);
    std::thread stopper([&stop] {
      std::this_thread::yield();
      stop->store(true);
    });
    auto m = p.conn.receive(64, 0, deadline_in(600s), "GET_FEATURES");
    stopper.join();
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::cancelled);
    CHECK(m.error().request == "GET_FEATURES");
    CHECK(p.conn.broken());  // a late reply can never be taken for a later one
    auto again = p.conn.receive(64, 0, deadline_in(600s), "GET_PROTOCOL_FEATURES");
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == errc::broken);
  }
  {
    auto p = raw_pair();
    int small = 4096;
    ::setsockopt(p.conn.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    auto stop = std::make_shared<std::atomic<bool>>(true);
    p.conn.stop_when(stop);
    std::vector<uint8_t> body(wire::max_payload_size, 0xAB);
    Result<void> r;
    int sent = 0;
    for (; sent < 100000 && r.ok(); ++sent)
      r = p.conn.send(25, 1, body.data(), body.size(), nullptr, 0, deadline_in(600s), "SET_CONFIG");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::cancelled);
    CHECK(sent > 1);  // a socket that takes the bytes is never refused for the flag
    CHECK(p.conn.broken());
  }
  {
    // a message already there is received although the flag is set
    auto p = raw_pair();
    auto stop = std::make_shared<std::atomic<bool>>(true);
    p.conn.stop_when(stop);
    wire::Header h{1, 0x5, 0};
    write_raw(p.peer.get(), std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&h),
                                                 reinterpret_cast<uint8_t*>(&h) + sizeof(h)));
    auto m = p.conn.receive(64, 0, deadline_in(600s), "GET_FEATURES");
    REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string() : m.error().message()));
    CHECK(m->header.request == 1);
  }
}

TEST_CASE("connection: connect() names what is at a path without a back-end, works when listening") {
  vufront::test::TempDir dir;
  SUBCASE("missing, a regular file, a directory: at once, unless told to wait") {
    {
      std::FILE* f = std::fopen(dir.file("file").c_str(), "w");
      REQUIRE(f != nullptr);
      std::fclose(f);
    }
    REQUIRE(::mkdir(dir.file("dir").c_str(), 0700) == 0);
    const std::tuple<std::string, errc, std::string> cases[] = {
        {dir.file("nobody.sock"), errc::not_found, "no such file: "},
        {dir.file("file/x.sock"), errc::not_found, "no such file (a component"},
        {dir.file("file"), errc::invalid_argument, "not a socket (a regular file)"},
        {dir.file("dir"), errc::invalid_argument, "a directory, not a socket"}};
    for (const auto& [path, code, said] : cases) {
      CAPTURE(path);
      // a deadline the test never reaches: only failing at once ends it
      auto c = Connection::connect(path, deadline_in(600s));
      REQUIRE_FALSE(c.ok());
      CHECK(c.error().code == code);
      CHECK(c.error().request == "connect " + path);
      CHECK(c.error().detail.rfind(said, 0) == 0);
      auto waited = Connection::connect(path, deadline_in(100ms), nullptr, ConnectWait::backend);
      REQUIRE_FALSE(waited.ok());
      CHECK(waited.error().code == errc::timeout);
    }
    auto waited = Connection::connect(dir.file("nobody.sock"), deadline_in(100ms), nullptr,
                                      ConnectWait::backend);
    REQUIRE_FALSE(waited.ok());
    CHECK(waited.error().detail ==
          "no back-end accepted before the deadline: nothing is at the path (no such file)");
  }
  SUBCASE("a socket nobody accepts on: tried until the deadline, then named") {
    auto path = dir.file("stale.sock");
    auto s = make_unix_socket(SOCK_STREAM);
    auto addr = unix_address(path, "bind");
    REQUIRE(addr.ok());
    REQUIRE(unix_bind(s.get(), *addr));  // bound, never listening: refused like a stale file
    std::atomic<bool> stop{false};
    auto c = Connection::connect(path, deadline_in(100ms), &stop);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::timeout);
    CHECK(c.error().detail.find("the socket exists but nobody accepts on it") != std::string::npos);
  }
  SUBCASE("path too long") {
    auto c = Connection::connect(std::string(200, 'x'), deadline_in(100ms));
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::invalid_argument);
  }
  SUBCASE("listening") {
    FdCount leak;
    {
      auto path = dir.file("be.sock");
      auto lfd = make_unix_socket(SOCK_STREAM);
      REQUIRE(lfd.valid());
      auto addr = unix_address(path, "bind");
      REQUIRE(addr.ok());
      REQUIRE(unix_bind(lfd.get(), *addr));
      REQUIRE(::listen(lfd.get(), 4) == 0);
      auto c = Connection::connect(path, deadline_in(2000ms));
      REQUIRE(c.ok());
      auto peer = Connection(UniqueFd::adopt(::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC)));
      REQUIRE(c->send(3, 1, nullptr, 0, nullptr, 0, deadline_in(1000ms), "SET_OWNER").ok());
      auto m = peer.receive(0, 0, deadline_in(1000ms), "peer");
      REQUIRE(m.ok());
      CHECK(m->header.request == 3);
    }
    CHECK(leak.leaked() == 0);
  }
}
