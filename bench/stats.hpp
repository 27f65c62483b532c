#pragma once
// Order statistics shared by the benchmarks: median, quartiles and
// percentiles of a sample (rounds' ratios, per-interrupt latencies).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace vufront::bench {

/// The p-quantile (0 <= p <= 1) of `v`, linear between the closest ranks;
/// 0 for an empty sample.
inline double quantile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

inline double median(const std::vector<double>& v) {
  return quantile(v, 0.5);
}

/// Median with its interquartile range, as the benchmarks print it.
struct Spread {
  double q1 = 0;
  double med = 0;
  double q3 = 0;
};

inline Spread spread(const std::vector<double>& v) {
  return {quantile(v, 0.25), quantile(v, 0.5), quantile(v, 0.75)};
}

}  // namespace vufront::bench
