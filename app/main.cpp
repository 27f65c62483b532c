// vufront: command-line entry point. Parsing and wiring only; each command
// lives in its own file.
//
// Exit status: 0 success, 1 back-end or protocol error, 2 usage error, 130
// interrupted (Ctrl-C or SIGTERM; snapshot, restore, job).

#include <cmath>
#include <optional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/command_line.hpp"

#include "app/attach_command.hpp"
#include "app/check_command.hpp"
#include "app/demo_command.hpp"
#include "app/job_command.hpp"
#include "app/probe_command.hpp"
#include "app/restore_command.hpp"
#include "app/snapshot_command.hpp"
#include "base/listen_options.hpp"
#include "actors/device_config.hpp"
#include "ops/units.hpp"
#include "protocol/backend_client.hpp"
#include "protocol/virtio_config.hpp"

namespace {

using vufront::cli::exit_usage;

/// --wait-for-backend, for every command that connects to a back-end.
void add_wait_option(CLI::App* cmd, bool& flag, const char* how_long) {
  cmd->add_flag("--wait-for-backend", flag,
                std::string("Wait ") + how_long +
                    " for the back-end's socket to appear (a back-end\n"
                    "started later). Without it a path that does not exist or is not a socket\n"
                    "fails at once; a socket nobody accepts on is retried until the timeout");
}

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(std::llround(s * 1000.0)));
}

double seconds_of(std::chrono::milliseconds t) { return static_cast<double>(t.count()) / 1000.0; }

/// --reconnect-give-up and --reconnect-max-delay (attach, check); the caller
/// ties them to its on/off flag.
std::pair<CLI::Option*, CLI::Option*> add_reconnect_policy_options(CLI::App* cmd, double& give_up_s,
                                                                    double& max_delay_s) {
  auto* give_up = cmd->add_option("--reconnect-give-up", give_up_s,
                                  "Seconds after a loss to stop trying (0: never; attach's\n"
                                  "`reconnect` command always starts again)")
                      ->default_val(0)
                      ->check(CLI::Range(0.0, 86400.0));
  auto* max_delay = cmd->add_option("--reconnect-max-delay", max_delay_s,
                                    "Longest wait between two reconnect attempts (the first after\n"
                                    "100 ms, then doubling)")
                        ->default_val(5.0)
                        ->check(CLI::Range(0.1, 3600.0));
  return {give_up, max_delay};
}

vufront::actors::ReconnectPolicy reconnect_policy(bool enabled, double give_up_s, double max_delay_s) {
  vufront::actors::ReconnectPolicy p;
  p.enabled = enabled;
  p.give_up_after = seconds_to_ms(give_up_s);
  p.max_delay = seconds_to_ms(max_delay_s);
  return p;
}

// Each subcommand is a struct holding the values its options parse into:
// add_to() declares the subcommand and its options on the app (the struct must
// stay where it is afterwards: CLI11 keeps pointers to its members), run()
// turns the parsed values into the command's options and runs it.

/// `vufront probe`.
struct ProbeCommand {
  vufront::ops::ProbeOptions options;
  std::string device = "blk";
  double timeout_s = 5.0;
  uint32_t config_size = 0;
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "probe", "Connect to a back-end, negotiate what it offers and print features,\n"
                 "protocol features, queues, memory slots, config space and shared-memory regions.");
    cmd->add_option("SOCKET", options.socket, "Back-end's vhost-user unix socket")
        ->required()
        ->check(vufront::cli::socket_path());
    cmd->add_flag("--json", options.json, "Print one JSON object instead of the text report");
    cmd->add_option("--timeout", timeout_s,
                    "Seconds to wait for the socket to accept and for each reply")
        ->default_val(5.0)
        ->check(CLI::Range(0.001, 3600.0));
    add_wait_option(cmd, options.wait_for_backend, "up to --timeout");
    cmd->add_option("--device", device, "Device kind, for decoding config and feature names")
        ->default_val("blk")
        ->check(CLI::IsMember({"blk", "net", "fs", "generic"}));
    cmd->add_option("--config-size", config_size,
                    "Config bytes to read (default: blk 60, net 12, fs 40, generic 256)")
        ->check(CLI::Range(1u, vufront::wire::max_config_size));
  }

  int run() {
    options.device = *vufront::device_kind_from_string(device);
    options.timeout = seconds_to_ms(timeout_s);
    if (config_size != 0)
      options.config_size = config_size;
    return vufront::app::probe_main(options);
  }
};

