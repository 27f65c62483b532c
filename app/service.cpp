#include "app/service.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

#include <systemd/sd-daemon.h>

namespace vufront::app {

namespace {

constexpr const char* kOpt = "--pidfile";

/// The pid in a pid file's text ("1234\n"), 0 when there is none.
pid_t parse_pid(const std::string& text) {
  size_t i = 0;
  long long v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9' && v < (1LL << 31))
    v = v * 10 + (text[i++] - '0');
  if (i == 0 || v <= 0 || v >= (1LL << 31) || (i < text.size() && text[i] != '\n'))
    return 0;
  return static_cast<pid_t>(v);
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

/// Refuses a PATH another process holds (locked) or that names a live
/// process other than this one; a missing file, or one naming nobody, is free.
Result<void> check_free(const std::string& path) {
  // OWNERSHIP: owned from birth, closed on return
  UniqueFd fd = UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT)
      return ok();
    return make_error(errc::io_error, kOpt, path + ": cannot open it to see whom it names", errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(errc::invalid_argument, kOpt, path + ": not a regular file");
  const bool locked = ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  char buf[32];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  const pid_t pid = n > 0 ? parse_pid(std::string(buf, static_cast<size_t>(n))) : 0;
  if (pid == ::getpid())
    return ok();
  if (locked || (pid != 0 && alive(pid)))
    return make_error(errc::bad_state, kOpt,
                      path + " names a live process" +
                          (pid != 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                          ": is another vufront attach running with it? (remove the file if not)");
  return ok();
}

void notify(const std::string& state) {
  if (std::getenv("NOTIFY_SOCKET") == nullptr)
    return;
  (void)::sd_notify(0, state.c_str());
}

/// STATUS= takes one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n')
      c = ' ';
  return s;
}

}  // namespace

Result<PidFile> PidFile::claim(const std::string& path) {
  if (auto r = check_free(path); !r)
    return std::move(r).error();
  return PidFile(path);
}

PidFile::PidFile(PidFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::move(other.fd_)), dev_(other.dev_), ino_(other.ino_) {
  other.path_.clear();
}

Result<void> PidFile::write() {
  if (auto r = check_free(path_); !r)
    return r;
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  // OWNERSHIP: owned from birth; kept (with its lock) until remove()
  UniqueFd fd = UniqueFd::adopt(
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd)
    return make_error(errc::io_error, kOpt, "cannot create " + tmp, errno);
  const std::string text = std::to_string(::getpid()) + "\n";
  struct stat st {};
  const bool written = ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0 &&
                       ::write(fd.get(), text.data(), text.size()) ==
                           static_cast<ssize_t>(text.size()) &&
                       ::fstat(fd.get(), &st) == 0;
  const int err = errno;
  if (!written || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int e = written ? errno : err;
    ::unlink(tmp.c_str());
    return make_error(errc::io_error, kOpt, "cannot write " + path_, e);
  }
  fd_ = std::move(fd);
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  return ok();
}

void PidFile::remove() noexcept {
  if (!fd_)
    return;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(path_.c_str());
  fd_.reset();
}

void notify_status(const std::string& status) {
  notify("STATUS=" + one_line(status));
}

void notify_ready(const std::string& status) {
  notify("READY=1\nSTATUS=" + one_line(status));
}

void notify_stopping() {
  notify("STOPPING=1\nSTATUS=stopping");
}

}  // namespace vufront::app
