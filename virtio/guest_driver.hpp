#pragma once
// GuestDriver: what a guest OS does for one device, for vufront's tools,
// tests and benchmarks: guest RAM (one memfd region), one driver queue per
// virtqueue with its rings and scratch area, kick and call eventfds, and
// blocking blk / net / FUSE requests. It never talks to a back-end itself:
// whoever activates the device (the device actor, a test rig) hands the
// rings and eventfds over. No CAF, no sockets. Not thread-safe.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory/guest_memory.hpp"
#include "base/unique_fd.hpp"
#include "virtio/driver_queue.hpp"
#include "virtio/fuse.hpp"
#include "virtio/requests.hpp"

namespace vufront::virtio {

struct GuestDriverOptions {
  uint16_t queues = 1;
  uint16_t queue_size = 128;
  RingKind ring = RingKind::split;
  bool indirect = false;  ///< give each queue indirect tables and use them
  /// Deadline of one request (add, kick, wait for its completion).
  std::chrono::milliseconds io_timeout{10000};
  /// Guest RAM beyond the rings and request buffers (rounded up to 4 KiB):
  /// what a migration copies besides them (`ram_gpa()`), e.g. a benchmark's
  /// 1 GiB. The driver never touches it.
  uint64_t ram_bytes = 0;
};

class GuestDriver {
public:
  /// Guest RAM at guest_base: rings and a 1 MiB scratch area per queue.
  [[nodiscard]] static Result<std::unique_ptr<GuestDriver>> create(const GuestDriverOptions& o);

  /// Guest-physical base of guest RAM (not 0, so GPA/offset mix-ups show).
  static constexpr uint64_t guest_base = 0x1'0000'0000;

  [[nodiscard]] const GuestMemory& memory() const noexcept { return mem_; }
  [[nodiscard]] const GuestDriverOptions& options() const noexcept { return opts_; }
  [[nodiscard]] uint16_t queue_count() const noexcept { return static_cast<uint16_t>(queues_.size()); }
  [[nodiscard]] const RingAreas& areas(uint16_t q) const { return queues_.at(q).driver.areas(); }
  [[nodiscard]] DriverQueue& queue(uint16_t q) { return queues_.at(q).driver; }
  [[nodiscard]] GuestScratch& scratch(uint16_t q) { return queues_.at(q).scratch; }
  /// The queue-notify eventfd (what the back-end gets as kick fd).
  [[nodiscard]] const SharedFd& kick(uint16_t q) const { return queues_.at(q).kick; }
  /// A per-queue interrupt eventfd (the MSI-X path: handed to the back-end).
  [[nodiscard]] const SharedFd& call(uint16_t q) const { return queues_.at(q).call; }
  /// The interrupt line of the non-MSI-X path (one for the device).
  [[nodiscard]] const SharedFd& intx() const noexcept { return intx_; }
  /// Wait for completions on intx() instead of the per-queue call fds.
  void use_intx(bool on) noexcept { use_intx_ = on; }

  /// Guest-physical address of the RAM beyond the rings and request
  /// buffers (GuestDriverOptions::ram_bytes of it).
  [[nodiscard]] uint64_t ram_gpa() const noexcept;

  /// Logs every write the driver makes to guest memory (descriptors, avail
  /// rings, indirect tables, request buffers) in `log` until called with
  /// nullptr (a migration's own log, as KVM's of a VMM's vCPUs).
  void log_writes(DirtyLog* log) noexcept { mem_.set_write_log(log); }

  /// Moves the driver to `dest`, a copy of its memory with the same layout
  /// (a migration's destination): the rings continue where they are, the
  /// scratch areas are the same GPAs in `dest`; the old memory is returned.
  /// Errors: bad_state (a chain is in flight), invalid_argument (`dest`
  /// lacks a region of this memory).
  [[nodiscard]] Result<GuestMemory> move_to(GuestMemory dest);

  /// Fresh rings on every queue (after a device reset): zeroed ring memory,
  /// base 0 (split) / 0x8000_8000 (packed).
  [[nodiscard]] Result<void> reset_queues();

  /// Adds `chain` to queue q, kicks, waits for its completion.
  [[nodiscard]] Result<Used> submit(uint16_t q, const std::vector<Buffer>& chain);

  // ---- virtio-blk (queue q)
  [[nodiscard]] Result<void> blk_write(uint16_t q, uint64_t sector, const std::vector<uint8_t>& d);
  [[nodiscard]] Result<std::vector<uint8_t>> blk_read(uint16_t q, uint64_t sector, uint32_t len);
  [[nodiscard]] Result<void> blk_flush(uint16_t q);
  [[nodiscard]] Result<std::string> blk_get_id(uint16_t q);

  // ---- virtio-net (queue pair p: rx = 2p, tx = 2p+1)
  /// Posts one receive buffer, sends `frame`, and returns what came back on
  /// the receive queue (an echoing back-end returns the frame).
  [[nodiscard]] Result<std::vector<uint8_t>> net_echo(uint16_t pair, const std::vector<uint8_t>& frame);

  // ---- virtio-fs (request queue q)
  [[nodiscard]] Result<fuse::Reply> fuse_call(uint16_t q, Result<fuse::Request> req);

private:
  struct Queue {
    DriverQueue driver;
    GuestScratch scratch;
    SharedFd kick;
    SharedFd call;
  };
  explicit GuestDriver(GuestDriverOptions o) : opts_(o) {}
  [[nodiscard]] Deadline deadline() const;
  [[nodiscard]] int wait_fd(uint16_t q) const;
  [[nodiscard]] Result<Used> wait(uint16_t q, uint16_t id);
  [[nodiscard]] Result<BlkRequest> blk_request(uint16_t q, Result<BlkRequest> req);

  GuestDriverOptions opts_;
  GuestMemory mem_;
  std::vector<Queue> queues_;
  SharedFd intx_;
  bool use_intx_ = false;
};

}  // namespace vufront::virtio
