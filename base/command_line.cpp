#include "base/command_line.hpp"

#include <cctype>
#include <iostream>
#include <vector>

#include "base/unix_socket.hpp"

namespace vufront::cli {
namespace {

/// The subcommand of `app` called `name` (or one of its aliases), or null.
CLI::App* find_subcommand(CLI::App& app, const std::string& name) {
  auto found = app.get_subcommands([&](CLI::App* s) { return s->check_name(name); });
  return found.empty() ? nullptr : found.front();
}

std::string subcommand_list(CLI::App& app) {
  std::string list;
  for (CLI::App* s : app.get_subcommands(std::function<bool(CLI::App*)>{})) {
    if (s->get_name().empty())
      continue;
    list += (list.empty() ? "" : ", ") + s->get_name();
  }
  return list;
}

int usage_error(const std::string& who, const std::string& what) {
  std::cerr << who << ": " << what << "\nRun '" << who << " --help' for usage.\n";
  return exit_usage;
}

/// Whether `token` is an option name rather than a value: "-x" or "--x",
/// not "-" alone nor a negative number.
bool looks_like_option(const std::string& token) {
  if (token.size() < 2 || token[0] != '-')
    return false;
  const unsigned char c = static_cast<unsigned char>(token[1]);
  return !(std::isdigit(c) || c == '.');
}

/// The first option in argv[first, argc) that `cmd` does not have ("--x=1"
/// names "--x"; "-xyz" names "-x"), stopping at "--".
std::optional<std::string> unknown_option(CLI::App& cmd, int first, int argc, char** argv) {
  for (int i = first; i < argc; ++i) {
    const std::string token = argv[i];
    if (token == "--")
      break;
    if (!looks_like_option(token))
      continue;
    std::string name = token.substr(0, token.find('='));
    if (name[1] != '-')
      name = name.substr(0, 2);
    if (cmd.get_option_no_throw(name) == nullptr)
      return name;
  }
  return std::nullopt;
}

/// The index of the first argument that is not an option of `app` (nor the
/// value of one), or argc. Only flags come before a subcommand here.
int first_positional(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (!looks_like_option(argv[i]))
      return i;
  return argc;
}

/// `PROG help [SUBCOMMAND]`.
int print_help(CLI::App& app, int argc, char** argv, int at) {
  if (at + 1 >= argc) {
    std::cout << app.help();
    return 0;
  }
  CLI::App* sub = find_subcommand(app, argv[at + 1]);
  if (sub == nullptr)
    return usage_error(app.get_name(), "unknown command '" + std::string(argv[at + 1]) +
                                           "' (commands: " + subcommand_list(app) + ")");
  std::cout << sub->help();
  return 0;
}

/// Names what CLI11 would misreport: an unknown subcommand, or an option
/// neither the program nor its subcommand has. nullopt: nothing unknown.
std::optional<int> check_names(CLI::App& app, int argc, char** argv) {
  if (app.get_subcommands(std::function<bool(CLI::App*)>{}).empty()) {
    if (auto bad = unknown_option(app, 1, argc, argv))
      return usage_error(app.get_name(), "unknown option '" + *bad + "'");
    return std::nullopt;
  }
  const int at = first_positional(argc, argv);
  if (auto bad = unknown_option(app, 1, at, argv))
    return usage_error(app.get_name(), "unknown option '" + *bad + "'");
  if (at == argc)
    return std::nullopt;  // CLI11 says a subcommand is required, or handles -h/-V
  if (std::string(argv[at]) == "help")
    return print_help(app, argc, argv, at);
  CLI::App* sub = find_subcommand(app, argv[at]);
  if (sub == nullptr)
    return usage_error(app.get_name(), "unknown command '" + std::string(argv[at]) +
                                           "' (commands: " + subcommand_list(app) + ")");
  if (auto bad = unknown_option(*sub, at + 1, argc, argv))
    return usage_error(app.get_name() + " " + sub->get_name(), "unknown option '" + *bad + "'");
  return std::nullopt;
}

}  // namespace

void add_version_flags(CLI::App& app, const std::string& version) {
  app.set_version_flag("-V,--version", version);
  for (CLI::App* sub : app.get_subcommands(std::function<bool(CLI::App*)>{}))
    sub->set_version_flag("-V,--version", version);
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  if (auto done = check_names(app, argc, argv))
    return done;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // help and version on stdout, errors on stderr
    return rc == 0 ? 0 : exit_usage;
  }
  return std::nullopt;
}

CLI::Validator socket_path() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        if (path.empty())
          return "a socket path must not be empty";
        if (path.size() > max_unix_path)
          return "socket path too long (" + std::to_string(path.size()) + " bytes, at most " +
                 std::to_string(max_unix_path) + ")";
        return {};
      },
      "SOCKET");
}

void add_log_options(CLI::App* cmd, LogFlags& flags) {
  auto* verbose = cmd->add_flag("-v,--verbose", flags.verbose,
                                "Log more on stderr: debug lines too (--log-level debug)");
  cmd->add_option("--log-level", flags.level,
                  "The least important log lines written on stderr: error, warning,\n"
                  "info (the default) or debug")
      ->check(CLI::IsMember({"error", "warning", "info", "debug"}))
      ->excludes(verbose);
  cmd->add_flag("--trace", flags.trace,
                "Log every vhost-user message each way on stderr (back-end channel\n"
                "too): request name, direction, size, fds, flags, and a reply's time\n"
                "since its request");
}

log::Settings log_settings(const LogFlags& flags, std::string program, bool timestamps) {
  log::Settings s;
  s.program = std::move(program);
  s.timestamps = timestamps;
  s.trace = flags.trace;
  if (flags.verbose)
    s.level = log::Level::debug;
  else if (auto l = log::level_from_string(flags.level))
    s.level = *l;
  return s;
}

}  // namespace vufront::cli
