#include "protocol/message_trace.hpp"

#include <utility>

#include <fmt/format.h>

#include "base/log.hpp"
#include "protocol/messages.hpp"

namespace vufront {

MessageTrace::MessageTrace(Channel channel, std::string label)
    : channel_(channel), label_(std::move(label)) {}

std::shared_ptr<MessageTrace> MessageTrace::if_tracing(Channel channel, std::string label) {
  if (!log::tracing())
    return nullptr;
  return std::make_shared<MessageTrace>(channel, std::move(label));
}

void MessageTrace::relabel(std::string label) {
  std::lock_guard<std::mutex> lock(mutex_);
  label_ = std::move(label);
}

void MessageTrace::sent(uint32_t request, uint32_t flags, size_t size, size_t nfds) {
  line(true, request, flags, size, nfds);
}

void MessageTrace::received(uint32_t request, uint32_t flags, size_t size, size_t nfds) {
  line(false, request, flags, size, nfds);
}

void MessageTrace::line(bool outgoing, uint32_t request, uint32_t flags, size_t size,
                        size_t nfds) {
  const auto now = Clock::now();
  const bool reply = (flags & flag_reply) != 0;
  const std::string name =
      channel_ == Channel::frontend ? frontend_req_name(request) : backend_req_name(request);
  std::string after;
  std::string label;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    label = label_;
    if (!reply) {
      pending_[request] = now;
    } else if (auto it = pending_.find(request); it != pending_.end()) {
      const std::chrono::duration<double, std::milli> took = now - it->second;
      after = fmt::format(" after {:.3f} ms", took.count());
      pending_.erase(it);
    } else {
      after = " (no request seen)";
    }
  }
  log::trace(fmt::format("trace: {} {} {}{} (flags {:#x}, {} byte{}, {} fd{}){}", label,
                         outgoing ? "->" : "<-", name, reply ? " reply" : "", flags, size,
                         size == 1 ? "" : "s", nfds, nfds == 1 ? "" : "s", after));
}

}  // namespace vufront
