#pragma once
// The attach protocol's commands (docs/attach-protocol.md) as the device
// actor's payloads, and its results as JSON: pure functions, no actors, so
// every check is testable without a back-end. Each reader takes the
// packet's fds through an FdPool, which makes sure every fd is used exactly
// once and is of the kind the field needs.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "snapshot/file_target.hpp"
#include "control/protocol.hpp"
#include "base/unique_fd.hpp"
#include "base/error.hpp"

namespace vufront::actors {

using json = nlohmann::json;

/// The fds of one packet, handed out by index.
class FdPool {
public:
  explicit FdPool(std::vector<UniqueFd> fds);

  /// file_read / file_write: a snapshot file the VMM opened (a regular file,
  /// open for reading / for writing without O_APPEND).
  enum class Kind { eventfd, memory, file_read, file_write };
  /// The fd the field `key` of `a` refers to (a JSON index into the packet's
  /// fds), checked to be of `kind`. Errors: bad_message (not an index),
  /// bad_fds (no such fd, used twice, wrong kind).
  [[nodiscard]] Result<SharedFd> take(control::Args& a, const char* key, Kind kind);
  /// The same for an optional field: an empty SharedFd when it is absent.
  [[nodiscard]] Result<SharedFd> take_optional(control::Args& a, const char* key, Kind kind);
  /// bad_fds when some fd was never referred to.
  [[nodiscard]] Result<void> all_used() const;
  [[nodiscard]] size_t size() const noexcept { return fds_.size(); }

private:
  std::vector<UniqueFd> fds_;
  std::vector<bool> used_;
};

/// Who may name a snapshot file by path (docs/attach-protocol.md, "Snapshot
/// files"): one per VMM connection.
struct FilePolicy {
  uint32_t peer_uid = 0;  ///< the connection's uid (SO_PEERCRED)
  uint32_t own_uid = 0;   ///< the uid vufront attach runs as
  SharedFd snapshot_dir;  ///< --snapshot-dir, opened O_DIRECTORY; empty: none given
  std::string snapshot_dir_path;  ///< its canonical path (absolute paths under it are taken)
};

/// The file of a snapshot or restore, as the device takes it.
struct TransferFile {
  std::string path;              ///< as given ("" for an fd): results and errors
  snapshot::FileTarget target;   ///< empty: `path` itself
};

/// snapshot's / restore's file, exactly one of `args.fd` (an fd the VMM
/// opened: a regular file, open for writing when `writing`, else for
/// reading) and `args.path`: with --snapshot-dir a path relative to it (or
/// absolute under it), resolved beneath it with no "..", no symbolic link
/// (the directory's fd is taken now, the file is used relative to it);
/// without --snapshot-dir only vufront's own uid may give a path, used as
/// it is. Errors: bad_message (neither or both), bad_fds, permission_denied
/// (outside the directory, a symbolic link, another uid without one).
[[nodiscard]] Result<TransferFile> file_from(control::Args& args, FdPool& fds, const FilePolicy& policy,
                                             bool writing);

/// set_memory's regions / add_memory_region's region.
[[nodiscard]] Result<MemorySpec> memory_from(control::Args& args, FdPool& fds);
[[nodiscard]] Result<MemoryRegionSpec> region_from(control::Args& r, FdPool& fds);
/// activate's arguments (also restore's "activation").
[[nodiscard]] Result<ActivateSpec> activation_from(control::Args& args, FdPool& fds);
/// connect's arguments over the device's defaults.
[[nodiscard]] Result<NegotiateOptions> negotiate_from(control::Args& args, NegotiateOptions defaults);
/// add_device's arguments.
[[nodiscard]] Result<DeviceSetup> device_setup_from(control::Args& args);

/// status's result.
[[nodiscard]] json status_json(const DeviceStatus& s, bool vmm_owns_shmem);
/// connect's / add_device's result: what negotiation found.
[[nodiscard]] json info_json(const DeviceInfo& info);
/// snapshot's / restore's result.
[[nodiscard]] json transfer_json(const SnapshotInfo& info);
/// A device event for the wire; null for events VMMs do not get.
[[nodiscard]] json event_json(const std::string& device, const DeviceEvent& ev);

}  // namespace vufront::actors