/// `vufront check`.
struct CheckCommand {
  vufront::ops::CheckOptions options;
  std::string device = "blk";
  double timeout_s = 5.0;
  double drain_s = seconds_of(vufront::Timeouts::default_drain);
  bool reconnect = false;
  double give_up_s = 0, max_delay_s = 5.0;
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "check", "End-to-end check of a back-end through the device actors and a guest-side\n"
                 "driver: negotiate, set memory, activate, real I/O, sleep, wake, I/O (rings\n"
                 "resume at the right index), reset, activate again, I/O. Prints each step\n"
                 "with its time; exit 0 only when every step worked.");
    cmd->add_option("SOCKET", options.socket, "Back-end's vhost-user unix socket")
        ->required()
        ->check(vufront::cli::socket_path());
    cmd->add_option("--device", device,
                    "blk: write, flush, read back, compare on every queue; net: frames\n"
                    "echoed on every queue pair (needs an echoing back-end); fs: FUSE_INIT\n"
                    "and read --fs-file")
        ->default_val("blk")
        ->check(CLI::IsMember({"blk", "net", "fs"}));
    cmd->add_option("--queues", options.queues,
                    "blk: queues; net: queue pairs; fs: request queues")
        ->default_val(1)
        ->check(CLI::Range(1, 64));
    cmd->add_option("--queue-size", options.queue_size, "Entries per ring")
        ->default_val(128)
        ->check(CLI::Range(2, 32768));
    cmd->add_flag("--packed", options.packed, "Use packed rings (the back-end must offer them)");
    cmd->add_flag("--msix", options.msix,
                  "Give the back-end each queue's interrupt eventfd directly (MSI-X path)\n"
                  "instead of having the worker forward interrupts");
    cmd->add_option("--fs-file", options.fs_file, "fs: a file in the shared directory to read");
    cmd->add_option("--timeout", timeout_s,
                    "Seconds for the socket and for each reply, except a ring stop's")
        ->default_val(5.0)
        ->check(CLI::Range(0.001, 3600.0));
    cmd->add_option("--drain-timeout", drain_s,
                    "Seconds for each ring stop (GET_VRING_BASE: the back-end answers once\n"
                    "the ring's in-flight I/O is done)")
        ->default_val(drain_s)
        ->check(CLI::Range(0.001, 3600.0));
    add_wait_option(cmd, options.wait_for_backend, "up to --timeout");
    auto* reconnect_flag = cmd->add_flag(
        "--reconnect", reconnect,
        "Reconnect to a lost back-end (restarted on SOCKET) and replay the device's\n"
        "state, as attach does by default; the steps go on, each shows what happened");
    auto [give_up, max_delay] = add_reconnect_policy_options(cmd, give_up_s, max_delay_s);
    give_up->needs(reconnect_flag);
    max_delay->needs(reconnect_flag);
    cmd->add_flag("--json", options.json, "Print one JSON object instead of the text report");
  }

  int run() {
    const uint32_t size = options.queue_size;
    if (!options.packed && (size & (size - 1)) != 0) {
      std::cerr << "vufront check: --queue-size " << size
                << ": a split ring's size must be a power of two (packed rings, --packed, may "
                   "have any size)\n";
      return exit_usage;
    }
    options.device = *vufront::device_kind_from_string(device);
    options.timeout = seconds_to_ms(timeout_s);
    options.drain_timeout = seconds_to_ms(drain_s);
    options.reconnect = reconnect_policy(reconnect, give_up_s, max_delay_s);
    options.inflight = reconnect;  // a restarted back-end resubmits what was in flight
    options.report_events = true;
    return vufront::app::check_main(options);
  }
};

/// `vufront demo`.
struct DemoCommand {
  vufront::app::DemoOptions options;
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "demo", "Start the reference back-end (vufront-backend) on a private socket and run\n"
                "the whole check plus a config change and a shared-memory mapping.\n"
                "No arguments needed.");
    cmd->add_option("--backend", options.backend,
                    "Path of vufront-backend (default: next to this executable)");
    cmd->add_flag("--json", options.json, "Print one JSON object instead of the text report");
  }

  int run() { return vufront::app::demo_main(options); }
};

