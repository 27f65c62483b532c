#pragma once
// Writing an eventfd from a test, the write checked (tests of the event loop
// and the fd watcher wake their waiters this way).

#include <cstdint>

#include <unistd.h>

#include <doctest/doctest.h>

namespace vufront::test {

/// Adds `n` to eventfd `efd`'s count; the test fails if the write does not
/// take all 8 bytes.
inline void signal_eventfd(int efd, uint64_t n = 1) {
  REQUIRE(::write(efd, &n, sizeof n) == static_cast<ssize_t>(sizeof n));
}

}  // namespace vufront::test
