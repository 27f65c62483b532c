#pragma once
// A SnapshotWriter on a thread of its own, so that whoever reads the state
// (the snapshot actor, from the back-end's pipe) fills the next buffer while
// the last one is hashed and written to the file. The writing itself is
// SnapshotWriter::write_state, unchanged: the checksum is of exactly the
// bytes written into the file, in order; the cap and its error, the
// temporary removed on failure, all stay.
//
// A few buffers go round: the reader acquire()s a free one, fills it and
// submit()s it; the thread writes the queued buffers in order and frees them.
// The first failure of a write stops the thread (the buffers still queued
// are dropped) and every later acquire/submit/status/finish returns it, so
// the reader stops at its next call. finish() writes what is queued, joins
// the thread and hands the writer back for commit(). Dropping a WriterThread
// without finish() (a cancel, a deadline, the reader's own error) stops the
// thread after the write in progress, joins it and drops the writer, which
// removes its temporary (or truncates a passed file).
//
// A write that blocks (a stalled disk) blocks the thread, and so a reader
// waiting for a free buffer (acquire waits only until its time limit) and a
// drop, which joins: no worse than the write it replaced on the reader's
// own thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "base/error.hpp"
#include "snapshot/writer.hpp"

namespace vufront::snapshot {

class WriterThread {
public:
  using Clock = std::chrono::steady_clock;

  /// One buffer lent to the reader: fill [data, data+size), then submit it.
  struct Slot {
    uint8_t* data = nullptr;  ///< null: none was free in time
    size_t size = 0;
    size_t index = 0;
  };

  /// Starts the thread with `buffers` buffers (at least 2) of `buffer_bytes`
  /// each. errc::io_error when the buffers cannot be mapped or the thread
  /// cannot be started (the writer is dropped then: its temporary goes).
  [[nodiscard]] static Result<std::unique_ptr<WriterThread>> start(SnapshotWriter writer, size_t buffers,
                                                                   size_t buffer_bytes);

  WriterThread(const WriterThread&) = delete;
  WriterThread& operator=(const WriterThread&) = delete;
  /// Stops the thread after the write in progress, joins it, and drops the
  /// writer unless finish() took it back (its temporary is removed).
  ~WriterThread();

  /// A free buffer, waiting until `until` for one (a slot with null data
  /// when none came free in time). The writer's error once it failed.
  [[nodiscard]] Result<Slot> acquire(Clock::time_point until);
  /// Queues the first `len` bytes of `slot` (from acquire) for writing; a
  /// slot with len 0 goes straight back. The writer's error once it failed.
  [[nodiscard]] Result<void> submit(const Slot& slot, size_t len);
  /// The writer's error once it failed, else ok. Cheap: no lock.
  [[nodiscard]] Result<void> status() const;
  /// True when nothing is queued or being written.
  [[nodiscard]] bool idle() const;
  /// Writes everything queued, joins the thread and returns the writer, to
  /// commit. The writer's error if a write failed (the writer is dropped
  /// then, and its temporary with it). Only once.
  [[nodiscard]] Result<SnapshotWriter> finish();

private:
  WriterThread(SnapshotWriter writer, uint8_t* base, size_t buffers, size_t buffer_bytes);
  void run() noexcept;
  void stop_and_join() noexcept;
  [[nodiscard]] Error failure() const;

  struct Queued {
    size_t index;
    size_t len;
  };

  std::optional<SnapshotWriter> writer_;  ///< the thread's alone while it runs
  /// The buffers, one anonymous mapping (unmapped at the end: a snapshot
  /// leaves no memory behind, as heap blocks of this size would).
  uint8_t* base_ = nullptr;
  size_t count_ = 0;
  size_t buffer_bytes_ = 0;
  mutable std::mutex mu_;
  std::condition_variable work_;  ///< the thread waits here for a buffer
  std::condition_variable freed_; ///< the reader waits here for a free one
  std::deque<size_t> free_;       ///< guarded by mu_
  std::deque<Queued> queued_;     ///< guarded by mu_; front: being written
  bool closing_ = false;          ///< guarded by mu_: write what is queued, then end
  bool stopping_ = false;         ///< guarded by mu_: end after the write in progress
  std::optional<Error> error_;    ///< guarded by mu_; set once
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

}  // namespace vufront::snapshot
