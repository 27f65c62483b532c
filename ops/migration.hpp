#pragma once
// The memory side of a live migration, as a VMM's pre-copy does it (vhost-user
// spec, "Migration"): a destination guest memory with the source's layout (new
// memfds), two dirty logs — the device's, where the back-end marks what it
// writes (data, used rings), and the guest-side driver's own, where the driver
// marks what it writes (descriptors, avail rings, request buffers), as KVM
// logs a VMM's vCPUs —, a first round copying everything, then rounds copying
// only the pages the logs marked until a round is small, all while the guest
// does I/O between chunks of the copy; once the device is stopped the final
// copy of what both logs hold, and a byte-for-byte check of the two memories.
// Moving the device itself (state or shared storage) is the Checker's
// (ops/checker_migrate.cpp). No actors: the device is a DeviceSession.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/session.hpp"
#include "base/error.hpp"
#include "memory/dirty_log.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/guest_driver.hpp"

namespace vufront::ops {

struct PrecopyOptions {
  /// A round that copies at most this many pages is the last before the stop.
  uint64_t threshold_pages = 256;
  /// At most this many rounds (the first, which copies everything, included).
  unsigned max_rounds = 30;
  /// Pages copied between two calls of `io`.
  uint64_t chunk_pages = 256;
  /// The guest's I/O, run between chunks while the device runs (empty: none).
  std::function<Result<void>()> io;
};

struct PrecopyReport {
  std::vector<uint64_t> round_pages;  ///< pages each round copied (the first: all)
  uint64_t final_pages = 0;           ///< pages the final copy took from the logs
  uint64_t memory_bytes = 0;          ///< guest memory
  uint64_t io_calls = 0;              ///< `io` calls during the rounds
};

class Precopy {
public:
  /// A destination memory like `g`'s, the device's dirty log on (SET_LOG_BASE,
  /// LOG_ALL) and the driver logging its writes. Errors: the device's
  /// (dirty_log_start), io_error (memfd, mmap).
  [[nodiscard]] static Result<std::unique_ptr<Precopy>> start(actors::DeviceSession& s,
                                                              virtio::GuestDriver& g,
                                                              PrecopyOptions o);
  /// The driver stops logging.
  ~Precopy();
  Precopy(const Precopy&) = delete;
  Precopy& operator=(const Precopy&) = delete;

  /// The rounds, with the device running and `io` between chunks: the first
  /// copies every page, each next one the pages marked meanwhile, until a
  /// round copies at most threshold_pages or max_rounds were run.
  [[nodiscard]] Result<void> rounds();
  /// With the device stopped: copies the pages marked in either log since.
  void final_copy();
  /// The destination equals the source byte for byte. Errors:
  /// invalid_payload naming the differing pages by GPA (the first ones) and
  /// their count.
  [[nodiscard]] Result<void> verify() const;
  /// The destination memory (the driver moves to it: GuestDriver::move_to).
  [[nodiscard]] GuestMemory take_destination() { return std::move(dest_); }
  [[nodiscard]] const PrecopyReport& report() const noexcept { return report_; }

private:
  Precopy(virtio::GuestDriver& g, PrecopyOptions o, GuestMemory dest, DirtyLog device_log,
          DirtyLog driver_log);
  /// Copies `pages` (page numbers), `io` after each chunk when `with_io`.
  [[nodiscard]] Result<void> copy(const std::vector<uint64_t>& pages, bool with_io);
  /// Every page of guest memory, ascending.
  [[nodiscard]] std::vector<uint64_t> all_pages() const;
  /// The pages marked in either log (read and cleared), inside guest memory.
  [[nodiscard]] std::vector<uint64_t> take_marked();

  virtio::GuestDriver& guest_;
  PrecopyOptions opts_;
  GuestMemory dest_;
  DirtyLog device_log_;
  DirtyLog driver_log_;
  PrecopyReport report_;
};

/// A memory with the layout of `src` (each region at its GPA, its size, a
/// new memfd), zero-filled. Errors: as GuestMemory::add_region.
[[nodiscard]] Result<GuestMemory> same_layout(const GuestMemory& src);

}  // namespace vufront::ops
