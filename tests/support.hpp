#pragma once
// Small helpers shared by the tests.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/unique_fd.hpp"

#ifndef VUFRONT_TEST_SLOWDOWN
#define VUFRONT_TEST_SLOWDOWN 1
#endif

namespace vufront::test {

/// How much slower this build runs than a plain one (tests/CMakeLists.txt:
/// 8 under ThreadSanitizer, 2 under ASan/UBSan, 1 otherwise).
inline constexpr int kSlowdown = VUFRONT_TEST_SLOWDOWN;
/// True in a ThreadSanitizer build: memory bounds allow for its shadow and traces.
inline constexpr bool kThreadSanitizer =
#if defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif

/// A test's own deadline (a wait that ends a hung test, never a timing that is
/// checked), stretched for a slower build.
template <class Rep, class Period>
[[nodiscard]] constexpr std::chrono::duration<Rep, Period> scaled(std::chrono::duration<Rep, Period> d) {
  return d * kSlowdown;
}

/// Records the process's open fd count on construction; `leaked()` is the
/// difference now. Tests check it is 0 after every scenario. An actor that
/// answered may release its fds a moment after its reply (its mailbox and
/// state go when it ends), so leaked() waits up to 2 s (scaled) for the count to come
/// back before it reports a difference; a real leak stays.
class FdCount {
public:
  /// The baseline: the count once it is steady (an earlier test's actors may
  /// still be closing theirs; up to 300 ms, scaled).
  FdCount();
  /// Fds open now beyond the baseline, waiting up to 2 s for them to close;
  /// never negative (fewer than before is no leak).
  [[nodiscard]] int leaked() const;
  /// Fds open now beyond the baseline, at once: for a check that some are
  /// still held on purpose (nothing to wait for).
  [[nodiscard]] int open_now() const;
  /// The open fds now ("3 -> anon_inode:[eventfd]", one per line), for the
  /// message of a failed leak check.
  [[nodiscard]] static std::string listing();

private:
  int before_;
};

/// A line of /proc/self/status in KiB, e.g. status_kib("VmRSS:"); 0 if absent.
[[nodiscard]] uint64_t status_kib(const char* key);

/// Entries of a directory, "." and ".." not counted (the temporary files a
/// failed transfer must not leave); 0 if it cannot be opened.
[[nodiscard]] size_t dir_entries(const std::string& dir);

/// A fresh private directory under /tmp, removed with its contents.
class TempDir {
public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

}  // namespace vufront::test
