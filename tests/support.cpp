#include "tests/support.hpp"

#include "loop/event_loop.hpp"

#include <algorithm>
#include <fstream>

#include <chrono>
#include <thread>

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace vufront::test {

size_t dir_entries(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    return 0;
  while (dirent* e = ::readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
      ++n;
  ::closedir(d);
  return n;
}

TempDir::TempDir() {
  std::string tmpl = "/tmp/vufront-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string FdCount::listing() {
  std::string out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr)
    return out;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.')
      continue;
    char target[256] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    out += std::string(e->d_name) + " -> " + (n > 0 ? std::string(target, size_t(n)) : "?") + "\n";
  }
  ::closedir(dir);
  return out;
}

/// The event loop's own fds (its epoll, wake-up eventfd and timerfd) live as
/// long as the process: opened before the first count, they are no leak.
int count_after_loop_started() {
  (void)loop::EventLoop::instance();
  return count_open_fds();
}

FdCount::FdCount() : before_(count_after_loop_started()) {
  const auto until = std::chrono::steady_clock::now() + scaled(std::chrono::milliseconds(300));
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const int now = count_open_fds();
    if (now == before_ || std::chrono::steady_clock::now() >= until) {
      before_ = std::min(before_, now);
      return;
    }
    before_ = now;
  }
}

uint64_t status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0)
      return std::stoull(line.substr(std::string(key).size()));
  return 0;
}

int FdCount::leaked() const {
  const auto until = std::chrono::steady_clock::now() + scaled(std::chrono::seconds(2));
  int diff = count_open_fds() - before_;
  while (diff > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    diff = count_open_fds() - before_;
  }
  return std::max(diff, 0);
}

int FdCount::open_now() const { return count_open_fds() - before_; }

}  // namespace vufront::test
