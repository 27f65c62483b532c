// The Checker's live migration (Checker::migrate): pre-copy of the guest
// memory with blk I/O running (ops/migration.hpp), the rings stopped, the
// final copy and the byte-for-byte check, then the device continues at the
// destination back-end on the destination memory: its state saved and
// restored there (DEVICE_STATE), or, without it, a back-end on the same
// storage started at the rings' bases (as QEMU migrates vhost-user-blk).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "ops/checker.hpp"
#include "ops/migration.hpp"
#include "ops/units.hpp"
#include "virtio/requests.hpp"

namespace vufront::ops {

namespace {

using Clock = std::chrono::steady_clock;

/// The migration's blk writes: 4 KiB slots from 8 MiB on (the check's own
/// rounds stay below 8 MiB: ops/checker.cpp), reused in turn.
constexpr unsigned migration_slots = 256;
constexpr uint32_t slot_len = 4096;
constexpr uint64_t migration_base = uint64_t{8} << 20;

uint64_t slot_sector(unsigned slot) {
  return (migration_base + uint64_t{slot} * slot_len) / virtio::blk_sector_size;
}

std::vector<uint8_t> slot_data(uint64_t seed) {
  std::vector<uint8_t> out(slot_len);
  uint64_t x = 0x2545f4914f6cdd1dull ^ (seed * 0x9e3779b97f4a7c15ull);
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// Removes a file when it goes out of scope.
struct RemoveFile {
  std::string path;
  ~RemoveFile() {
    if (!path.empty())
      std::remove(path.c_str());
  }
};

}  // namespace

bool Checker::migrate(const MigrateOptions& o, const std::string& name) {
  return step(name, [&] { return migrate_device(o); });
}

Result<std::string> Checker::migrate_device(const MigrateOptions& o) {
  constexpr const char* op = "migrate";
  if (!guest_)
    return make_error(errc::bad_state, op, "no guest driver yet: activate the device first");
  if (opts_.device != DeviceKind::blk)
    return make_error(errc::invalid_argument, op, "only blk devices migrate (their I/O is checked)");
  const auto t0 = Clock::now();
  migration_ = MigrateInfo{};
  PrecopyOptions po;
  po.threshold_pages = o.threshold_pages;
  po.max_rounds = o.max_rounds;
  po.chunk_pages = o.chunk_pages;
  const uint64_t ios_before = migration_ios_;
  if (o.io)
    po.io = [this] { return migration_io(); };
  auto pre = Precopy::start(*session_, *guest_, po);
  if (!pre)
    return std::move(pre).error();
  if (auto r = (*pre)->rounds(); !r)
    return std::move(r).error();
  const auto t_stop = Clock::now();
  if (auto r = session_->sleep(); !r)
    return std::move(r).error();
  (*pre)->final_copy();
  const auto t_copied = Clock::now();
  if (auto r = (*pre)->verify(); !r)
    return std::move(r).error();
  const auto t_verified = Clock::now();
  const bool state = has_bit(info_.protocol_features, protocol_feature::device_state);
  migration_.how = state ? "device state" : "shared storage";
  GuestMemory dest = (*pre)->take_destination();
  auto moved = state ? move_state(o, std::move(dest)) : move_shared(o, std::move(dest));
  if (!moved)
    return std::move(moved).error();
  const auto t_end = Clock::now();
  const PrecopyReport& rep = (*pre)->report();
  migration_.round_pages = rep.round_pages;
  migration_.final_pages = rep.final_pages;
  migration_.memory_bytes = rep.memory_bytes;
  migration_.io_requests = migration_ios_ - ios_before;
  migration_.downtime_ms = ms_between(t_stop, t_end);
  migration_.total_ms = ms_between(t0, t_end);
  migration_.stop_copy_ms = ms_between(t_stop, t_copied);
  migration_.verify_ms = ms_between(t_copied, t_verified);
  migration_.switch_ms = ms_between(t_verified, t_end);
  std::string rounds;
  for (auto n : rep.round_pages)
    rounds += (rounds.empty() ? "" : ", ") + std::to_string(n);
  char times[160];
  std::snprintf(times, sizeof times,
                "downtime %.1f ms (stop and final copy %.1f, check %.1f, switch %.1f), total %.1f ms",
                migration_.downtime_ms, migration_.stop_copy_ms, migration_.verify_ms,
                migration_.switch_ms, migration_.total_ms);
  std::string detail = "into " + o.socket + " (" + migration_.how + "): " +
                       format_bytes(rep.memory_bytes) + " of memory in " +
                       std::to_string(rep.round_pages.size()) + " round(s) (" + rounds +
                       " pages), final copy " + std::to_string(rep.final_pages) +
                       " page(s), memory equal; " + std::to_string(migration_.io_requests) +
                       " I/O request(s) during the copy";
  if (state)
    detail += "; " + format_bytes(migration_.state_bytes) + " of state";
  return detail + "; " + times;
}

Result<void> Checker::move_state(const MigrateOptions& o, GuestMemory dest) {
  static unsigned counter = 0;
  std::filesystem::path dir =
      o.state_dir.empty() ? std::filesystem::temp_directory_path() : std::filesystem::path(o.state_dir);
  RemoveFile file{(dir / ("vufront-migrate-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter++) + ".vfsnap"))
                      .string()};
  actors::SnapshotOptions so;
  so.path = file.path;
  so.timeout_ms = o.timeout_ms;
  so.progress = o.progress;
  auto saved = session_->snapshot(so);
  if (!saved)
    return std::move(saved).error();
  migration_.state_bytes = saved->state_bytes;
  if (auto old = guest_->move_to(std::move(dest)); !old)
    return std::move(old).error();
  actors::RestoreOptions ro;
  ro.path = file.path;
  ro.timeout_ms = o.timeout_ms;
  ro.progress = o.progress;
  if (auto r = restore_into(o.socket, std::move(ro)); !r)
    return std::move(r).error();
  return session_->wake();
}

Result<void> Checker::move_shared(const MigrateOptions& o, GuestMemory dest) {
  if (auto old = guest_->move_to(std::move(dest)); !old)
    return std::move(old).error();
  if (auto r = new_session(o.socket); !r)
    return r;
  return session_->activate(actors::activate_spec(*guest_, driver_features_, opts_.msix, true));
}

Result<void> Checker::migration_request(uint16_t q, bool write, unsigned slot) {
  // Header and status in the scratch area (the back-end writes the status:
  // that page is in its log); the data in a page of its own near the
  // area's end, as a guest's page cache: the driver alone writes the write
  // page (marked in the driver's log, as KVM marks a vCPU's writes), the
  // back-end alone writes the read page (marked in the back-end's log only).
  virtio::GuestScratch& s = guest_->scratch(q);
  s.reset();
  auto hdr = s.alloc(sizeof(virtio::BlkReqHeader), 16);
  auto status = s.alloc(1);
  if (!hdr || !status)
    return make_error(errc::bad_state, "migrate I/O", "no room for a request");
  const virtio::BlkReqHeader h{write ? virtio::blk_t_out : virtio::blk_t_in, 0, slot_sector(slot)};
  std::memcpy(s.ptr(*hdr, sizeof h), &h, sizeof h);
  const uint64_t data = s.gpa() + s.size() - (write ? 2 : 1) * uint64_t{slot_len};
  uint8_t* host = guest_->memory().host_ptr(data, slot_len);
  if (write) {
    const auto bytes = slot_data(migration_written_.at(slot));
    std::memcpy(host, bytes.data(), slot_len);
    guest_->memory().mark_written(data, slot_len);
  }
  auto used = guest_->submit(q, {{*hdr, sizeof h, false}, {data, slot_len, !write}, {*status, 1, true}});
  if (!used)
    return std::move(used).error();
  const char* what = write ? "write" : "read";
  if (*s.ptr(*status, 1) != virtio::blk_s_ok)
    return make_error(errc::backend_failure, "migrate I/O",
                      std::string(what) + " of slot " + std::to_string(slot) + ": status " +
                          std::to_string(*s.ptr(*status, 1)));
  if (!write && std::memcmp(host, slot_data(migration_written_.at(slot)).data(), slot_len) != 0)
    return make_error(errc::invalid_payload, "migrate I/O",
                      "slot " + std::to_string(slot) + " read back differs from what was written");
  return vufront::ok();
}

Result<void> Checker::migration_io() {
  // A write to this request's slot, then a read of the slot before.
  const uint16_t q = static_cast<uint16_t>(migration_ios_ % guest_->queue_count());
  const auto slot = static_cast<unsigned>(migration_ios_ % migration_slots);
  migration_written_[slot] = migration_ios_;
  ++migration_ios_;
  if (auto r = migration_request(q, true, slot); !r)
    return r;
  if (migration_ios_ < 2)
    return vufront::ok();
  return migration_request(q, false, static_cast<unsigned>((migration_ios_ - 2) % migration_slots));
}

Result<void> Checker::migration_writes_intact() {
  for (const auto& [slot, seed] : migration_written_) {
    auto back = guest_->blk_read(0, slot_sector(slot), slot_len);
    if (!back)
      return std::move(back).error();
    if (*back != slot_data(seed))
      return make_error(errc::invalid_payload, "blk read",
                        "the data written during a migration (slot " + std::to_string(slot) +
                            ", request " + std::to_string(seed) + ") is gone (read back differs)");
  }
  return vufront::ok();
}

std::string Checker::migration_json() const {
  const MigrateInfo& m = migration_;
  nlohmann::ordered_json j{{"how", m.how},
                           {"rounds", m.round_pages.size()},
                           {"round_pages", m.round_pages},
                           {"final_pages", m.final_pages},
                           {"memory_bytes", m.memory_bytes},
                           {"state_bytes", m.state_bytes},
                           {"io_requests", m.io_requests},
                           {"downtime_ms", m.downtime_ms},
                           {"stop_copy_ms", m.stop_copy_ms},
                           {"verify_ms", m.verify_ms},
                           {"switch_ms", m.switch_ms},
                           {"total_ms", m.total_ms}};
  return j.dump();
}

}  // namespace vufront::ops
