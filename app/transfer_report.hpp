#pragma once
// What `vufront snapshot`, `vufront restore` and `vufront job` share about
// state transfers: sizes as users write them ("512M"), bytes and rates as
// they read them, the summary line and JSON object of one transfer, the live
// progress line on a terminal, and cancelling a transfer on Ctrl-C.

#include <unistd.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "actors/session.hpp"
#include "base/unique_fd.hpp"
#include "base/error.hpp"

namespace vufront::app {

/// "4096", "512K", "512M", "4G", "1T" (also "4GiB", "4GB", lower case):
/// binary multiples, a whole number > 0, at most 2^63.
/// Errors: invalid_argument naming the text ("size \"1X\": ...").
[[nodiscard]] Result<uint64_t> parse_size(std::string_view text);

/// "512 B", "1.5 KiB", "64.0 MiB", "4.00 GiB".
[[nodiscard]] std::string format_bytes(uint64_t bytes);
/// "312.4 MiB/s"; "-" when no time passed.
[[nodiscard]] std::string format_rate(uint64_t bytes, uint64_t elapsed_us);
/// "1.25 s" / "312 ms".
[[nodiscard]] std::string format_duration_us(uint64_t elapsed_us);
/// The state checksum as the manifest writes it: 16 lower-case hex digits.
[[nodiscard]] std::string checksum_hex(uint64_t checksum);

/// "64.0 MiB of state, checksum 0123456789abcdef, 0.21 s, 304.8 MiB/s".
[[nodiscard]] std::string transfer_summary(const actors::SnapshotInfo& info);
/// {"path", "state_bytes", "checksum", "features", "queues": [{index, size,
/// base}], "elapsed_ms", "bytes_per_second"}.
[[nodiscard]] nlohmann::json transfer_json(const actors::SnapshotInfo& info);

/// A progress bar of `width` cells for done/total: "[#######.......]"; when
/// the total is unknown (0), a marker that bounces one cell per `phase`
/// (e.g. tenths of a second): "[...###........]".
[[nodiscard]] std::string progress_bar(uint64_t done, uint64_t total, unsigned width,
                                       uint64_t phase = 0);

/// The message of a failed step, named by the request that failed: the
/// operation in front is dropped when a request follows it ("snapshot:
/// SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ..."), and `op` is put
/// in front when the error names nothing.
[[nodiscard]] std::string step_message(const Error& e, std::string_view op);

/// An actor that draws (progress_atom, done, total) as one line on stderr,
/// redrawn in place ("\r"): "  snapshot  [####....]  12.0 MiB / 64.0 MiB  1.2 s".
/// A request `(caf::close_atom)` clears the line, stops drawing and is
/// answered with ok_atom, so the caller can print after it without the two
/// interleaving (late progress messages are ignored).
[[nodiscard]] caf::actor spawn_progress_line(caf::actor_system& sys, std::string label);
/// Clears and stops a progress line (no-op for an invalid handle); waits up
/// to a second for it.
void close_progress_line(caf::actor_system& sys, const caf::actor& line);

/// Columns of the terminal on stderr (80 when unknown).
[[nodiscard]] unsigned terminal_columns();

/// Whether stderr is a terminal (live progress only there).
[[nodiscard]] inline bool stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

/// One `vufront snapshot` / `vufront restore` run: a device for `socket`,
/// negotiated with `negotiate`, then `transfer` (given the progress line, or
/// an invalid handle when stderr is not a terminal). Prints the summary line
/// (or one JSON object with `json_extra` merged in) on stdout, or one line on
/// stderr naming the step that failed ("vufront snapshot: SET_DEVICE_STATE_FD:
/// ..."). Ctrl-C cancels the transfer. Returns the exit status (0 or 1).
struct TransferRun {
  std::string command;  ///< "snapshot" / "restore": the operation and the message prefix
  std::string socket;
  actors::NegotiateOptions negotiate;
  std::chrono::milliseconds timeout{60000};
  bool json = false;
  std::function<Result<actors::SnapshotInfo>(actors::DeviceSession&, const caf::actor& progress)>
      transfer;
  /// The text line for a successful transfer.
  std::function<std::string(const actors::SnapshotInfo&)> summary;
  nlohmann::json json_extra = nlohmann::json::object();
};
[[nodiscard]] int run_transfer_command(const TransferRun& run);

/// Turns SIGINT and SIGTERM into a call of `on_signal` (first signal) on a
/// thread of its own; a second signal ends the process at once (exit 130).
/// Construct it before the actor system, so every thread inherits the
/// blocked signals; the destructor restores the signal mask.
class CancelOnSignal {
public:
  /// `what` names what the first signal does in the line it prints
  /// ("cancelling", "stopping").
  explicit CancelOnSignal(const char* what = "cancelling");
  ~CancelOnSignal();
  CancelOnSignal(const CancelOnSignal&) = delete;
  CancelOnSignal& operator=(const CancelOnSignal&) = delete;

  /// What the first signal does (e.g. DeviceSession::cancel); replaceable.
  void on_signal(std::function<void()> fn);

private:
  void run();

  std::mutex mutex_;  // guards fn_ and signalled_ (the signal thread calls fn_)
  std::function<void()> fn_;
  bool signalled_ = false;
  UniqueFd signal_fd_;
  UniqueFd stop_fd_;
  bool mask_changed_ = false;
  const char* what_ = "cancelling";
  std::thread thread_;
};

}  // namespace vufront::app
