#include "memory/guest_memory.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <string>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vufront {

namespace bip = boost::interprocess;

namespace {

/// Lets bip::mapped_region map any fd (it accepts any type with get_mapping_handle()).
struct FdMappable {
  int fd;
  [[nodiscard]] bip::mapping_handle_t get_mapping_handle() const noexcept {
    bip::mapping_handle_t h;
    h.handle = fd;
    h.is_xsi = false;
    return h;
  }
};

uint64_t page_size() noexcept {
  static const uint64_t ps = [] {
    long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<uint64_t>(v) : uint64_t{4096};
  }();
  return ps;
}

std::string range(uint64_t gpa, uint64_t size) { return hex(gpa) + "+" + hex(size); }

Error invalid(const char* op, std::string detail) {
  return make_error(errc::invalid_argument, op, std::move(detail));
}

/// Creates a shm_open object through Boost.Interprocess, removes its name at
/// once, sizes it, and returns a CLOEXEC duplicate of its fd.
Result<UniqueFd> make_shm_fd(uint64_t size) {
  static std::atomic<unsigned> counter{0};
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string name = "vufront-guest-" + std::to_string(::getpid()) + "-" +
                       std::to_string(counter.fetch_add(1));
    try {
      bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write);
      bip::shared_memory_object::remove(name.c_str());  // no name left behind in /dev/shm
      shm.truncate(static_cast<bip::offset_t>(size));
      // OWNERSHIP: shm keeps (and closes) its own fd; we own a CLOEXEC duplicate.
      auto fd = UniqueFd::adopt(::fcntl(shm.get_mapping_handle().handle, F_DUPFD_CLOEXEC, 0));
      if (!fd)
        return make_error(errc::io_error, "add_region", "dup of the shm fd failed", errno);
      return fd;
    } catch (const bip::interprocess_exception& e) {
      if (e.get_error_code() == bip::already_exists_error)
        continue;  // a stale name; try the next one
      return make_error(errc::io_error, "add_region",
                        std::string("shared_memory_object: ") + e.what(), e.get_native_error());
    }
  }
  return make_error(errc::io_error, "add_region", "no free shared memory name", EEXIST);
}

}  // namespace

Result<void> GuestMemory::set_max_regions(size_t n) {
  if (n == 0 || n < regions_.size())
    return invalid("set_max_regions", "slot limit " + std::to_string(n) + " is below the " +
                                          std::to_string(regions_.size()) + " regions present");
  max_regions_ = n;
  return ok();
}

Result<void> GuestMemory::check_new(uint64_t gpa, uint64_t size, const char* op) const {
  const std::string r = "region " + range(gpa, size);
  if (size == 0)
    return invalid(op, r + " has size 0");
  if (gpa % page_size() != 0 || size % page_size() != 0)
    return invalid(op, r + " is not aligned to the page size " + hex(page_size()));
  if (gpa + size < gpa)
    return invalid(op, r + " wraps around the address space");
  if (regions_.size() >= max_regions_)
    return invalid(op, r + ": all " + std::to_string(max_regions_) + " slots are in use");
  // The only candidates are the first region at or above gpa and the one before it.
  auto it = regions_.lower_bound(gpa);
  if (it != regions_.end() && it->second.gpa() - gpa < size)
    return invalid(op, r + " overlaps region " + range(it->second.gpa(), it->second.size()));
  if (it != regions_.begin()) {
    const GuestRegion& prev = std::prev(it)->second;
    if (gpa - prev.gpa() < prev.size())
      return invalid(op, r + " overlaps region " + range(prev.gpa(), prev.size()));
  }
  // Synthetic user space: the next base must fit with its gap behind it.
  const uint64_t limit = ~uint64_t{0} - 2 * synthetic_user_align;
  if (next_user_ > limit || size > limit - next_user_)
    return invalid(op, r + " does not fit the remaining synthetic user address space");
  return ok();
}

Result<const GuestRegion*> GuestMemory::add_region(uint64_t gpa, uint64_t size,
                                                   Backing backing) {
  if (auto c = check_new(gpa, size, "add_region"); !c)
    return std::move(c).error();
  UniqueFd fd;
  if (backing == Backing::memfd) {
    fd = make_memfd("vufront-guest-ram", size);
    if (!fd)
      return make_error(errc::io_error, "add_region", "memfd_create/ftruncate failed", errno);
  } else {
    auto shm = make_shm_fd(size);
    if (!shm)
      return std::move(shm).error();
    fd = std::move(shm).value();
  }
  return map_and_insert(gpa, size, share(std::move(fd)), 0, "add_region");
}

Result<const GuestRegion*> GuestMemory::add_region_from_fd(uint64_t gpa, uint64_t size,
                                                           UniqueFd fd, uint64_t fd_offset) {
  // OWNERSHIP: the caller's fd is adopted; it closes with the region (or now, on error).
  return add_region_from_fd(gpa, size, share(std::move(fd)), fd_offset);
}

