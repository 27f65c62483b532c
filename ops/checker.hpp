#pragma once
// Checker: the end-to-end check of a back-end through the device actor and
// the guest-side driver, step by step, each step timed and recorded:
//   negotiate, read config, set memory, activate, I/O, sleep (ring bases
//   saved = the driver's next index), wake, I/O, reset, activate, I/O.
// I/O per device: blk writes a pattern on every queue, flushes, reads it
// back and compares; net sends frames on every queue pair and expects them
// echoed; fs does FUSE_INIT and reads a file (LOOKUP/OPEN/READ).
// blk I/O also reads back what earlier rounds wrote (it must survive sleep,
// reset and a move to another back-end).
// `vufront check` prints the steps; `vufront demo` adds steps of its own;
// `vufront job` runs them one by one, plus snapshot and restore (moving the
// guest's device to a new back-end).

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>

#include "actors/device.hpp"
#include "actors/session.hpp"
#include "memory/shmem_window.hpp"
#include "protocol/messages.hpp"
#include "snapshot/manifest.hpp"
#include "virtio/guest_driver.hpp"

namespace vufront::ops {

struct CheckOptions {
  std::string socket;
  DeviceKind device = DeviceKind::blk;
  /// blk: queues; net: queue pairs; fs: request queues (plus the hiprio queue).
  uint16_t queues = 1;
  uint16_t queue_size = 128;
  bool packed = false;
  /// Hand each queue's interrupt eventfd to the back-end directly instead of
  /// having the worker forward interrupts to one INTx-style eventfd.
  bool msix = false;
  std::string fs_file;  ///< fs: file to read (in the shared directory's root)
  /// Connecting, and each request (`--timeout`).
  std::chrono::milliseconds timeout{Timeouts::default_request};
  /// Each ring stop, GET_VRING_BASE (`--drain-timeout`).
  std::chrono::milliseconds drain_timeout{Timeouts::default_drain};
  /// Every deadline of the device's requests, when set (tests): instead of
  /// `timeout` and `drain_timeout`.
  std::optional<Timeouts> timeouts;
  /// What the device does when the back-end is lost (off: it stays broken).
  actors::ReconnectPolicy reconnect;
  /// Client mode: listen on `socket`, the back-end connects to it.
  bool listen = false;
  /// The first connect waits up to `timeout` for the socket to appear
  /// (`--wait-for-backend`) instead of failing at once when nothing is there.
  bool wait_for_backend = false;
  /// Negotiate INFLIGHT_SHMFD when offered (the back-end records requests
  /// in flight; a restarted one resubmits them).
  bool inflight = false;
  /// Record in each step what the device reported while it ran: a lost
  /// back-end, its resumption (or why not), a work-around notice
  /// (CheckStep::events). Off, the events stay in the session's queue for
  /// whoever reads them (tests).
  bool report_events = false;
  bool json = false;
  /// Called with each finished step (for live output).
  std::function<void(const struct CheckStep&)> on_step;
  /// Guest RAM beyond the rings and request buffers (a migration copies it;
  /// GuestDriverOptions::ram_bytes).
  uint64_t ram_bytes = 0;
  /// Called with each device session the checker makes (the first, and the
  /// one of each restore), e.g. to know whom to send a cancel.
  std::function<void(actors::DeviceSession&)> on_session;
};

/// A live migration of the device (Checker::migrate, ops/checker_migrate.cpp).
struct MigrateOptions {
  std::string socket;  ///< the destination back-end
  /// A pre-copy round of at most this many pages is the last before the stop.
  uint64_t threshold_pages = 256;
  unsigned max_rounds = 30;  ///< pre-copy rounds at most, the first included
  bool io = true;            ///< blk I/O between chunks of the copy
  uint64_t chunk_pages = 256;  ///< pages copied between two I/O requests
  /// DEVICE_STATE: where the state goes between the two back-ends (a file
  /// removed at once); default: the temporary directory.
  std::string state_dir;
  /// The state transfer's timeout (no progress for that long) and progress.
  uint32_t timeout_ms = 60000;
  caf::actor progress;
};

/// What a migration did.
struct MigrateInfo {
  std::string how;  ///< "device state" or "shared storage"
  std::vector<uint64_t> round_pages;  ///< pages per pre-copy round
  uint64_t final_pages = 0;   ///< pages the final copy (device stopped) took from the logs
  uint64_t memory_bytes = 0;
  uint64_t state_bytes = 0;   ///< the back-end's state (device state only)
  uint64_t io_requests = 0;   ///< guest I/O requests during the rounds
  double downtime_ms = 0;     ///< from the stop of the rings to their start at the destination
  /// The downtime's parts: the rings stopped and the final copy; the
  /// byte-for-byte check; the move to the destination back-end.
  double stop_copy_ms = 0, verify_ms = 0, switch_ms = 0;
  double total_ms = 0;
};

struct CheckStep {
  std::string name;
  bool ok = false;
  double ms = 0;
  std::string detail;  ///< what the step did, or the error's message
  std::optional<Error> error;  ///< why it failed
  /// With report_events: "backend_lost: ...", "resumed: ...", ... in order.
  std::vector<std::string> events;
};

class Checker {
public:
  Checker(caf::actor_system& sys, CheckOptions o);

  /// Runs `fn` as step `name` unless an earlier step failed; records it.
  /// `fn` returns the detail line or an error.
  bool step(const std::string& name, const std::function<Result<std::string>()>& fn);

  /// The whole standard sequence; true when every step passed.
  bool run();

