#pragma once
// CallRelay: what the worker's call watcher does with the signals it reads
// from the queues' call eventfds (actors/worker.*). Shared by the worker,
// its owner, and the watcher's callbacks on the event loop's thread; no
// mutex.
//
// The watcher calls on_ready() for each call eventfd of one wake (it reads
// the counter and notes the queue) and end_of_wake() once after them, which
// delivers what the wake read:
//  * while the relay is open (the worker runs): straight to the sink from
//    the loop thread, each queue counted here: to the sink eventfd one write
//    of the number of queues read, to the sink actor one (interrupt_atom,
//    queue index) per queue (caf::anon_send is thread-safe), to a sink with
//    both, both. The worker is not in the path: an eventfd sink takes one
//    thread hop, as with bare eventfds; an actor sink one CAF hop;
//  * else (stopped): one (irq_atom, queue indices) message to the worker for
//    the whole wake, which keeps it pending until the next start.
//
// open() and close() are the worker's. close() returns only after every
// delivery that saw the relay open has finished: one atomic word holds the
// open bit and the number of deliveries in progress; a delivery adds itself
// and looks at the bit, close() clears the bit and waits (yielding) for the
// number to drop to zero (a write and one send per queue of a wake at most). After close() nothing
// reaches the sink through the relay (no write, no message sent) until the
// next open(). The sink actor's handle is set by open() before the bit and
// read only by a delivery that saw the bit; close() drops it. A delivery
// never waits inside, so close() may run on the loop thread too (the worker
// dropped from a callback), where the number is then zero.
//
// A call eventfd in blocking mode is read with a zero-timeout poll first;
// the worker's own reads (take()) and the loop thread's never overlap, else
// one could read a counter the other just emptied and block.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

namespace vufront::actors {

class CallRelay {
public:
  struct Queue {
    uint16_t index = 0;        ///< the queue's index: the interrupt's vector
    int fd = -1;               ///< its call eventfd, NOT owned: the worker keeps it open
    bool nonblocking = false;  ///< O_NONBLOCK: read without a poll first
  };

  /// `worker`: weak; receives (irq_atom, indices) while the relay is closed.
  CallRelay(std::vector<Queue> queues, caf::actor_addr worker);

  CallRelay(const CallRelay&) = delete;
  CallRelay& operator=(const CallRelay&) = delete;

  // ---- the loop thread (the watcher's callbacks); one caller at a time

  /// Queue `slot`'s call eventfd is ready (`revents` from poll): reads its
  /// counter and notes the queue if it held signals. Returns whether to
  /// watch it on (false without POLLIN: not an eventfd we can use).
  bool on_ready(size_t slot, short revents) noexcept;

  /// Delivers what on_ready() noted since the last call (see above).
  void end_of_wake() noexcept;

  // ---- the worker

  /// Starts direct delivery into `sink_fd` (-1: none; NOT owned: open until
  /// close() has returned) and to `target` (may be null). Only while closed.
  void open(int sink_fd, bool nonblocking, caf::actor target = {}) noexcept;

  /// Ends direct delivery; returns once no delivery is in progress (its
  /// write done, its messages sent) and drops the target. Idempotent.
  void close() noexcept;

  /// Reads queue `slot`'s call eventfd now (stop and start take what the
  /// watcher has not read). A call fd in blocking mode is read by one
  /// thread at a time, so neither ever reads an emptied counter and blocks:
  /// this waits (yielding) for the loop thread's read in progress, and the
  /// loop thread skips its read while this one runs (the fd stays readable,
  /// so the watcher reads it at its next wake).
  [[nodiscard]] uint64_t take(size_t slot) noexcept;

  /// Interrupts of queue `slot` delivered straight to the sink so far.
  [[nodiscard]] uint64_t delivered(size_t slot) const noexcept;

  [[nodiscard]] const std::vector<Queue>& queues() const noexcept { return queues_; }

private:
  /// end_of_wake() while open: counts, writes the sink eventfd, sends to the
  /// target.
  void deliver_open() noexcept;

  static constexpr uint32_t open_bit = 1;
  static constexpr uint32_t one_delivery = 2;

  const std::vector<Queue> queues_;
  const caf::actor_addr worker_;
  std::unique_ptr<std::atomic<uint64_t>[]> delivered_;  ///< per slot
  std::atomic<uint32_t> gate_{0};                      ///< open_bit | deliveries * 2
  std::atomic<int> sink_fd_{-1};
  std::atomic<bool> sink_nonblocking_{false};
  caf::actor target_;  ///< written by open()/close() while no delivery may read it
  std::atomic<bool> reading_{false};  ///< a blocking call fd is being read (poll + read)

  // The loop thread's only: the slots read in the current wake.
  std::vector<size_t> ready_;     ///< capacity: one per queue
  std::vector<char> noted_;       ///< per slot: in ready_ already
};

}  // namespace vufront::actors
