#pragma once
// The job file of `vufront job` (docs/jobs.md): devices, each with a back-end
// socket, a guest-side driver and a list of steps, run concurrently and
// synchronised at named barriers. Parsing is strict: every key is known,
// every value has its type and range, the steps fit the device's state at
// that point, barriers cannot deadlock. Every error names its place in the
// file: `devices[1].steps[3]: unknown step "slep" (did you mean "sleep"?)`.
// No CAF, no I/O besides reading the file.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "actors/device_config.hpp"
#include "base/unix_socket.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/messages.hpp"

namespace vufront::ops {

enum class JobStepKind : uint8_t {
  activate, sleep, wake, reset, check, snapshot, restore, migrate, wait, barrier
};

/// The step's name in the file ("snapshot").
[[nodiscard]] const char* name(JobStepKind k) noexcept;

struct JobStep {
  JobStepKind kind = JobStepKind::activate;
  std::string path;     ///< snapshot, restore: the snapshot file
  std::string socket;   ///< restore, migrate: the new back-end's socket
  uint64_t max_bytes = uint64_t{64} << 30;  ///< snapshot: cap on the state
  bool force = false;   ///< snapshot: may replace an existing file
  std::chrono::milliseconds wait{0};        ///< wait
  std::string barrier;  ///< barrier: its name
  /// migrate: its options (the socket is `socket`).
  uint64_t threshold_pages = 256;
  unsigned max_rounds = 30;
  bool io = true;
  uint64_t chunk_pages = 256;
  std::string state_dir;
  /// The step's deadline: the device's timeout unless the step sets its own.
  std::chrono::milliseconds timeout{60000};
};

struct JobDevice {
  std::string name;
  std::string socket;
  DeviceKind kind = DeviceKind::blk;
  uint16_t queues = 1;  ///< blk: queues; net: queue pairs; fs: request queues
  uint16_t queue_size = 128;
  bool packed = false;
  bool msix = false;
  std::string fs_file;  ///< fs: the file "check" reads
  std::chrono::milliseconds timeout{60000};
  /// Each ring stop, GET_VRING_BASE ("drain_timeout").
  std::chrono::milliseconds drain_timeout{Timeouts::default_drain};
  /// "wait_for_backend": connecting waits up to `timeout` for the socket to
  /// appear instead of failing at once when nothing (or no socket) is there.
  bool wait_for_backend = false;
  /// A lost back-end: reconnect and replay ("reconnect", default on;
  /// "reconnect_give_up", "reconnect_max_delay" as attach's options).
  actors::ReconnectPolicy reconnect = default_reconnect();
  static actors::ReconnectPolicy default_reconnect() {
    actors::ReconnectPolicy p;
    p.enabled = true;
    return p;
  }
  std::vector<JobStep> steps;
};

struct Job {
  std::vector<JobDevice> devices;

  /// An upper bound of the whole job: the slowest device's step deadlines
  /// and waits added up.
  [[nodiscard]] std::chrono::milliseconds deadline() const;
};

// Limits a job file must respect.
inline constexpr size_t max_job_devices = 64;
inline constexpr size_t max_job_steps = 10000;
inline constexpr double max_job_seconds = 86400;  ///< timeouts and waits
inline constexpr size_t max_socket_path = max_unix_path;  ///< sockaddr_un.sun_path without the NUL

/// Checks and converts a parsed job file. Errors: invalid_argument with
/// request "job file" and the detail "<where>: <what>".
[[nodiscard]] Result<Job> parse_job(const nlohmann::json& j);
/// The same from JSON text; syntax errors and duplicate keys are reported
/// with their line and column or their place.
[[nodiscard]] Result<Job> parse_job_text(std::string_view text);
/// Reads and parses a job file. Errors: io_error (unreadable), invalid_argument.
[[nodiscard]] Result<Job> load_job(const std::string& path);

}  // namespace vufront::ops