/// `vufront snapshot`.
struct SnapshotCommand {
  vufront::app::SnapshotCommandOptions options;
  std::string device = "blk";
  double timeout_s = 60.0;
  std::string max_bytes = "64G";
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "snapshot", "Connect to a back-end, negotiate, and save its state (SET_DEVICE_STATE_FD)\n"
                    "into a snapshot file. FILE appears only when the snapshot is complete;\n"
                    "an existing FILE is refused unless --force. Ctrl-C cancels.");
    cmd->add_option("SOCKET", options.socket, "Back-end's vhost-user unix socket")
        ->required()
        ->check(vufront::cli::socket_path());
    cmd->add_option("--out", options.out, "Snapshot file to write")->required();
    cmd->add_option("--device", device, "Device kind")
        ->default_val("blk")
        ->check(CLI::IsMember({"blk", "net", "fs"}));
    cmd->add_option("--timeout", timeout_s,
                    "Fail once no byte of state moved for this many seconds (at most 24 h in "
                    "all; connect and each request: at most 5)")
        ->default_val(60.0)
        ->check(CLI::Range(0.001, 86400.0));
    cmd->add_option("--max-bytes", max_bytes,
                    "Largest state to accept: bytes or 512K, 512M, 4G, 1T")
        ->default_val("64G");
    cmd->add_flag("--force", options.force,
                  "Replace FILE if it exists (only once the new snapshot is complete)");
    add_wait_option(cmd, options.wait_for_backend, "up to --timeout");
    cmd->add_flag("--json", options.json, "Print one JSON object instead of the summary line");
  }

  int run() {
    auto max = vufront::ops::parse_size(max_bytes);
    if (!max) {
      std::cerr << "vufront snapshot: --max-bytes: " << max.error().detail << "\n";
      return exit_usage;
    }
    options.max_bytes = *max;
    options.device = *vufront::device_kind_from_string(device);
    options.timeout = seconds_to_ms(timeout_s);
    return vufront::app::snapshot_main(options);
  }
};

/// `vufront restore`.
struct RestoreCommand {
  vufront::app::RestoreCommandOptions options;
  std::string device;
  double timeout_s = 60.0;
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "restore", "Check a snapshot file (manifest, checksum), connect to a fresh back-end,\n"
                   "negotiate as the file's device kind and load the state into it. The device\n"
                   "is not activated. Ctrl-C cancels.");
    cmd->add_option("SOCKET", options.socket, "Back-end's vhost-user unix socket")
        ->required()
        ->check(vufront::cli::socket_path());
    cmd->add_option("--in", options.in, "Snapshot file to read")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("--device", device, "Device kind (default: the file's; must match it)")
        ->check(CLI::IsMember({"blk", "net", "fs"}));
    cmd->add_option("--timeout", timeout_s,
                    "Fail once no byte of state moved for this many seconds (at most 24 h in "
                    "all; connect and each request: at most 5)")
        ->default_val(60.0)
        ->check(CLI::Range(0.001, 86400.0));
    add_wait_option(cmd, options.wait_for_backend, "up to --timeout");
    cmd->add_flag("--json", options.json, "Print one JSON object instead of the summary line");
  }

  int run() {
    if (!device.empty())
      options.device = *vufront::device_kind_from_string(device);
    options.timeout = seconds_to_ms(timeout_s);
    return vufront::app::restore_main(options);
  }
};

/// `vufront job`.
struct JobCommand {
  vufront::app::JobCommandOptions options;
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "job", "Run a job file (docs/jobs.md): devices driven concurrently through their\n"
               "steps - activate, check, sleep, snapshot, restore (into a new back-end),\n"
               "migrate (live, with its memory, to a new back-end), wake, reset, wait,\n"
               "barrier - with a live display on a terminal, JSON-lines events\n"
               "otherwise, and a summary. Exit 0 when every device did every step, 1 when one\n"
               "failed (named with its step on stderr), 2 for an invalid job file.");
    cmd->add_option("FILE", options.file, "The job file (JSON)")->required();
    auto* json_progress = cmd->add_flag(
        "--json-progress", options.json_progress,
        "JSON-lines progress events on stdout, also on a terminal (the default elsewhere)");
    cmd->add_flag("--no-progress", options.no_progress, "No progress output, only the summary")
        ->excludes(json_progress);
  }

  int run() { return vufront::app::job_main(options); }
};

