#include "virtio/inflight_packed.hpp"

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

namespace vufront::virtio {

namespace {

constexpr uint16_t no_entry = 0xffff;

/// Orders the region's stores: a back-end killed at any point leaves them
/// in program order for the next one (and the compiler keeps that order).
void order() { std::atomic_thread_fence(std::memory_order_seq_cst); }

Error bad(std::string detail) {
  return make_error(errc::invalid_payload, "in-flight region (packed)", std::move(detail));
}

}  // namespace

PackedInflight::PackedInflight(uint8_t* region, uint16_t size) noexcept
    : head_(reinterpret_cast<PackedInflightHeader*>(region)),
      desc_(reinterpret_cast<PackedInflightDesc*>(region + sizeof(PackedInflightHeader))),
      size_(size),
      entry_of_id_(size, no_entry) {}

Result<PackedResume> PackedInflight::start(uint32_t base, const RingFlags& ring_flags) {
  PackedInflightHeader& h = *head_;
  PackedResume out;
  std::fill(entry_of_id_.begin(), entry_of_id_.end(), no_entry);
  if (h.version == 0) {  // first start on this region: from SET_VRING_BASE
    out.avail = packed_base_avail(base);
    out.used = packed_base_used(base);
    h.features = 0;
    h.desc_num = size_;
    for (uint16_t i = 0; i < size_; ++i) {
      desc_[i] = PackedInflightDesc{};
      desc_[i].next = static_cast<uint16_t>(i + 1);  // size_ ends the free list
    }
    h.free_head = h.old_free_head = 0;
    h.used_idx = h.old_used_idx = out.used.idx;
    h.used_wrap_counter = h.old_used_wrap_counter = out.used.wrap ? 1 : 0;
    order();
    h.version = 1;
    counter_ = 1;
    return out;
  }
  if (h.version != 1)
    return bad("version " + std::to_string(h.version) + ", 1 expected");
  if (h.desc_num != size_)
    return bad("desc_num " + std::to_string(h.desc_num) + " for a queue of " + std::to_string(size_));
  if (h.used_idx >= size_ || h.old_used_idx >= size_)
    return bad("used index beyond the queue size");
  // An update of the used ring in progress when the back-end died: if the
  // ring's slot at the committed used index no longer shows the driver's
  // available descriptor, its used descriptor was published: commit.
  if (h.used_idx != h.old_used_idx || (h.used_wrap_counter != 0) != (h.old_used_wrap_counter != 0)) {
    const bool wrap = h.old_used_wrap_counter != 0;
    const uint16_t available = wrap ? packed_desc_f_avail : packed_desc_f_used;
    const uint16_t seen = ring_flags(h.old_used_idx) & (packed_desc_f_avail | packed_desc_f_used);
    if (seen != available) {
      h.old_free_head = h.free_head;
      h.old_used_idx = h.used_idx;
      h.old_used_wrap_counter = h.used_wrap_counter;
    }
  }
  // anything not committed is rolled back (a chain half recorded, say)
  h.free_head = h.old_free_head;
  h.used_idx = h.old_used_idx;
  h.used_wrap_counter = h.old_used_wrap_counter;
  order();
  uint16_t i = h.free_head;
  for (uint32_t n = 0; i < size_ && n < size_; ++n) {
    desc_[i].inflight = 0;
    i = desc_[i].next;
  }
  order();
  out.recovered = true;
  out.used = PackedPos{h.used_idx, h.used_wrap_counter != 0};
  if (auto r = recover_chains(out); !r)
    return std::move(r).error();
  return out;
}

Result<void> PackedInflight::recover_chains(PackedResume& out) {
  std::vector<std::pair<uint64_t, uint16_t>> heads;  // (counter, head entry)
  for (uint16_t i = 0; i < size_; ++i)
    if (desc_[i].inflight != 0)
      heads.emplace_back(desc_[i].counter, i);
  std::sort(heads.begin(), heads.end());
  std::vector<bool> taken(size_, false), ids(size_, false);
  uint32_t total = 0;
  uint64_t max_counter = 0;
  for (const auto& [counter, first] : heads) {
    const PackedInflightDesc& hd = desc_[first];
    const std::string at = "the chain at entry " + std::to_string(first);
    if (hd.num == 0 || hd.num > size_)
      return bad(at + " has " + std::to_string(hd.num) + " descriptors");
    std::vector<PackedDesc> descs;
    uint16_t e = first;
    for (uint16_t k = 0;; ++k) {
      if (e >= size_ || taken[e])
        return bad(at + " runs out of the region or into another chain");
      taken[e] = true;
      descs.push_back(PackedDesc{desc_[e].addr, desc_[e].len, desc_[e].id, desc_[e].flags});
      if (k + 1 == hd.num)
        break;
      e = desc_[e].next;
    }
    if (hd.last != e)
      return bad(at + " does not end at its last entry");
    const uint16_t id = descs.back().id;
    if (id >= size_ || ids[id])
      return bad(at + ": buffer id " + std::to_string(id) + " beyond the queue or in flight twice");
    ids[id] = true;
    total += hd.num;
    if (total > size_)
      return bad("more descriptors in flight than the queue holds");
    entry_of_id_[id] = first;
    max_counter = std::max(max_counter, counter);
    out.chains.push_back(std::move(descs));
  }
  counter_ = max_counter + 1;
  out.avail = out.used;
  advance(out.avail, static_cast<uint16_t>(total), size_);
  return ok();
}

void PackedInflight::begin(const std::vector<PackedDesc>& descs) {
  PackedInflightHeader& h = *head_;
  const uint16_t first = h.free_head;
  if (descs.empty() || first >= size_ || descs.back().id >= size_)
    return;  // DeviceQueue never has more than size_ descriptors in flight
  uint16_t e = first;
  uint16_t last = first;
  for (const PackedDesc& d : descs) {
    if (e >= size_)
      return;
    PackedInflightDesc& x = desc_[e];
    x.addr = d.addr;
    x.len = d.len;
    x.id = d.id;
    x.flags = d.flags;
    x.inflight = 0;
    last = e;
    e = x.next;
  }
  PackedInflightDesc& hd = desc_[first];
  hd.num = static_cast<uint16_t>(descs.size());
  hd.last = last;
  hd.counter = counter_++;
  h.free_head = e;
  order();
  hd.inflight = 1;
  order();
  h.old_free_head = e;  // committed
  entry_of_id_[descs.back().id] = first;
  last_begun_ = first;
}

void PackedInflight::abort(uint16_t id) {
  if (id >= size_ || entry_of_id_[id] != last_begun_)
    return;
  PackedInflightHeader& h = *head_;
  desc_[last_begun_].inflight = 0;
  order();
  // its entries are still linked as the free list had them
  h.free_head = h.old_free_head = last_begun_;
  entry_of_id_[id] = no_entry;
}

void PackedInflight::complete_begin(uint16_t id) {
  if (id >= size_ || entry_of_id_[id] == no_entry)
    return;
  PackedInflightHeader& h = *head_;
  const uint16_t first = entry_of_id_[id];
  PackedInflightDesc& hd = desc_[first];
  if (hd.last >= size_ || hd.num == 0 || hd.num > size_)
    return;
  desc_[hd.last].next = h.free_head;
  h.free_head = first;
  PackedPos used{h.used_idx, h.used_wrap_counter != 0};
  advance(used, hd.num, size_);
  h.used_idx = used.idx;
  h.used_wrap_counter = used.wrap ? 1 : 0;
  order();
}

void PackedInflight::complete_end(uint16_t id) {
  if (id >= size_ || entry_of_id_[id] == no_entry)
    return;
  PackedInflightHeader& h = *head_;
  order();
  desc_[entry_of_id_[id]].inflight = 0;
  order();
  h.old_free_head = h.free_head;
  h.old_used_idx = h.used_idx;
  h.old_used_wrap_counter = h.used_wrap_counter;
  entry_of_id_[id] = no_entry;
}

}  // namespace vufront::virtio
