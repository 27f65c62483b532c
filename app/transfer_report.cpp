#include "app/transfer_report.hpp"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <iostream>

#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "actors/system.hpp"

namespace vufront::app {

namespace {

using Clock = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

unsigned terminal_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
    return ws.ws_col;
  return 80;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, "size \"" + std::string(text) + "\"", why);
  };
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (uint64_t{1} << 63) / 10)
      return bad("too large (at most 8E)");
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0)
    return bad("not a size: a whole number of bytes, optionally with K, M, G or T (e.g. 512M)");
  std::string_view suffix = text.substr(i);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: break;
    }
    std::string_view rest = shift ? suffix.substr(1) : suffix;
    bool unit_ok = rest.empty() || iequals(rest, "B") || (shift != 0 && iequals(rest, "iB"));
    if (!unit_ok)
      return bad("unknown unit \"" + std::string(suffix) + "\" (use K, M, G or T, e.g. 512M)");
  }
  if (value == 0)
    return bad("must be at least 1 byte");
  if (shift != 0 && value > ((uint64_t{1} << 63) >> shift))
    return bad("too large (at most 8E)");
  return value << shift;
}

std::string format_bytes(uint64_t bytes) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024)
    return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10.0 ? "%.2f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string format_rate(uint64_t bytes, uint64_t elapsed_us) {
  if (elapsed_us == 0)
    return "-";
  double per_s = static_cast<double>(bytes) * 1e6 / static_cast<double>(elapsed_us);
  return format_bytes(static_cast<uint64_t>(per_s)) + "/s";
}

std::string format_duration_us(uint64_t us) {
  char buf[32];
  if (us < 1000000)
    std::snprintf(buf, sizeof buf, "%.0f ms", static_cast<double>(us) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(us) / 1e6);
  return buf;
}

std::string checksum_hex(uint64_t checksum) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(checksum));
  return buf;
}

std::string transfer_summary(const actors::SnapshotInfo& info) {
  return format_bytes(info.state_bytes) + " of state, checksum " + checksum_hex(info.checksum) +
         ", " + format_duration_us(info.elapsed_us) + ", " +
         format_rate(info.state_bytes, info.elapsed_us);
}

nlohmann::json transfer_json(const actors::SnapshotInfo& info) {
  nlohmann::json queues = nlohmann::json::array();
  for (const auto& q : info.queues)
    queues.push_back({{"index", q.index}, {"size", q.size}, {"base", q.base}});
  double secs = static_cast<double>(info.elapsed_us) / 1e6;
  return {{"path", info.path},
          {"state_bytes", info.state_bytes},
          {"checksum", checksum_hex(info.checksum)},
          {"features", hex(info.features)},
          {"queues", queues},
          {"elapsed_ms", static_cast<double>(info.elapsed_us) / 1e3},
          {"bytes_per_second",
           secs > 0 ? static_cast<uint64_t>(static_cast<double>(info.state_bytes) / secs) : 0}};
}

std::string progress_bar(uint64_t done, uint64_t total, unsigned width, uint64_t phase) {
  std::string cells(width, '.');
  if (width == 0)
    return "[]";
  if (total > 0) {
    uint64_t filled = done >= total ? width : (done * width) / total;
    for (uint64_t i = 0; i < filled; ++i)
      cells[i] = '#';
  } else {
    // Size unknown while saving: a marker that bounces one cell per phase.
    unsigned span = width > 3 ? width - 3 : 1;
    unsigned at = static_cast<unsigned>(phase % (2 * span));
    if (at >= span)
      at = 2 * span - at;
    for (unsigned i = at; i < at + 3 && i < width; ++i)
      cells[i] = '#';
  }
  return "[" + cells + "]";
}

std::string step_message(const Error& e, std::string_view op) {
  std::string prefix = std::string(op) + ": ";
  std::string msg = e.message();
  // "snapshot: SET_DEVICE_STATE_FD: ..." -> "SET_DEVICE_STATE_FD: ...": the
  // request names the step. A bare "snapshot: <code>: ..." keeps its name.
  if (e.request.rfind(prefix, 0) == 0 && e.request.size() > prefix.size())
    return msg.substr(prefix.size());
  if (e.request.empty())
    return prefix + msg;
  return msg;
}

// ---- the progress line ------------------------------------------------------------------

namespace {

struct ProgressLine {
  std::string label;
  Clock::time_point start = Clock::now();
  bool drawn = false;
  bool closed = false;
};

caf::behavior progress_line_impl(caf::stateful_actor<ProgressLine>* self, std::string label) {
  self->state.label = std::move(label);
  return {
      [self](actors::progress_atom, uint64_t done, uint64_t total) {
        auto& st = self->state;
        if (st.closed)
          return;
        auto us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - st.start).count());
        std::string line = "  " + st.label + "  " + progress_bar(done, total, 24, us / 100000) + "  " +
                           format_bytes(done) + (total ? " / " + format_bytes(total) : "") + "  " +
                           format_duration_us(us) + "  " + format_rate(done, us);
        unsigned cols = terminal_columns();
        if (line.size() >= cols)
          line.resize(cols - 1);
        std::fprintf(stderr, "\r\x1b[K%s", line.c_str());
        std::fflush(stderr);
        st.drawn = true;
      },
      [self](caf::close_atom) {
        auto& st = self->state;
        if (st.drawn && !st.closed) {
          std::fputs("\r\x1b[K", stderr);
          std::fflush(stderr);
        }
        st.closed = true;
        self->quit();
        return caf::ok_atom_v;
      },
  };
}

}  // namespace

