#pragma once
// The command-line conventions the three programs (vufront, vufront-backend,
// vufront-example-vmm) share, on top of CLI11:
//   * `-h`/`--help` and `-V`/`--version` on the program and on every
//     subcommand; `PROG help [SUBCOMMAND]` prints the same help;
//   * an unknown subcommand or option is named ("unknown option '--bogus'"),
//     before CLI11 would report a missing argument instead;
//   * every usage error exits 2 (CLI11's own codes are 100 and up).
// Not part of vufront_base (the installed client package has no CLI11).

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "base/log.hpp"

namespace vufront::cli {

/// Exit status of every usage error.
inline constexpr int exit_usage = 2;

/// Gives `app` and each of its subcommands `-V,--version` printing `version`.
/// Call after the subcommands are added.
void add_version_flags(CLI::App& app, const std::string& version);

/// Parses argc/argv into `app` with the conventions above. Returns nullopt
/// when the program should go on, otherwise the status to exit with (0 after
/// help or version, exit_usage after an error, which is printed on stderr
/// with a hint to --help).
[[nodiscard]] std::optional<int> parse(CLI::App& app, int argc, char** argv);

/// A check for an option naming a unix socket: not empty, and short enough for
/// sockaddr_un (at most 107 bytes).
[[nodiscard]] CLI::Validator socket_path();

/// What -v/--verbose, --log-level and --trace parse into.
struct LogFlags {
  bool verbose = false;
  std::string level;
  bool trace = false;
};

/// Gives `cmd` -v/--verbose (debug lines), --log-level
/// error|warning|info|debug (default info) and --trace (every vhost-user
/// message each way, timed), parsed into `flags`.
void add_log_options(CLI::App* cmd, LogFlags& flags);

/// The log's settings for `program` ("vufront probe") from the flags;
/// `timestamps` for a daemon's lines (base/log.hpp).
[[nodiscard]] log::Settings log_settings(const LogFlags& flags, std::string program,
                                         bool timestamps);

}  // namespace vufront::cli
