#include "actors/vmm_reader.hpp"

#include <fcntl.h>

#include <atomic>
#include <cstring>
#include <string>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/handoff.hpp"
#include "actors/messages.hpp"
#include "protocol/connection.hpp"
#include "protocol/frontend_request.hpp"

namespace vufront::actors {

namespace {

constexpr const char* kReader = "VMM connection";
/// Once a request's first byte is there, the rest must follow within this.
constexpr std::chrono::milliseconds rest_of_message{5000};

}  // namespace

struct VmmReader::Core {
  std::optional<Connection> conn;  ///< on the reader's own dup of the socket
  caf::actor_addr port;            ///< weak
  std::unique_ptr<CreditGate> gate;
  /// Set by stop(): a receive waiting for the rest of a message gives up.
  std::shared_ptr<std::atomic<bool>> stopped = std::make_shared<std::atomic<bool>>(false);

  void eof(std::string reason) const {
    if (gate->stopping())
      return;
    if (auto p = caf::actor_cast<vmm_port_actor>(port))
      caf::anon_send(p, vmm_eof_atom_v, std::move(reason));
  }

  void loop() {
    bool have_credit = false;
    while (!gate->stopping()) {
      int err = 0;
      if (!have_credit) {
        if (!gate->take(err)) {
          if (err != 0)
            eof(std::string("credit eventfd failed: ") + std::strerror(err));
          return;
        }
        have_credit = true;
      }
      auto w = gate->wait_readable(conn->fd(), err);
      if (w == CreditGate::Wake::stop)
        return;
      if (w == CreditGate::Wake::error)
        return eof(std::string("poll failed: ") + std::strerror(err));
      auto m = conn->receive(frontend_request_max_body, frontend_request_max_fds,
                             deadline_in(rest_of_message), "VMM request");
      if (!m) {
        if (m.error().code == errc::disconnected)
          return eof("the VMM closed the connection");
        return eof(m.error().message());
      }
      auto p = caf::actor_cast<vmm_port_actor>(port);
      if (!p)
        return;
      auto msg = std::make_shared<Message>(std::move(m).value());
      handed_over(msg.get());
      caf::anon_send(p, vmm_msg_atom_v, std::move(msg));
      have_credit = false;  // travels with the request; request_done() gives it back
    }
  }
};

Result<std::unique_ptr<VmmReader>> VmmReader::start(int fd, caf::actor_addr port) {
  auto gate = CreditGate::create(1, kReader);
  if (!gate)
    return std::move(gate).error();
  UniqueFd dup = UniqueFd::adopt(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup)
    return make_error(errc::io_error, kReader, "dup of the socket", errno);
  auto core = std::make_shared<Core>();
  core->conn.emplace(std::move(dup));
  core->conn->stop_when(core->stopped);
  core->port = std::move(port);
  core->gate = std::move(gate).value();
  std::unique_ptr<VmmReader> out(new VmmReader(core));
  out->task_ = loop::EventLoop::instance().spawn(
      [core] {
        try {
          core->loop();
        } catch (...) {
          try {
            core->eof("reader failed (out of memory?)");
          } catch (...) {
          }
        }
      },
      kReader);
  return out;
}

VmmReader::~VmmReader() {
  stop();
  task_.join();  // on the loop thread: ends its wait instead
}

void VmmReader::request_done() noexcept { core_->gate->give(1); }

std::function<void()> VmmReader::done_hook() const {
  return [core = core_] { core->gate->give(1); };
}

void VmmReader::stop() noexcept {
  core_->stopped->store(true);
  core_->gate->stop();
}

}  // namespace vufront::actors
