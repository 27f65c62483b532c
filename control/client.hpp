#pragma once
// vufront's client library for VMMs: the VMM side of the attach control
// protocol (docs/attach-protocol.md). Connect to a running `vufront attach`,
// send commands with their fds, get one reply each, and receive events.
//
//   auto c = vufront::control::Client::connect("/run/vufront.ctl");
//   if (!c) { fprintf(stderr, "%s\n", c.error().message().c_str()); ... }
//   auto st = c->status("disk0");                 // Result<json>
//   c->set_memory("disk0", {{gpa, size, 0, memfd}});
//   c->activate("disk0", {features, {{0, 128, desc, avail, used, kick_fd}}, irq_fd});
//
// Installed with `cmake --install` as the CMake package `vufront`
// (find_package(vufront) -> vufront::client); headers under
// <prefix>/include/vufront, included as "control/client.hpp". Depends on
// nlohmann_json only. Not thread-safe: use one Client from one thread (or
// lock around it). Every wait has a deadline; fds passed in are only
// borrowed (vufront keeps duplicates), fds received with events are owned.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "control/packet.hpp"
#include "control/protocol.hpp"
#include "base/unique_fd.hpp"
#include "base/error.hpp"

namespace vufront::control {

/// An event pushed by vufront ("state_changed", "config_changed",
/// "backend_lost", "shmem_map", ...).
struct Event {
  std::string name;
  std::optional<std::string> device;
  json message;               ///< the whole event object
  std::vector<UniqueFd> fds;  ///< shmem_map: the fd to map
};

/// One guest RAM region.
struct MemoryRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t offset = 0;  ///< of the region in fd
  int fd = -1;          ///< borrowed
};

/// One virtqueue as the guest driver set it up (guest-physical addresses).
struct QueueSetup {
  uint16_t index = 0;
  uint16_t size = 0;
  uint64_t desc = 0;
  uint64_t driver = 0;
  uint64_t device = 0;
  int kick = -1;  ///< queue-notify eventfd (required), borrowed
  int call = -1;  ///< MSI-X: the interrupt eventfd the back-end signals; -1: forwarded
};

struct Activation {
  uint64_t features = 0;  ///< what the guest driver acked
  std::vector<QueueSetup> queues;
  int interrupt_fd = -1;  ///< where forwarded interrupts go (queues without call)
};

/// A device's dirty log (dirty_log_start, and each dirty_log_resized
/// event): a memfd of `size` bytes the VMM maps MAP_SHARED, one bit per
/// 4 KiB page of guest-physical memory from GPA 0 (bit p % 8 of byte p / 8);
/// the VMM reads and clears it with an atomic exchange per 64-bit word
/// (docs/attach-protocol.md, "Dirty logging").
struct DirtyLogFd {
  UniqueFd fd;  ///< owned
  uint64_t size = 0;
};

class Client {
public:
  struct Options {
    std::chrono::milliseconds connect_timeout{5000};
    /// Deadline of each command's reply (snapshot/restore: raise it, or pass
    /// their own timeout plus a margin).
    std::chrono::milliseconds reply_timeout{60000};
  };

  /// Connects (retrying while nobody listens yet) and reads the greeting.
  /// Errors: timeout, io_error, permission_denied (the server refused this
  /// uid), bad_message (no greeting, or another protocol version).
  [[nodiscard]] static Result<Client> connect(const std::string& path, Options o);
  [[nodiscard]] static Result<Client> connect(const std::string& path) { return connect(path, Options{}); }

  /// The greeting: {"event": "hello", "protocol", "server", "devices": [...]}.
  [[nodiscard]] const json& greeting() const noexcept { return greeting_; }
  /// The ids of the devices the greeting listed.
  [[nodiscard]] std::vector<std::string> devices() const;

  /// Sends one command (with `fds`, borrowed) and waits for its reply.
  /// Events that arrive meanwhile are queued for next_event(). Returns the
  /// reply's result, or its error as an Error (code from the wire, request
  /// and detail). Transport errors: disconnected, timeout, io_error.
  [[nodiscard]] Result<json> call(const std::string& cmd, json args = json::object(),
                                  const std::vector<int>& fds = {},
                                  const std::optional<std::string>& device = std::nullopt);
  /// The same with another reply deadline.
  [[nodiscard]] Result<json> call_with_timeout(std::chrono::milliseconds timeout, const std::string& cmd,
                                               json args, const std::vector<int>& fds,
                                               const std::optional<std::string>& device);

  /// Called with each `transfer_progress` event (docs/attach-protocol.md,
  /// "Events") that arrives while a command waits for its reply, instead of
  /// queueing it; nullptr (the default): such events are queued as others.
  /// Either way each one also moves the waiting command's reply deadline on
  /// (a long transfer that keeps moving never times out here).
  void on_progress(std::function<void(const Event&)> handler) { on_progress_ = std::move(handler); }

