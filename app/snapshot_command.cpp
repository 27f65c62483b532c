#include "app/snapshot_command.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "ops/transfer_report.hpp"
#include "app/transfer_command.hpp"

namespace vufront::app {

namespace {

/// --out must name a file in an existing directory; an existing file only
/// with --force (and it is replaced only when the snapshot succeeds).
std::string unusable_out(const std::string& path, bool force) {
  if (path.empty())
    return "--out: empty path";
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      return "--out " + path + ": exists and is not a regular file";
    if (!force)
      return "--out " + path + ": exists (--force replaces it once the new snapshot is complete)";
  }
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::stat(dir.c_str(), &st) != 0)
    return "--out " + path + ": directory " + dir + ": " + std::strerror(errno);
  if (!S_ISDIR(st.st_mode))
    return "--out " + path + ": " + dir + " is not a directory";
  return "";
}

}  // namespace

int snapshot_main(const SnapshotCommandOptions& opts) {
  if (auto why = unusable_out(opts.out, opts.force); !why.empty()) {
    std::cerr << "vufront snapshot: " << why << '\n';
    return 2;
  }
  TransferRun run;
  run.spec.command = "snapshot";
  run.spec.socket = opts.socket;
  run.spec.negotiate.kind = opts.device;
  run.spec.negotiate.queues = 1;
  run.spec.timeout = opts.timeout;
  run.spec.wait_for_backend = opts.wait_for_backend;
  run.json = opts.json;
  run.json_extra["path"] = opts.out;
  run.spec.transfer = [&opts](actors::DeviceSession& s, const caf::actor& progress) {
    actors::SnapshotOptions o;
    o.path = opts.out;
    o.max_bytes = opts.max_bytes;
    o.replace = opts.force;
    o.timeout_ms = static_cast<uint32_t>(opts.timeout.count());
    o.progress = progress;
    auto r = s.snapshot(o);
    if (r)
      r->path = opts.out;  // the file, whatever the device reports
    return r;
  };
  run.on_quit = [out = opts.out] {
    const std::string said = ops::remove_partial_snapshots({out});
    return said.empty() ? "no partial snapshot of " + out + " was left" : said;
  };
  run.summary = [&opts](const actors::SnapshotInfo& info) {
    return "snapshot of " + opts.socket + " (" + name(opts.device) + ") saved to " + info.path +
           ": " + ops::transfer_summary(info);
  };
  return run_transfer_command(run);
}

}  // namespace vufront::app
