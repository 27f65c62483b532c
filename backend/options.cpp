#include "backend/options.hpp"

#include <CLI/CLI.hpp>

#include <cctype>
#include <limits>
#include <tuple>

#include "base/command_line.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

namespace {

constexpr const char* op = "command line";

std::optional<uint64_t> parse_u64(const std::string& s) {
  if (s.empty() || s.size() > 20)
    return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c)))
      return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10)
      return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::string upper(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<uint64_t> parse_size(const std::string& text) {
  if (text.empty())
    return make_error(errc::invalid_argument, op, "empty size");
  std::string digits = text;
  unsigned shift = 0;
  switch (std::toupper(static_cast<unsigned char>(text.back()))) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    default: break;
  }
  if (shift != 0)
    digits.pop_back();
  const auto v = parse_u64(digits);
  if (!v || *v > (std::numeric_limits<uint64_t>::max() >> shift))
    return make_error(errc::invalid_argument, op, "bad size '" + text + "'");
  return *v << shift;
}

Result<uint32_t> parse_request(const std::string& text) {
  if (const auto n = parse_u64(text)) {
    if (*n <= frontend_req_max && frontend_req_from_code(static_cast<uint32_t>(*n)))
      return static_cast<uint32_t>(*n);
    return make_error(errc::invalid_argument, op, "unknown request code " + text);
  }
  const std::string want = upper(text);
  for (uint32_t code = 1; code <= frontend_req_max; ++code) {
    const auto r = frontend_req_from_code(code);
    if (r && want == name(*r))
      return code;
  }
  return make_error(errc::invalid_argument, op, "unknown request name '" + text + "'");
}

Result<FaultSpec> parse_fault(FaultKind kind, const std::string& text) {
  FaultSpec f;
  f.kind = kind;
  const auto colon = text.find(':');
  auto req = parse_request(text.substr(0, colon));
  if (!req)
    return req.error();
  f.request = *req;
  if (colon == std::string::npos) {
    if (kind == FaultKind::delay)
      return make_error(errc::invalid_argument, op, "--delay-reply needs REQ:MS, got '" + text + "'");
    return f;
  }
  const auto n = parse_u64(text.substr(colon + 1));
  if (!n || *n > std::numeric_limits<uint32_t>::max() || (kind != FaultKind::delay && *n == 0))
    return make_error(errc::invalid_argument, op, "bad number in '" + text + "'");
  if (kind == FaultKind::delay)
    f.delay_ms = static_cast<uint32_t>(*n);
  else
    f.nth = static_cast<uint32_t>(*n);
  return f;
}

Result<std::vector<Refusal>> parse_refusal(const std::string& text, DeviceKind kind) {
  bool want_virtio = true, want_proto = true;
  std::string rest = text;
  if (rest.rfind("virtio:", 0) == 0) {
    want_proto = false;
    rest = rest.substr(7);
  } else if (rest.rfind("proto:", 0) == 0) {
    want_virtio = false;
    rest = rest.substr(6);
  }
  std::vector<Refusal> out;
  if (const auto n = parse_u64(rest)) {
    if (*n > 63)
      return make_error(errc::invalid_argument, op, "feature bit " + rest + " > 63");
    out.push_back({!want_virtio, static_cast<unsigned>(*n)});
    return out;
  }
  const std::string want = upper(rest);
  for (unsigned b = 0; b < 64; ++b) {
    if (want_virtio && feature_name(b, kind) == want)
      out.push_back({false, b});
    if (want_proto && protocol_feature_name(b) == want)
      out.push_back({true, b});
  }
  if (out.empty())
    return make_error(errc::invalid_argument, op, "unknown feature '" + text + "'");
  return out;
}

