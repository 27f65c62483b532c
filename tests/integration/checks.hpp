#pragma once
// Shared by the C++ integration tests: unwrap a Result or fail the test with
// its message, a check's failed step for a message, and a deterministic data
// pattern.

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ops/checker.hpp"
#include "base/error.hpp"

namespace vufront::test {

template <class T>
T must(Result<T> r, const char* what) {
  if (!r.ok())
    FAIL(std::string(what) << " failed: " << r.error().message());
  return std::move(r).value();
}

inline void must(Result<void> r, const char* what) {
  if (!r.ok())
    FAIL(std::string(what) << " failed: " << r.error().message());
}

/// The check's last failed step ("name: detail"), "" if none: the step that
/// stopped it (a Checker runs nothing after a failure until clear_failure(),
/// and after that the earlier failures stay listed).
inline std::string failure(const ops::Checker& c) {
  for (auto s = c.steps().rbegin(); s != c.steps().rend(); ++s)
    if (!s->ok)
      return s->name + ": " + s->detail;
  return "";
}

/// `n` bytes that differ per `seed` and per position.
inline std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(seed * 31 + i * 13 + (i >> 8));
  return v;
}

}  // namespace vufront::test
