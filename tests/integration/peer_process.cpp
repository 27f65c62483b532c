#include "tests/integration/peer_process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <poll.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vufront::test {

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace

std::string PeerProcess::peers_dir() { return VUFRONT_PEERS_DIR; }

PeerProcess::PeerProcess(std::string socket, std::vector<std::string> argv,
                         std::vector<std::string> env)
    : socket_(std::move(socket)) {
  std::string cmd;
  for (const auto& e : env)
    cmd += e + " ";
  for (const auto& a : argv)
    cmd += shell_quote(a) + " ";
  cmd += "2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr)
    throw std::runtime_error("popen failed for: " + cmd);
  std::string out, last;
  char line[512];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    out += line;
    last = line;
  }
  int status = ::pclose(f);
  char* end = nullptr;
  long pid = std::strtol(last.c_str(), &end, 10);
  if (status != 0 || pid <= 0) {
    const std::string text = log();
    throw std::runtime_error("start of back-end failed (exit status " + std::to_string(status) +
                             "): " + cmd + "\n" + out +
                             (text.empty() ? "" : "\nits log " + socket_ + ".log:\n" + text));
  }
  pid_ = static_cast<int>(pid);
  // The peer is alive here (its socket is up), so the pidfd is its own.
  // OWNERSHIP: adopted at once.
  pidfd_ = UniqueFd::adopt(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_)
    throw std::runtime_error("back-end " + std::to_string(pid_) +
                             " exited as soon as it started: " + cmd + "\n" + log());
  start_watchdog();
}

bool PeerProcess::signal(int sig) const {
  // An exited peer that is not reaped yet would still take it (harmlessly):
  // report it as gone all the same.
  return alive() && ::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) == 0;
}

bool PeerProcess::wait_exit(std::chrono::milliseconds ms) const {
  if (!pidfd_)
    return true;
  pollfd p{pidfd_.get(), POLLIN, 0};
  const auto until = std::chrono::steady_clock::now() + ms;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (r >= 0 || errno != EINTR)
      return r > 0;
  }
}

bool PeerProcess::alive() const { return !wait_exit(std::chrono::milliseconds(0)); }

std::string PeerProcess::log() const {
  std::ifstream in(socket_ + ".log");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool PeerProcess::wait_log(const std::string& text, std::chrono::milliseconds ms) const {
  // The watch is set before each read of the log, so a write between the
  // read and the poll still wakes the poll.
  UniqueFd in = UniqueFd::adopt(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in || ::inotify_add_watch(in.get(), (socket_ + ".log").c_str(), IN_MODIFY) < 0)
    throw std::runtime_error("inotify on " + socket_ + ".log failed: " + std::strerror(errno));
  const auto until = std::chrono::steady_clock::now() + ms;
  for (;;) {
    if (log().find(text) != std::string::npos)
      return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{in.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
      throw std::runtime_error(std::string("poll on inotify failed: ") + std::strerror(errno));
    char events[4096];
    while (::read(in.get(), events, sizeof events) > 0) {
    }  // drained: the next write wakes the poll again
  }
}

void PeerProcess::start_watchdog() const {
  // If the test process dies without running destructors (ctest kills a test
  // on timeout), the peer would live on: a detached watchdog kills it once the
  // test process is gone, unless the peer is gone first (it checks the peer's
  // start time, so a reused pid is left alone).
  const std::string test = std::to_string(::getpid()), peer = std::to_string(pid_);
  const std::string stat = "/proc/" + peer + "/stat";
  const std::string script =
      "st=$(cut -d' ' -f22 " + stat + " 2>/dev/null) || exit 0; "
      "while kill -0 " + test + " 2>/dev/null; do "
      "[ \"$(cut -d' ' -f22 " + stat + " 2>/dev/null)\" = \"$st\" ] || exit 0; sleep 1; done; "
      "[ \"$(cut -d' ' -f22 " + stat + " 2>/dev/null)\" = \"$st\" ] && kill -KILL " + peer;
  const std::string cmd = "setsid sh -c " + shell_quote(script) + " >/dev/null 2>&1 </dev/null &";
  [[maybe_unused]] int rc = std::system(cmd.c_str());
}

PeerProcess::~PeerProcess() { stop(); }

void PeerProcess::stop() {
  if (pid_ <= 0)
    return;
  if (signal(SIGINT) && !wait_exit(std::chrono::milliseconds(3000)) && signal(SIGKILL))
    (void)wait_exit(std::chrono::milliseconds(2000));
  pidfd_.reset();
  pid_ = -1;
  ::unlink(socket_.c_str());
  ::unlink((socket_ + ".pid").c_str());
  ::unlink((socket_ + ".log").c_str());
}

std::vector<std::string> qsd_command(const std::string& socket, const std::string& image) {
  return {PeerProcess::peers_dir() + "/start-qsd-blk.sh", socket, image};
}

std::vector<std::string> virtiofsd_command(const std::string& socket, const std::string& dir) {
  return {PeerProcess::peers_dir() + "/start-virtiofsd.sh", socket, dir};
}

std::vector<std::string> backend_command(const std::string& socket,
                                         const std::vector<std::string>& args) {
  // Start in the background, wait (bounded) until it is ready, print the pid.
  // Ready is its pidfile, written once it listens (with --connect: once it
  // is set up), not the socket file: a back-end that was killed leaves its
  // socket file behind, which the new one unlinks before it binds. One not
  // ready in time is killed: nobody would own it once the start failed.
  const std::string pidfile = shell_quote(socket + ".pid");
  std::string cmd = "rm -f " + pidfile + "; setsid " + shell_quote(VUFRONT_BACKEND_BIN) +
                    " --socket " + shell_quote(socket) + " --pidfile " + pidfile;
  for (const auto& a : args)
    cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(socket + ".log") + " 2>&1 </dev/null & p=$!; "
         "for i in $(seq 1000); do [ -s " + pidfile + " ] && break; "
         "kill -0 $p 2>/dev/null || exit 1; sleep 0.01; done; "
         "[ -s " + pidfile + " ] || { kill -KILL $p 2>/dev/null; exit 1; }; echo $p";
  return {"sh", "-c", cmd};
}

}  // namespace vufront::test
