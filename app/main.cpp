// vufront: command-line entry point. Parsing and wiring only; each command
// lives in its own file.
//
// Exit status: 0 success, 1 back-end or protocol error, 2 usage error.

#include <cmath>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "app/check_command.hpp"
#include "app/demo_command.hpp"
#include "app/probe_command.hpp"
#include "protocol/virtio_config.hpp"

namespace {

constexpr int exit_usage = 2;

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(std::llround(s * 1000.0)));
}

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
  cmd_check->add_option("--timeout", check_timeout_s, "Seconds for the socket and for each reply")
      ->default_val(5.0)
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
    return vufront::app::check_main(check);
  }
  if (cmd_demo->parsed())
    return vufront::app::demo_main(demo);
  return exit_usage;
}
