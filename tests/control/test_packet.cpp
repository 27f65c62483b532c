// The attach control protocol's transport (control/packet.hpp): SEQPACKET
// packets with fds, limits, EOF, deadlines, the listening socket.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

#include "base/unix_socket.hpp"
#include "control/packet.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::control;
using namespace vufront::test;
using std::chrono::milliseconds;

namespace {

struct Pair {
  UniqueFd a, b;
};

Pair seqpacket_pair() {
  int sv[2] = {-1, -1};
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  return {UniqueFd::adopt(sv[0]), UniqueFd::adopt(sv[1])};
}

Clock::time_point soon() { return Clock::now() + milliseconds(2000); }

}  // namespace

TEST_CASE("control packet: one message per packet, with its fds") {
  FdCount leak;
  {
    auto p = seqpacket_pair();
    UniqueFd ev = make_eventfd();
    REQUIRE(send_packet(p.a.get(), "first", {}, soon()));
    REQUIRE(send_packet(p.a.get(), "second", {ev.get(), ev.get()}, soon()));
    auto one = receive_packet(p.b.get(), soon());
    REQUIRE(one);
    REQUIRE(*one);
    CHECK((*one)->text == "first");
    CHECK((*one)->fds.empty());
    auto two = receive_packet(p.b.get(), soon());
    REQUIRE(two);
    REQUIRE(*two);
    CHECK((*two)->text == "second");
    REQUIRE((*two)->fds.size() == 2);
    CHECK_FALSE((*two)->truncated);
    CHECK_FALSE((*two)->fds_truncated);
    CHECK((*two)->fds[0].get() != ev.get());
    // nothing more: try_receive says so at once; receive times out
    auto none = try_receive_packet(p.b.get());
    REQUIRE(none);
    CHECK_FALSE(*none);
    auto late = receive_packet(p.b.get(), Clock::now() + milliseconds(50));
    REQUIRE_FALSE(late);
    CHECK(late.error().code == errc::timeout);
    // EOF
    p.a.reset();
    auto eof = receive_packet(p.b.get(), soon());
    REQUIRE(eof);
    CHECK_FALSE(*eof);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("control packet: oversized packets and too many fds are flagged, every fd closed") {
  FdCount leak;
  {
    auto p = seqpacket_pair();
    int size = 1 << 20;
    ::setsockopt(p.a.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    std::string big(max_packet_bytes + 1000, 'x');
    REQUIRE(::send(p.a.get(), big.data(), big.size(), 0) == static_cast<ssize_t>(big.size()));
    auto r = receive_packet(p.b.get(), soon());
    REQUIRE(r);
    REQUIRE(*r);
    CHECK((*r)->truncated);
    CHECK((*r)->size == big.size());
    CHECK((*r)->text.size() == max_packet_bytes);
    // 20 fds, sent by hand (send_packet refuses more than 16)
    UniqueFd ev = make_eventfd();
    std::vector<int> many(20, ev.get());
    auto refused = send_packet(p.a.get(), "x", many, soon());
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == errc::oversized);
    REQUIRE(send_with_fds(p.a.get(), "x", 1, many.data(), many.size(), 0) == 1);
    auto t = receive_packet(p.b.get(), soon());
    REQUIRE(t);
    REQUIRE(*t);
    CHECK((*t)->fds_truncated);
    CHECK((*t)->fds.size() <= max_packet_fds);
    auto too_big = send_packet(p.a.get(), big, {}, soon());
    REQUIRE_FALSE(too_big);
    CHECK(too_big.error().code == errc::oversized);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("control packet: a peer that does not read makes sends time out, a closed one disconnected") {
  auto p = seqpacket_pair();
  std::string chunk(60000, 'y');
  Error last;
  for (int i = 0; i < 1000; ++i) {
    auto r = send_packet(p.a.get(), chunk, {}, Clock::now() + milliseconds(50));
    if (!r) {
      last = r.error();
      break;
    }
  }
  CHECK(last.code == errc::timeout);
  p.b.reset();
  auto gone = send_packet(p.a.get(), "x", {}, soon());
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code == errc::disconnected);
}

TEST_CASE("control packet: listen_at sets the mode, replaces a stale socket, refuses one in use") {
  TempDir dir;
  const std::string path = dir.file("c.ctl");
  {
    auto l = listen_at(path, ListenOptions{});
    REQUIRE(l);
    struct stat sb {};
    REQUIRE(::stat(path.c_str(), &sb) == 0);
    CHECK((sb.st_mode & 0777) == 0600);
    CHECK(S_ISSOCK(sb.st_mode));
    auto busy = listen_at(path, ListenOptions{});
    REQUIRE_FALSE(busy);
    CHECK(busy.error().code == errc::bad_state);
    auto c = connect_to(path, milliseconds(1000));
    REQUIRE(c);
    auto a = accept_from(l->get());
    REQUIRE(a);
    auto uid = peer_uid(a->get());
    REQUIRE(uid);
    CHECK(*uid == static_cast<uint32_t>(::geteuid()));
  }
  // the listener is gone, the file stays: a stale socket is replaced
  auto again = listen_at(path, ListenOptions{});
  CHECK(again);
  std::ofstream(dir.file("plain")) << "x";
  auto not_socket = listen_at(dir.file("plain"), ListenOptions{});
  REQUIRE_FALSE(not_socket);
  CHECK(not_socket.error().code == errc::invalid_argument);
  auto nobody = connect_to(dir.file("none.ctl"), milliseconds(50));
  REQUIRE_FALSE(nobody);
  CHECK(nobody.error().code == errc::timeout);
  CHECK_FALSE(listen_at(std::string(200, 'a'), ListenOptions{}));
}
