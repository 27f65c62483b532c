#include "backend/dirty_log_writer.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace vufront::backend {

namespace {
constexpr uint64_t log_page = 0x1000;  // VHOST_LOG_PAGE
constexpr const char* what = "SET_LOG_BASE";
}  // namespace

DirtyLogWriter::~DirtyLogWriter() { clear(); }

void DirtyLogWriter::clear() noexcept {
  if (map_ != nullptr)
    ::munmap(map_, map_len_);
  map_ = bytes_ = nullptr;
  size_ = map_len_ = 0;
}

Result<void> DirtyLogWriter::set(const wire::Log& log, UniqueFd fd) {
  if (log.mmap_size == 0)
    return make_error(errc::invalid_payload, what, "log of size 0");
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0)
    return make_error(errc::io_error, what, "fstat of the log fd", errno);
  const uint64_t fd_size = static_cast<uint64_t>(sb.st_size);
  if (log.mmap_offset > fd_size || log.mmap_size > fd_size - log.mmap_offset)
    return make_error(errc::invalid_payload, what,
                      "log of " + std::to_string(log.mmap_size) + " bytes at offset " +
                          std::to_string(log.mmap_offset) + " is beyond its fd (" +
                          std::to_string(fd_size) + " bytes)");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start = log.mmap_offset & ~(page - 1);
  const uint64_t len = log.mmap_offset - start + log.mmap_size;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(),
                   static_cast<off_t>(start));
  if (p == MAP_FAILED)
    return make_error(errc::io_error, what, "mmap of the log", errno);
  clear();
  map_ = static_cast<uint8_t*>(p);
  map_len_ = len;
  bytes_ = map_ + (log.mmap_offset - start);
  size_ = log.mmap_size;
  return ok();  // the fd closes here: the mapping keeps the log
}

void DirtyLogWriter::mark(uint64_t gpa, uint64_t len) noexcept {
  if (bytes_ == nullptr || len == 0)
    return;
  const uint64_t first = gpa / log_page;
  const uint64_t last = (gpa + len - 1) / log_page;
  for (uint64_t p = first; p <= last; ++p) {
    if (p / 8 >= size_) {
      if (missed_++ == 0)
        std::fprintf(stderr,
                     "vufront-backend: dirty log: page 0x%llx is beyond the log (%llu bytes); "
                     "its write is not logged\n",
                     static_cast<unsigned long long>(p), static_cast<unsigned long long>(size_));
      continue;
    }
    __atomic_fetch_or(&bytes_[p / 8], static_cast<uint8_t>(1u << (p % 8)), __ATOMIC_SEQ_CST);
  }
}

}  // namespace vufront::backend
