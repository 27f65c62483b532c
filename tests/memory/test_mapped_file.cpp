// MappedFile and SigbusGuard: a mapped file truncated under a guard is read
// through (zeros where it was cut) and the cut is reported; the process
// lives. write(2) out of a cut mapping fails with EFAULT (no signal). A
// SIGBUS outside every guarded range still reaches the handler that was
// there before (the default: the process dies by SIGBUS), checked in
// forked children.
#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/unique_fd.hpp"
#include "memory/mapped_file.hpp"
#include "memory/sigbus_guard.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace std::chrono_literals;

namespace {

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

/// A file of `pages` pages, byte i = (i * 13 + 1) & 0xff (never all zero).
UniqueFd make_file(const std::string& path, size_t pages) {
  UniqueFd fd = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  std::vector<uint8_t> data(pages * kPage);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i * 13 + 1);
  REQUIRE(::pwrite(fd.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
  return fd;
}

/// How the child `pid` ended, waited for through a pidfd for at most 10 s:
/// the wait status, or -1 if it did not end in time (then it is killed).
int wait_child(pid_t pid) {
  UniqueFd pidfd = UniqueFd::adopt(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd.valid()) {
    pollfd p{pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(test::scaled(10000ms).count())) != 1) {
      ::kill(pid, SIGKILL);
      int status = 0;
      ::waitpid(pid, &status, 0);
      return -1;
    }
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid)
    return -1;
  return status;
}

/// Reads every byte of [p, p+n) (volatile: the loads happen).
uint64_t sum(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i)
    s += static_cast<const volatile uint8_t*>(p)[i];
  return s;
}

}  // namespace

TEST_CASE("mapped file: a file truncated under the guard reads as zeros past the cut and says so") {
  test::TempDir tmp;
  UniqueFd fd = make_file(tmp.file("f"), 4);
  auto m = MappedFile::map(fd.get(), 4 * kPage, "test map");
  REQUIRE_MESSAGE(m.ok(), m.error().message());
  CHECK(m->size() == 4 * kPage);
  CHECK_FALSE(m->truncated());
  CHECK(m->data()[kPage + 5] == static_cast<uint8_t>((kPage + 5) * 13 + 1));

  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(kPage)) == 0);  // another process's cut
  const uint64_t whole = sum(m->data(), m->size());                // survives
  CHECK(m->truncated());
  CHECK(whole == sum(m->data(), kPage));  // the three cut pages read as zeros
  CHECK(m->data()[0] == 1);
  CHECK(m->data()[3 * kPage + 7] == 0);
}

TEST_CASE("mapped file: write(2) out of a cut mapping fails with EFAULT, without a signal") {
  test::TempDir tmp;
  UniqueFd fd = make_file(tmp.file("f"), 4);
  auto m = MappedFile::map(fd.get(), 4 * kPage, "test map");
  REQUIRE(m.ok());
  Pipe p = make_pipe();
  REQUIRE(p.write_end.valid());
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(kPage)) == 0);
  CHECK(::write(p.write_end.get(), m->data(), kPage) == static_cast<ssize_t>(kPage));
  errno = 0;
  CHECK(::write(p.write_end.get(), m->data() + 2 * kPage, kPage) == -1);
  CHECK(errno == EFAULT);
  CHECK_FALSE(m->truncated());  // the kernel's copy raised no SIGBUS
}

TEST_CASE("sigbus guard: slots are claimed and given back, a bad range is refused") {
  const int before = SigbusGuard::slots_in_use();
  test::TempDir tmp;
  UniqueFd fd = make_file(tmp.file("f"), 1);
  {
    auto a = MappedFile::map(fd.get(), kPage, "test map");
    auto b = MappedFile::map(fd.get(), kPage, "test map");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(SigbusGuard::slots_in_use() == before + 2);
    MappedFile moved = std::move(a).value();
    CHECK(SigbusGuard::slots_in_use() == before + 2);
  }
  CHECK(SigbusGuard::slots_in_use() == before);
  auto empty = SigbusGuard::guard(nullptr, 0);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().code == errc::invalid_argument);
  auto none = MappedFile::map(fd.get(), 0, "test map");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == errc::invalid_argument);
  std::vector<SigbusGuard> all;
  int x = 0;
  for (;;) {
    auto g = SigbusGuard::guard(&x, sizeof x);
    if (!g) {
      CHECK(g.error().code == errc::busy);
      break;
    }
    all.push_back(std::move(g).value());
    REQUIRE(all.size() <= static_cast<size_t>(SigbusGuard::kSlots));
  }
  CHECK(SigbusGuard::slots_in_use() == SigbusGuard::kSlots);
  all.clear();
  CHECK(SigbusGuard::slots_in_use() == before);
}

namespace {

void exit_42(int, siginfo_t*, void*) { ::_exit(42); }

/// In a child: a guarded range cut and read (survives), then an unguarded
/// mapping cut and read. `previous` is the SIGBUS handler set before the
/// first guard. Exits 0 only if the unguarded read returned.
[[noreturn]] void child(const std::string& dir, bool custom_previous) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  if (custom_previous) {
    sa.sa_sigaction = exit_42;
    sa.sa_flags = SA_SIGINFO;
  } else {
    sa.sa_handler = SIG_DFL;  // not the test framework's handler
  }
  ::sigaction(SIGBUS, &sa, nullptr);
  UniqueFd a = UniqueFd::adopt(::open((dir + "/a").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd b = UniqueFd::adopt(::open((dir + "/b").c_str(), O_RDWR | O_CLOEXEC));
  auto m = MappedFile::map(a.get(), 2 * kPage, "child map");
  if (!m || ::ftruncate(a.get(), 0) != 0)
    ::_exit(3);
  (void)sum(m->data(), m->size());
  if (!m->truncated())
    ::_exit(4);
  void* raw = ::mmap(nullptr, 2 * kPage, PROT_READ, MAP_SHARED, b.get(), 0);
  if (raw == MAP_FAILED || ::ftruncate(b.get(), 0) != 0)
    ::_exit(5);
  (void)sum(static_cast<const uint8_t*>(raw), 2 * kPage);  // SIGBUS, not guarded
  ::_exit(0);
}

}  // namespace

TEST_CASE("sigbus guard: a fault outside every guarded range reaches the previous handler") {
  test::TempDir tmp;
  bool custom = false;
  SUBCASE("default action: the child dies by SIGBUS") {}
  SUBCASE("a handler of its own: called") { custom = true; }
  (void)make_file(tmp.file("a"), 2);
  (void)make_file(tmp.file("b"), 2);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0)
    child(tmp.path(), custom);
  int status = wait_child(pid);
  REQUIRE(status != -1);
  if (custom) {
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 42);
  } else {
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGBUS);
  }
}

TEST_CASE("mapped file: dropped pages read the file's bytes again") {
  test::TempDir tmp;
  UniqueFd fd = make_file(tmp.file("f"), 4);
  auto m = MappedFile::map(fd.get(), 4 * kPage, "test map");
  REQUIRE(m.ok());
  const uint64_t before = sum(m->data(), m->size());
  m->drop(kPage + 1, 3 * kPage + 5);  // pages 1 and 2
  m->drop(0, 100 * kPage);            // clamped to the mapping
  CHECK(sum(m->data(), m->size()) == before);
  CHECK(m->data()[2 * kPage + 3] == static_cast<uint8_t>((2 * kPage + 3) * 13 + 1));
  CHECK_FALSE(m->truncated());
}