caf::actor spawn_progress_line(caf::actor_system& sys, std::string label) {
  return sys.spawn(progress_line_impl, std::move(label));
}

void close_progress_line(caf::actor_system& sys, const caf::actor& line) {
  if (!line)
    return;
  caf::scoped_actor self{sys};
  self->request(line, std::chrono::seconds(1), caf::close_atom_v)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});
}

// ---- Ctrl-C ---------------------------------------------------------------------------

namespace {
sigset_t cancel_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
sigset_t saved_mask;  // the mask before the first CancelOnSignal (one at a time)
}  // namespace

CancelOnSignal::CancelOnSignal(const char* what) : what_(what) {
  sigset_t set = cancel_signals();
  if (::pthread_sigmask(SIG_BLOCK, &set, &saved_mask) != 0)
    return;
  mask_changed_ = true;
  signal_fd_ = UniqueFd::adopt(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  stop_fd_ = make_eventfd();
  if (signal_fd_ && stop_fd_)
    thread_ = std::thread([this] { run(); });
}

CancelOnSignal::~CancelOnSignal() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
  }
  if (mask_changed_)
    ::pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
}

void CancelOnSignal::on_signal(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  fn_ = std::move(fn);
}

void CancelOnSignal::run() {
  pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  for (;;) {
    int r = ::poll(fds, 2, -1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 || (fds[1].revents & POLLIN))
      return;
    signalfd_siginfo info{};
    if (::read(signal_fd_.get(), &info, sizeof info) != static_cast<ssize_t>(sizeof info))
      continue;
    // Under the lock: on_signal(nullptr) then waits until a call in progress
    // is over, so whatever fn_ refers to may be destroyed right after it.
    std::lock_guard<std::mutex> lock(mutex_);
    if (signalled_) {
      std::fputs("\nvufront: interrupted again, quitting at once\n", stderr);
      std::_Exit(130);
    }
    signalled_ = true;
    std::fprintf(stderr, "\nvufront: %s (interrupt again to quit at once)\n", what_);
    if (fn_)
      fn_();
  }
}

}  // namespace vufront::app

// ---- one snapshot / restore command -------------------------------------------------------

namespace vufront::app {

int run_transfer_command(const TransferRun& run) {
  using std::chrono::milliseconds;
  const std::string prefix = "vufront " + run.command + ": ";
  CancelOnSignal interrupt;  // before the actor system: its threads inherit the mask
  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  actors::DeviceConfig dc;
  dc.socket = run.socket;
  auto short_wait = std::min(run.timeout, milliseconds(5000));
  dc.connect_timeout = short_wait;
  dc.timeouts.request = short_wait;
  nlohmann::json out = run.json_extra;
  out["socket"] = run.socket;
  out["device"] = name(run.negotiate.kind);
  auto fail = [&](const std::string& step, const Error& e) {
    std::string msg = step_message(e, step);
    std::cerr << prefix << msg << '\n';
    if (run.json) {
      out["ok"] = false;
      out["step"] = step;
      out["error"] = msg;
      std::cout << out.dump(2) << '\n';
    }
    return 1;
  };
  Result<actors::SnapshotInfo> result = make_error(errc::bad_state, run.command, "not run");
  {
    actors::DeviceSession session(sys, dc);
    interrupt.on_signal([&session] { session.cancel(); });
    // The device's own deadlines (connect, each request, the transfer) fire
    // first; this one only bounds the wait for its answer.
    session.set_timeout(run.timeout + 2 * short_wait + milliseconds(10000));
    auto info = session.negotiate(run.negotiate);
    if (!info) {
      interrupt.on_signal(nullptr);
      return fail("negotiate", info.error());
    }
    // A Ctrl-C while connecting found no transfer to cancel: the session's
    // cancel is sticky, so the transfer fails "cancelled before the transfer began".
    caf::actor line;
    if (stderr_is_terminal())
      line = spawn_progress_line(sys, run.command);
    result = run.transfer(session, line);
    close_progress_line(sys, line);
    interrupt.on_signal(nullptr);
  }
  if (!result)
    return fail(run.command, result.error());
  if (run.json) {
    out.update(transfer_json(*result));
    out["ok"] = true;
    std::cout << out.dump(2) << '\n';
  } else {
    std::cout << run.summary(*result) << '\n';
  }
  return 0;
}

}  // namespace vufront::app
