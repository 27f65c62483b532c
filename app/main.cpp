// vufront: command-line entry point. Parsing and wiring only; each command
// lives in its own file.
//
// Exit status: 0 success, 1 back-end or protocol error, 2 usage error.

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "app/attach_command.hpp"
#include "app/check_command.hpp"
#include "app/demo_command.hpp"
#include "app/job_command.hpp"
#include "app/probe_command.hpp"
#include "app/restore_command.hpp"
#include "app/snapshot_command.hpp"
#include "app/transfer_report.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/virtio_config.hpp"

namespace {

constexpr int exit_usage = 2;

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(std::llround(s * 1000.0)));
}

double seconds_of(std::chrono::milliseconds t) { return static_cast<double>(t.count()) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vufront - a vhost-user front-end.\n"
               "Talks to vhost-user back-ends (qemu-storage-daemon, virtiofsd, DPDK, ...)\n"
               "over their unix socket.",
               "vufront"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vufront 0.1.0");

  // ---- probe
  vufront::app::ProbeOptions probe;
  std::string device = "blk";
  double timeout_s = 5.0;
  uint32_t config_size = 0;
  auto* cmd_probe = app.add_subcommand(
      "probe", "Connect to a back-end, negotiate what it offers and print features,\n"
               "protocol features, queues, memory slots, config space and shared-memory regions.");
  cmd_probe->add_option("SOCKET", probe.socket, "Back-end's vhost-user unix socket")->required();
  cmd_probe->add_flag("--json", probe.json, "Print one JSON object instead of the text report");
  cmd_probe->add_option("--timeout", timeout_s,
                        "Seconds to wait for the socket to accept and for each reply")
      ->default_val(5.0)
      ->check(CLI::Range(0.001, 3600.0));
  cmd_probe->add_option("--device", device, "Device kind, for decoding config and feature names")
      ->default_val("blk")
      ->check(CLI::IsMember({"blk", "net", "fs", "generic"}));
  cmd_probe->add_option("--config-size", config_size,
                        "Config bytes to read (default: blk 60, net 12, fs 40, generic 256)")
      ->check(CLI::Range(1u, vufront::wire::max_config_size));

  // ---- check
  vufront::app::CheckOptions check;
  std::string check_device = "blk";
  double check_timeout_s = 5.0;
  auto* cmd_check = app.add_subcommand(
      "check", "End-to-end check of a back-end through the device actors and a guest-side\n"
               "driver: negotiate, set memory, activate, real I/O, sleep, wake, I/O (rings\n"
               "resume at the right index), reset, activate again, I/O. Prints each step\n"
               "with its time; exit 0 only when every step worked.");
  cmd_check->add_option("SOCKET", check.socket, "Back-end's vhost-user unix socket")->required();
  cmd_check->add_option("--device", check_device,
                        "blk: write, flush, read back, compare on every queue; net: frames\n"
                        "echoed on every queue pair (needs an echoing back-end); fs: FUSE_INIT\n"
                        "and read --fs-file")
      ->default_val("blk")
      ->check(CLI::IsMember({"blk", "net", "fs"}));
  cmd_check->add_option("--queues", check.queues,
                        "blk: queues; net: queue pairs; fs: request queues")
      ->default_val(1)
      ->check(CLI::Range(1, 64));
  cmd_check->add_option("--queue-size", check.queue_size, "Entries per ring")
      ->default_val(128)
      ->check(CLI::Range(2, 32768));
  cmd_check->add_flag("--packed", check.packed, "Use packed rings (the back-end must offer them)");
  cmd_check->add_flag("--msix", check.msix,
                      "Give the back-end each queue's interrupt eventfd directly (MSI-X path)\n"
                      "instead of having the worker forward interrupts");
  cmd_check->add_option("--fs-file", check.fs_file, "fs: a file in the shared directory to read");
  cmd_check->add_option("--timeout", check_timeout_s,
                        "Seconds for the socket and for each reply, except a ring stop's")
      ->default_val(5.0)
      ->check(CLI::Range(0.001, 3600.0));
  double check_drain_s = seconds_of(vufront::Timeouts::default_drain);
  cmd_check->add_option("--drain-timeout", check_drain_s,
                        "Seconds for each ring stop (GET_VRING_BASE: the back-end answers once\n"
                        "the ring's in-flight I/O is done)")
      ->default_val(check_drain_s)
      ->check(CLI::Range(0.001, 3600.0));
  cmd_check->add_flag("--json", check.json, "Print one JSON object instead of the text report");

  // ---- demo
  vufront::app::DemoOptions demo;
  auto* cmd_demo = app.add_subcommand(
      "demo", "Start the reference back-end (vufront-backend) on a private socket and run\n"
              "the whole check plus a config change and a shared-memory mapping.\n"
              "No arguments needed.");
  cmd_demo->add_option("--backend", demo.backend,
                       "Path of vufront-backend (default: next to this executable)");
  cmd_demo->add_flag("--json", demo.json, "Print one JSON object instead of the text report");

  // ---- snapshot
  vufront::app::SnapshotCommandOptions snap;
  std::string snap_device = "blk";
  double snap_timeout_s = 60.0;
  std::string snap_max = "64G";
  auto* cmd_snapshot = app.add_subcommand(
      "snapshot", "Connect to a back-end, negotiate, and save its state (SET_DEVICE_STATE_FD)\n"
                  "into a snapshot file. FILE appears only when the snapshot is complete: a\n"
                  "failure leaves an existing FILE as it was. Ctrl-C cancels.");
  cmd_snapshot->add_option("SOCKET", snap.socket, "Back-end's vhost-user unix socket")->required();
  cmd_snapshot->add_option("--out", snap.out, "Snapshot file to write")->required();
  cmd_snapshot->add_option("--device", snap_device, "Device kind")
      ->default_val("blk")
      ->check(CLI::IsMember({"blk", "net", "fs"}));
  cmd_snapshot->add_option("--timeout", snap_timeout_s,
                           "Seconds for the whole transfer (connect and each request: at most 5)")
      ->default_val(60.0)
      ->check(CLI::Range(0.001, 86400.0));
  cmd_snapshot->add_option("--max-bytes", snap_max,
                           "Largest state to accept: bytes or 512K, 512M, 4G, 1T")
      ->default_val("64G");
  cmd_snapshot->add_flag("--json", snap.json, "Print one JSON object instead of the summary line");

  // ---- restore
  vufront::app::RestoreCommandOptions rest;
  std::string rest_device;
  double rest_timeout_s = 60.0;
  auto* cmd_restore = app.add_subcommand(
      "restore", "Check a snapshot file (manifest, checksum), connect to a fresh back-end,\n"
                 "negotiate as the file's device kind and load the state into it. The device\n"
                 "is not activated. Ctrl-C cancels.");
  cmd_restore->add_option("SOCKET", rest.socket, "Back-end's vhost-user unix socket")->required();
  cmd_restore->add_option("--in", rest.in, "Snapshot file to read")
      ->required()
      ->check(CLI::ExistingFile);
  cmd_restore->add_option("--device", rest_device, "Device kind (default: the file's; must match it)")
      ->check(CLI::IsMember({"blk", "net", "fs"}));
  cmd_restore->add_option("--timeout", rest_timeout_s,
                          "Seconds for the whole transfer (connect and each request: at most 5)")
      ->default_val(60.0)
      ->check(CLI::Range(0.001, 86400.0));
  cmd_restore->add_flag("--json", rest.json, "Print one JSON object instead of the summary line");

  // ---- job
  vufront::app::JobCommandOptions job;
  auto* cmd_job = app.add_subcommand(
      "job", "Run a job file (docs/jobs.md): devices driven concurrently through their\n"
             "steps - activate, check, sleep, snapshot, restore (into a new back-end), wake,\n"
             "reset, wait, barrier - with a live display on a terminal, JSON-lines events\n"
             "otherwise, and a summary. Exit 0 when every device did every step, 1 when one\n"
             "failed (named with its step on stderr), 2 for an invalid job file.");
  cmd_job->add_option("FILE", job.file, "The job file (JSON)")->required();
  auto* json_progress = cmd_job->add_flag(
      "--json-progress", job.json_progress,
      "JSON-lines progress events on stdout, also on a terminal (the default elsewhere)");
  cmd_job->add_flag("--no-progress", job.no_progress, "No progress output, only the summary")
      ->excludes(json_progress);

  // ---- attach
  vufront::app::AttachOptions attach;
  std::vector<std::string> attach_backends, attach_kinds, attach_queues;
  uint32_t attach_queue_size = 1024;
  double attach_timeout_s = 5.0;
  auto* cmd_attach = app.add_subcommand(
      "attach", "Serve vhost-user front-ends to a VMM over a control socket\n"
                "(docs/attach-protocol.md): connect to every back-end, listen on --control,\n"
                "take commands (memory, activate, config, sleep, wake, reset, snapshot,\n"
                "restore) and push events, until SIGINT or SIGTERM.");
  cmd_attach->add_option("--backend", attach_backends,
                         "[ID=]SOCKET: a back-end's vhost-user socket (repeat for more devices;\n"
                         "ids default to disk0, disk1, net0, fs0, ...)")
      ->required()
      ->take_all();
  cmd_attach->add_option("--control", attach.control,
                         "PATH of the control socket to create (SOCK_SEQPACKET, mode 0600)")
      ->required();
  cmd_attach->add_option("--device", attach_kinds,
                         "[ID=]blk|net|fs: the device kind (without ID: for every device; default blk)");
  cmd_attach->add_option("--queues", attach_queues,
                         "[ID=]N: queues the VMM will use (blk/fs: queues, net: pairs; default 1)");
  cmd_attach->add_option("--queue-size", attach_queue_size, "Largest queue size the VMM will use")
      ->default_val(1024)
      ->check(CLI::Range(1u, 32768u));
  cmd_attach->add_option("--allow-uid", attach.allowed_uids,
                         "Also accept VMM connections from this uid (besides vufront's own)");
  cmd_attach->add_option("--timeout", attach_timeout_s,
                         "Seconds for connecting to each back-end and for each request, except\n"
                         "a ring stop")
      ->default_val(5.0)
      ->check(CLI::Range(0.001, 3600.0));
  double attach_drain_s = seconds_of(vufront::Timeouts::default_drain);
  cmd_attach->add_option("--drain-timeout", attach_drain_s,
                         "Seconds for each ring stop (GET_VRING_BASE: the back-end answers once\n"
                         "the ring's in-flight I/O is done)")
      ->default_val(attach_drain_s)
      ->check(CLI::Range(0.001, 3600.0));
  bool attach_no_reconnect = false, attach_client_mode = false;
  double attach_give_up_s = 0, attach_max_delay_s = 5.0;
  cmd_attach->add_flag("--client-mode", attach_client_mode,
                       "vufront listens on every --backend SOCKET and the back-ends connect to it\n"
                       "(DPDK's --client, QEMU's server=on); a back-end may connect again later");
  auto* no_reconnect = cmd_attach->add_flag(
      "--no-reconnect", attach_no_reconnect,
      "A lost back-end leaves its device broken (default: reconnect with backoff\n"
      "and replay the negotiated state; events reconnecting, resumed, resume_failed)");
  cmd_attach->add_option("--reconnect-give-up", attach_give_up_s,
                         "Seconds after a loss to stop trying (0: never; a `reconnect` command\n"
                         "always starts again)")
      ->default_val(0)
      ->check(CLI::Range(0.0, 86400.0))
      ->excludes(no_reconnect);
  cmd_attach->add_option("--reconnect-max-delay", attach_max_delay_s,
                         "Longest wait between two reconnect attempts (the first after 100 ms,\n"
                         "then doubling)")
      ->default_val(5.0)
      ->check(CLI::Range(0.1, 3600.0))
      ->excludes(no_reconnect);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help/version to stdout, errors to stderr
    return rc == 0 ? 0 : exit_usage;
  }

  if (cmd_probe->parsed()) {
    probe.device = *vufront::device_kind_from_string(device);
    probe.timeout = seconds_to_ms(timeout_s);
    if (config_size != 0)
      probe.config_size = config_size;
    return vufront::app::probe_main(probe);
  }
  if (cmd_check->parsed()) {
    check.device = *vufront::device_kind_from_string(check_device);
    check.timeout = seconds_to_ms(check_timeout_s);
    check.drain_timeout = seconds_to_ms(check_drain_s);
    return vufront::app::check_main(check);
  }
  if (cmd_demo->parsed())
    return vufront::app::demo_main(demo);
  if (cmd_snapshot->parsed()) {
    auto max = vufront::app::parse_size(snap_max);
    if (!max) {
      std::cerr << "vufront snapshot: --max-bytes: " << max.error().detail << "\n";
      return exit_usage;
    }
    snap.max_bytes = *max;
    snap.device = *vufront::device_kind_from_string(snap_device);
    snap.timeout = seconds_to_ms(snap_timeout_s);
    return vufront::app::snapshot_main(snap);
  }
  if (cmd_restore->parsed()) {
    if (!rest_device.empty())
      rest.device = *vufront::device_kind_from_string(rest_device);
    rest.timeout = seconds_to_ms(rest_timeout_s);
    return vufront::app::restore_main(rest);
  }
  if (cmd_job->parsed())
    return vufront::app::job_main(job);
  if (cmd_attach->parsed()) {
    auto setups = vufront::app::device_setups(attach_backends, attach_kinds, attach_queues,
                                              attach_queue_size);
    if (!setups) {
      std::cerr << setups.error().request << ": " << setups.error().detail << "\n";
      return exit_usage;
    }
    attach.devices = std::move(setups).value();
    for (auto& d : attach.devices)
      d.listen = attach_client_mode;
    attach.timeout = seconds_to_ms(attach_timeout_s);
    attach.drain_timeout = seconds_to_ms(attach_drain_s);
    attach.reconnect.enabled = !attach_no_reconnect;
    attach.reconnect.give_up_after = seconds_to_ms(attach_give_up_s);
    attach.reconnect.max_delay = seconds_to_ms(attach_max_delay_s);
    return vufront::app::attach_main(attach);
  }
  return exit_usage;
}
