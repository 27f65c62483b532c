#include "ops/transfer_report.hpp"

#include "actors/progress_line.hpp"
#include "ops/json_style.hpp"
#include "snapshot/writer.hpp"

namespace vufront::ops {

std::string transfer_summary(const actors::SnapshotInfo& info) {
  return format_bytes(info.state_bytes) + " of state, checksum " + checksum_hex(info.checksum) +
         ", " + format_duration_us(info.elapsed_us) + ", " +
         format_rate(info.state_bytes, info.elapsed_us);
}

nlohmann::json transfer_json(const actors::SnapshotInfo& info, DeviceKind kind) {
  nlohmann::json queues = nlohmann::json::array();
  for (const auto& q : info.queues)
    queues.push_back({{"index", q.index}, {"size", q.size}, {"base", q.base}});
  double secs = static_cast<double>(info.elapsed_us) / 1e6;
  return {{"path", info.path},
          {"state_bytes", info.state_bytes},
          {"checksum", checksum_hex(info.checksum)},
          {"features", features_json(info.features, kind)},
          {"queues", queues},
          {"elapsed_ms", static_cast<double>(info.elapsed_us) / 1e3},
          {"bytes_per_second",
           secs > 0 ? static_cast<uint64_t>(static_cast<double>(info.state_bytes) / secs) : 0}};
}

std::string progress_text(const std::string& label, uint64_t done, uint64_t total,
                          uint64_t elapsed_us, unsigned width) {
  std::string line = "  " + label + "  " + progress_bar(done, total, 24, elapsed_us / 100000) +
                     "  " + format_bytes(done) +
                     (total ? " / " + format_bytes(total) : " (total known at the end)") + "  " +
                     format_duration_us(elapsed_us) + "  " + format_rate(done, elapsed_us);
  if (auto eta = actors::eta_us(done, total, elapsed_us))
    line += "  ETA " + format_duration_us(*eta);
  if (width > 0 && line.size() >= width)
    line.resize(width - 1);
  return line;
}

std::string step_message(const Error& e, std::string_view op) {
  Error x = e;
  // "snapshot: SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ...": the
  // request names the step. A bare "snapshot: <code>: ..." keeps its name.
  if (x.op == op && !x.request.empty())
    x.op.clear();
  else if (x.op.empty() && x.request.empty())
    x.op = std::string(op);
  return x.message();
}

std::string remove_partial_snapshots(const std::vector<std::string>& paths) {
  std::string said;
  for (const auto& p : paths)
    for (const auto& f : snapshot::SnapshotWriter::remove_temporaries(p))
      said += (said.empty() ? "removed the partial snapshot " : ", ") + f;
  return said;
}

}  // namespace vufront::ops
