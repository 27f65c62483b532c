#include "actors/call_relay.hpp"

#include <exception>
#include <thread>
#include <utility>

#include <poll.h>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include "actors/eventfd_io.hpp"
#include "actors/messages.hpp"

namespace vufront::actors {

CallRelay::CallRelay(std::vector<Queue> queues, caf::actor_addr worker)
    : queues_(std::move(queues)), worker_(std::move(worker)),
      delivered_(new std::atomic<uint64_t>[queues_.size()]), noted_(queues_.size(), 0) {
  for (size_t i = 0; i < queues_.size(); ++i)
    delivered_[i].store(0, std::memory_order_relaxed);
  ready_.reserve(queues_.size());
}

bool CallRelay::on_ready(size_t slot, short revents) noexcept {
  if (slot >= queues_.size() || (revents & POLLIN) == 0)
    return false;  // POLLERR/POLLNVAL: not an eventfd we can use
  const Queue& q = queues_[slot];
  // 0: the worker drained the counter first (it does at stop and start
  // while the watcher is kept); the fd is then not readable until the next
  // signal, so watching on does not spin.
  uint64_t n = 0;
  if (q.nonblocking) {
    n = read_eventfd(q.fd, true);
  } else {
    // The worker is reading the call fds (take()): it empties them; if it
    // left a signal, the fd is still readable and the next wake reads it.
    if (reading_.exchange(true, std::memory_order_acquire))
      return true;
    n = read_eventfd(q.fd, false);
    reading_.store(false, std::memory_order_release);
  }
  if (n == 0 || noted_[slot])
    return true;
  noted_[slot] = 1;
  ready_.push_back(slot);  // within the reserved capacity: one per slot
  return true;
}

void CallRelay::end_of_wake() noexcept {
  if (ready_.empty())
    return;
  // acq_rel: acquire pairs with open()'s release (the sink fd); release
  // orders this delivery before close()'s wait sees it end.
  const uint32_t seen = gate_.fetch_add(one_delivery, std::memory_order_acq_rel);
  if ((seen & open_bit) != 0) {
    deliver_open();
    gate_.fetch_sub(one_delivery, std::memory_order_release);
    for (size_t slot : ready_)
      noted_[slot] = 0;
    ready_.clear();
    return;
  }
  gate_.fetch_sub(one_delivery, std::memory_order_release);
  // Closed: one message for the wake. Out of memory: the signals are lost
  // (the eventfds were read), as a lost message would lose them.
  std::vector<int32_t> indices;
  try {
    indices.reserve(ready_.size());
  } catch (const std::exception&) {
  }
  for (size_t slot : ready_) {
    if (indices.size() < indices.capacity())
      indices.push_back(queues_[slot].index);
    noted_[slot] = 0;
  }
  ready_.clear();
  if (indices.empty())
    return;
  try {
    // The strong handle may be the worker's last: then it ends here, on the
    // loop thread, and closes this relay (nothing in progress: at once).
    if (auto hdl = caf::actor_cast<worker_actor>(worker_))
      caf::anon_send(hdl, irq_atom_v, std::move(indices));
  } catch (const std::exception&) {
  }
}

void CallRelay::deliver_open() noexcept {
  // Counted before the write and the sends: whoever sees the interrupt sees
  // it counted.
  for (size_t slot : ready_)
    delivered_[slot].fetch_add(1, std::memory_order_relaxed);
  const int fd = sink_fd_.load(std::memory_order_relaxed);
  if (fd >= 0)
    add_to_eventfd(fd, ready_.size(), sink_nonblocking_.load(std::memory_order_relaxed));
  if (!target_)
    return;
  for (size_t slot : ready_) {
    try {
      caf::anon_send(target_, interrupt_atom_v, static_cast<int32_t>(queues_[slot].index));
    } catch (const std::exception&) {
      // Out of memory: this interrupt is lost (its eventfd was read), as a
      // lost message from the worker would lose it.
    }
  }
}

void CallRelay::open(int sink_fd, bool nonblocking, caf::actor target) noexcept {
  target_ = std::move(target);  // no delivery reads it: closed
  sink_fd_.store(sink_fd, std::memory_order_relaxed);
  sink_nonblocking_.store(nonblocking, std::memory_order_relaxed);
  gate_.fetch_or(open_bit, std::memory_order_release);
}

void CallRelay::close() noexcept {
  gate_.fetch_and(~open_bit, std::memory_order_acq_rel);
  // A delivery that saw the bit is writing the sink: wait for its end (a
  // few syscalls on the loop thread). One that did not leaves at once.
  while ((gate_.load(std::memory_order_acquire) / one_delivery) != 0)
    std::this_thread::yield();
  // Deliveries from here on see the bit cleared and never read the target.
  target_ = nullptr;
}

uint64_t CallRelay::take(size_t slot) noexcept {
  if (slot >= queues_.size())
    return 0;
  const Queue& q = queues_[slot];
  if (q.nonblocking)
    return read_eventfd(q.fd, true);  // EAGAIN when emptied: never blocks
  while (reading_.exchange(true, std::memory_order_acquire))
    std::this_thread::yield();  // the loop thread's poll + read: two syscalls
  const uint64_t n = read_eventfd(q.fd, false);
  reading_.store(false, std::memory_order_release);
  return n;
}

uint64_t CallRelay::delivered(size_t slot) const noexcept {
  return slot < queues_.size() ? delivered_[slot].load(std::memory_order_relaxed) : 0;
}

}  // namespace vufront::actors
