// The request trace (--trace): Connection logs each message framed, with its
// name, direction, flags, size, fds and a reply's time since its request;
// nothing exists of it while the trace is off.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.hpp"
#include "protocol/connection.hpp"
#include "protocol/messages.hpp"

using namespace vufront;
using namespace std::chrono_literals;

namespace {

/// Sends {request, flags} with an 8-byte body from `from`, receives it on `to`.
void pass(Connection& from, Connection& to, uint32_t request, uint32_t flags, const int* fds = nullptr,
          size_t nfds = 0) {
  const uint8_t body[8] = {};
  REQUIRE(from.send(request, flags, body, sizeof body, fds, nfds, deadline_in(5s), "test"));
  auto m = to.receive(64, 8, deadline_in(5s), "test");
  REQUIRE(m);
  CHECK(m->header.request == request);
}

/// What the log wrote on stderr while `run` ran with the trace on.
template <class F>
std::string traced(F run) {
  UniqueFd capture = UniqueFd::adopt(::memfd_create("trace", MFD_CLOEXEC));
  REQUIRE(capture.valid());
  std::fflush(stderr);
  UniqueFd saved = UniqueFd::adopt(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0));
  REQUIRE(::dup2(capture.get(), STDERR_FILENO) == STDERR_FILENO);
  log::Settings s;
  s.program = "test";
  s.trace = true;
  log::setup(s);
  run();
  log::setup(log::Settings{});
  std::fflush(stderr);
  REQUIRE(::dup2(saved.get(), STDERR_FILENO) == STDERR_FILENO);
  std::string out(4096, '\0');
  ssize_t n = ::pread(capture.get(), out.data(), out.size(), 0);
  REQUIRE(n >= 0);
  out.resize(static_cast<size_t>(n));
  return out;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("message trace: a connection has none while the trace is off") {
  REQUIRE_FALSE(log::tracing());
  auto sp = make_socketpair();
  Connection a(std::move(sp.first));
  CHECK_FALSE(static_cast<bool>(a.trace()));
  CHECK_FALSE(static_cast<bool>(MessageTrace::if_tracing(MessageTrace::Channel::frontend, "x")));
}

TEST_CASE("message trace: each message both ways, a reply timed from its request") {
  auto sp = make_socketpair();
  const int fd_a = sp.first.get();
  std::string out = traced([&] {
    Connection a(std::move(sp.first)), b(std::move(sp.second));
    REQUIRE(static_cast<bool>(a.trace()));
    const uint32_t get_features = static_cast<uint32_t>(FrontendReq::get_features);
    UniqueFd ev = make_eventfd();
    const int fds[1] = {ev.get()};
    pass(a, b, get_features, flag_version, fds, 1);
    pass(b, a, get_features, flag_version | flag_reply);
    // a reply nobody asked for says so
    pass(b, a, static_cast<uint32_t>(FrontendReq::get_queue_num), flag_version | flag_reply);
  });
  const std::string label = "test: trace: fd " + std::to_string(fd_a);
  CHECK_MESSAGE(has(out, label + " -> GET_FEATURES (flags 0x1, 8 bytes, 1 fd)\n"), out);
  CHECK_MESSAGE(has(out, label + " <- GET_FEATURES reply (flags 0x5, 8 bytes, 0 fds) after "), out);
  CHECK_MESSAGE(has(out, " ms\n"), out);
  CHECK_MESSAGE(has(out, label + " <- GET_QUEUE_NUM reply (flags 0x5, 8 bytes, 0 fds) (no request seen)"),
                out);
  CHECK_FALSE(log::tracing());
}

TEST_CASE("message trace: the back-end channel's reader and writer share one, named by the channel") {
  auto sp = make_socketpair();
  std::string out = traced([&] {
    Connection backend(std::move(sp.first)), reader(std::move(sp.second));
    auto writer_sock = UniqueFd::adopt(::fcntl(reader.fd(), F_DUPFD_CLOEXEC, 0));
    Connection writer(std::move(writer_sock));
    auto shared = MessageTrace::if_tracing(MessageTrace::Channel::backend, "back-end channel");
    REQUIRE(static_cast<bool>(shared));
    reader.trace_with(shared);
    writer.trace_with(shared);
    backend.trace_with(nullptr);  // the back-end's side is not ours
    const uint32_t config_change = static_cast<uint32_t>(BackendReq::config_change_msg);
    pass(backend, reader, config_change, flag_version | flag_need_reply);
    pass(writer, backend, config_change, flag_version | flag_reply);
  });
  CHECK_MESSAGE(has(out, "test: trace: back-end channel <- BACKEND_CONFIG_CHANGE_MSG (flags 0x9, 8 bytes, 0 fds)\n"),
                out);
  CHECK_MESSAGE(has(out, "test: trace: back-end channel -> BACKEND_CONFIG_CHANGE_MSG reply (flags 0x5, 8 bytes, "
                         "0 fds) after "),
                out);
  // two lines, the back-end's own side not traced
  CHECK(std::count(out.begin(), out.end(), '\n') == 2);
}