  // The standard steps, usable one by one (demo).
  bool negotiate();
  bool read_config();
  bool set_memory();
  bool activate(const std::string& name = "activate");
  bool io(const std::string& name);
  bool sleep();
  bool wake();
  bool reset();
  /// Saves the back-end's state (the device sleeping) to o.path.
  bool snapshot(const actors::SnapshotOptions& o, const std::string& name = "snapshot");
  /// Moves the device to a new back-end: checks that o.path was taken at the
  /// guest's current point (kind, driver features, every queue's base equal
  /// to the driver's next index), drops the current device, connects a new
  /// one to `socket`, negotiates as before, sets the same guest memory and
  /// restores o.path with this guest's queues (o.activation is filled in
  /// here). The device ends up sleeping; wake() continues the rings where
  /// the guest is.
  bool restore(const std::string& socket, actors::RestoreOptions o,
               const std::string& name = "restore");
  /// Moves the running device and its guest memory to the back-end on
  /// o.socket while the guest does I/O (ops/checker_migrate.cpp): pre-copy
  /// (ops/migration.hpp), the rings stopped, the final copy, the memories
  /// compared, then the device continues at the destination on the new
  /// memory: with DEVICE_STATE its state is saved and restored into the new
  /// back-end; without, the new back-end shares the storage and the rings
  /// start at the source's bases. The device ends up active.
  bool migrate(const MigrateOptions& o, const std::string& name = "migrate");
  [[nodiscard]] const MigrateInfo& last_migration() const noexcept { return migration_; }
  /// What last_migration() is as a JSON object (the job's output).
  [[nodiscard]] std::string migration_json() const;

  /// What the last snapshot or restore transferred.
  [[nodiscard]] const actors::SnapshotInfo& last_transfer() const noexcept { return transfer_; }

  /// Deadline of each device operation, also of devices made by restore().
  void set_timeout(std::chrono::milliseconds t);

  /// blk: the I/O rounds whose data must still be on the disk (each check
  /// reads them back). A restore brings the disk of the snapshot's time: set
  /// what was written by then.
  [[nodiscard]] const std::vector<unsigned>& written_rounds() const noexcept { return written_; }
  void set_written_rounds(std::vector<unsigned> rounds) { written_ = std::move(rounds); }

  [[nodiscard]] bool ok() const noexcept { return failed_.empty(); }
  /// Lets the steps after a failed one run again (after a recovery: the
  /// back-end came back and the failed operation is retried). The failed
  /// step stays in steps().
  void clear_failure() { failed_.clear(); }
  [[nodiscard]] const std::vector<CheckStep>& steps() const noexcept { return steps_; }
  [[nodiscard]] actors::DeviceSession& session() { return *session_; }
  [[nodiscard]] virtio::GuestDriver* guest() { return guest_.get(); }
  [[nodiscard]] const actors::DeviceInfo& info() const noexcept { return info_; }
  [[nodiscard]] uint64_t driver_features() const noexcept { return driver_features_; }
  /// The shared-memory window (set when the back-end has a region).
  [[nodiscard]] ShmemWindow* window() { return window_.get(); }

private:
  /// The events of interest the session holds now (report_events).
  std::vector<std::string> drain_events();
  [[nodiscard]] Result<std::string> blk_io();
  [[nodiscard]] Result<std::string> net_io();
  [[nodiscard]] Result<std::string> fs_io();
  [[nodiscard]] uint16_t total_queues() const;
  /// negotiate on session_; `keep_features`: the driver's features stay (a
  /// restore: the new back-end must offer them) instead of being chosen.
  [[nodiscard]] Result<std::string> negotiate_session(bool keep_features);
  [[nodiscard]] Result<void> fits_guest(const snapshot::Manifest& m) const;
  /// Drops the device and makes a new one on `socket`, negotiated with the
  /// driver's features (restore, migrate).
  [[nodiscard]] Result<void> new_session(const std::string& socket);
  /// restore() without its step.
  [[nodiscard]] Result<std::string> restore_into(const std::string& socket,
                                                 actors::RestoreOptions o);
  /// migrate() without its step.
  [[nodiscard]] Result<std::string> migrate_device(const MigrateOptions& o);
  /// The device's state into a new back-end on o.socket (DEVICE_STATE), the
  /// driver on `dest`, woken there.
  [[nodiscard]] Result<void> move_state(const MigrateOptions& o, GuestMemory dest);
  /// A new back-end on o.socket on the same storage, the driver on `dest`,
  /// the rings started at their bases.
  [[nodiscard]] Result<void> move_shared(const MigrateOptions& o, GuestMemory dest);
  /// One blk request pair during a migration: a write to a slot of its
  /// own from a page only the driver writes, a read of the slot before into
  /// a page only the back-end writes.
  [[nodiscard]] Result<void> migration_io();
  /// One such write or read of `slot` on queue `q`.
  [[nodiscard]] Result<void> migration_request(uint16_t q, bool write, unsigned slot);
  /// blk: what migration_io() wrote is still there.
  [[nodiscard]] Result<void> migration_writes_intact();

  caf::actor_system& sys_;
  CheckOptions opts_;
  std::unique_ptr<actors::DeviceSession> session_;
  std::optional<std::chrono::milliseconds> timeout_;
  actors::SnapshotInfo transfer_;
  std::vector<unsigned> written_;
  std::unique_ptr<virtio::GuestDriver> guest_;
  std::shared_ptr<ShmemWindow> window_;
  actors::DeviceInfo info_;
  uint64_t driver_features_ = 0;
  unsigned round_ = 0;
  /// The device's notices (DeviceStatus::notices) already in a step's detail.
  size_t notices_shown_ = 0;
  bool fuse_initialised_ = false;
  std::vector<CheckStep> steps_;
  std::string failed_;
  MigrateInfo migration_;
  /// migration_io(): requests so far; the seed of each slot's data.
  uint64_t migration_ios_ = 0;
  std::map<unsigned, uint64_t> migration_written_;
};

}  // namespace vufront::ops
