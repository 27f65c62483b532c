#pragma once
// DirtyLog: the front-end's dirty-page log of a vhost-user device (vhost-user
// spec, "Migration" and "Dirty pages logging"): a bitmap over guest-physical
// memory from GPA 0 to the highest region end, one bit per 4 KiB page (page
// p is bit p % 8 of byte p / 8, i.e. bit p % 64 of little-endian 64-bit word
// p / 64), rounded up to whole 64-bit words. It lives in a sealed memfd
// (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: a peer can write the bits but
// never change the size under the other mappings) that SET_LOG_BASE hands to
// the back-end and `dirty_log_start` hands to the VMM.
//
// Readers take the bits with an atomic exchange per 64-bit word, so a bit the
// back-end sets while the log is read is either in this read or in the next,
// never lost (QEMU reads its vhost log the same way). vufront itself never
// reads and clears a log a VMM holds (docs/attach-protocol.md).
//
// Thread safety: every bit operation is atomic; the object is not resized in
// place (a bigger log is a new DirtyLog, fold_into() moves the bits over).

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront {

class DirtyLog {
public:
  /// VHOST_LOG_PAGE: the page size the log counts in, whatever the host's.
  static constexpr uint64_t page_size = 0x1000;

  /// Bytes of a log covering GPA 0 up to `end` (exclusive): one bit per
  /// page, rounded up to 64-bit words; at least one word.
  [[nodiscard]] static uint64_t bytes_for(uint64_t end) noexcept;

  /// A zeroed log covering GPA 0 up to `end`, in a sealed memfd, mapped
  /// shared. Errors: invalid_argument (`end` beyond 2^52: no log that big),
  /// io_error (memfd, seal, mmap; errno).
  [[nodiscard]] static Result<DirtyLog> create(uint64_t end);

  /// Maps a log someone else made (a device's, from dirty_log_start): `fd`
  /// and its `size` in bytes (a multiple of 8, not 0). Errors:
  /// invalid_argument (no fd, bad size), io_error (mmap; errno).
  [[nodiscard]] static Result<DirtyLog> map(SharedFd fd, uint64_t size);

  DirtyLog(DirtyLog&& o) noexcept;
  DirtyLog& operator=(DirtyLog&& o) noexcept;
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;
  ~DirtyLog();

  /// The memfd (SET_LOG_BASE's and the VMM's fd), shared with whoever sends it.
  [[nodiscard]] const SharedFd& fd() const noexcept { return fd_; }
  /// Its size in bytes (SET_LOG_BASE's mmap_size).
  [[nodiscard]] uint64_t size() const noexcept { return words_ * 8; }
  /// The end of guest-physical memory it covers (pages() * page_size).
  [[nodiscard]] uint64_t covers() const noexcept { return words_ * 64 * page_size; }
  [[nodiscard]] uint64_t pages() const noexcept { return words_ * 64; }

  /// Sets the bit of the page holding `gpa` (beyond the log: false, nothing set).
  bool mark(uint64_t gpa) noexcept;
  /// Sets every bit of the log (a back-end lost while logging: a crash may
  /// separate a data write from its log bit).
  void mark_all() noexcept;
  /// Whether page `page` is marked (no clearing).
  [[nodiscard]] bool test(uint64_t page) const noexcept;
  /// The marked pages, ascending, each word cleared with an atomic exchange.
  [[nodiscard]] std::vector<uint64_t> read_and_clear() noexcept;
  /// Moves every bit of this log into `bigger` (this one cleared word by
  /// word with atomic exchanges, `bigger` or-ed atomically); bits beyond
  /// `bigger` are dropped (false then: it does not cover this log).
  bool fold_into(DirtyLog& bigger) noexcept;

private:
  DirtyLog(SharedFd fd, uint64_t* words, uint64_t count) noexcept
      : fd_(std::move(fd)), words_ptr_(words), words_(count) {}

  SharedFd fd_;
  uint64_t* words_ptr_ = nullptr;
  uint64_t words_ = 0;
};

}  // namespace vufront
