#include "proxy/log_base.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <string>
#include <vector>

namespace vufront::proxy {

namespace {

constexpr const char* request = "SET_LOG_BASE";

Error bad(const std::string& why) { return make_error(errc::invalid_payload, request, why); }

}  // namespace

uint64_t log_bytes_for(uint64_t end) noexcept {
  const uint64_t pages = end / log_page_size + (end % log_page_size != 0);
  return pages / 8 + (pages % 8 != 0);
}

Result<void> check_log_base(const wire::Log& log, int fd, uint64_t memory_end) {
  if (log.mmap_size == 0)
    return bad("mmap_size is 0");
  if (log.mmap_offset + log.mmap_size < log.mmap_offset)
    return bad("mmap_offset + mmap_size wraps");
  struct stat sb {};
  if (fd < 0 || ::fstat(fd, &sb) != 0)
    return make_error(errc::invalid_payload, request, "its fd cannot be examined", errno);
  if (!S_ISREG(sb.st_mode))
    return bad("its fd is not a memory file (memfd or regular file)");
  const auto file_size = static_cast<uint64_t>(sb.st_size);
  if (log.mmap_offset + log.mmap_size > file_size)
    return bad("the log (" + std::to_string(log.mmap_size) + " bytes at offset " +
               std::to_string(log.mmap_offset) + ") reaches past the end of its file (" +
               std::to_string(file_size) + " bytes)");
  const uint64_t need = log_bytes_for(memory_end);
  if (log.mmap_size < need)
    return bad("the log (" + std::to_string(log.mmap_size) + " bytes) does not cover guest memory up to " +
               std::to_string(memory_end) + " (" + std::to_string(need) + " bytes needed)");
  return ok();
}

Result<void> mark_all_dirty(const wire::Log& log, int fd) {
  // pwrite, not a mapping: a VMM's file that shrank meanwhile (an unsealed
  // one) must not fault vufront. A word the VMM exchanges while this writes
  // ends up either read by it with these bits or still holding them.
  std::vector<uint8_t> ones(std::min<uint64_t>(log.mmap_size, 1 << 20), 0xff);
  for (uint64_t done = 0; done < log.mmap_size;) {
    const uint64_t n = std::min<uint64_t>(ones.size(), log.mmap_size - done);
    const ssize_t w = ::pwrite(fd, ones.data(), n, static_cast<off_t>(log.mmap_offset + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return make_error(errc::io_error, request, "marking every page of the VMM's log dirty", w < 0 ? errno : EIO);
    done += static_cast<uint64_t>(w);
  }
  return ok();
}

}  // namespace vufront::proxy
