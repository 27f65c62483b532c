#include "tests/integration/peer_process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <poll.h>
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
  // start in the background, wait (bounded) for the listening socket, print the pid
  std::string cmd = "setsid " + shell_quote(VUFRONT_BACKEND_BIN) + " --socket " +
                    shell_quote(socket);
  for (const auto& a : args)
    cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(socket + ".log") + " 2>&1 </dev/null & p=$!; "
         "for i in $(seq 100); do [ -S " + shell_quote(socket) + " ] && break; "
         "kill -0 $p 2>/dev/null || exit 1; sleep 0.1; done; "
         "[ -S " + shell_quote(socket) + " ] || exit 1; echo $p";
  return {"sh", "-c", cmd};
}

}  // namespace vufront::test