Result<std::array<uint8_t, 6>> parse_mac(const std::string& text) {
  std::array<uint8_t, 6> mac{};
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  bool good = text.size() == 17;
  for (size_t i = 0; good && i < 6; ++i) {
    const int hi = hex(text[3 * i]), lo = hex(text[3 * i + 1]);
    good = hi >= 0 && lo >= 0 && (i == 5 || text[3 * i + 2] == ':');
    mac[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  if (!good)
    return make_error(errc::invalid_argument, op, "bad MAC address '" + text + "'");
  if (mac[0] & 1)
    return make_error(errc::invalid_argument, op, "MAC address '" + text + "' is multicast");
  return mac;
}

namespace {

/// The command line as parsed, before it is checked and converted into
/// Options: the texts still to be parsed and the options whose presence
/// matters.
struct CommandLine {
  Options o;
  std::string device = "blk";
  std::string size_text = "64M", shmem_text = "0", mac_text;
  std::vector<std::string> refuse, delays, closes, crashes, oversizes;
  std::string crash_after_text, stall_after_text;
  CLI::Option* size_opt = nullptr;
  CLI::Option* image_opt = nullptr;
  CLI::Option* mac_opt = nullptr;
  CLI::Option* shmem_opt = nullptr;
  CLI::Option* crash_after_opt = nullptr;
  CLI::Option* stall_after_opt = nullptr;
};

/// --socket, --device and the device's options (--size ... --shmem-size).
void add_device_options(CLI::App& app, CommandLine& c) {
  Options& o = c.o;
  app.add_option("--socket", o.socket_path, "unix socket to listen on")
      ->required()
      ->check(cli::socket_path());
  app.add_option("--device", c.device, "device to emulate: blk (a disk, default) or net "
                                       "(echoes transmitted frames)")
      ->check(CLI::IsMember({"blk", "net"}));
  c.size_opt = app.add_option("--size", c.size_text, "blk: disk size (suffix K/M/G), default 64M");
  c.image_opt =
      app.add_option("--image", o.image, "blk: back the disk with this file instead of a memfd");
  app.add_option("--queues", o.queues,
                 "blk: request queues (1..64); net: queue PAIRS (1..32, 2 vrings each, "
                 "GET_QUEUE_NUM answers 2N)")
      ->check(CLI::Range(1, 64));
  c.mac_opt = app.add_option("--mac", c.mac_text,
                             "net: MAC address in the config space, default 52:54:00:12:34:56");
  app.add_flag("--once", o.once, "exit after the first front-end disconnects");
  app.add_flag("--packed,!--no-packed", o.packed, "offer RING_PACKED (default on)");
  c.shmem_opt = app.add_option("--shmem-size", c.shmem_text,
                               "blk: offer SHMEM with one region of this size (the disk)");
}

/// The faults to inject: --refuse-feature ... --state-stall-after.
void add_fault_options(CLI::App& app, CommandLine& c) {
  Options& o = c.o;
  app.add_option("--refuse-feature", c.refuse, "do not offer this virtio/protocol feature");
  app.add_option("--delay-reply", c.delays, "REQ:MS wait MS before answering REQ");
  app.add_option("--close-at", c.closes, "REQ[:N] close the connection at the N-th REQ");
  app.add_option("--crash-at", c.crashes, "REQ[:N] _exit at the N-th REQ, no cleanup");
  app.add_option("--backend-req-oversize", c.oversizes,
                 "REQ[:N] at the N-th REQ, before answering it, send CONFIG_CHANGE_MSG on the\n"
                 "back-end channel with a header announcing 65536 body bytes (none follow), then\n"
                 "wait up to 5 s for the front-end to close the channel (logged either way)");
  app.add_flag("--state-own-fd", o.state_faults.own_fd,
               "SET_DEVICE_STATE_FD: ignore the front-end's pipe end, reply 0 with the "
               "back-end's own pipe end attached (save: its read end; load: its write end)");
  app.add_flag("--state-endless", o.state_faults.endless,
               "save: after the header stream disk chunks forever (never the end marker) "
               "until the reader closes its end (EPIPE); the save counts as failed");
  c.crash_after_opt = app.add_option(
      "--state-crash-after", c.crash_after_text,
      "during a save or load, _exit (no cleanup) once BYTES bytes (suffix K/M/G) of "
      "state went through the pipe")
      ->type_name("BYTES");
  c.stall_after_opt = app.add_option(
      "--state-stall-after", c.stall_after_text,
      "during a save or load, stop moving state after BYTES bytes (suffix K/M/G) "
      "but keep the pipe open until the front-end closes its end (or 10 min); the "
      "transfer counts as failed")
      ->type_name("BYTES");
  c.stall_after_opt->excludes(c.crash_after_opt);
  app.add_flag("--short-vring-base", o.short_vring_base,
               "packed rings: answer GET_VRING_BASE with bits 0-15 only (avail index and wrap\n"
               "counter; the used half 0), as DPDK's librte_vhost does");
  app.add_flag("--forget-log", o.forget_log,
               "with LOG_ALL acked, never mark the dirty log (SET_LOG_BASE's): the guest\n"
               "writes a migration would lose, for tests of the front-end's checks");
}

/// How the daemon runs: --connect, --crash-in-request, --crash-in-completion,
/// --pidfile, --verbose.
void add_run_options(CLI::App& app, CommandLine& c) {
  Options& o = c.o;
  app.add_flag("--connect", o.connect,
               "client mode: connect to --socket (the front-end listens there, e.g. vufront\n"
               "attach --client-mode), retrying while nobody listens; reconnect after a disconnect");
  app.add_option("--crash-in-request", o.crash_in_request,
                 "N: _exit (no cleanup) after taking the N-th request off a ring, before\n"
                 "completing it (with INFLIGHT_SHMFD it stays marked in flight)")
      ->check(CLI::Range(1u, 0xffffffffu));
  app.add_option("--crash-outstanding", o.crash_outstanding,
                 "K: with --crash-in-request N, _exit at the first request from the N-th on that\n"
                 "is taken while the driver has at least K requests outstanding on its ring\n"
                 "(avail index - used index): a crash with that many requests in flight")
      ->check(CLI::Range(1u, 0xffffu));
  app.add_option("--crash-in-completion", o.crash_in_completion,
                 "N: _exit (no cleanup) right after publishing the N-th used entry, before the\n"
                 "in-flight region records the completion (INFLIGHT_SHMFD: the next back-end\n"
                 "must not complete it again)")
      ->check(CLI::Range(1u, 0xffffffffu));
  app.add_option("--pidfile", o.pidfile, "write the pid here once listening");
  app.add_flag("--verbose,-v", o.verbose, "log every request");
}

/// The device kind, and the options only one kind takes (net: --queues up
/// to 32 pairs, --mac; blk: --size, --image, --shmem-size).
Result<void> convert_device(CommandLine& c) {
  Options& o = c.o;
  o.device = *device_kind_from_string(c.device);  // IsMember checked it
  if (o.device == DeviceKind::net) {
    for (const auto* opt : {c.size_opt, c.image_opt, c.shmem_opt})
      if (opt->count() > 0)
        return make_error(errc::invalid_argument, op, opt->get_name() + " is for --device blk");
    if (o.queues > 32)
      return make_error(errc::invalid_argument, op, "--device net: --queues is 1..32 pairs");
    if (c.mac_opt->count() > 0) {
      auto mac = parse_mac(c.mac_text);
      if (!mac)
        return mac.error();
      o.mac = *mac;
    }
  } else if (c.mac_opt->count() > 0) {
    return make_error(errc::invalid_argument, op, "--mac is for --device net");
  }
  return ok();
}

/// --size (a non-zero multiple of 512) and --shmem-size (a multiple of 4096).
Result<void> convert_sizes(CommandLine& c) {
  auto size = parse_size(c.size_text);
  if (!size)
    return size.error();
  if (*size == 0 || *size % 512 != 0)
    return make_error(errc::invalid_argument, op, "--size must be a non-zero multiple of 512");
  c.o.size = *size;
  auto shm = parse_size(c.shmem_text);
  if (!shm)
    return shm.error();
  if (*shm % 4096 != 0)
    return make_error(errc::invalid_argument, op, "--shmem-size must be a multiple of 4096");
  c.o.shmem_size = *shm;
  return ok();
}

/// --refuse-feature, --state-crash-after/--state-stall-after BYTES, and
/// --delay-reply, --close-at, --crash-at, --backend-req-oversize.
Result<void> convert_faults(CommandLine& c) {
  Options& o = c.o;
  for (const auto& r : c.refuse) {
    auto v = parse_refusal(r, o.device);
    if (!v)
      return v.error();
    o.refusals.insert(o.refusals.end(), v->begin(), v->end());
  }
  const std::tuple<const CLI::Option*, const std::string*, std::optional<uint64_t>*>
      state_sizes[] = {{c.crash_after_opt, &c.crash_after_text, &o.state_faults.crash_after},
                       {c.stall_after_opt, &c.stall_after_text, &o.state_faults.stall_after}};
  for (const auto& [opt, text, out] : state_sizes) {
    if (opt->count() == 0)
      continue;
    auto bytes = parse_size(*text);
    if (!bytes)
      return make_error(errc::invalid_argument, op,
                        opt->get_name() + ": bad size '" + *text +
                            "' (BYTES: a number with an optional K/M/G suffix)");
    *out = *bytes;
  }
  const std::pair<FaultKind, const std::vector<std::string>*> groups[] = {
      {FaultKind::delay, &c.delays},
      {FaultKind::close, &c.closes},
      {FaultKind::crash, &c.crashes},
      {FaultKind::oversize, &c.oversizes}};
  for (const auto& [kind, list] : groups)
    for (const auto& t : *list) {
      auto f = parse_fault(kind, t);
      if (!f)
        return f.error();
      o.faults.push_back(*f);
    }
  return ok();
}

}  // namespace

ParseOutcome parse_options(int argc, char** argv) {
  CLI::App app{"vufront-backend: reference vhost-user back-end (virtio-blk disk, "
               "virtio-net echo)"};
  app.footer(
      "--device net echoes every frame sent on TX queue 2k+1 back into RX queue 2k\n"
      "(features VERSION_1, MAC, STATUS, MQ with more than one pair; GET_QUEUE_NUM\n"
      "answers 2 x --queues). Frames that find no RX buffer wait in a backlog of\n"
      "256 per pair (the oldest dropped beyond it).\n"
      "Signals: SIGINT/SIGTERM stop cleanly (socket removed); SIGHUP drops the\n"
      "current front-end connection (and serves the next); SIGUSR1 sends\n"
      "BACKEND_CONFIG_CHANGE_MSG; SIGUSR2 sends SHMEM_UNMAP of the shared-memory\n"
      "window, or SHMEM_MAP when it is not mapped (needs --shmem-size).\n"
      "Device-state format: docs/backend-state-format.md. The --state-* faults apply\n"
      "to every SET_DEVICE_STATE_FD transfer; BYTES counts the whole stream (header\n"
      "included), so with a disk larger than BYTES the fault lands mid-disk.");
  CommandLine c;
  add_device_options(app, c);
  add_fault_options(app, c);
  add_run_options(app, c);
  cli::add_version_flags(app, "vufront-backend " VUFRONT_VERSION);
  if (auto rc = cli::parse(app, argc, argv))  // help/version: 0; usage errors: 2, as vufront
    return {std::nullopt, *rc};
  for (auto* convert : {convert_device, convert_sizes, convert_faults})
    if (auto r = convert(c); !r) {
      std::fprintf(stderr, "vufront-backend: %s\n", r.error().message().c_str());
      return {std::nullopt, 2};
    }
  return {std::move(c.o), 0};
}

}  // namespace vufront::backend