Result<const GuestRegion*> GuestMemory::add_region_from_fd(uint64_t gpa, uint64_t size,
                                                           SharedFd fd, uint64_t fd_offset) {
  const char* op = "add_region_from_fd";
  if (auto c = check_new(gpa, size, op); !c)
    return std::move(c).error();
  if (!fd || !fd->valid())
    return invalid(op, "region " + range(gpa, size) + " has no valid fd");
  if (fd_offset % page_size() != 0)
    return invalid(op, "fd offset " + hex(fd_offset) + " is not page-aligned");
  if (fd_offset + size < fd_offset)
    return invalid(op, "fd offset " + hex(fd_offset) + " + size " + hex(size) + " wraps");
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0)
    return make_error(errc::invalid_argument, op, "fstat of the fd failed", errno);
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < fd_offset + size)
    return invalid(op, "fd holds " + hex(static_cast<uint64_t>(st.st_size)) +
                           " bytes, region needs " + hex(fd_offset + size));
  return map_and_insert(gpa, size, std::move(fd), fd_offset, op);
}

Result<const GuestRegion*> GuestMemory::map_and_insert(uint64_t gpa, uint64_t size, SharedFd fd,
                                                       uint64_t fd_offset, const char* op) {
  bip::mapped_region map;
  try {
    // OWNERSHIP: MAP_SHARED read-write mapping of [fd_offset, +size); unmapped by ~mapped_region.
    map = bip::mapped_region(FdMappable{fd->get()}, bip::read_write,
                             static_cast<bip::offset_t>(fd_offset), static_cast<size_t>(size));
  } catch (const bip::interprocess_exception& e) {
    return make_error(errc::io_error, op, "mmap of region " + range(gpa, size) + " failed: " +
                                              e.what(), e.get_native_error());
  } catch (const std::exception& e) {
    return make_error(errc::io_error, op, std::string("mmap failed: ") + e.what());
  }
  const uint64_t user = next_user_;
  // Next base: past this region plus a gap, rounded up (check_new proved no overflow).
  next_user_ = (user + size + 2 * synthetic_user_align - 1) & ~(synthetic_user_align - 1);
  GuestRegion region(gpa, size, user, fd_offset, std::move(fd), std::move(map));
  auto [it, inserted] = regions_.emplace(gpa, std::move(region));
  (void)inserted;  // check_new proved gpa is free
  return &it->second;
}

Result<void> GuestMemory::remove_region(uint64_t gpa) {
  auto it = regions_.find(gpa);
  if (it == regions_.end())
    return invalid("remove_region", "no region starts at " + hex(gpa));
  regions_.erase(it);
  return ok();
}

const GuestRegion* GuestMemory::region(uint64_t gpa) const noexcept {
  auto it = regions_.find(gpa);
  return it == regions_.end() ? nullptr : &it->second;
}

const GuestRegion* GuestMemory::find(uint64_t gpa) const noexcept {
  auto it = regions_.upper_bound(gpa);  // first region starting above gpa
  if (it == regions_.begin())
    return nullptr;
  const GuestRegion& r = std::prev(it)->second;
  return gpa - r.gpa() < r.size() ? &r : nullptr;
}

uint8_t* GuestMemory::host_ptr(uint64_t gpa, uint64_t len) const noexcept {
  const GuestRegion* r = find(gpa);
  if (r == nullptr)
    return nullptr;
  const uint64_t off = gpa - r->gpa();  // < size
  if (len > r->size() - off)            // no gpa+len: it may wrap
    return nullptr;
  return r->host_base() + off;
}

std::optional<uint64_t> GuestMemory::user_addr_of(uint64_t gpa) const noexcept {
  const GuestRegion* r = find(gpa);
  if (r == nullptr)
    return std::nullopt;
  return r->user_addr() + (gpa - r->gpa());
}

std::optional<uint64_t> GuestMemory::gpa_of_user(uint64_t uaddr) const noexcept {
  for (const auto& [gpa, r] : regions_)
    if (uaddr >= r.user_addr() && uaddr - r.user_addr() < r.size())
      return gpa + (uaddr - r.user_addr());
  return std::nullopt;
}

std::vector<const GuestRegion*> GuestMemory::regions() const {
  std::vector<const GuestRegion*> out;
  out.reserve(regions_.size());
  for (const auto& entry : regions_)
    out.push_back(&entry.second);
  return out;
}

std::vector<int> GuestMemory::fds() const {
  std::vector<int> out;
  out.reserve(regions_.size());
  for (const auto& entry : regions_)
    out.push_back(entry.second.fd());
  return out;
}

}  // namespace vufront
