#pragma once
// The device actor's handlers (internal to actors/device*.cpp), one named
// function per message of device_actor; device.cpp only wires them into the
// behaviour. Grouped by file:
//
//   device_lifecycle.cpp  negotiate, activate, sleep, wake, reset
//   device_memory.cpp     set_memory, add/remove a region
//   device_queries.cpp    config space, status, shared memory, and what the
//                         children report (loss, config change, interrupts)
//   device_snapshot.cpp   snapshot, restore, cancel (device_snapshot.hpp)
//   device_connect.cpp    the connection and the reconnect (device_connect.hpp)
//   device_vmm.cpp        a VMM-facing socket driving the device

#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "actors/device_steps.hpp"

namespace vufront::actors::device_handlers {

using device_steps::Self;

// ---- lifecycle (device_lifecycle.cpp)
[[nodiscard]] caf::result<DeviceInfo> on_negotiate(Self self, const NegotiateOptions& opts);
[[nodiscard]] caf::result<caf::ok_atom> on_activate(Self self, const ActivateSpec& spec);
[[nodiscard]] caf::result<caf::ok_atom> on_sleep(Self self);
[[nodiscard]] caf::result<caf::ok_atom> on_wake(Self self);
[[nodiscard]] caf::result<caf::ok_atom> on_reset(Self self);

// ---- guest memory (device_memory.cpp)
[[nodiscard]] caf::result<caf::ok_atom> on_set_memory(Self self, const MemorySpec& m);
[[nodiscard]] caf::result<caf::ok_atom> on_add_region(Self self, const MemoryRegionSpec& r);
[[nodiscard]] caf::result<caf::ok_atom> on_remove_region(Self self, uint64_t gpa);

// ---- dirty log (device_dirty_log.cpp)
/// Dirty logging on or off: the log's fd and size (on), nothing (off).
[[nodiscard]] caf::result<SharedFd, uint64_t> on_dirty_log(Self self, bool on);
/// Before guest memory becomes `next`: a bigger log when logging and `next`
/// ends beyond the log (SET_LOG_BASE with it, its reply waited for, the old
/// one folded in, a dirty_log_resized event), then `then`; `failed` with
/// the error otherwise.
void log_for_memory(Self self, const MemorySpec& next, const char* op, std::function<void()> then,
                    std::function<void(const caf::error&)> failed);
/// activate's refusal of packed rings while logging.
[[nodiscard]] std::optional<caf::error> refuse_packed_logging(const DeviceData& st, bool packed);
// ---- a VMM-facing socket (device_vmm.cpp)
[[nodiscard]] caf::result<DeviceInfo> on_vmm(Self self, const caf::actor_addr& port);
[[nodiscard]] caf::result<caf::ok_atom> on_vmm_renew(Self self, const std::string& why);
[[nodiscard]] caf::result<caf::ok_atom> on_vmm_replay(Self self, const ActivateRequest& req);
[[nodiscard]] caf::result<std::string> on_fence(Self self);
void on_fenced(Self self, uint64_t n, const std::string& done, const caf::error& e);
/// Adds the VMM session to a status and delivers it.
void deliver_status(Self self, caf::typed_response_promise<DeviceStatus> rp, DeviceStatus s);

// ---- queries and the children's reports (device_queries.cpp)
[[nodiscard]] caf::result<std::vector<uint8_t>> on_read_config(Self self, uint32_t offset,
                                                               uint32_t size);
[[nodiscard]] caf::result<caf::ok_atom> on_write_config(Self self, uint32_t offset,
                                                        const std::vector<uint8_t>& data);
[[nodiscard]] caf::result<DeviceStatus> on_status(Self self);
[[nodiscard]] caf::result<uint8_t, uint64_t> on_shmem(Self self);
[[nodiscard]] caf::result<caf::ok_atom> on_mapper(Self self, std::shared_ptr<SharedMemoryMapper> m);
/// A child saw the back-end go (EOF, hang-up, broken protocol); ignored from
/// a child of a connection already dropped (a late hang-up).
void on_lost(Self self, const caf::actor_addr& from, const std::string& why);
void on_config_changed(Self self);
void on_vring_call(Self self, uint16_t index);
void on_vring_err(Self self, uint16_t index);

}  // namespace vufront::actors::device_handlers
