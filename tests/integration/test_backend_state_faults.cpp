// vufront-backend's device-state fault switches (--state-own-fd,
// --state-endless, --state-crash-after, --state-stall-after) against the real
// process, at the protocol level through BackendClient: what arrives in the
// pipe, what CHECK_DEVICE_STATE answers afterwards, whether the process lives.
// Waits are polls with deadlines; the only short ones (300 ms) prove that
// nothing more arrives after a stall.
#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "backend/device_state.hpp"
#include "protocol/backend_client.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

constexpr uint64_t disk_bytes = 4u << 20;  // --size 4M: four 1 MiB chunks
constexpr uint64_t fault_at = 1u << 20;    // --state-*-after 1M: inside the second chunk
constexpr int io_wait_ms = 10000;          // deadline of one pipe wait
constexpr int quiet_ms = 300;              // "nothing more arrives" window after a stall

/// SIGPIPE ignored for one test: a write into a pipe whose reader died
/// (--state-crash-after on load) must fail with EPIPE, not kill the tests.
class SigpipeIgnored {
public:
  SigpipeIgnored() {
    struct sigaction sa {};
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    ok_ = ::sigaction(SIGPIPE, &sa, &old_) == 0;
    REQUIRE(ok_);
  }
  ~SigpipeIgnored() {
    if (ok_)
      ::sigaction(SIGPIPE, &old_, nullptr);
  }
  SigpipeIgnored(const SigpipeIgnored&) = delete;
  SigpipeIgnored& operator=(const SigpipeIgnored&) = delete;

private:
  struct sigaction old_ {};
  bool ok_ = false;
};

/// A connection negotiating just DEVICE_STATE (and REPLY_ACK).
BackendClient negotiate(const std::string& sock) {
  auto c = must(BackendClient::connect(sock, std::chrono::seconds(5)), "connect");
  must(c.set_owner(), "SET_OWNER");
  auto f = must(c.get_features(), "GET_FEATURES");
  auto pf = must(c.get_protocol_features(), "GET_PROTOCOL_FEATURES");
  REQUIRE(has_bit(pf, protocol_feature::device_state));
  must(c.set_protocol_features(pf & (bit(protocol_feature::device_state) |
                                     bit(protocol_feature::reply_ack))),
       "SET_PROTOCOL_FEATURES");
  must(c.set_features(f & (bit(feature::version_1) | bit(feature::protocol_features))),
       "SET_FEATURES");
  return c;
}

/// The front-end's side of one transfer.
struct Channel {
  UniqueFd fd;              ///< the end the state moves through
  bool backend_fd = false;  ///< `fd` came in the reply (bit 8 clear)
  UniqueFd ours;            ///< with backend_fd: our own pipe's kept end, now unused
};

/// SET_DEVICE_STATE_FD in `direction` with a fresh pipe; our copy of the
/// end handed over is closed before returning.
Channel start_transfer(BackendClient& c, uint32_t direction) {
  auto pipe = make_pipe();
  REQUIRE(pipe.read_end);
  const bool save = direction == wire::device_state_save;
  UniqueFd give = std::move(save ? pipe.write_end : pipe.read_end);
  UniqueFd keep = std::move(save ? pipe.read_end : pipe.write_end);
  auto reply = must(c.set_device_state_fd(direction, wire::device_state_phase_stopped, give.get()),
                    "SET_DEVICE_STATE_FD");
  give.reset();
  if (reply.backend_fd)
    return {std::move(*reply.backend_fd), true, std::move(keep)};
  return {std::move(keep), false, {}};
}

/// Reads `fd` to EOF; every wait bounded.
std::vector<uint8_t> read_to_eof(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, io_wait_ms) == 1);
    const ssize_t n = ::read(fd, buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0)
      return out;
    out.insert(out.end(), buf, buf + n);
  }
}

/// Reads exactly `n` bytes (EOF before them fails the test).
std::vector<uint8_t> read_exactly(int fd, size_t n) {
  std::vector<uint8_t> out(n);
  size_t off = 0;
  while (off < n) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, io_wait_ms) == 1);
    const ssize_t r = ::read(fd, out.data() + off, std::min<size_t>(n - off, 65536));
    REQUIRE(r > 0);  // 0 = EOF: the stream ended
    off += static_cast<size_t>(r);
  }
  return out;
}

/// Writes `data` until done or a write fails; returns the bytes written and
/// the errno of the failing write (0 if all was written).
std::pair<size_t, int> write_until_error(int fd, const std::vector<uint8_t>& data) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    REQUIRE(::poll(&p, 1, io_wait_ms) == 1);
    const ssize_t n = ::write(fd, data.data() + off, std::min<size_t>(data.size() - off, 65536));
    if (n < 0)
      return {off, errno};
    off += static_cast<size_t>(n);
  }
  return {off, 0};
}

