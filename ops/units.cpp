#include "ops/units.hpp"

#include <sys/ioctl.h>

#include <cctype>
#include <cstdio>

namespace vufront::ops {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

unsigned terminal_columns() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
    return ws.ws_col;
  return 80;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, "size \"" + std::string(text) + "\"", why);
  };
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (uint64_t{1} << 63) / 10)
      return bad("too large (at most 8E)");
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0)
    return bad("not a size: a whole number of bytes, optionally with K, M, G or T (e.g. 512M)");
  std::string_view suffix = text.substr(i);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: break;
    }
    std::string_view rest = shift ? suffix.substr(1) : suffix;
    bool unit_ok = rest.empty() || iequals(rest, "B") || (shift != 0 && iequals(rest, "iB"));
    if (!unit_ok)
      return bad("unknown unit \"" + std::string(suffix) + "\" (use K, M, G or T, e.g. 512M)");
  }
  if (value == 0)
    return bad("must be at least 1 byte");
  if (shift != 0 && value > ((uint64_t{1} << 63) >> shift))
    return bad("too large (at most 8E)");
  return value << shift;
}

std::string format_bytes(uint64_t bytes) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024)
    return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10.0 ? "%.2f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string format_rate(uint64_t bytes, uint64_t elapsed_us) {
  if (elapsed_us == 0)
    return "-";
  double per_s = static_cast<double>(bytes) * 1e6 / static_cast<double>(elapsed_us);
  return format_bytes(static_cast<uint64_t>(per_s)) + "/s";
}

std::string format_duration_us(uint64_t us) {
  char buf[32];
  if (us < 1000000)
    std::snprintf(buf, sizeof buf, "%.0f ms", static_cast<double>(us) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(us) / 1e6);
  return buf;
}

std::string checksum_hex(uint64_t checksum) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(checksum));
  return buf;
}

std::string progress_bar(uint64_t done, uint64_t total, unsigned width, uint64_t phase) {
  std::string cells(width, '.');
  if (width == 0)
    return "[]";
  if (total > 0) {
    uint64_t filled = done >= total ? width : (done * width) / total;
    for (uint64_t i = 0; i < filled; ++i)
      cells[i] = '#';
  } else {
    // Size unknown while saving: a marker that bounces one cell per phase.
    unsigned span = width > 3 ? width - 3 : 1;
    unsigned at = static_cast<unsigned>(phase % (2 * span));
    if (at >= span)
      at = 2 * span - at;
    for (unsigned i = at; i < at + 3 && i < width; ++i)
      cells[i] = '#';
  }
  return "[" + cells + "]";
}

}  // namespace vufront::ops
