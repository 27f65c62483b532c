#include "actors/device_checks.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>
#include <string>

#include "virtio/ring_layout.hpp"

namespace vufront::actors {

namespace {

constexpr const char* mem_step = "set_memory";
constexpr const char* act_step = "activate";

}  // namespace

Result<std::vector<wire::MemoryRegion>> check_memory(const MemorySpec& m, uint32_t max_slots) {
  uint32_t limit = std::min<uint32_t>(max_slots, wire::max_mem_table_regions);
  if (m.empty())
    return make_error(errc::invalid_argument, mem_step, "no memory regions");
  if (m.size() > limit)
    return make_error(errc::invalid_argument, mem_step,
                      std::to_string(m.size()) + " regions, the back-end takes at most " +
                          std::to_string(limit));
  std::vector<wire::MemoryRegion> table;
  for (size_t i = 0; i < m.size(); ++i) {
    const auto& r = m[i];
    std::string which = "region " + std::to_string(i) + " (gpa " + hex(r.gpa) + ")";
    if (r.size == 0)
      return make_error(errc::invalid_argument, mem_step, which + " is empty");
    if (!r.fd || !*r.fd)
      return make_error(errc::invalid_argument, mem_step, which + " has no fd");
    if (r.gpa + r.size < r.gpa || r.gpa + r.size > ~0ull - user_addr_bias ||
        r.fd_offset + r.size < r.fd_offset)
      return make_error(errc::invalid_argument, mem_step, which + " wraps the address space");
    struct stat st {};
    if (::fstat(r.fd->get(), &st) != 0)
      return make_error(errc::io_error, mem_step, which + ": fstat", errno);
    if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < r.fd_offset + r.size)
      return make_error(errc::invalid_argument, mem_step,
                        which + ": fd holds " + std::to_string(st.st_size) + " bytes, region needs " +
                            std::to_string(r.fd_offset + r.size));
    for (const auto& t : table)
      if (r.gpa < t.guest_phys_addr + t.memory_size && t.guest_phys_addr < r.gpa + r.size)
        return make_error(errc::invalid_argument, mem_step,
                          which + " overlaps the region at gpa " + hex(t.guest_phys_addr));
    table.push_back({r.gpa, r.size, r.gpa + user_addr_bias, r.fd_offset});
  }
  return table;
}

Result<uint64_t> translate(const std::vector<wire::MemoryRegion>& table, uint64_t gpa, uint64_t len,
                           const char* what) {
  for (const auto& t : table)
    if (gpa >= t.guest_phys_addr && gpa - t.guest_phys_addr <= t.memory_size &&
        len <= t.memory_size - (gpa - t.guest_phys_addr))
      return t.user_addr + (gpa - t.guest_phys_addr);
  return make_error(errc::invalid_argument, act_step,
                    std::string(what) + " at gpa " + hex(gpa) + " (+" + std::to_string(len) +
                        " bytes) is not inside guest memory");
}

Result<wire::VringAddr> vring_addr(const QueueSpec& q, bool packed,
                                   const std::vector<wire::MemoryRegion>& table) {
  auto kind = packed ? virtio::RingKind::packed : virtio::RingKind::split;
  std::string name = "queue " + std::to_string(q.index);
  struct Area {
    uint64_t gpa;
    virtio::AreaSpec spec;
    const char* label;
  };
  const Area areas[] = {{q.desc, virtio::desc_area(kind, q.size), "descriptor ring"},
                        {q.driver, virtio::driver_area(kind, q.size), "driver area"},
                        {q.device, virtio::device_area(kind, q.size), "device area"}};
  uint64_t ua[3] = {};
  for (int i = 0; i < 3; ++i) {
    const auto& a = areas[i];
    if (a.gpa % a.spec.align != 0)
      return make_error(errc::invalid_argument, act_step,
                        name + " " + a.label + " at " + hex(a.gpa) + " is not " +
                            std::to_string(a.spec.align) + "-byte aligned");
    auto u = translate(table, a.gpa, a.spec.size, (name + " " + a.label).c_str());
    if (!u)
      return std::move(u).error();
    ua[i] = *u;
  }
  wire::VringAddr addr{};
  addr.index = q.index;
  addr.desc = ua[0];
  addr.avail = ua[1];
  addr.used = ua[2];
  // log_guest_addr: the used ring's guest-physical address, where a back-end
  // logging it (VHOST_VRING_F_LOG) marks its used-ring writes; libvhost-user
  // takes it whenever LOG_ALL is on (vhost-user spec, "Dirty pages logging")
  addr.log = q.device;
  return addr;
}