bool starts_with_magic(const std::vector<uint8_t>& s) {
  return s.size() >= sizeof backend::state_magic &&
         std::memcmp(s.data(), backend::state_magic, sizeof backend::state_magic) == 0;
}

/// Saves the state of a normal back-end on `sock` through our own pipe.
std::vector<uint8_t> save_normally(const std::string& sock) {
  auto c = negotiate(sock);
  auto ch = start_transfer(c, wire::device_state_save);
  REQUIRE_FALSE(ch.backend_fd);
  auto state = read_to_eof(ch.fd.get());
  must(c.check_device_state(), "CHECK_DEVICE_STATE after a normal save");
  return state;
}

/// The failure CHECK_DEVICE_STATE reports after a failed transfer, and the
/// back-end still answering on the same connection.
void expect_failed_and_serving(BackendClient& c) {
  auto check = c.check_device_state();
  REQUIRE_FALSE(check.ok());
  CHECK(check.error().code == errc::backend_failure);
  CHECK_FALSE(c.broken());
  CHECK(has_bit(must(c.get_features(), "GET_FEATURES after the failed transfer"),
                feature::protocol_features));
}

/// A back-end that died mid-transfer: the process is gone, its socket hung
/// up and CHECK_DEVICE_STATE fails with disconnected.
void expect_crashed(BackendClient& c, const PeerProcess& be) {
  REQUIRE(be.wait_exit(std::chrono::milliseconds(io_wait_ms)));
  pollfd p{c.connection().fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, io_wait_ms) == 1);
  CHECK((p.revents & (POLLHUP | POLLIN)) != 0);
  auto check = c.check_device_state();
  REQUIRE_FALSE(check.ok());
  CHECK(check.error().code == errc::disconnected);
  CHECK(be.log().find("--state-crash-after") != std::string::npos);
}

}  // namespace

TEST_CASE("vufront-backend --state-own-fd: save and load through the back-end's own pipe end") {
  SigpipeIgnored no_sigpipe;
  TempDir tmp;
  const std::string image = tmp.file("disk.img");
  {
    auto disk = pattern(disk_bytes, 7);
    std::ofstream(image, std::ios::binary)
        .write(reinterpret_cast<const char*>(disk.data()), static_cast<std::streamsize>(disk.size()));
  }
  std::vector<uint8_t> expected;
  {
    PeerProcess be(tmp.file("n.sock"), backend_command(tmp.file("n.sock"), {"--image", image}));
    expected = save_normally(be.socket());
  }
  REQUIRE(starts_with_magic(expected));

  SUBCASE("save: the reply carries the read end; the stream is the normal one") {
    PeerProcess be(tmp.file("o.sock"),
                   backend_command(tmp.file("o.sock"), {"--image", image, "--state-own-fd"}));
    auto c = negotiate(be.socket());
    auto ch = start_transfer(c, wire::device_state_save);
    REQUIRE(ch.backend_fd);
    // the write end we sent was closed unused: our read end sees EOF at once
    CHECK(read_to_eof(ch.ours.get()).empty());
    auto state = read_to_eof(ch.fd.get());
    CHECK(starts_with_magic(state));
    CHECK(state.size() == expected.size());
    CHECK(state == expected);
    must(c.check_device_state(), "CHECK_DEVICE_STATE after the own-fd save");
  }
  SUBCASE("load: the reply carries the write end; the state is restored") {
    PeerProcess be(tmp.file("l.sock"),
                   backend_command(tmp.file("l.sock"), {"--size", "4M", "--state-own-fd"}));
    auto c = negotiate(be.socket());
    {
      auto ch = start_transfer(c, wire::device_state_load);
      REQUIRE(ch.backend_fd);
      // the read end we sent was closed unused: writing into our end fails
      const uint8_t one = 1;
      const ssize_t n = ::write(ch.ours.get(), &one, 1);
      const int e = errno;
      CHECK(n == -1);
      CHECK(e == EPIPE);
      auto [written, err] = write_until_error(ch.fd.get(), expected);
      CHECK(err == 0);
      CHECK(written == expected.size());
    }  // our write end closed: EOF ends the stream
    must(c.check_device_state(), "CHECK_DEVICE_STATE after the own-fd load");
    // saving again yields the loaded stream: the disk (a memfd of zeros before) holds it
    auto ch = start_transfer(c, wire::device_state_save);
    REQUIRE(ch.backend_fd);
    CHECK(read_to_eof(ch.fd.get()) == expected);
    must(c.check_device_state(), "CHECK_DEVICE_STATE after saving the loaded state");
  }
}

