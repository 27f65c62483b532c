#pragma once
// How a state transfer (`vufront snapshot`, `vufront restore`, a job's
// snapshot and restore steps) is reported: the summary line, the JSON
// object, and the message of a failed step.

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/messages.hpp"
#include "ops/units.hpp"
#include "base/error.hpp"

namespace vufront::ops {

/// "64.0 MiB of state, checksum 0123456789abcdef, 0.21 s, 304.8 MiB/s".
[[nodiscard]] std::string transfer_summary(const actors::SnapshotInfo& info);
/// {"path", "state_bytes", "checksum", "features": {"bits", "names"} (named
/// for `kind`), "queues": [{index, size, base}], "elapsed_ms",
/// "bytes_per_second"} (docs/json-output.md).
[[nodiscard]] nlohmann::json transfer_json(const actors::SnapshotInfo& info, DeviceKind kind);

/// The live progress line of a transfer, `width` columns at most:
/// "  restore  [######....]  12.0 MiB / 64.0 MiB  1.20 s  52.1 MiB/s  ETA 4.8 s"; while the
/// total is unknown (a snapshot: the back-end's state size is known only at its end)
/// "  snapshot  [..###.....]  12.0 MiB (total known at the end)  1.20 s  52.1 MiB/s".
[[nodiscard]] std::string progress_text(const std::string& label, uint64_t done, uint64_t total,
                                        uint64_t elapsed_us, unsigned width);

/// The message of a failed step, named by the request that failed: the
/// operation in front is dropped when a request follows it ("snapshot:
/// SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ..."), and `op` is put
/// in front when the error names nothing.
[[nodiscard]] std::string step_message(const Error& e, std::string_view op);

/// Removes what unfinished snapshots of `paths` left (their temporaries, as
/// a process quits mid-transfer) and says so: "removed the partial snapshot
/// A, B", or "" when there was none.
[[nodiscard]] std::string remove_partial_snapshots(const std::vector<std::string>& paths);

}  // namespace vufront::ops