  /// The next event: a queued one, else one read within `timeout`.
  [[nodiscard]] Result<std::optional<Event>> next_event(std::chrono::milliseconds timeout);
  /// Waits for an event named `name` (of `device`, if given); others are dropped.
  [[nodiscard]] Result<Event> wait_event(const std::string& name, const std::optional<std::string>& device,
                                         std::chrono::milliseconds timeout);

  /// The socket, for a VMM's own poll loop (readable: a reply or event).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  // ---- typed commands (device: the device id, or nullopt for the only one)
  [[nodiscard]] Result<json> status(const std::optional<std::string>& device = std::nullopt);
  [[nodiscard]] Result<void> set_memory(const std::optional<std::string>& device,
                                        const std::vector<MemoryRegion>& regions);
  [[nodiscard]] Result<void> activate(const std::optional<std::string>& device, const Activation& a);
  [[nodiscard]] Result<std::vector<uint8_t>> read_config(const std::optional<std::string>& device,
                                                         uint32_t offset, uint32_t size);
  [[nodiscard]] Result<void> write_config(const std::optional<std::string>& device, uint32_t offset,
                                          const std::vector<uint8_t>& data);
  [[nodiscard]] Result<void> sleep(const std::optional<std::string>& device = std::nullopt);
  [[nodiscard]] Result<void> wake(const std::optional<std::string>& device = std::nullopt);
  /// After a loss: connect to the back-end again now (skipping the backoff
  /// wait), or start again after a refused resume or a give-up.
  [[nodiscard]] Result<void> reconnect(const std::optional<std::string>& device = std::nullopt);
  [[nodiscard]] Result<void> reset(const std::optional<std::string>& device = std::nullopt);
  /// Saves the back-end's state to `path` (the device sleeping; `timeout`:
  /// the transfer fails once no byte moved for that long): a path
  /// vufront opens, so beneath its --snapshot-dir, or any path when the VMM
  /// runs as vufront's own uid (docs/attach-protocol.md, "Snapshot files").
  /// Result: the transfer ({"state_bytes", "checksum", ...}).
  [[nodiscard]] Result<json> snapshot(const std::optional<std::string>& device, const std::string& path,
                                      std::chrono::seconds timeout = std::chrono::seconds(60));
  /// Restores `path` into the (negotiated) device; with `activation` the
  /// device ends up sleeping at the snapshot's ring indices (then wake()).
  [[nodiscard]] Result<json> restore(const std::optional<std::string>& device, const std::string& path,
                                     const std::optional<Activation>& activation,
                                     std::chrono::seconds timeout = std::chrono::seconds(60));
  /// The same with a file the VMM opened (borrowed; passed with SCM_RIGHTS),
  /// which works for any uid: the snapshot is written into `file_fd` in place
  /// (a regular file open for writing, without O_APPEND; vufront truncates it
  /// first; for atomicity write to a temporary and rename it yourself), and
  /// a restore reads `file_fd` (open for reading). Result: as above, "path" "".
  [[nodiscard]] Result<json> snapshot_to_fd(const std::optional<std::string>& device, int file_fd,
                                            std::chrono::seconds timeout = std::chrono::seconds(60));
  [[nodiscard]] Result<json> restore_from_fd(const std::optional<std::string>& device, int file_fd,
                                             const std::optional<Activation>& activation,
                                             std::chrono::seconds timeout = std::chrono::seconds(60));

  /// Starts dirty logging of the device's back-end (the same log when it is
  /// already on); a bigger memory later comes as a "dirty_log_resized"
  /// event whose fds[0] is the new log (its "size" in the message).
  [[nodiscard]] Result<DirtyLogFd> dirty_log_start(const std::optional<std::string>& device = std::nullopt);
  /// Stops it (the back-end no longer logs; nothing when it was off).
  [[nodiscard]] Result<void> dirty_log_stop(const std::optional<std::string>& device = std::nullopt);
  /// The activation as command arguments, its fds appended to `fds` (for
  /// callers composing their own commands).
  [[nodiscard]] static json activation_args(const Activation& a, std::vector<int>& fds);

private:
  Client(UniqueFd fd, Options o) : fd_(std::move(fd)), opts_(o) {}
  /// A reply's result with the fds that came with it.
  struct Reply {
    json result;
    std::vector<UniqueFd> fds;
  };
  [[nodiscard]] Result<Reply> exchange(std::chrono::milliseconds timeout, const std::string& cmd,
                                       json args, const std::vector<int>& fds,
                                       const std::optional<std::string>& device);
  [[nodiscard]] Result<Packet> read_one(Clock::time_point deadline, const char* what);
  [[nodiscard]] Result<void> queue_event(Packet p, json message);

  UniqueFd fd_;
  Options opts_;
  json greeting_;
  uint64_t next_id_ = 1;
  std::deque<Event> events_;
  std::function<void(const Event&)> on_progress_;
};

}  // namespace vufront::control
