#include "backend/inflight.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace vufront::backend {

namespace {

constexpr uint64_t header_bytes = 16;
constexpr uint64_t entry_bytes = 16;
constexpr uint64_t off_version = 8, off_desc_num = 10, off_last_batch = 12, off_used_idx = 14;

template <class T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);  // BOUNDS: callers stay inside the queue region
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // BOUNDS: callers stay inside the queue region
  return v;
}

}  // namespace

uint64_t Inflight::queue_bytes(uint16_t queue_size) noexcept {
  const uint64_t split = header_bytes + entry_bytes * queue_size;
  return (std::max(split, virtio::PackedInflight::region_bytes(queue_size)) + 63) & ~uint64_t{63};
}

Result<UniqueFd> Inflight::allocate(const wire::InflightDesc& req, wire::InflightDesc& reply) {
  constexpr const char* what = "GET_INFLIGHT_FD";
  if (req.num_queues == 0 || req.queue_size == 0 || req.queue_size > 32768)
    return make_error(errc::invalid_payload, what, "num_queues and queue_size must be non-zero");
  const uint64_t size = queue_bytes(req.queue_size) * req.num_queues;
  UniqueFd fd = make_memfd("vufront-backend-inflight", size);
  if (!fd)
    return make_error(errc::io_error, what, "memfd", errno);
  reply = wire::InflightDesc{};
  reply.mmap_size = size;
  reply.mmap_offset = 0;
  reply.num_queues = req.num_queues;
  reply.queue_size = req.queue_size;
  return fd;
}

Result<void> Inflight::set(const wire::InflightDesc& d, UniqueFd fd) {
  constexpr const char* what = "SET_INFLIGHT_FD";
  if (d.num_queues == 0 || d.queue_size == 0 || d.queue_size > 32768 ||
      d.mmap_size < queue_bytes(d.queue_size) * d.num_queues)
    return make_error(errc::invalid_payload, what, "sizes inconsistent");
  uint64_t end = 0;
  if (__builtin_add_overflow(d.mmap_offset, d.mmap_size, &end) || d.mmap_offset % 4096 != 0)
    return make_error(errc::invalid_payload, what, "bad mmap_offset");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return make_error(errc::io_error, what, "fstat", errno);
  if (static_cast<uint64_t>(st.st_size) < end)
    return make_error(errc::invalid_payload, what, "buffer lies beyond its fd");
  // OWNERSHIP: unmapped by unmap(); the fd may close after mmap.
  void* p = ::mmap(nullptr, d.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(),
                   static_cast<off_t>(d.mmap_offset));
  if (p == MAP_FAILED)
    return make_error(errc::io_error, what, "mmap", errno);
  unmap();
  base_ = static_cast<uint8_t*>(p);
  map_size_ = d.mmap_size;
  num_queues_ = d.num_queues;
  queue_size_ = d.queue_size;
  counter_.assign(num_queues_, 1);
  packed_.clear();
  packed_.resize(num_queues_);
  return ok();
}

void Inflight::unmap() noexcept {
  if (base_ != nullptr)
    ::munmap(base_, map_size_);
  base_ = nullptr;
  map_size_ = 0;
  num_queues_ = 0;
  counter_.clear();
  packed_.clear();
}

uint8_t* Inflight::queue_base(uint16_t q) const noexcept {
  if (base_ == nullptr || q >= num_queues_)
    return nullptr;
  return base_ + queue_bytes(queue_size_) * q;
}

std::optional<std::vector<uint16_t>> Inflight::start_queue(uint16_t q, uint16_t size,
                                                          uint16_t used_idx) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || size > queue_size_)
    return std::nullopt;
  put<uint16_t>(b + off_version, 1);
  put<uint16_t>(b + off_desc_num, size);
  // A crash between publishing a used entry and clearing its record leaves
  // the region's used idx behind the ring's: that last head is done.
  if (get<uint16_t>(b + off_used_idx) != used_idx) {
    const uint16_t last = get<uint16_t>(b + off_last_batch);
    if (last < size)
      b[header_bytes + entry_bytes * last] = 0;
    put<uint16_t>(b + off_used_idx, used_idx);
  }
  std::vector<std::pair<uint64_t, uint16_t>> pending;
  uint64_t max_counter = 0;
  for (uint16_t i = 0; i < size; ++i) {
    uint8_t* e = b + header_bytes + entry_bytes * i;
    if (e[0] != 0) {
      const uint64_t c = get<uint64_t>(e + 8);
      pending.emplace_back(c, i);
      max_counter = std::max(max_counter, c);
    }
  }
  std::sort(pending.begin(), pending.end());
  counter_[q] = max_counter + 1;
  std::vector<uint16_t> heads;
  heads.reserve(pending.size());
  for (const auto& p : pending)
    heads.push_back(p.second);
  return heads;
}

std::optional<Result<virtio::PackedResume>> Inflight::start_packed(
    uint16_t q, uint16_t size, uint32_t base, const virtio::PackedInflight::RingFlags& ring_flags) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || size > queue_size_)
    return std::nullopt;
  packed_[q].emplace(b, size);
  auto r = packed_[q]->start(base, ring_flags);
  if (!r)
    packed_[q].reset();
  return r;
}

virtio::PackedInflight* Inflight::packed(uint16_t q) noexcept {
  if (q >= packed_.size() || !packed_[q])
    return nullptr;
  return &*packed_[q];
}

void Inflight::begin(uint16_t q, uint16_t head) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || head >= queue_size_)
    return;
  uint8_t* e = b + header_bytes + entry_bytes * head;
  put<uint64_t>(e + 8, counter_[q]++);
  std::atomic_thread_fence(std::memory_order_release);
  e[0] = 1;
}

void Inflight::prepare_end(uint16_t q, uint16_t head) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || head >= queue_size_)
    return;
  put<uint16_t>(b + off_last_batch, head);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void Inflight::end(uint16_t q, uint16_t head, uint16_t used_idx) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || head >= queue_size_)
    return;
  std::atomic_thread_fence(std::memory_order_release);
  b[header_bytes + entry_bytes * head] = 0;
  std::atomic_thread_fence(std::memory_order_release);
  put<uint16_t>(b + off_used_idx, used_idx);
}

void Inflight::abort(uint16_t q, uint16_t head) {
  uint8_t* b = queue_base(q);
  if (b == nullptr || head >= queue_size_)
    return;
  b[header_bytes + entry_bytes * head] = 0;
}

}  // namespace vufront::backend
