#include "actors/control_reader.hpp"

#include <atomic>
#include <cstring>
#include <string>
#include <system_error>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/handoff.hpp"
#include "actors/messages.hpp"
#include "control/packet.hpp"

namespace vufront::actors {

namespace {

constexpr const char* kReader = "control connection";
std::atomic<int> readers_alive{0};

}  // namespace

struct ControlReader::Core {
  int fd = -1;  ///< NOT owned
  caf::actor_addr session;  ///< weak
  std::unique_ptr<CreditGate> gate;

  void eof(std::string reason) const {
    if (gate->stopping())
      return;
    if (auto s = caf::actor_cast<control_session_actor>(session))
      caf::anon_send(s, ctl_eof_atom_v, std::move(reason));
  }

  void loop() const {
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
      auto w = gate->wait_readable(fd, err);
      if (w == CreditGate::Wake::stop)
        return;
      if (w == CreditGate::Wake::error)
        return eof(std::string("poll failed: ") + std::strerror(err));
      auto p = control::try_receive_packet(fd);
      if (!p) {
        if (p.error().code == errc::disconnected)
          return eof("the VMM closed the connection");
        return eof(p.error().message());
      }
      if (!*p)
        continue;  // nothing after all (a spurious wake-up); keep the credit
      auto s = caf::actor_cast<control_session_actor>(session);
      if (!s)
        return;
      auto packet = std::make_shared<control::Packet>(std::move(**p));
      handed_over(packet.get());
      caf::anon_send(s, packet_atom_v, std::move(packet));
      have_credit = false;  // travels with the packet; packet_done() gives it back
    }
  }
};

Result<std::unique_ptr<ControlReader>> ControlReader::start(int fd, caf::actor_addr session,
                                                            uint32_t credits) {
  auto gate = CreditGate::create(credits, kReader);
  if (!gate)
    return std::move(gate).error();
  auto core = std::make_shared<Core>();
  core->fd = fd;
  core->session = std::move(session);
  core->gate = std::move(gate).value();
  std::unique_ptr<ControlReader> out(new ControlReader(core));
  ++readers_alive;
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
        --readers_alive;
      },
      kReader);
  return out;
}

ControlReader::~ControlReader() {
  stop();
  task_.join();  // on the loop thread (the last reference went in a task): ends its wait instead
}

void ControlReader::packet_done() noexcept { core_->gate->give(1); }

void ControlReader::stop() noexcept { core_->gate->stop(); }

int ControlReader::live_readers() noexcept { return readers_alive.load(); }

}  // namespace vufront::actors
