#include "backend/backend_memory.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace vufront::backend {

namespace {

bool ends(uint64_t start, uint64_t size, uint64_t& end) {
  return !__builtin_add_overflow(start, size, &end);
}

bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

uint8_t* lookup(uint64_t addr, uint64_t len, uint64_t base, uint64_t size, uint8_t* start) {
  uint64_t end = 0;
  if (len == 0 || !ends(addr, len, end))
    return nullptr;
  if (addr < base || end > base + size)
    return nullptr;
  return start + (addr - base);
}

}  // namespace

BackendMemory::Mapped::~Mapped() {
  if (base != nullptr)
    ::munmap(base, map_len);
}

Result<std::unique_ptr<BackendMemory::Mapped>> BackendMemory::map_one(const wire::MemoryRegion& r,
                                                                      UniqueFd fd,
                                                                      const char* what) {
  if (!fd.valid())
    return make_error(errc::bad_fds, what, "region without fd");
  uint64_t end = 0;
  if (r.memory_size == 0)
    return make_error(errc::invalid_payload, what, "region of size 0");
  if (!ends(r.guest_phys_addr, r.memory_size, end) || !ends(r.user_addr, r.memory_size, end) ||
      !ends(r.mmap_offset, r.memory_size, end))
    return make_error(errc::invalid_payload, what, "region wraps around 2^64");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return make_error(errc::io_error, what, "fstat of region fd", errno);
  // end == mmap_offset + memory_size here
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < end)
    return make_error(errc::invalid_payload, what,
                      "region [" + std::to_string(r.mmap_offset) + ", +" +
                          std::to_string(r.memory_size) + ") lies beyond its fd (" +
                          std::to_string(st.st_size) + " bytes)");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t aligned_off = r.mmap_offset & ~(page - 1);
  const uint64_t lead = r.mmap_offset - aligned_off;
  if (r.memory_size + lead > SIZE_MAX)
    return make_error(errc::invalid_payload, what, "region too large");
  auto m = std::make_unique<Mapped>();
  m->map_len = static_cast<size_t>(r.memory_size + lead);
  // OWNERSHIP: the mapping is released by ~Mapped.
  void* p = ::mmap(nullptr, m->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(),
                   static_cast<off_t>(aligned_off));
  if (p == MAP_FAILED)
    return make_error(errc::io_error, what, "mmap of region", errno);
  m->base = static_cast<uint8_t*>(p);
  m->start = m->base + lead;
  m->r = r;
  m->fd = std::move(fd);
  return m;
}

Result<void> BackendMemory::check_disjoint(const std::vector<const wire::MemoryRegion*>& all,
                                           const char* what) {
  for (size_t i = 0; i < all.size(); ++i)
    for (size_t j = i + 1; j < all.size(); ++j) {
      const auto& a = *all[i];
      const auto& b = *all[j];
      if (overlap(a.guest_phys_addr, a.memory_size, b.guest_phys_addr, b.memory_size))
        return make_error(errc::invalid_payload, what, "regions overlap in guest-physical space");
      if (overlap(a.user_addr, a.memory_size, b.user_addr, b.memory_size))
        return make_error(errc::invalid_payload, what, "regions overlap in user-address space");
    }
  return ok();
}

Result<void> BackendMemory::set_table(const std::vector<wire::MemoryRegion>& regions,
                                      std::vector<UniqueFd> fds) {
  constexpr const char* what = "SET_MEM_TABLE";
  if (regions.empty() || regions.size() > wire::max_mem_table_regions)
    return make_error(errc::invalid_payload, what,
                      std::to_string(regions.size()) + " regions (1..8 allowed)");
  if (fds.size() != regions.size())
    return make_error(errc::bad_fds, what,
                      std::to_string(fds.size()) + " fds for " + std::to_string(regions.size()) +
                          " regions");
  std::vector<const wire::MemoryRegion*> all;
  for (const auto& r : regions)
    all.push_back(&r);
  if (auto c = check_disjoint(all, what); !c)
    return c;
  std::vector<std::unique_ptr<Mapped>> fresh;
  for (size_t i = 0; i < regions.size(); ++i) {
    auto m = map_one(regions[i], std::move(fds[i]), what);
    if (!m)
      return std::move(m).error();
    fresh.push_back(std::move(m).value());
  }
  regions_ = std::move(fresh);
  return ok();
}

Result<void> BackendMemory::add(const wire::MemoryRegion& region, UniqueFd fd) {
  constexpr const char* what = "ADD_MEM_REG";
  if (regions_.size() >= max_mem_slots)
    return make_error(errc::invalid_payload, what, "all memory slots in use");
  std::vector<const wire::MemoryRegion*> all;
  for (const auto& m : regions_)
    all.push_back(&m->r);
  all.push_back(&region);
  if (auto c = check_disjoint(all, what); !c)
    return c;
  auto m = map_one(region, std::move(fd), what);
  if (!m)
    return std::move(m).error();
  regions_.push_back(std::move(m).value());
  return ok();
}

Result<void> BackendMemory::remove(const wire::MemoryRegion& region) {
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    const auto& r = (*it)->r;
    if (r.guest_phys_addr == region.guest_phys_addr && r.user_addr == region.user_addr &&
        r.memory_size == region.memory_size) {
      regions_.erase(it);
      return ok();
    }
  }
  return make_error(errc::invalid_payload, "REM_MEM_REG", "no such region");
}

uint8_t* BackendMemory::gpa_to_ptr(uint64_t gpa, uint64_t len) const noexcept {
  for (const auto& m : regions_)
    if (uint8_t* p = lookup(gpa, len, m->r.guest_phys_addr, m->r.memory_size, m->start))
      return p;
  return nullptr;
}

uint8_t* BackendMemory::uva_to_ptr(uint64_t uva, uint64_t len) const noexcept {
  for (const auto& m : regions_)
    if (uint8_t* p = lookup(uva, len, m->r.user_addr, m->r.memory_size, m->start))
      return p;
  return nullptr;
}

}  // namespace vufront::backend

namespace vufront::backend {

std::optional<uint64_t> BackendMemory::ptr_to_gpa(const uint8_t* p) const noexcept {
  for (const auto& m : regions_)
    if (p >= m->start && p < m->start + m->r.memory_size)
      return m->r.guest_phys_addr + static_cast<uint64_t>(p - m->start);
  return std::nullopt;
}

}  // namespace vufront::backend
