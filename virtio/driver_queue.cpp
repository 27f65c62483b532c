#include "virtio/driver_queue.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <poll.h>
#include <unistd.h>

namespace vufront::virtio {

namespace {

constexpr const char* op_place = "virtqueue place";
constexpr const char* op_add = "virtqueue add";
constexpr const char* op_used = "virtqueue used";

}  // namespace

uint64_t rings_footprint(RingKind kind, uint16_t size, uint16_t indirect_max) {
  const AreaSpec d = desc_area(kind, size), a = driver_area(kind, size),
                 u = device_area(kind, size);
  uint64_t total = d.align + d.size + a.align + a.size + u.align + u.size;
  if (indirect_max != 0)
    total += 16 + uint64_t{size} * indirect_max * 16;
  return total;
}

Result<RingAreas> place_rings(const GuestMemory& mem, uint64_t gpa, uint64_t len, RingKind kind,
                              uint16_t size, uint16_t indirect_max) {
  if (!valid_queue_size(kind, size))
    return make_error(errc::invalid_argument, op_place,
                      "queue size " + std::to_string(size) + " invalid for a " +
                          to_string(kind) + " ring");
  if (indirect_max > size)
    return make_error(errc::invalid_argument, op_place, "indirect_max exceeds the queue size");
  if (mem.host_ptr(gpa, len) == nullptr || len < rings_footprint(kind, size, indirect_max))
    return make_error(errc::invalid_argument, op_place,
                      "range is too small or not inside one guest region");
  RingAreas a;
  const AreaSpec d = desc_area(kind, size), av = driver_area(kind, size),
                 us = device_area(kind, size);
  a.desc = align_up(gpa, d.align);
  a.driver = align_up(a.desc + d.size, av.align);
  a.device = align_up(a.driver + av.size, us.align);
  if (indirect_max != 0) {
    a.indirect = align_up(a.device + us.size, 16);
    a.indirect_max = indirect_max;
  }
  return a;
}

Result<wire::VringAddr> vring_addr(const GuestMemory& mem, uint32_t index, const RingAreas& a) {
  const auto desc = mem.user_addr_of(a.desc);
  const auto used = mem.user_addr_of(a.device);
  const auto avail = mem.user_addr_of(a.driver);
  if (!desc || !used || !avail)
    return make_error(errc::invalid_argument, "SET_VRING_ADDR", "ring area not in guest memory");
  wire::VringAddr v{};
  v.index = index;
  v.desc = *desc;
  v.used = *used;
  v.avail = *avail;
  return v;
}

// ---- construction --------------------------------------------------------------

Result<DriverQueue> DriverQueue::make(const GuestMemory& mem, RingKind kind, uint16_t size,
                                      const RingAreas& areas, const char* op) {
  if (!valid_queue_size(kind, size))
    return make_error(errc::invalid_argument, op, "invalid queue size " + std::to_string(size));
  const AreaSpec d = desc_area(kind, size), av = driver_area(kind, size),
                 us = device_area(kind, size);
  if (areas.desc % d.align != 0 || areas.driver % av.align != 0 || areas.device % us.align != 0 ||
      areas.indirect % 16 != 0)
    return make_error(errc::invalid_argument, op, "misaligned ring area");
  if (areas.indirect_max > size || (areas.indirect_max != 0) != (areas.indirect != 0))
    return make_error(errc::invalid_argument, op, "inconsistent indirect table area");
  DriverQueue q;
  q.mem_ = &mem;
  q.kind_ = kind;
  q.size_ = size;
  q.areas_ = areas;
  q.desc_ = mem.host_ptr(areas.desc, d.size);
  q.driver_ = mem.host_ptr(areas.driver, av.size);
  q.device_ = mem.host_ptr(areas.device, us.size);
  if (areas.indirect != 0)
    q.indirect_ = mem.host_ptr(areas.indirect, uint64_t{size} * areas.indirect_max * 16);
  if (q.desc_ == nullptr || q.driver_ == nullptr || q.device_ == nullptr ||
      (areas.indirect != 0 && q.indirect_ == nullptr))
    return make_error(errc::invalid_argument, op, "ring area not inside guest memory");
  q.num_free_ = size;
  q.chain_len_.assign(size, 0);
  q.in_flight_.assign(size, false);
  if (kind == RingKind::split) {
    q.free_next_.resize(size);
    for (uint32_t i = 0; i < size; ++i)
      q.free_next_[i] = static_cast<uint16_t>((i + 1) % size);
    q.chain_tail_.assign(size, 0);
  } else {
    q.free_ids_.reserve(size);
    for (uint32_t i = size; i > 0; --i)
      q.free_ids_.push_back(static_cast<uint16_t>(i - 1));  // id 0 handed out first
  }
  return Result<DriverQueue>(std::move(q));
}

Result<DriverQueue> DriverQueue::create(const GuestMemory& mem, RingKind kind, uint16_t size,
                                        const RingAreas& areas) {
  auto q = make(mem, kind, size, areas, "virtqueue create");
  if (!q)
    return q;
  // A driver initialises its rings: all descriptors unavailable, indices 0,
  // flags 0 (interrupts wanted / event suppression ENABLE).
  std::memset(q->desc_, 0, desc_area(kind, size).size);
  std::memset(q->driver_, 0, driver_area(kind, size).size);
  std::memset(q->device_, 0, device_area(kind, size).size);
  mem.mark_written(areas.desc, desc_area(kind, size).size);
  mem.mark_written(areas.driver, driver_area(kind, size).size);
  mem.mark_written(areas.device, device_area(kind, size).size);
  std::atomic_thread_fence(std::memory_order_release);
  return q;
}

Result<DriverQueue> DriverQueue::resume(const GuestMemory& mem, RingKind kind, uint16_t size,
                                        const RingAreas& areas, uint32_t base) {
  constexpr const char* op = "virtqueue resume";
  auto q = make(mem, kind, size, areas, op);
  if (!q)
    return q;
  if (kind == RingKind::split) {
    if (base > 0xffff)
      return make_error(errc::invalid_argument, op, "split base has bits above 15 set");
    q->avail_idx_ = static_cast<uint16_t>(base);
    q->last_used_ = ring_load(u16_at(q->device_, offsetof(SplitUsedHeader, idx)));
    if (q->last_used_ != q->avail_idx_)
      return make_error(errc::bad_state, op,
                        "used idx " + std::to_string(q->last_used_) + " != base " +
                            std::to_string(base) + ": chains were in flight");
  } else {
    const PackedPos avail = packed_base_avail(base), used = packed_base_used(base);
    if (avail.idx >= size || used.idx >= size)
      return make_error(errc::invalid_argument, op, "packed base index beyond the queue size");
    if (avail.idx != used.idx || avail.wrap != used.wrap)
      return make_error(errc::bad_state, op, "packed base avail != used: chains were in flight");
    q->next_avail_ = avail;
    q->next_used_ = used;
  }
  return q;
}

// ---- adding chains -------------------------------------------------------------

uint64_t DriverQueue::write_indirect(uint16_t slot, const std::vector<Buffer>& buffers) {
  const uint64_t table_off = uint64_t{slot} * areas_.indirect_max * 16;
  uint8_t* table = indirect_ + table_off;
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (kind_ == RingKind::packed) {
      // virtio 1.2 2.8.19: struct pvirtq_desc entries read in order, WRITE
      // their only flag, the buffer id reserved (0), as Linux writes them.
      const PackedDesc d{buffers[i].gpa, buffers[i].len, 0,
                         buffers[i].device_writable ? desc_f_write : uint16_t{0}};
      std::memcpy(table + i * 16, &d, sizeof d);  // BOUNDS: i < indirect_max, slot < size
      continue;
    }
    SplitDesc d{};
    d.addr = buffers[i].gpa;
    d.len = buffers[i].len;
    d.flags = buffers[i].device_writable ? desc_f_write : 0;
    if (i + 1 < buffers.size()) {
      d.flags |= desc_f_next;
      d.next = static_cast<uint16_t>(i + 1);
    }
    std::memcpy(table + i * 16, &d, sizeof d);  // BOUNDS: i < indirect_max, slot < size
  }
  mem_->mark_written(areas_.indirect + table_off, buffers.size() * 16);
  return areas_.indirect + table_off;
}