Result<uint64_t> check_activation(const ActivateSpec& spec, const DeviceInfo& info,
                                  const std::vector<wire::MemoryRegion>& table) {
  uint64_t offered = info.backend_features & ~bit(feature::protocol_features);
  if ((spec.driver_features & ~offered) != 0)
    return make_error(errc::invalid_argument, act_step,
                      "driver features " + hex(spec.driver_features & ~offered) +
                          " are not offered by the back-end");
  if (has_bit(spec.driver_features, feature::log_all))
    return make_error(errc::invalid_argument, act_step,
                      "driver features have LOG_ALL (bit 26): dirty logging is started with "
                      "dirty_log_start, not by the driver");
  if (spec.queues.empty())
    return make_error(errc::invalid_argument, act_step, "no queues");
  bool packed = has_bit(spec.driver_features, feature::ring_packed);
  auto kind = packed ? virtio::RingKind::packed : virtio::RingKind::split;
  bool has_sink = spec.sink.eventfd || spec.sink.target;
  std::set<uint16_t> seen;
  for (const auto& q : spec.queues) {
    std::string name = "queue " + std::to_string(q.index);
    if (q.index >= info.queue_num)
      return make_error(errc::invalid_argument, act_step,
                        name + ": the back-end has " + std::to_string(info.queue_num) + " queues");
    if (!seen.insert(q.index).second)
      return make_error(errc::invalid_argument, act_step, name + " is given twice");
    if (!virtio::valid_queue_size(kind, q.size) || q.size > info.max_queue_size)
      return make_error(errc::invalid_argument, act_step,
                        name + ": size " + std::to_string(q.size) + " is not valid for a " +
                            virtio::to_string(kind) + " ring of at most " +
                            std::to_string(info.max_queue_size));
    if (!q.kick || !*q.kick)
      return make_error(errc::invalid_argument, act_step, name + " has no kick eventfd");
    if (!q.call && !has_sink)
      return make_error(errc::invalid_argument, act_step,
                        name + " has no call fd and there is no interrupt sink to forward to");
    if (auto a = vring_addr(q, packed, table); !a)
      return std::move(a).error();
  }
  uint64_t value = spec.driver_features;
  if (has_bit(info.backend_features, feature::protocol_features))
    value |= bit(feature::protocol_features);
  return value;
}

Result<uint16_t> read_guest_u16(const MemorySpec& memory, uint64_t gpa) {
  constexpr const char* what = "used index";
  for (const auto& r : memory) {
    if (gpa < r.gpa || gpa - r.gpa > r.size - 2 || !r.fd)
      continue;
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t at = r.fd_offset + (gpa - r.gpa);
    const uint64_t start = at & ~(page - 1);
    const size_t len = static_cast<size_t>(at - start + 2);
    // OWNERSHIP: unmapped below; the fd stays the VMM's.
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, r.fd->get(), static_cast<off_t>(start));
    if (p == MAP_FAILED)
      return make_error(errc::io_error, what, "mmap of guest memory", errno);
    uint16_t v = 0;
    // BOUNDS: [at - start, at - start + 2) lies inside the `len` bytes mapped.
    std::memcpy(&v, static_cast<const uint8_t*>(p) + (at - start), sizeof v);
    ::munmap(p, len);
    return v;
  }
  return make_error(errc::invalid_argument, what, hex(gpa) + " is not in guest memory");
}

}  // namespace vufront::actors
