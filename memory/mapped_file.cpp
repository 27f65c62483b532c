#include "memory/mapped_file.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>

#include <sys/mman.h>
#include <unistd.h>

namespace vufront {

Result<MappedFile> MappedFile::map(int fd, size_t len, const char* request, bool sequential) {
  if (len == 0)
    return make_error(errc::invalid_argument, request, "nothing to map (0 bytes)");
  // OWNERSHIP: unmapped by the MappedFile (or below, on a failed guard).
  void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return make_error(errc::io_error, request, "mmap of " + std::to_string(len) + " bytes", errno);
  auto guard = SigbusGuard::guard(p, len);
  if (!guard) {
    ::munmap(p, len);
    Error e = guard.error();
    e.request = request;
    return e;
  }
  if (sequential)
    (void)::madvise(p, len, MADV_SEQUENTIAL);  // a hint only
  MappedFile m;
  m.data_ = static_cast<const uint8_t*>(p);
  m.size_ = len;
  m.guard_ = std::move(guard).value();
  return m;
}

void MappedFile::drop(size_t from, size_t to) noexcept {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  to = std::min(to, size_);
  from = from / page * page;  // a page partly before `from`: re-faulted if read again, no harm
  to = to / page * page;
  if (data_ == nullptr || from >= to)
    return;
  (void)::madvise(const_cast<uint8_t*>(data_) + from, to - from, MADV_DONTNEED);  // a hint only
}

MappedFile::~MappedFile() { reset(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      guard_(std::move(other.guard_)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    guard_ = std::move(other.guard_);
  }
  return *this;
}

void MappedFile::reset() noexcept {
  guard_.release();  // first: a range is guarded only while it is mapped
  if (data_ != nullptr)
    ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace vufront