/// `vufront attach`.
struct AttachCommand {
  vufront::app::AttachOptions options;
  std::vector<std::string> backends, kinds, queues, vmm_sockets;
  uint32_t queue_size = 1024;
  double timeout_s = 5.0;
  double drain_s = seconds_of(vufront::Timeouts::default_drain);
  bool no_reconnect = false, client_mode = false;
  double give_up_s = 0, max_delay_s = 5.0;
  std::string control_mode, control_group, listen_mode, listen_group, vmm_mode, vmm_group;
  std::vector<std::string> allow_users;
  std::string fence = "kill", resume_without_inflight = "yes";
  CLI::App* cmd = nullptr;

  void add_to(CLI::App& app) {
    cmd = app.add_subcommand(
        "attach", "Serve vhost-user front-ends to a VMM over a control socket\n"
                  "(docs/attach-protocol.md): connect to every back-end, listen on --control,\n"
                  "take commands (memory, activate, config, sleep, wake, reset, snapshot,\n"
                  "restore) and push events, until SIGINT or SIGTERM. With --vmm-socket an\n"
                  "unmodified VMM (QEMU's vhost-user-blk-pci, ...) drives a device through\n"
                  "its own vhost-user device instead (docs/vmm-proxy.md). Logs on stderr with\n"
                  "the date and milliseconds.");
    add_device_options();
    add_timeout_options();
    add_reconnect_options();
    add_access_options();
    cmd->add_option("--pidfile", options.pidfile,
                    "PATH: write vufront's pid there once the sockets listen, remove it at exit;\n"
                    "refused at start if PATH names a live process (readiness for a service\n"
                    "manager: sd_notify when NOTIFY_SOCKET is set, docs/service.md)")
        ->type_name("PATH");
  }

  /// --control-mode, --control-group, --listen-mode, --listen-group, --snapshot-dir.
  void add_access_options() {
    cmd->add_option("--control-mode", control_mode,
                    "OCTAL: the control socket's mode (default 0600; 0666 with --allow-uid, 0660\n"
                    "with --control-group); the peer-uid check (--allow-uid) still applies")
        ->type_name("OCTAL");
    cmd->add_option("--control-group", control_group,
                    "NAME|GID: the control socket's group (mode 0660 unless --control-mode)")
        ->type_name("GROUP");
    cmd->add_option("--listen-mode", listen_mode,
                    "OCTAL: mode of the back-end sockets vufront listens on with --client-mode\n"
                    "(default 0600; 0660 with --listen-group)")
        ->type_name("OCTAL");
    cmd->add_option("--listen-group", listen_group,
                    "NAME|GID: group of the back-end sockets vufront listens on (--client-mode)")
        ->type_name("GROUP");
    cmd->add_option("--vmm-mode", vmm_mode,
                    "OCTAL: the VMM sockets' mode (default 0600; 0666 with --allow-uid, 0660 with\n"
                    "--vmm-group); the peer-uid check (--allow-uid) still applies")
        ->type_name("OCTAL");
    cmd->add_option("--vmm-group", vmm_group, "NAME|GID: the VMM sockets' group (mode 0660 unless --vmm-mode)")
        ->type_name("GROUP");
    cmd->add_option("--snapshot-dir", options.snapshot_dir,
                    "DIR: VMMs may name snapshot/restore files by path only beneath DIR (no '..',\n"
                    "no symbolic links); without it only vufront's own uid names paths, other\n"
                    "uids pass an fd they opened")
        ->type_name("DIR");
  }

