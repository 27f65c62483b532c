#include "ops/migration.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "ops/units.hpp"

namespace vufront::ops {

namespace {

constexpr uint64_t page = DirtyLog::page_size;

uint64_t memory_end(const GuestMemory& m) {
  uint64_t end = 0;
  for (const GuestRegion* r : m.regions())
    end = std::max(end, r->gpa() + r->size());
  return end;
}

}  // namespace

Result<GuestMemory> same_layout(const GuestMemory& src) {
  GuestMemory dest(src.max_regions());
  for (const GuestRegion* r : src.regions())
    if (auto made = dest.add_region(r->gpa(), r->size()); !made)
      return std::move(made).error();
  return dest;
}

Precopy::Precopy(virtio::GuestDriver& g, PrecopyOptions o, GuestMemory dest, DirtyLog device_log,
                 DirtyLog driver_log)
    : guest_(g),
      opts_(std::move(o)),
      dest_(std::move(dest)),
      device_log_(std::move(device_log)),
      driver_log_(std::move(driver_log)) {
  for (const GuestRegion* r : guest_.memory().regions())
    report_.memory_bytes += r->size();
  guest_.log_writes(&driver_log_);
}

Precopy::~Precopy() { guest_.log_writes(nullptr); }

Result<std::unique_ptr<Precopy>> Precopy::start(actors::DeviceSession& s, virtio::GuestDriver& g,
                                                PrecopyOptions o) {
  auto dest = same_layout(g.memory());
  if (!dest)
    return std::move(dest).error();
  auto driver_log = DirtyLog::create(memory_end(g.memory()));
  if (!driver_log)
    return std::move(driver_log).error();
  auto started = s.dirty_log_start();
  if (!started)
    return std::move(started).error();
  auto device_log = DirtyLog::map(started->first, started->second);
  if (!device_log)
    return std::move(device_log).error();
  // what the back-end marked before (an earlier log user): copied anyway
  (void)device_log->read_and_clear();
  if (o.chunk_pages == 0)
    o.chunk_pages = 1;
  return std::unique_ptr<Precopy>(new Precopy(g, std::move(o), std::move(dest).value(),
                                              std::move(device_log).value(),
                                              std::move(driver_log).value()));
}

std::vector<uint64_t> Precopy::all_pages() const {
  std::vector<uint64_t> out;
  for (const GuestRegion* r : guest_.memory().regions())
    for (uint64_t p = r->gpa() / page; p < (r->gpa() + r->size()) / page; ++p)
      out.push_back(p);
  return out;
}

std::vector<uint64_t> Precopy::take_marked() {
  auto a = device_log_.read_and_clear();
  auto b = driver_log_.read_and_clear();
  std::vector<uint64_t> both;
  both.reserve(a.size() + b.size());
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
  const GuestMemory& mem = guest_.memory();
  std::vector<uint64_t> out;
  for (uint64_t p : both)
    if (mem.find(p * page) != nullptr)
      out.push_back(p);
  return out;
}

Result<void> Precopy::copy(const std::vector<uint64_t>& pages, bool with_io) {
  const GuestMemory& src = guest_.memory();
  uint64_t in_chunk = 0;
  for (size_t i = 0; i < pages.size();) {
    // a run of consecutive pages inside one region is one memcpy
    const uint64_t first = pages[i];
    const GuestRegion* r = src.find(first * page);
    const uint64_t region_end = (r->gpa() + r->size()) / page;
    size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1 && pages[j] < region_end &&
           in_chunk + (j - i) < opts_.chunk_pages)
      ++j;
    const uint64_t n = j - i;
    std::memcpy(dest_.host_ptr(first * page, n * page), src.host_ptr(first * page, n * page),
                n * page);
    i = j;
    in_chunk += n;
    if (in_chunk >= opts_.chunk_pages || i == pages.size()) {
      in_chunk = 0;
      if (with_io && opts_.io) {
        if (auto done = opts_.io(); !done)
          return done;
        ++report_.io_calls;
      }
    }
  }
  return ok();
}

Result<void> Precopy::rounds() {
  // The first round copies everything; what the logs marked meanwhile is
  // the next round's, and so on until a round is small.
  (void)take_marked();
  auto pages = all_pages();
  for (unsigned round = 1;; ++round) {
    if (auto r = copy(pages, true); !r)
      return r;
    report_.round_pages.push_back(pages.size());
    if (round >= opts_.max_rounds || (round > 1 && pages.size() <= opts_.threshold_pages))
      return ok();
    pages = take_marked();
  }
}

void Precopy::final_copy() {
  auto pages = take_marked();
  report_.final_pages = pages.size();
  (void)copy(pages, false);  // without I/O it cannot fail
}

Result<void> Precopy::verify() const {
  const GuestMemory& src = guest_.memory();
  uint64_t differing = 0;
  std::string named;
  for (const GuestRegion* r : src.regions()) {
    const uint8_t* a = r->host_base();
    const uint8_t* b = dest_.host_ptr(r->gpa(), r->size());
    if (b == nullptr)
      return make_error(errc::invalid_payload, "memory check",
                        "the destination has no region at " + hex(r->gpa()));
    for (uint64_t off = 0; off < r->size(); off += page) {
      if (std::memcmp(a + off, b + off, page) == 0)
        continue;
      if (differing++ < 8)
        named += (named.empty() ? "" : ", ") + hex(r->gpa() + off);
    }
  }
  if (differing == 0)
    return ok();
  return make_error(errc::invalid_payload, "memory check",
                    "the destination memory differs from the source in " +
                        std::to_string(differing) + " page(s) (GPA " + named +
                        (differing > 8 ? ", ..." : "") +
                        "): writes neither dirty log marked (a back-end that does not log?)");
}

}  // namespace vufront::ops
