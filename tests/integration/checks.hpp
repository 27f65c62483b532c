#pragma once
// Shared by the C++ integration tests: unwrap a Result or fail the test with
// its message, and a deterministic data pattern.

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "protocol/error.hpp"

namespace vufront::test {

template <class T>
T must(Result<T> r, const char* what) {
  if (!r.ok())
    FAIL(what << " failed: " << r.error().message());
  return std::move(r).value();
}

inline void must(Result<void> r, const char* what) {
  if (!r.ok())
    FAIL(what << " failed: " << r.error().message());
}

/// `n` bytes that differ per `seed` and per position.
inline std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(seed * 31 + i * 13 + (i >> 8));
  return v;
}

}  // namespace vufront::test
