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
#include "control/protocol.hpp"
#include "base/unique_fd.hpp"
#include "base/error.hpp"

namespace vufront::actors {

using json = nlohmann::json;

/// The fds of one packet, handed out by index.
class FdPool {
public:
  explicit FdPool(std::vector<UniqueFd> fds);

  enum class Kind { eventfd, memory };
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
