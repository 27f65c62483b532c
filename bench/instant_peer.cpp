#include "bench/instant_peer.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "base/unix_socket.hpp"
#include "protocol/connection.hpp"
#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

namespace vufront::bench {

namespace {

constexpr uint64_t offered_features = bit(feature::version_1) | bit(feature::protocol_features);
constexpr uint64_t offered_protocol = bit(protocol_feature::mq) | bit(protocol_feature::reply_ack) |
                                      bit(protocol_feature::config) |
                                      bit(protocol_feature::status) |
                                      bit(protocol_feature::reset_device);

std::vector<uint8_t> u64_body(uint64_t v) {
  std::vector<uint8_t> b(8);
  std::memcpy(b.data(), &v, 8);
  return b;
}

/// The answer to `m`, if it gets one.
bool answer(const Message& m, std::vector<uint8_t>& body) {
  auto req = static_cast<FrontendReq>(m.header.request);
  switch (req) {
    case FrontendReq::get_features: body = u64_body(offered_features); return true;
    case FrontendReq::get_protocol_features: body = u64_body(offered_protocol); return true;
    case FrontendReq::get_queue_num: body = u64_body(64); return true;
    case FrontendReq::get_max_mem_slots: body = u64_body(8); return true;
    case FrontendReq::get_status: body = u64_body(0); return true;
    case FrontendReq::get_vring_base: {
      wire::VringState s{};
      if (m.body.size() >= sizeof s)
        std::memcpy(&s, m.body.data(), sizeof s);
      s.num = 0;
      body.resize(sizeof s);
      std::memcpy(body.data(), &s, sizeof s);
      return true;
    }
    case FrontendReq::get_config: body = m.body; return true;
    default: break;
  }
  if (m.header.flags & flag_need_reply) {
    body = u64_body(0);
    return true;
  }
  return false;
}

bool send_all(int fd, const void* p, size_t n) {
  auto* c = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0)
      return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool recv_all(int fd, void* p, size_t n) {
  auto* c = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t r = ::recv(fd, c, n, MSG_WAITALL);
    if (r <= 0)
      return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

UniqueFd connect_unix(const std::string& path) {
  auto a = unix_address(path, "connect");
  UniqueFd fd = make_unix_socket(SOCK_STREAM);
  if (!a || !fd || !unix_connect(fd.get(), *a))
    return UniqueFd{};
  return fd;
}

/// One request with blocking calls: sendmsg (fds on the first byte), then
/// the reply if there is one.
bool replay_one(int fd, int dummy, const Recorded& m) {
  wire::Header h{m.request, m.flags, static_cast<uint32_t>(m.body.size())};
  std::vector<uint8_t> bytes(sizeof h + m.body.size());
  std::memcpy(bytes.data(), &h, sizeof h);
  if (!m.body.empty())
    std::memcpy(bytes.data() + sizeof h, m.body.data(), m.body.size());
  std::vector<int> fds(m.nfds, dummy);
  if (send_with_fds(fd, bytes.data(), bytes.size(), fds.data(), fds.size(), 0) !=
      static_cast<ssize_t>(bytes.size()))
    return false;
  if (!m.answered)
    return true;
  std::vector<uint8_t> reply(sizeof(wire::Header) + m.reply_size);
  return recv_all(fd, reply.data(), reply.size());
}

}  // namespace

InstantPeer::InstantPeer(std::string socket_path) : path_(std::move(socket_path)) {
  ::unlink(path_.c_str());
  auto a = unix_address(path_, "listen");
  listener_ = make_unix_socket(SOCK_STREAM);
  if (!a || !listener_ || !unix_bind(listener_.get(), *a) || ::listen(listener_.get(), 1024) != 0)
    throw std::runtime_error("instant peer: cannot listen on " + path_);
  stop_ = make_eventfd();
  thread_ = std::thread([this] { run(); });
}

InstantPeer::~InstantPeer() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(stop_.get(), &one, sizeof one);
  thread_.join();
  ::unlink(path_.c_str());
}

void InstantPeer::record() {
  std::lock_guard<std::mutex> g(mu_);
  log_.clear();
  recording_ = true;
}

void InstantPeer::stop_recording() {
  std::lock_guard<std::mutex> g(mu_);
  log_.clear();
  log_.shrink_to_fit();
  recording_ = false;
}

std::vector<Recorded> InstantPeer::recorded() {
  std::lock_guard<std::mutex> g(mu_);
  return log_;
}

void InstantPeer::run() {
  // One thread serves every connection and busy-polls: on this
  // paravirtualised machine a thread woken from an idle CPU costs ~100 us,
  // which would swamp what is measured. A peer that never sleeps answers
  // "at once" for both sides alike (and takes one core, for either side).
  std::vector<Connection> conns;
  for (;;) {
    std::vector<pollfd> p{{stop_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    for (const auto& c : conns)
      p.push_back({c.fd(), POLLIN, 0});
    if (::poll(p.data(), p.size(), 0) <= 0)
      continue;
    if (p[0].revents)
      return;
    for (size_t i = p.size(); i-- > 2;)
      if (p[i].revents && !serve_one(conns[i - 2]))
        conns.erase(conns.begin() + static_cast<long>(i - 2));
    if (p[1].revents) {
      UniqueFd c = UniqueFd::adopt(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c)
        conns.emplace_back(std::move(c));
    }
  }
}

bool InstantPeer::serve_one(Connection& conn) {
  auto m = conn.receive(wire::max_payload_size, max_fds_per_message,
                        std::chrono::steady_clock::now() + std::chrono::seconds(5), "request");
  if (!m)
    return false;  // the front-end closed
  Recorded r{m->header.request, m->header.flags, m->body, m->fds.size(), 0, false};
  std::vector<uint8_t> body;
  r.answered = answer(*m, body);
  r.reply_size = body.size();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (recording_)
      log_.push_back(r);
  }
  if (!r.answered)
    return true;
  wire::Header h{m->header.request, flag_version | flag_reply, static_cast<uint32_t>(body.size())};
  std::vector<uint8_t> bytes(sizeof h + body.size());
  std::memcpy(bytes.data(), &h, sizeof h);
  if (!body.empty())
    std::memcpy(bytes.data() + sizeof h, body.data(), body.size());
  return send_all(conn.fd(), bytes.data(), bytes.size());
}

bool replay(const std::string& socket, const std::vector<Recorded>& msgs) {
  RawClient c(socket);
  return c.ok() && c.replay(msgs);
}

RawClient::RawClient(const std::string& socket)
    : fd_(connect_unix(socket)), dummy_(make_eventfd()) {}

bool RawClient::replay(const std::vector<Recorded>& msgs) {
  for (const auto& m : msgs)
    if (!replay_one(fd_.get(), dummy_.get(), m))
      return false;
  return true;
}

}  // namespace vufront::bench