  /// The sockets' modes and groups from their options (base/listen_options.hpp).
  bool listen_options_from_flags() {
    std::optional<unsigned> cmode, lmode, vmode;
    std::optional<uint32_t> cgroup, lgroup, vgroup;
    auto parse = [](const std::string& text, const char* option, auto parser, auto& out) {
      if (text.empty())
        return true;
      auto v = parser(text, option);
      if (!v) {
        std::cerr << "vufront attach: " << v.error().request << ": " << v.error().detail << "\n";
        return false;
      }
      out = *v;
      return true;
    };
    if (!parse(control_mode, "--control-mode", vufront::parse_socket_mode, cmode) ||
        !parse(control_group, "--control-group", vufront::parse_group, cgroup) ||
        !parse(listen_mode, "--listen-mode", vufront::parse_socket_mode, lmode) ||
        !parse(listen_group, "--listen-group", vufront::parse_group, lgroup) ||
        !parse(vmm_mode, "--vmm-mode", vufront::parse_socket_mode, vmode) ||
        !parse(vmm_group, "--vmm-group", vufront::parse_group, vgroup))
      return false;
    for (const auto& user : allow_users) {
      std::optional<uint32_t> uid;
      if (!parse(user, "--allow-uid", vufront::parse_user, uid))
        return false;
      options.allowed_uids.push_back(*uid);
    }
    options.control_listen = vufront::listen_options(cmode, cgroup, !options.allowed_uids.empty());
    options.backend_listen = vufront::listen_options(lmode, lgroup, false);
    options.vmm_listen = vufront::listen_options(vmode, vgroup, !options.allowed_uids.empty());
    return true;
  }

  /// --backend, --control, --device, --queues, --queue-size, --allow-uid.
  void add_device_options() {
    cmd->add_option("--backend", backends,
                    "[ID=]SOCKET: a back-end's vhost-user socket (repeat for more devices;\n"
                    "ids default to disk0, disk1, net0, fs0, ...)")
        ->required()
        ->take_all();
    cmd->add_option("--control", options.control,
                    "PATH of the control socket to create (SOCK_SEQPACKET; mode: --control-mode);\n"
                    "required unless every device has a --vmm-socket")
        ->check(vufront::cli::socket_path());
    cmd->add_option("--vmm-socket", vmm_sockets,
                    "[ID=]PATH: a vhost-user socket for the device's VMM (QEMU: -chardev\n"
                    "socket,path=PATH,reconnect=1 -device vhost-user-blk-pci,...); vufront serves\n"
                    "the VMM as its back-end and forwards to --backend (docs/vmm-proxy.md)");
    cmd->add_option("--device", kinds,
                    "[ID=]blk|net|fs: the device kind (without ID: for every device; default blk)");
    cmd->add_option("--queues", queues,
                    "[ID=]N: queues the VMM will use (blk/fs: queues, net: pairs; default 1)");
    cmd->add_option("--queue-size", queue_size, "Largest queue size the VMM will use")
        ->default_val(1024)
        ->check(CLI::Range(1u, 32768u));
    cmd->add_option("--allow-uid", allow_users,
                    "USER|UID: also accept VMM connections from this user, by name or number\n"
                    "(besides vufront's own uid; checked with SO_PEERCRED); makes the control\n"
                    "socket 0666 unless --control-mode or --control-group says otherwise")
        ->type_name("USER");
  }

  /// --timeout, --drain-timeout, --wait-for-backend.
  void add_timeout_options() {
    cmd->add_option("--timeout", timeout_s,
                    "Seconds for connecting to each back-end and for each request, except\n"
                    "a ring stop")
        ->default_val(5.0)
        ->check(CLI::Range(0.001, 3600.0));
    cmd->add_option("--drain-timeout", drain_s,
                    "Seconds for each ring stop (GET_VRING_BASE: the back-end answers once\n"
                    "the ring's in-flight I/O is done)")
        ->default_val(drain_s)
        ->check(CLI::Range(0.001, 3600.0));
    add_wait_option(cmd, options.wait_for_backend,
                    "up to --timeout at start and in add_device (a reconnect always waits)");
  }

