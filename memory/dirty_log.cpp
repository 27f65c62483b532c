#include "memory/dirty_log.hpp"

#include <fcntl.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>
#include <utility>

namespace vufront {

namespace {

/// 2^52 bytes of guest-physical memory: the largest GPA x86-64 and arm64 have.
constexpr uint64_t max_end = uint64_t{1} << 52;

}  // namespace

uint64_t DirtyLog::bytes_for(uint64_t end) noexcept {
  const uint64_t pages = (end + page_size - 1) / page_size;
  const uint64_t words = (pages + 63) / 64;
  return (words == 0 ? 1 : words) * 8;
}

Result<DirtyLog> DirtyLog::create(uint64_t end) {
  if (end > max_end)
    return make_error(errc::invalid_argument, "dirty log",
                      "guest memory ends beyond 2^52 bytes: no log that big");
  const uint64_t bytes = bytes_for(end);
  UniqueFd fd = make_memfd("vufront-dirty-log", bytes);
  if (!fd)
    return make_error(errc::io_error, "dirty log", "memfd_create/ftruncate", errno);
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return make_error(errc::io_error, "dirty log", "sealing the memfd", errno);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED)
    return make_error(errc::io_error, "dirty log", "mmap", errno);
  return DirtyLog(share(std::move(fd)), static_cast<uint64_t*>(p), bytes / 8);
}

Result<DirtyLog> DirtyLog::map(SharedFd fd, uint64_t size) {
  if (!fd || !*fd)
    return make_error(errc::invalid_argument, "dirty log", "no fd to map");
  if (size == 0 || size % 8 != 0 || size > bytes_for(max_end))
    return make_error(errc::invalid_argument, "dirty log",
                      "size " + std::to_string(size) + " is not a whole number of 64-bit words");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  if (p == MAP_FAILED)
    return make_error(errc::io_error, "dirty log", "mmap", errno);
  return DirtyLog(std::move(fd), static_cast<uint64_t*>(p), size / 8);
}

DirtyLog::DirtyLog(DirtyLog&& o) noexcept
    : fd_(std::move(o.fd_)), words_ptr_(std::exchange(o.words_ptr_, nullptr)),
      words_(std::exchange(o.words_, 0)) {}

DirtyLog& DirtyLog::operator=(DirtyLog&& o) noexcept {
  if (this != &o) {
    if (words_ptr_ != nullptr)
      ::munmap(words_ptr_, words_ * 8);
    fd_ = std::move(o.fd_);
    words_ptr_ = std::exchange(o.words_ptr_, nullptr);
    words_ = std::exchange(o.words_, 0);
  }
  return *this;
}

DirtyLog::~DirtyLog() {
  if (words_ptr_ != nullptr)
    ::munmap(words_ptr_, words_ * 8);
}

// The bitmap is little-endian bytes (bit p % 8 of byte p / 8); on the
// little-endian hosts vufront runs on (x86-64, arm64) that is bit p % 64 of
// word p / 64.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the log's words are little-endian");

bool DirtyLog::mark(uint64_t gpa) noexcept {
  const uint64_t page = gpa / page_size;
  if (page >= pages())
    return false;
  __atomic_fetch_or(&words_ptr_[page / 64], uint64_t{1} << (page % 64), __ATOMIC_SEQ_CST);
  return true;
}

void DirtyLog::mark_all() noexcept {
  for (uint64_t i = 0; i < words_; ++i)
    __atomic_store_n(&words_ptr_[i], ~uint64_t{0}, __ATOMIC_SEQ_CST);
}

bool DirtyLog::test(uint64_t page) const noexcept {
  if (page >= pages())
    return false;
  return (__atomic_load_n(&words_ptr_[page / 64], __ATOMIC_SEQ_CST) >> (page % 64)) & 1u;
}

std::vector<uint64_t> DirtyLog::read_and_clear() noexcept {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < words_; ++i) {
    uint64_t w = __atomic_exchange_n(&words_ptr_[i], uint64_t{0}, __ATOMIC_SEQ_CST);
    while (w != 0) {
      const int b = __builtin_ctzll(w);
      out.push_back(i * 64 + static_cast<uint64_t>(b));
      w &= w - 1;
    }
  }
  return out;
}

bool DirtyLog::fold_into(DirtyLog& bigger) noexcept {
  bool all = true;
  for (uint64_t i = 0; i < words_; ++i) {
    const uint64_t w = __atomic_exchange_n(&words_ptr_[i], uint64_t{0}, __ATOMIC_SEQ_CST);
    if (w == 0)
      continue;
    if (i >= bigger.words_) {
      all = false;
      continue;
    }
    __atomic_fetch_or(&bigger.words_ptr_[i], w, __ATOMIC_SEQ_CST);
  }
  return all;
}

}  // namespace vufront
