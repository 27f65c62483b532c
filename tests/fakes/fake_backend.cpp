#include "tests/fakes/fake_backend.hpp"

#include "base/unix_socket.hpp"

#include <algorithm>
#include <cerrno>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace vufront::test {

namespace {

int ms_left(Deadline d) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 1 << 30));
}

}  // namespace

std::vector<uint8_t> raw_message(uint32_t request, uint32_t flags, uint32_t size,
                                 const std::vector<uint8_t>& body) {
  const wire::Header h{request, flags, size};
  std::vector<uint8_t> out(sizeof(h) + body.size());
  // BOUNDS: `out` holds the 12 header bytes followed by body.size() bytes.
  std::memcpy(out.data(), &h, sizeof(h));
  if (!body.empty())
    std::memcpy(out.data() + sizeof(h), body.data(), body.size());
  return out;
}

std::vector<uint8_t> reply_bytes(FrontendReq req, const std::vector<uint8_t>& body) {
  return raw_message(static_cast<uint32_t>(req), flag_version | flag_reply,
                     static_cast<uint32_t>(body.size()), body);
}

std::vector<uint8_t> reply_u64(FrontendReq req, uint64_t value) {
  return reply_bytes(req, bytes_of(wire::U64{value}));
}

std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  const size_t at = a.size();
  a.resize(at + b.size());
  if (!b.empty())
    std::memcpy(a.data() + at, b.data(), b.size());  // BOUNDS: resized above
  return a;
}

FakeBackend::FakeBackend(std::chrono::milliseconds step_timeout)
    : step_timeout_(step_timeout),
      stop_fd_(make_eventfd(true)),
      go_fd_(make_eventfd(true)) {
  auto pair = make_socketpair();
  client_end_ = std::move(pair.first);
  conn_.emplace(std::move(pair.second));
}

FakeBackend::~FakeBackend() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_)
    ::unlink(listen_path_.c_str());
}

FakeBackend& FakeBackend::accept_next() {
  return step("the front-end connects again", [](FakeBackend& f) -> std::string {
    if (!f.listen_fd_)
      return "not serving at a path (serve_at)";
    auto deadline = deadline_in(f.step_timeout_);
    for (;;) {
      pollfd p[2] = {{f.listen_fd_.get(), POLLIN, 0}, {f.stop_fd_.get(), POLLIN, 0}};
      int r = ::poll(p, 2, ms_left(deadline));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0 || p[1].revents)
        return "no front-end connected again to " + f.listen_path_;
      UniqueFd c = UniqueFd::adopt(::accept4(f.listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c) {
        f.conn_.emplace(std::move(c));
        return "";
      }
    }
  });
}

bool FakeBackend::serve_at(const std::string& path) {
  ListenFailure why = ListenFailure::none;
  listen_fd_ = make_listening_socket(path, SOCK_STREAM, SOCK_NONBLOCK, ListenOptions{}, 1, why);
  listen_path_ = path;
  return listen_fd_.valid();
}

FakeBackend& FakeBackend::step(std::string what, Action action) {
  steps_.push_back({std::move(what), std::move(action)});
  return *this;
}

FakeBackend& FakeBackend::expect_code(uint32_t code, Expect e) {
  std::string what = "expect " + frontend_req_name(code);
  return step(what, [code, e = std::move(e)](FakeBackend& f) -> std::string {
    if (!f.wait_readable())
      return "nothing arrived";
    auto m = f.receive_message();
    if (!m)
      return m.error().message();
    std::string bad;
    if (m->header.request != code)
      bad = "got " + frontend_req_name(m->header.request);
    else if (e.flags && m->header.flags != *e.flags)
      bad = "flags " + hex(m->header.flags) + ", expected " + hex(*e.flags);
    else if (e.body && m->body != *e.body)
      bad = "body differs (" + std::to_string(m->body.size()) + " bytes, expected " +
            std::to_string(e.body->size()) + ")";
    else if (e.nfds && m->fds.size() != *e.nfds)
      bad = std::to_string(m->fds.size()) + " fds, expected " + std::to_string(*e.nfds);
    else if (e.check)
      bad = e.check(*m);
    Received r{m->header, std::move(m->body), std::move(m->fds)};
    f.received_.push_back(std::move(r));
    return bad;
  });
}

FakeBackend& FakeBackend::send(std::vector<uint8_t> bytes, size_t fresh_eventfds) {
  return step("send " + std::to_string(bytes.size()) + " bytes + " +
                  std::to_string(fresh_eventfds) + " eventfds",
              [bytes = std::move(bytes), fresh_eventfds](FakeBackend& f) -> std::string {
                std::vector<UniqueFd> owned;
                std::vector<int> raw;
                for (size_t i = 0; i < fresh_eventfds; ++i) {
                  owned.push_back(make_eventfd(true));
                  if (!owned.back())
                    return "eventfd() failed";
                  raw.push_back(owned.back().get());
                }
                return f.send_raw(bytes, raw);  // `owned` closes our copies
              });
}