  /// --client-mode, --no-reconnect, --reconnect-give-up, --reconnect-max-delay.
  void add_reconnect_options() {
    cmd->add_flag("--client-mode", client_mode,
                  "vufront listens on every --backend SOCKET and the back-ends connect to it\n"
                  "(DPDK's --client, QEMU's server=on); a back-end may connect again later");
    auto* no_reconnect_flag = cmd->add_flag(
        "--no-reconnect", no_reconnect,
        "A lost back-end leaves its device broken (default: reconnect with backoff\n"
        "and replay the negotiated state; events reconnecting, resumed, resume_failed)");
    auto [give_up, max_delay] = add_reconnect_policy_options(cmd, give_up_s, max_delay_s);
    give_up->excludes(no_reconnect_flag);
    max_delay->excludes(no_reconnect_flag);
    cmd->add_option("--fence", fence,
                    "kill|none: before vufront answers a VMM for a lost back-end (--vmm-socket),\n"
                    "the back-end's process (SO_PEERCRED) is SIGKILLed and waited for, up to\n"
                    "--drain-timeout (kill, the default); none: only one that exited counts,\n"
                    "else the VMM connection closes (docs/vmm-proxy.md, \"Fencing\")")
        ->check(CLI::IsMember({"kill", "none"}))
        ->type_name("MODE");
    cmd->add_option("--resume-without-inflight", resume_without_inflight,
                    "yes|no: after a lost back-end, resume a VMM's rings that have no in-flight\n"
                    "region (INFLIGHT_SHMFD) or IN_ORDER at the used index, best effort, as QEMU\n"
                    "does (yes, the default); no: close the VMM connection instead")
        ->check(CLI::IsMember({"yes", "no"}))
        ->type_name("yes|no");
  }

  int run() {
    auto setups = vufront::app::device_setups(backends, kinds, queues, queue_size);
    if (!setups) {
      std::cerr << setups.error().request << ": " << setups.error().detail << "\n";
      return exit_usage;
    }
    options.devices = std::move(setups).value();
    options.fence_kill = fence == "kill";
    options.resume_without_inflight = resume_without_inflight == "yes";
    if (auto v = vufront::app::assign_vmm_sockets(options.devices, vmm_sockets); !v) {
      std::cerr << v.error().request << ": " << v.error().detail << "\n";
      return exit_usage;
    }
    if (options.control.empty())
      for (const auto& d : options.devices)
        if (d.vmm_socket.empty()) {
          std::cerr << "vufront attach: --control PATH is required unless every device has a "
                       "--vmm-socket (device "
                    << d.id << " has none)\n";
          return exit_usage;
        }
    if (!listen_options_from_flags())
      return exit_usage;
    for (auto& d : options.devices)
      d.listen = client_mode;
    options.timeout = seconds_to_ms(timeout_s);
    options.drain_timeout = seconds_to_ms(drain_s);
    options.reconnect = reconnect_policy(!no_reconnect, give_up_s, max_delay_s);
    return vufront::app::attach_main(options);
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vufront - a vhost-user front-end.\n"
               "Talks to vhost-user back-ends (qemu-storage-daemon, virtiofsd, DPDK, ...)\n"
               "over their unix socket.",
               "vufront"};
  app.require_subcommand(1);

  ProbeCommand probe;
  CheckCommand check;
  DemoCommand demo;
  SnapshotCommand snapshot;
  RestoreCommand restore;
  JobCommand job;
  AttachCommand attach;
  probe.add_to(app);
  check.add_to(app);
  demo.add_to(app);
  snapshot.add_to(app);
  restore.add_to(app);
  job.add_to(app);
  attach.add_to(app);
  // -v, --log-level and --trace on every subcommand (base/log.hpp)
  vufront::cli::LogFlags log_flags;
  for (auto* sub : app.get_subcommands({}))
    vufront::cli::add_log_options(sub, log_flags);
  vufront::cli::add_version_flags(app, "vufront " VUFRONT_VERSION);
  if (auto rc = vufront::cli::parse(app, argc, argv))
    return *rc;
  for (auto* sub : app.get_subcommands())  // the one that was given
    vufront::log::setup(vufront::cli::log_settings(log_flags, "vufront " + sub->get_name(),
                                                   sub == attach.cmd));

  if (probe.cmd->parsed())
    return probe.run();
  if (check.cmd->parsed())
    return check.run();
  if (demo.cmd->parsed())
    return demo.run();
  if (snapshot.cmd->parsed())
    return snapshot.run();
  if (restore.cmd->parsed())
    return restore.run();
  if (job.cmd->parsed())
    return job.run();
  if (attach.cmd->parsed())
    return attach.run();
  return exit_usage;
}
