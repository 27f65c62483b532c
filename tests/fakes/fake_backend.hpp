#pragma once
// FakeBackend: a scripted vhost-user peer over a socketpair, for tests.
//
// The test writes a script of Steps (expect a request, send raw bytes with
// fds, close, stay silent, wait for the test's signal, or any custom
// function), then takes the other end of the socketpair (as a Connection or
// a BackendClient). The script runs on its own thread, started by
// start()/connection()/client() and joined by the destructor. Every wait in
// the fake has a deadline and also wakes on the destructor's stop signal, so
// a failing test never hangs. After its last step the fake keeps its end
// open and silent until it is destroyed ("stay silent" = end the script);
// use close() to make the client see EOF.
//
//   FakeBackend fake;
//   fake.expect(FrontendReq::get_features).send(reply_u64(FrontendReq::get_features, 1));
//   auto client = fake.client();
//   CHECK(client.get_features().value() == 1);
//   CHECK(fake.finish() == "");
//
// The fake is not specific to the main channel: expect_code() accepts any
// request code, and send() any bytes, so it also serves as the front-end's
// peer on the back-end request channel.
//
// serve_at(path) makes it a back-end a device connects to by path: it
// listens there, and the script's first wait is for the connection.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/connection.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront::test {

// ---- byte builders ------------------------------------------------------------

/// The bytes of a wire struct.
using wire::bytes_of;

/// A raw message: header {request, flags, size} followed by `body` (whose
/// length need not equal `size`, to build malformed messages).
[[nodiscard]] std::vector<uint8_t> raw_message(uint32_t request, uint32_t flags, uint32_t size,
                                               const std::vector<uint8_t>& body = {});
/// A well-formed reply (flags VERSION|REPLY, size = body.size()).
[[nodiscard]] std::vector<uint8_t> reply_bytes(FrontendReq req, const std::vector<uint8_t>& body);
/// A well-formed u64 reply.
[[nodiscard]] std::vector<uint8_t> reply_u64(FrontendReq req, uint64_t value);
/// Concatenation helper.
[[nodiscard]] std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b);

/// What the fake received for one expect step (fds still owned).
struct Received {
  wire::Header header{};
  std::vector<uint8_t> body;
  std::vector<UniqueFd> fds;
};

class FakeBackend {
public:
  /// Runs on the fake's thread; returns "" on success or what went wrong
  /// (the script then stops and finish() reports it).
  using Action = std::function<std::string(FakeBackend&)>;
  /// Extra check on a received message: "" when fine.
  using Check = std::function<std::string(const Message&)>;

  struct Step {
    std::string what;
    Action action;
  };

  /// Options of an expect step; unset members are not checked.
  struct Expect {
    std::optional<uint32_t> flags;
    std::optional<std::vector<uint8_t>> body;
    std::optional<size_t> nfds;
    Check check;
  };

  /// `step_timeout` bounds every wait of every step.
  explicit FakeBackend(std::chrono::milliseconds step_timeout = std::chrono::milliseconds(5000));
  ~FakeBackend();
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;

  // ---- scripting (before start)
  FakeBackend& step(std::string what, Action action);
  /// Receives one message with request code `code` and checks `e`.
  FakeBackend& expect_code(uint32_t code, Expect e = {});
  FakeBackend& expect(FrontendReq req, Expect e = {}) {
    return expect_code(static_cast<uint32_t>(req), std::move(e));
  }
  /// Sends `bytes` in one sendmsg with `fresh_eventfds` new eventfds attached
  /// (the fake closes its copies right after).
  FakeBackend& send(std::vector<uint8_t> bytes, size_t fresh_eventfds = 0);
  /// Sends `bytes` with duplicates of `fds` attached.
  FakeBackend& send_fds(std::vector<uint8_t> bytes, std::vector<SharedFd> fds);
  /// Sends `bytes` split into separate writes of `chunk` bytes each.
  FakeBackend& send_chunked(std::vector<uint8_t> bytes, size_t chunk);
  /// Shorthand: expect `req` then answer it with a u64 reply.
  FakeBackend& answer_u64(FrontendReq req, uint64_t value, Expect e = {});
  /// Closes the fake's end of the socket.
  FakeBackend& close();
  /// Blocks until signal() is called (or the step timeout / destructor).
  FakeBackend& wait_signal();
  /// With serve_at(): the front-end's next connection to the path (a
  /// reconnect, a renewal) is accepted and the script goes on there; the
  /// connection before is closed.
  FakeBackend& accept_next();

  /// Listens at `path` (a unix socket, replaced if stale) and runs the script
  /// on the first front-end that connects there, instead of on the end that
  /// connection()/client() hand out. Before start(); false if it cannot
  /// listen. The socket file is removed by the destructor.
  [[nodiscard]] bool serve_at(const std::string& path);

  // ---- running
  /// Starts the script on its thread (idempotent).
  void start();
  /// Starts the script and hands out the other end.
  [[nodiscard]] Connection connection();
  [[nodiscard]] BackendClient client(Timeouts t = {});
  /// Lets a wait_signal() step continue.
  void signal();
  /// Waits up to `timeout` for the script to finish; "" when every step
  /// passed, otherwise the failures (or "script did not finish").
  [[nodiscard]] std::string finish(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  /// Messages received by expect steps (valid after finish()).
  [[nodiscard]] std::vector<Received>& received() { return received_; }
  /// Bytes the client sent that no step has read yet (FIONREAD, exact once
  /// the client's call has returned and no step is reading).
  [[nodiscard]] size_t unread_bytes() const;

  // ---- for actions (run on the fake's thread)
  /// Receives one message (up to 0x1000 body bytes, 8 fds).
  [[nodiscard]] Result<Message> receive_message();
  /// Sends raw bytes with `fds` attached to the first byte; "" when all sent.
  [[nodiscard]] std::string send_raw(const std::vector<uint8_t>& bytes, const std::vector<int>& fds);
  /// Waits until the socket is readable, the stop signal or the step timeout.
  [[nodiscard]] bool wait_readable();

private:
  void run();

  std::chrono::milliseconds step_timeout_;
  UniqueFd client_end_;
  UniqueFd listen_fd_;  // serve_at(): accepted from on the script's thread
  std::string listen_path_;
  std::optional<Connection> conn_;  // the fake's end
  UniqueFd stop_fd_;  // eventfd: destructor asks the script to stop
  UniqueFd go_fd_;    // eventfd: signal() for wait_signal steps
  std::vector<Step> steps_;
  std::vector<Received> received_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<std::string> failures_;
};

}  // namespace vufront::test