FakeBackend& FakeBackend::send_fds(std::vector<uint8_t> bytes, std::vector<SharedFd> fds) {
  return step("send " + std::to_string(bytes.size()) + " bytes + fds",
              [bytes = std::move(bytes), fds = std::move(fds)](FakeBackend& f) {
                std::vector<int> raw;
                for (const auto& fd : fds)
                  raw.push_back(fd->get());
                return f.send_raw(bytes, raw);
              });
}

FakeBackend& FakeBackend::send_chunked(std::vector<uint8_t> bytes, size_t chunk) {
  return step("send " + std::to_string(bytes.size()) + " bytes in chunks",
              [bytes = std::move(bytes), chunk](FakeBackend& f) -> std::string {
                for (size_t at = 0; at < bytes.size(); at += chunk) {
                  size_t n = std::min(chunk, bytes.size() - at);
                  std::vector<uint8_t> part(bytes.begin() + static_cast<long>(at),
                                            bytes.begin() + static_cast<long>(at + n));
                  if (auto e = f.send_raw(part, {}); !e.empty())
                    return e;
                }
                return "";
              });
}

FakeBackend& FakeBackend::answer_u64(FrontendReq req, uint64_t value, Expect e) {
  expect(req, std::move(e));
  return send(reply_u64(req, value));
}

FakeBackend& FakeBackend::close() {
  return step("close", [](FakeBackend& f) {
    f.conn_->close();
    return std::string();
  });
}

FakeBackend& FakeBackend::wait_signal() {
  return step("wait for signal", [](FakeBackend& f) -> std::string {
    auto deadline = deadline_in(f.step_timeout_);
    for (;;) {
      pollfd p[2] = {{f.go_fd_.get(), POLLIN, 0}, {f.stop_fd_.get(), POLLIN, 0}};
      int r = ::poll(p, 2, ms_left(deadline));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return "no signal before the step timeout";
      if (p[1].revents)
        return "stopped while waiting for the signal";
      uint64_t v;
      (void)!::read(f.go_fd_.get(), &v, sizeof(v));
      return "";
    }
  });
}

void FakeBackend::start() {
  if (!thread_.joinable())
    thread_ = std::thread([this] { run(); });
}

Connection FakeBackend::connection() {
  start();
  return Connection(std::move(client_end_));
}

BackendClient FakeBackend::client(Timeouts t) { return BackendClient(connection(), t); }

void FakeBackend::signal() {
  uint64_t one = 1;
  (void)!::write(go_fd_.get(), &one, sizeof(one));
}

std::string FakeBackend::finish(std::chrono::milliseconds timeout) {
  start();
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [this] { return done_; }))
    return "script did not finish within " + std::to_string(timeout.count()) + " ms";
  std::string out;
  for (const auto& f : failures_)
    out += (out.empty() ? "" : "; ") + f;
  return out;
}

size_t FakeBackend::unread_bytes() const {
  int n = 0;
  if (::ioctl(conn_->fd(), FIONREAD, &n) != 0)
    return 0;
  return static_cast<size_t>(n);
}

Result<Message> FakeBackend::receive_message() {
  return conn_->receive(wire::max_payload_size, max_fds_per_message, deadline_in(step_timeout_),
                        "fake back-end");
}

std::string FakeBackend::send_raw(const std::vector<uint8_t>& bytes, const std::vector<int>& fds) {
  size_t sent = 0;
  bool first = true;
  auto deadline = deadline_in(step_timeout_);
  while (sent < bytes.size() || (first && bytes.empty())) {
    // The fds go with the first sendmsg only.
    ssize_t n = send_with_fds(conn_->fd(), bytes.data() + sent, bytes.size() - sent,
                              first ? fds.data() : nullptr, first ? fds.size() : 0, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        pollfd p{conn_->fd(), POLLOUT, 0};
        if (::poll(&p, 1, ms_left(deadline)) == 0)
          return "send timed out";
        continue;
      }
      return std::string("sendmsg: ") + std::strerror(errno);
    }
    first = false;
    sent += static_cast<size_t>(n);
  }
  return "";
}

bool FakeBackend::wait_readable() {
  auto deadline = deadline_in(step_timeout_);
  for (;;) {
    pollfd p[2] = {{conn_->fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int r = ::poll(p, 2, ms_left(deadline));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0 || p[1].revents)
      return false;
    return true;
  }
}

void FakeBackend::run() {
  std::vector<std::string> failures;
  if (listen_fd_) {
    // serve_at(): the front-end connects first.
    auto deadline = deadline_in(step_timeout_);
    UniqueFd accepted;
    while (!accepted) {
      pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
      int r = ::poll(p, 2, ms_left(deadline));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0 || p[1].revents)
        break;
      accepted = UniqueFd::adopt(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    }
    if (accepted)
      conn_.emplace(std::move(accepted));
    else
      failures.push_back("no front-end connected to " + listen_path_);
  }
  for (size_t i = 0; failures.empty() && i < steps_.size(); ++i) {
    std::string e = steps_[i].action(*this);
    if (!e.empty()) {
      failures.push_back("step " + std::to_string(i + 1) + " (" + steps_[i].what + "): " + e);
      break;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  failures_ = std::move(failures);
  done_ = true;
  cv_.notify_all();
}

}  // namespace vufront::test
