#include "snapshot/writer_thread.hpp"

#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>

#include <system_error>
#include <utility>

namespace vufront::snapshot {
namespace {

constexpr const char* kWrite = "snapshot write";

}  // namespace

WriterThread::WriterThread(SnapshotWriter writer, uint8_t* base, size_t buffers, size_t buffer_bytes)
    : writer_(std::move(writer)), base_(base), count_(buffers), buffer_bytes_(buffer_bytes) {
  for (size_t i = 0; i < buffers; ++i)
    free_.push_back(i);
}

Result<std::unique_ptr<WriterThread>> WriterThread::start(SnapshotWriter writer, size_t buffers,
                                                          size_t buffer_bytes) {
  if (buffers < 2 || buffer_bytes == 0 || buffer_bytes > (size_t{1} << 30) / buffers)
    return make_error(errc::invalid_argument, kWrite,
                      "a writer thread needs two buffers or more, of 1 GiB in all at most");
  // OWNERSHIP: unmapped by the WriterThread's destructor from here on.
  void* base = ::mmap(nullptr, buffers * buffer_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED)
    return make_error(errc::io_error, kWrite, "mmap of the writer thread's buffers", errno);
  std::unique_ptr<WriterThread> t(
      new WriterThread(std::move(writer), static_cast<uint8_t*>(base), buffers, buffer_bytes));
  try {
    t->thread_ = std::thread([p = t.get()] { p->run(); });
  } catch (const std::system_error& e) {
    return make_error(errc::io_error, kWrite, "cannot start the writer thread", e.code().value());
  }
  // Best effort: a name in ps/top for the thread that writes snapshots.
  (void)::pthread_setname_np(t->thread_.native_handle(), "vufront-snapw");
  return t;
}

WriterThread::~WriterThread() {
  stop_and_join();
  writer_.reset();  // unless finish() took it: removes the temporary
  (void)::munmap(base_, count_ * buffer_bytes_);
}

void WriterThread::stop_and_join() noexcept {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void WriterThread::run() noexcept {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_.wait(lk, [this] { return stopping_ || closing_ || !queued_.empty(); });
    if (stopping_ || queued_.empty())
      return;  // stopped, or closing with nothing left to write
    Queued q = queued_.front();
    lk.unlock();
    // The buffer at the queue's front is the thread's until it is freed:
    // the reader neither reuses nor frees a queued buffer.
    auto r = writer_->write_state(base_ + q.index * buffer_bytes_, q.len);
    lk.lock();
    queued_.pop_front();
    free_.push_back(q.index);
    if (!r) {
      error_ = std::move(r).error();
      failed_.store(true, std::memory_order_release);
      queued_.clear();  // dropped: the snapshot is abandoned
    }
    freed_.notify_all();
    if (error_)
      return;
  }
}

Error WriterThread::failure() const { return *error_; }

Result<void> WriterThread::status() const {
  if (!failed_.load(std::memory_order_acquire))
    return ok();
  std::lock_guard<std::mutex> lk(mu_);
  return failure();
}

bool WriterThread::idle() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queued_.empty();
}

Result<WriterThread::Slot> WriterThread::acquire(Clock::time_point until) {
  std::unique_lock<std::mutex> lk(mu_);
  if (closing_ || stopping_)
    return make_error(errc::bad_state, kWrite, "the writer thread was finished");
  (void)freed_.wait_until(lk, until, [this] { return error_.has_value() || !free_.empty(); });
  if (error_)
    return failure();
  if (free_.empty())
    return Slot{};
  size_t i = free_.front();
  free_.pop_front();
  return Slot{base_ + i * buffer_bytes_, buffer_bytes_, i};
}

Result<void> WriterThread::submit(const Slot& slot, size_t len) {
  if (slot.data == nullptr || slot.index >= count_ || slot.data != base_ + slot.index * buffer_bytes_ ||
      len > buffer_bytes_)
    return make_error(errc::invalid_argument, kWrite, "not a buffer of this writer thread");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (error_) {
      free_.push_back(slot.index);
      return failure();
    }
    if (len == 0)
      free_.push_back(slot.index);
    else
      queued_.push_back({slot.index, len});
  }
  if (len > 0)
    work_.notify_one();
  return ok();
}

Result<SnapshotWriter> WriterThread::finish() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closing_ || stopping_ || !writer_)
      return make_error(errc::bad_state, kWrite, "the writer thread was finished");
    closing_ = true;
  }
  work_.notify_all();
  if (thread_.joinable())
    thread_.join();
  // The thread has ended: error_ and writer_ are ours alone now.
  if (error_) {
    writer_.reset();  // removes the temporary now, not at the destructor
    return failure();
  }
  SnapshotWriter w = std::move(*writer_);
  writer_.reset();
  return w;
}

}  // namespace vufront::snapshot
