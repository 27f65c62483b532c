#include "memory/shmem_window.hpp"

#include <cerrno>
#include <string>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vufront {

namespace {

constexpr const char* kCreate = "shmem window";
constexpr const char* kMap = "BACKEND_SHMEM_MAP";
constexpr const char* kUnmap = "BACKEND_SHMEM_UNMAP";
constexpr size_t kMaxRegions = 256;  // shmid is a u8

}  // namespace

uint64_t ShmemWindow::page_size() noexcept {
  long v = ::sysconf(_SC_PAGESIZE);
  return v > 0 ? static_cast<uint64_t>(v) : uint64_t{4096};
}

Result<std::unique_ptr<ShmemWindow>> ShmemWindow::create(const std::vector<uint64_t>& sizes) {
  if (sizes.size() > kMaxRegions)
    return make_error(errc::invalid_argument, kCreate,
                      std::to_string(sizes.size()) + " regions, at most 256 (shmid is a u8)");
  const uint64_t page = page_size();
  for (size_t i = 0; i < sizes.size(); ++i)
    if (sizes[i] % page != 0)
      return make_error(errc::invalid_argument, kCreate,
                        "region " + std::to_string(i) + " size " + hex(sizes[i]) +
                            " is not a multiple of the page size " + hex(page));

  std::unique_ptr<ShmemWindow> w(new ShmemWindow());
  w->regions_.resize(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0)
      continue;
    // OWNERSHIP: the reservation belongs to the window from here on; its
    // destructor unmaps it (also when a later region fails).
    void* p = ::mmap(nullptr, sizes[i], PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (p == MAP_FAILED)
      return make_error(errc::io_error, kCreate,
                        "cannot reserve " + hex(sizes[i]) + " bytes for region " +
                            std::to_string(i),
                        errno);
    w->regions_[i] = Region{static_cast<uint8_t*>(p), sizes[i]};
  }
  return w;
}

ShmemWindow::~ShmemWindow() {
  for (auto& r : regions_)
    if (r.base != nullptr)
      ::munmap(r.base, r.size);
}

uint8_t* ShmemWindow::data(uint8_t shmid) const noexcept {
  return shmid < regions_.size() ? regions_[shmid].base : nullptr;
}

uint64_t ShmemWindow::size(uint8_t shmid) const noexcept {
  return shmid < regions_.size() ? regions_[shmid].size : 0;
}

Result<ShmemWindow::Region> ShmemWindow::check(const char* request, uint8_t shmid,
                                               uint64_t shm_offset, uint64_t len) const {
  if (shmid >= regions_.size() || regions_[shmid].base == nullptr)
    return make_error(errc::invalid_argument, request,
                      "no shared memory region " + std::to_string(shmid));
  const Region& r = regions_[shmid];
  const uint64_t page = page_size();
  if (len == 0)
    return make_error(errc::invalid_argument, request, "len is 0");
  if (shm_offset % page != 0 || len % page != 0)
    return make_error(errc::invalid_argument, request,
                      "shm_offset " + hex(shm_offset) + " / len " + hex(len) +
                          " not aligned to the page size " + hex(page));
  // Overflow-safe form of shm_offset + len <= size.
  if (len > r.size || shm_offset > r.size - len)
    return make_error(errc::invalid_argument, request,
                      "range " + hex(shm_offset) + "+" + hex(len) + " is outside region " +
                          std::to_string(shmid) + " of " + hex(r.size) + " bytes");
  return r;
}

bool ShmemWindow::reserve_fixed(uint8_t* at, uint64_t len) noexcept {
  // OWNERSHIP: replaces whatever was mapped in [at, at+len), which lies
  // inside one of our reservations (checked by the caller).
  return ::mmap(at, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
                0) != MAP_FAILED;
}

Result<void> ShmemWindow::map(uint8_t shmid, uint64_t shm_offset, int fd, uint64_t fd_offset,
                              uint64_t len, bool writable) {
  auto r = check(kMap, shmid, shm_offset, len);
  if (!r)
    return std::move(r).error();
  const uint64_t page = page_size();
  if (fd_offset % page != 0)
    return make_error(errc::invalid_argument, kMap,
                      "fd_offset " + hex(fd_offset) + " not aligned to the page size " + hex(page));
  if (fd_offset > UINT64_MAX - len || fd_offset + len > static_cast<uint64_t>(INT64_MAX))
    return make_error(errc::invalid_argument, kMap,
                      "fd_offset " + hex(fd_offset) + " + len " + hex(len) + " overflows");
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_error(errc::io_error, kMap, "fstat() of the fd failed", errno);
  // A regular file (memfd, shm) shorter than the range would give SIGBUS on access.
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < fd_offset + len)
    return make_error(errc::invalid_argument, kMap,
                      "fd is " + hex(static_cast<uint64_t>(st.st_size)) + " bytes, range " +
                          hex(fd_offset) + "+" + hex(len) + " does not fit");

  uint8_t* at = r->base + shm_offset;
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  // OWNERSHIP: the new mapping replaces part of our reservation; unmap() or
  // the destructor releases it. BOUNDS: [at, at+len) is inside the region.
  void* p = ::mmap(at, len, prot, MAP_SHARED | MAP_FIXED, fd, static_cast<off_t>(fd_offset));
  if (p == MAP_FAILED) {
    int e = errno;
    // A failed MAP_FIXED may have dropped what was there: make it a hole again.
    (void)reserve_fixed(at, len);
    return make_error(errc::io_error, kMap,
                      "mmap of " + hex(len) + " bytes at region offset " + hex(shm_offset) +
                          " failed",
                      e);
  }
  return ok();
}

Result<void> ShmemWindow::unmap(uint8_t shmid, uint64_t shm_offset, uint64_t len) {
  auto r = check(kUnmap, shmid, shm_offset, len);
  if (!r)
    return std::move(r).error();
  if (!reserve_fixed(r->base + shm_offset, len))
    return make_error(errc::io_error, kUnmap,
                      "cannot replace " + hex(len) + " bytes at region offset " +
                          hex(shm_offset),
                      errno);
  return ok();
}

}  // namespace vufront
