#include "app/restore_command.hpp"

#include <algorithm>
#include <iostream>

#include "ops/transfer_report.hpp"
#include "app/transfer_command.hpp"
#include "snapshot/reader.hpp"

namespace vufront::app {

int restore_main(const RestoreCommandOptions& opts) {
  // The manifest decides what to negotiate; the device checks the file whole
  // (checksum included) again before anything reaches the back-end.
  auto reader = snapshot::SnapshotReader::open(opts.in);
  if (!reader) {
    std::cerr << "vufront restore: " << opts.in << ": " << reader.error().message() << '\n';
    if (opts.json)
      std::cout << nlohmann::json{{"ok", false},    {"socket", opts.socket}, {"device", nullptr},
                                  {"path", opts.in}, {"step", "open"},
                                  {"error", reader.error().message()}, {"snapshot_created", nullptr}}
                       .dump(2)
                << '\n';
    return 1;
  }
  const snapshot::Manifest& m = reader->manifest();
  if (opts.device && *opts.device != m.kind) {
    std::cerr << "vufront restore: --device " << name(*opts.device) << ", but " << opts.in
              << " holds a " << name(m.kind) << " snapshot\n";
    return 2;
  }
  TransferRun run;
  run.spec.command = "restore";
  run.spec.socket = opts.socket;
  run.spec.negotiate.kind = m.kind;
  uint16_t queues = 1;
  uint16_t max_size = 256;
  for (const auto& q : m.queues) {
    queues = std::max<uint16_t>(queues, static_cast<uint16_t>(q.index + 1));
    max_size = std::max(max_size, q.size);
  }
  run.spec.negotiate.queues = queues;
  run.spec.negotiate.max_queue_size = max_size;
  run.spec.timeout = opts.timeout;
  run.spec.wait_for_backend = opts.wait_for_backend;
  run.json = opts.json;
  run.json_extra["path"] = opts.in;
  run.json_extra["snapshot_created"] = m.created;
  run.spec.transfer = [&opts](actors::DeviceSession& s, const caf::actor& progress) {
    actors::RestoreOptions o;
    o.path = opts.in;
    o.timeout_ms = static_cast<uint32_t>(opts.timeout.count());
    o.progress = progress;
    auto r = s.restore(o);
    if (r)
      r->path = opts.in;  // the file, whatever the device reports
    return r;
  };
  run.on_quit = [socket = opts.socket] {
    return "the back-end at " + socket + " may hold part of the state: restart it before using it";
  };
  run.summary = [&opts, kind = m.kind](const actors::SnapshotInfo& info) {
    return "restored " + info.path + " (" + name(kind) + ") into " + opts.socket + ": " +
           ops::transfer_summary(info);
  };
  return run_transfer_command(run);
}

}  // namespace vufront::app