Result<uint16_t> DriverQueue::add_chain(const std::vector<Buffer>& buffers, bool indirect) {
  if (buffers.empty())
    return make_error(errc::invalid_argument, op_add, "empty chain");
  if (buffers.size() > size_)
    return make_error(errc::invalid_argument, op_add, "chain longer than the queue size");
  bool writable = false;
  for (const Buffer& b : buffers) {
    if (writable && !b.device_writable)
      return make_error(errc::invalid_argument, op_add, "readable buffer after a writable one");
    writable = b.device_writable;
    if (mem_->host_ptr(b.gpa, b.len) == nullptr)
      return make_error(errc::invalid_argument, op_add, "buffer not inside guest memory");
  }
  if (indirect && (indirect_ == nullptr || buffers.size() > areas_.indirect_max))
    return make_error(errc::invalid_argument, op_add,
                      "indirect chain needs tables of at least " +
                          std::to_string(buffers.size()) + " entries");
  const uint16_t need = indirect ? 1 : static_cast<uint16_t>(buffers.size());
  if (need > num_free_ || (kind_ == RingKind::packed && free_ids_.empty()))
    return make_error(errc::bad_state, op_add, "queue full");
  auto id = kind_ == RingKind::split ? add_split(buffers, indirect)
                                     : add_packed(buffers, indirect);
  if (id) {
    num_free_ = static_cast<uint16_t>(num_free_ - need);
    chain_len_[*id] = need;
    in_flight_[*id] = true;
    ++in_flight_count_;
  }
  return id;
}

