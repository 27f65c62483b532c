#include "virtio/device_queue.hpp"

#include <cstring>
#include <utility>

namespace vufront::virtio {

namespace {

constexpr const char* op_pop = "virtqueue pop";
constexpr const char* op_push = "virtqueue push";

bool aligned(const void* p, uint64_t a) {
  return reinterpret_cast<uintptr_t>(p) % a == 0;
}

}  // namespace

uint64_t Chain::readable_bytes() const noexcept {
  uint64_t n = 0;
  for (const Segment& s : segments)
    n += s.writable ? 0 : s.len;
  return n;
}

uint64_t Chain::writable_bytes() const noexcept {
  uint64_t n = 0;
  for (const Segment& s : segments)
    n += s.writable ? s.len : 0;
  return n;
}

Result<DeviceQueue> DeviceQueue::create(Translate ring, Translate buffer,
                                        const DeviceQueueConfig& c) {
  constexpr const char* op = "virtqueue start";
  if (!ring || !buffer)
    return make_error(errc::invalid_argument, op, "missing translation function");
  if (!valid_queue_size(c.kind, c.size))
    return make_error(errc::invalid_argument, op,
                      "queue size " + std::to_string(c.size) + " invalid for a " +
                          to_string(c.kind) + " ring");
  const AreaSpec d = desc_area(c.kind, c.size), av = driver_area(c.kind, c.size),
                 us = device_area(c.kind, c.size);
  if (c.desc_addr % d.align != 0 || c.driver_addr % av.align != 0 ||
      c.device_addr % us.align != 0)
    return make_error(errc::invalid_argument, op, "misaligned ring address");
  DeviceQueue q;
  q.desc_ = ring(c.desc_addr, d.size);
  q.driver_ = ring(c.driver_addr, av.size);
  q.device_ = ring(c.device_addr, us.size);
  if (q.desc_ == nullptr || q.driver_ == nullptr || q.device_ == nullptr)
    return make_error(errc::invalid_argument, op, "ring area not mapped");
  if (!aligned(q.desc_, d.align) || !aligned(q.driver_, av.align) ||
      !aligned(q.device_, us.align))
    return make_error(errc::invalid_argument, op, "ring area maps to a misaligned host address");
  q.buffer_ = std::move(buffer);
  q.kind_ = c.kind;
  q.size_ = c.size;
  q.chain_len_.assign(c.size, 0);
  q.in_flight_.assign(c.size, false);
  if (c.kind == RingKind::split) {
    if (c.base > 0xffff)
      return make_error(errc::invalid_argument, op, "split base has bits above 15 set");
    q.last_avail_ = static_cast<uint16_t>(c.base);
    q.used_idx_ = ring_load(u16_at(q.device_, offsetof(SplitUsedHeader, idx)));
  } else {
    q.next_avail_ = packed_base_avail(c.base);
    q.next_used_ = packed_base_used(c.base);
    if (q.next_avail_.idx >= c.size || q.next_used_.idx >= c.size)
      return make_error(errc::invalid_argument, op, "packed base index beyond the queue size");
  }
  return Result<DeviceQueue>(std::move(q));
}

Error DeviceQueue::fail(std::string detail) {
  broken_ = true;
  return make_error(errc::invalid_payload, op_pop, std::move(detail));
}

Result<void> DeviceQueue::add_segment(Chain& chain, uint64_t addr, uint32_t len, uint16_t flags,
                                      bool& seen_writable) {
  const bool writable = (flags & desc_f_write) != 0;
  if (seen_writable && !writable)
    return fail("readable descriptor after a writable one");
  seen_writable = writable;
  uint8_t* p = buffer_(addr, len);  // BOUNDS: the whole [addr, addr+len) is mapped
  if (p == nullptr)
    return fail("buffer at " + std::to_string(addr) + "+" + std::to_string(len) +
                " is not in guest memory");
  chain.segments.push_back(Segment{p, len, writable});
  return ok();
}

Result<void> DeviceQueue::walk_indirect(Chain& chain, uint64_t addr, uint32_t len) {
  if (len == 0 || len % 16 != 0 || len / 16 > size_)
    return fail("indirect table length " + std::to_string(len) +
                " is not a non-zero multiple of 16 up to 16 * queue size");
  const uint8_t* table = buffer_(addr, len);  // BOUNDS: len bytes mapped
  if (table == nullptr)
    return fail("indirect table is not in guest memory");
  const uint32_t n = len / 16;
  bool seen_writable = false;
  if (kind_ == RingKind::packed) {
    // virtio 1.2 2.8.19: struct pvirtq_desc entries, in table order; WRITE
    // is their only valid flag, the other flags and the buffer id are
    // reserved and ignored (Linux leaves the id 0).
    for (uint32_t i = 0; i < n; ++i) {
      PackedDesc d{};
      std::memcpy(&d, table + uint64_t{i} * 16, sizeof d);  // BOUNDS: i < n
      if (auto r = add_segment(chain, d.addr, d.len, static_cast<uint16_t>(d.flags & desc_f_write),
                                seen_writable); !r)
        return r;
    }
    return ok();
  }
  uint32_t i = 0;
  for (uint32_t count = 0;; ++count) {
    if (count == n)
      return fail("indirect chain loops or is longer than its table");
    SplitDesc d{};
    std::memcpy(&d, table + uint64_t{i} * 16, sizeof d);  // BOUNDS: i < n
    if ((d.flags & desc_f_indirect) != 0)
      return fail("nested indirect descriptor");
    if (auto r = add_segment(chain, d.addr, d.len, d.flags, seen_writable); !r)
      return r;
    if ((d.flags & desc_f_next) == 0)
      return ok();
    if (d.next >= n)
      return fail("indirect next index " + std::to_string(d.next) + " beyond the table");
    i = d.next;
  }
}

Result<std::optional<Chain>> DeviceQueue::pop() {
  can_unpop_ = false;
  if (broken_)
    return make_error(errc::bad_state, op_pop, "queue broken by an earlier error");
  const PackedPos before = next_avail_;
  resubmitted_ = false;
  auto r = kind_ == RingKind::split ? pop_split() : pop_packed();
  if (r && r->has_value()) {
    can_unpop_ = true;
    unpop_id_ = (*r)->id;
    unpop_avail_ = before;
    if (resubmitted_ && kind_ == RingKind::packed)
      unpop_descs_ = (*r)->descs;
  }
  return r;
}

Result<void> DeviceQueue::unpop(uint16_t id) {
  if (broken_)
    return make_error(errc::bad_state, "virtqueue unpop", "queue broken by an earlier error");
  if (!can_unpop_ || id != unpop_id_)
    return make_error(errc::invalid_argument, "virtqueue unpop",
                      "id " + std::to_string(id) + " is not the chain just popped");
  can_unpop_ = false;
  if (kind_ == RingKind::split && resubmitted_)
    resubmit_.insert(resubmit_.begin(), id);
  else if (kind_ == RingKind::split)
    --last_avail_;
  else if (resubmitted_)
    resubmit_packed_.insert(resubmit_packed_.begin(), unpop_descs_);
  else
    next_avail_ = unpop_avail_;
  in_flight_[id] = false;
  --in_flight_count_;
  return ok();
}

Result<std::optional<Chain>> DeviceQueue::pop_split() {
  if (!resubmit_.empty()) {
    const uint16_t head = resubmit_.front();
    auto c = walk_split(head);
    if (c) {
      resubmit_.erase(resubmit_.begin());
      resubmitted_ = true;
      if (c->has_value())
        (*c)->resubmitted = true;
    }
    return c;
  }
  const uint16_t avail_idx = ring_load(u16_at(driver_, offsetof(SplitAvailHeader, idx)));
  if (avail_idx == last_avail_)
    return std::optional<Chain>{};
  if (static_cast<uint16_t>(avail_idx - last_avail_) > size_)
    return fail("avail idx moved by more than the queue size");
  const uint64_t slot = last_avail_ & (size_ - 1u);
  uint16_t head = 0;
  std::memcpy(&head, driver_ + sizeof(SplitAvailHeader) + 2 * slot, 2);  // BOUNDS: slot < size
  auto c = walk_split(head);
  if (c)
    ++last_avail_;
  return c;
}

Result<void> DeviceQueue::resubmit(const std::vector<uint16_t>& heads) {
  if (kind_ != RingKind::split)
    return make_error(errc::invalid_argument, "virtqueue resubmit", "split rings only");
  if (heads.size() > size_)
    return make_error(errc::invalid_argument, "virtqueue resubmit",
                      std::to_string(heads.size()) + " heads for a queue of " + std::to_string(size_));
  for (auto h : heads)
    if (h >= size_)
      return make_error(errc::invalid_argument, "virtqueue resubmit",
                        "head " + std::to_string(h) + " beyond the queue size");
  resubmit_ = heads;
  last_avail_ = static_cast<uint16_t>(used_idx_ + heads.size());
  can_unpop_ = false;
  return ok();
}

Result<std::optional<Chain>> DeviceQueue::walk_split(uint16_t head) {
  if (head >= size_)
    return fail("head index " + std::to_string(head) + " beyond the queue size");
  if (in_flight_[head])
    return fail("head " + std::to_string(head) + " is already in flight");
  Chain chain;
  chain.id = head;
  bool seen_writable = false;
  uint16_t idx = head;
  uint16_t count = 0;
  for (;;) {
    if (count == size_)
      return fail("descriptor chain loops or is longer than the queue");
    ++count;
    SplitDesc d{};
    std::memcpy(&d, desc_ + uint64_t{idx} * 16, sizeof d);  // BOUNDS: idx < size
    if ((d.flags & desc_f_indirect) != 0) {
      if (idx != head || (d.flags & desc_f_next) != 0)
        return fail("indirect descriptor must be the only one of its chain");
      if (auto r = walk_indirect(chain, d.addr, d.len); !r)
        return std::move(r).error();
      break;
    }
    if (auto r = add_segment(chain, d.addr, d.len, d.flags, seen_writable); !r)
      return std::move(r).error();
    if ((d.flags & desc_f_next) == 0)
      break;
    if (d.next >= size_)
      return fail("next index " + std::to_string(d.next) + " beyond the queue size");
    idx = d.next;
  }
  in_flight_[head] = true;
  chain_len_[head] = count;
  ++in_flight_count_;
  return std::optional<Chain>{std::move(chain)};
}

Result<std::optional<Chain>> DeviceQueue::pop_packed() {
  if (!resubmit_packed_.empty()) {
    auto c = packed_chain(resubmit_packed_.front());
    if (c) {
      resubmit_packed_.erase(resubmit_packed_.begin());
      resubmitted_ = true;
      if (c->has_value())
        (*c)->resubmitted = true;
    }
    return c;
  }
  uint8_t* hp = desc_ + uint64_t{next_avail_.idx} * 16;
  const uint16_t head_flags = ring_load(u16_at(hp, offsetof(PackedDesc, flags)));
  const bool avail = (head_flags & packed_desc_f_avail) != 0,
             used = (head_flags & packed_desc_f_used) != 0;
  if (avail != next_avail_.wrap || used == next_avail_.wrap)
    return std::optional<Chain>{};
  std::vector<PackedDesc> descs;
  PackedPos pos = next_avail_;
  for (;;) {
    if (descs.size() == size_)
      return fail("descriptor chain is longer than the queue");
    PackedDesc d{};
    std::memcpy(&d, desc_ + uint64_t{pos.idx} * 16, sizeof d);  // BOUNDS: idx < size
    if (descs.empty())
      d.flags = head_flags;  // the value that was checked
    descs.push_back(d);
    advance(pos, 1, size_);
    if ((d.flags & desc_f_next) == 0 || (d.flags & desc_f_indirect) != 0)
      break;
  }
  auto c = packed_chain(std::move(descs));
  if (c)
    next_avail_ = pos;
  return c;
}

Result<std::optional<Chain>> DeviceQueue::packed_chain(std::vector<PackedDesc> descs) {
  Chain chain;
  bool seen_writable = false;
  for (size_t i = 0; i < descs.size(); ++i) {
    const PackedDesc& d = descs[i];
    if ((d.flags & desc_f_indirect) != 0) {
      if (i != 0 || (d.flags & desc_f_next) != 0)
        return fail("indirect descriptor must be the only one of its chain");
      if (auto r = walk_indirect(chain, d.addr, d.len); !r)
        return std::move(r).error();
      chain.id = d.id;
      break;
    }
    if (auto r = add_segment(chain, d.addr, d.len, d.flags, seen_writable); !r)
      return std::move(r).error();
    chain.id = d.id;  // the buffer id is in the last descriptor
  }
  if (chain.id >= size_)
    return fail("buffer id " + std::to_string(chain.id) + " beyond the queue size");
  if (in_flight_[chain.id])
    return fail("buffer id " + std::to_string(chain.id) + " is already in flight");
  in_flight_[chain.id] = true;
  chain_len_[chain.id] = static_cast<uint16_t>(descs.size());
  ++in_flight_count_;
  chain.descs = std::move(descs);
  return std::optional<Chain>{std::move(chain)};
}

Result<void> DeviceQueue::resubmit_packed(PackedPos avail, PackedPos used,
                                          std::vector<std::vector<PackedDesc>> chains) {
  constexpr const char* op = "virtqueue resubmit";
  if (kind_ != RingKind::packed)
    return make_error(errc::invalid_argument, op, "packed rings only");
  if (avail.idx >= size_ || used.idx >= size_)
    return make_error(errc::invalid_argument, op, "position beyond the queue size");
  size_t total = 0;
  for (const auto& c : chains) {
    if (c.empty())
      return make_error(errc::invalid_argument, op, "an empty chain");
    total += c.size();
  }
  if (total > size_)
    return make_error(errc::invalid_argument, op,
                      std::to_string(total) + " descriptors for a queue of " + std::to_string(size_));
  next_avail_ = avail;
  next_used_ = used;
  resubmit_packed_ = std::move(chains);
  can_unpop_ = false;
  return ok();
}

uint16_t DeviceQueue::ring_flags(uint16_t idx) const noexcept {
  if (kind_ != RingKind::packed || idx >= size_)
    return 0;
  return ring_load(u16_at(desc_ + uint64_t{idx} * 16, offsetof(PackedDesc, flags)));
}

Result<void> DeviceQueue::push(uint16_t id, uint32_t written) {
  can_unpop_ = false;
  if (broken_)
    return make_error(errc::bad_state, op_push, "queue broken by an earlier error");
  if (id >= size_ || !in_flight_[id])
    return make_error(errc::invalid_argument, op_push,
                      "id " + std::to_string(id) + " is not in flight");
  if (kind_ == RingKind::split) {
    const SplitUsedElem e{id, written};
    const uint64_t slot = used_idx_ & (size_ - 1u);
    std::memcpy(device_ + sizeof(SplitUsedHeader) + 8 * slot, &e, sizeof e);  // BOUNDS: slot < size
    ++used_idx_;
    ring_store(u16_at(device_, offsetof(SplitUsedHeader, idx)), used_idx_);
  } else {
    uint8_t* p = desc_ + uint64_t{next_used_.idx} * 16;
    std::memcpy(p + offsetof(PackedDesc, len), &written, sizeof written);
    std::memcpy(p + offsetof(PackedDesc, id), &id, sizeof id);
    const uint16_t flags = next_used_.wrap ? (packed_desc_f_avail | packed_desc_f_used) : 0;
    ring_store(u16_at(p, offsetof(PackedDesc, flags)), flags);
    advance(next_used_, chain_len_[id], size_);
  }
  in_flight_[id] = false;
  --in_flight_count_;
  return ok();
}

uint32_t DeviceQueue::base() const noexcept {
  if (kind_ == RingKind::split)
    return last_avail_;
  return encode_packed_base(next_avail_, next_used_);
}

uint16_t DeviceQueue::outstanding() const noexcept {
  if (kind_ != RingKind::split || !driver_)
    return in_flight_count_;
  const uint16_t avail = ring_load(u16_at(driver_, offsetof(SplitAvailHeader, idx)));
  return static_cast<uint16_t>(avail - used_idx_);
}

}  // namespace vufront::virtio