TEST_CASE("vufront-backend --state-endless: a save never ends and closing the read end fails it") {
  TempDir tmp;
  PeerProcess be(tmp.file("e.sock"),
                 backend_command(tmp.file("e.sock"), {"--size", "4M", "--state-endless"}));
  auto c = negotiate(be.socket());
  {
    auto ch = start_transfer(c, wire::device_state_save);
    REQUIRE_FALSE(ch.backend_fd);
    CHECK(starts_with_magic(read_exactly(ch.fd.get(), 64)));
    // three times the disk and still no EOF (read_exactly fails on EOF)
    for (int i = 0; i < 3 * 4; ++i)
      (void)read_exactly(ch.fd.get(), 1u << 20);
    CHECK(be.alive());
  }  // our read end closed: the back-end's next write gets EPIPE
  expect_failed_and_serving(c);
  CHECK(be.log().find("state save failed") != std::string::npos);
  CHECK(be.alive());
}

TEST_CASE("vufront-backend --state-crash-after: the process exits mid-save") {
  TempDir tmp;
  PeerProcess be(tmp.file("c.sock"),
                 backend_command(tmp.file("c.sock"), {"--size", "4M", "--state-crash-after", "1M"}));
  auto c = negotiate(be.socket());
  auto ch = start_transfer(c, wire::device_state_save);
  // exactly the first 1 MiB of the stream, then EOF: the writer died
  auto state = read_to_eof(ch.fd.get());
  CHECK(state.size() == fault_at);
  CHECK(starts_with_magic(state));
  expect_crashed(c, be);
}

TEST_CASE("vufront-backend --state-crash-after: the process exits mid-load") {
  SigpipeIgnored no_sigpipe;
  TempDir tmp;
  std::vector<uint8_t> state;
  {
    PeerProcess src(tmp.file("s.sock"), backend_command(tmp.file("s.sock"), {"--size", "4M"}));
    state = save_normally(src.socket());
  }
  REQUIRE(state.size() > disk_bytes);
  PeerProcess be(tmp.file("c.sock"),
                 backend_command(tmp.file("c.sock"), {"--size", "4M", "--state-crash-after", "1M"}));
  auto c = negotiate(be.socket());
  auto ch = start_transfer(c, wire::device_state_load);
  auto [written, err] = write_until_error(ch.fd.get(), state);
  CHECK(err == EPIPE);  // the reader died; SIGPIPE is ignored here
  CHECK(written >= fault_at);
  CHECK(written < state.size());
  expect_crashed(c, be);
}

TEST_CASE("vufront-backend --state-stall-after: a save stops mid-stream until the reader leaves") {
  TempDir tmp;
  PeerProcess be(tmp.file("t.sock"),
                 backend_command(tmp.file("t.sock"), {"--size", "4M", "--state-stall-after", "1M"}));
  auto c = negotiate(be.socket());
  {
    auto ch = start_transfer(c, wire::device_state_save);
    CHECK(starts_with_magic(read_exactly(ch.fd.get(), fault_at)));
    // nothing more, and no EOF either: the pipe stays open
    pollfd p{ch.fd.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, quiet_ms) == 0);
    CHECK(be.alive());
  }  // our read end closed: the stalled back-end sees POLLERR
  expect_failed_and_serving(c);
  CHECK(be.log().find("--state-stall-after") != std::string::npos);
  CHECK(be.alive());
}

TEST_CASE("vufront-backend --state-stall-after: a load stops reading until the writer leaves") {
  SigpipeIgnored no_sigpipe;
  TempDir tmp;
  std::vector<uint8_t> state;
  {
    PeerProcess src(tmp.file("s.sock"), backend_command(tmp.file("s.sock"), {"--size", "4M"}));
    state = save_normally(src.socket());
  }
  PeerProcess be(tmp.file("t.sock"),
                 backend_command(tmp.file("t.sock"), {"--size", "4M", "--state-stall-after", "1M"}));
  auto c = negotiate(be.socket());
  {
    auto ch = start_transfer(c, wire::device_state_load);
    const int fd = ch.fd.get();
    const int capacity = ::fcntl(fd, F_GETPIPE_SZ);
    REQUIRE(capacity > 0);
    REQUIRE(set_nonblocking(fd, true));
    // write until the pipe stays full: long waits while the back-end still
    // has to take its 1 MiB, a short one after
    size_t off = 0;
    for (;;) {
      REQUIRE(off < state.size());  // the whole stream went in: no stall
      const ssize_t n = ::write(fd, state.data() + off, std::min<size_t>(state.size() - off, 65536));
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      REQUIRE(errno == EAGAIN);
      pollfd p{fd, POLLOUT, 0};
      const int r = ::poll(&p, 1, off < fault_at ? io_wait_ms : quiet_ms);
      REQUIRE(r >= 0);
      if (r == 0)
        break;
      REQUIRE((p.revents & POLLERR) == 0);  // the reader must still be there
    }
    CHECK(off >= fault_at);
    CHECK(off <= fault_at + static_cast<size_t>(capacity));
    CHECK(be.alive());
  }  // our write end closed: the stalled back-end sees POLLHUP
  expect_failed_and_serving(c);
  CHECK(be.log().find("--state-stall-after") != std::string::npos);
  CHECK(be.alive());
}