Result<uint16_t> DriverQueue::add_split(const std::vector<Buffer>& buffers, bool indirect) {
  const uint16_t head = free_head_;
  uint16_t idx = head;
  if (indirect) {
    SplitDesc d{};
    d.addr = write_indirect(head, buffers);
    d.len = static_cast<uint32_t>(buffers.size() * 16);
    d.flags = desc_f_indirect;
    std::memcpy(desc_ + uint64_t{idx} * 16, &d, sizeof d);
    mem_->mark_written(areas_.desc + uint64_t{idx} * 16, 16);
  } else {
    for (size_t i = 0; i < buffers.size(); ++i) {
      const bool last = i + 1 == buffers.size();
      SplitDesc d{};
      d.addr = buffers[i].gpa;
      d.len = buffers[i].len;
      d.flags = static_cast<uint16_t>((buffers[i].device_writable ? desc_f_write : 0) |
                                      (last ? 0 : desc_f_next));
      d.next = last ? 0 : free_next_[idx];
      std::memcpy(desc_ + uint64_t{idx} * 16, &d, sizeof d);  // BOUNDS: idx < size
      mem_->mark_written(areas_.desc + uint64_t{idx} * 16, 16);
      if (!last)
        idx = free_next_[idx];
    }
  }
  chain_tail_[head] = idx;
  free_head_ = free_next_[idx];
  // avail ring entry, then publish the index (release).
  const uint64_t slot = avail_idx_ & (size_ - 1u);
  *u16_at(driver_, sizeof(SplitAvailHeader) + 2 * slot) = head;
  ++avail_idx_;
  ring_store(u16_at(driver_, offsetof(SplitAvailHeader, idx)), avail_idx_);
  mem_->mark_written(areas_.driver, sizeof(SplitAvailHeader));
  mem_->mark_written(areas_.driver + sizeof(SplitAvailHeader) + 2 * slot, 2);
  return head;
}

Result<uint16_t> DriverQueue::add_packed(const std::vector<Buffer>& buffers, bool indirect) {
  const uint16_t id = free_ids_.back();
  free_ids_.pop_back();
  const auto avail_bits = [](bool wrap) {
    return static_cast<uint16_t>(wrap ? packed_desc_f_avail : packed_desc_f_used);
  };
  PackedPos pos = next_avail_;
  PackedDesc head{};
  const PackedPos head_pos = pos;
  if (indirect) {
    head.addr = write_indirect(id, buffers);
    head.len = static_cast<uint32_t>(buffers.size() * 16);
    head.id = id;
    head.flags = static_cast<uint16_t>(desc_f_indirect | avail_bits(pos.wrap));
    advance(pos, 1, size_);
  } else {
    for (size_t i = 0; i < buffers.size(); ++i) {
      PackedDesc d{};
      d.addr = buffers[i].gpa;
      d.len = buffers[i].len;
      d.id = id;
      d.flags = static_cast<uint16_t>((buffers[i].device_writable ? desc_f_write : 0) |
                                      (i + 1 < buffers.size() ? desc_f_next : 0) |
                                      avail_bits(pos.wrap));
      if (i == 0)
        head = d;
      else
        std::memcpy(desc_ + uint64_t{pos.idx} * 16, &d, sizeof d);  // BOUNDS: idx < size
      mem_->mark_written(areas_.desc + uint64_t{pos.idx} * 16, 16);
      advance(pos, 1, size_);
    }
  }
  // The head's flags make the whole chain available: written last, release.
  uint8_t* hp = desc_ + uint64_t{head_pos.idx} * 16;
  std::memcpy(hp, &head, offsetof(PackedDesc, flags));
  ring_store(u16_at(hp, offsetof(PackedDesc, flags)), head.flags);
  mem_->mark_written(areas_.desc + uint64_t{head_pos.idx} * 16, 16);
  next_avail_ = pos;
  return id;
}

Result<void> DriverQueue::kick(int kick_fd) const {
  const uint64_t one = 1;
  const ssize_t n = ::write(kick_fd, &one, sizeof one);
  if (n == static_cast<ssize_t>(sizeof one) || (n < 0 && errno == EAGAIN))
    return ok();  // EAGAIN: counter saturated, the device will wake anyway
  return make_error(errc::io_error, "virtqueue kick", "write to kick eventfd failed", errno);
}

// ---- collecting completions ------------------------------------------------------

Result<std::optional<Used>> DriverQueue::poll_used() {
  return kind_ == RingKind::split ? poll_split() : poll_packed();
}

Result<std::optional<Used>> DriverQueue::poll_split() {
  const uint16_t idx = ring_load(u16_at(device_, offsetof(SplitUsedHeader, idx)));
  if (idx == last_used_)
    return std::optional<Used>{};
  if (static_cast<uint16_t>(idx - last_used_) > in_flight_count_)
    return make_error(errc::invalid_payload, op_used,
                      "used idx moved by more than the chains in flight");
  SplitUsedElem e{};
  const uint64_t slot = last_used_ & (size_ - 1u);
  std::memcpy(&e, device_ + sizeof(SplitUsedHeader) + 8 * slot, sizeof e);  // BOUNDS: slot < size
  if (e.id >= size_ || !in_flight_[e.id])
    return make_error(errc::invalid_payload, op_used,
                      "used id " + std::to_string(e.id) + " is not in flight");
  const uint16_t head = static_cast<uint16_t>(e.id);
  free_next_[chain_tail_[head]] = free_head_;
  free_head_ = head;
  num_free_ = static_cast<uint16_t>(num_free_ + chain_len_[head]);
  in_flight_[head] = false;
  --in_flight_count_;
  ++last_used_;
  return std::optional<Used>{Used{head, e.len}};
}

Result<std::optional<Used>> DriverQueue::poll_packed() {
  uint8_t* dp = desc_ + uint64_t{next_used_.idx} * 16;
  const uint16_t flags = ring_load(u16_at(dp, offsetof(PackedDesc, flags)));
  const bool avail = (flags & packed_desc_f_avail) != 0, used = (flags & packed_desc_f_used) != 0;
  if (avail != used || used != next_used_.wrap)
    return std::optional<Used>{};
  PackedDesc d{};
  std::memcpy(&d, dp, sizeof d);
  if (d.id >= size_ || !in_flight_[d.id])
    return make_error(errc::invalid_payload, op_used,
                      "used id " + std::to_string(d.id) + " is not in flight");
  advance(next_used_, chain_len_[d.id], size_);
  num_free_ = static_cast<uint16_t>(num_free_ + chain_len_[d.id]);
  in_flight_[d.id] = false;
  --in_flight_count_;
  free_ids_.push_back(d.id);
  return std::optional<Used>{Used{d.id, d.len}};
}

Result<Used> DriverQueue::wait_used(int call_fd, Deadline deadline) {
  for (;;) {
    auto u = poll_used();
    if (!u)
      return std::move(u).error();
    if (*u)
      return **u;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline)
      return make_error(errc::timeout, op_used,
                        "no used entry before the deadline (" + std::to_string(in_flight_count_) +
                            " request(s) outstanding)");
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    pollfd p{call_fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (r < 0 && errno != EINTR)
      return make_error(errc::io_error, op_used, "poll on call eventfd failed", errno);
    if (r > 0) {
      if ((p.revents & (POLLERR | POLLNVAL)) != 0)
        return make_error(errc::io_error, op_used, "call eventfd is not pollable");
      uint64_t counter = 0;  // drains coalesced signals; the ring is checked again
      if (::read(call_fd, &counter, sizeof counter) < 0 && errno != EAGAIN && errno != EINTR)
        return make_error(errc::io_error, op_used, "read of call eventfd failed", errno);
    }
  }
}

uint32_t DriverQueue::next_avail_base() const noexcept {
  if (kind_ == RingKind::split)
    return avail_idx_;
  return encode_packed_base(next_avail_, next_used_);
}

}  // namespace vufront::virtio
