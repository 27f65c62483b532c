#include "base/log.hpp"

#include <memory>
#include <mutex>
#include <utility>

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace vufront::log {

namespace {

spdlog::level::level_enum to_spdlog(Level l) noexcept {
  switch (l) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warning: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

/// "PROGRAM: MESSAGE", or with timestamps "PROGRAM: 2026-12-06 11:00:00.123 info: MESSAGE"
/// (spdlog's names of the levels: trace, debug, info, warning, error).
std::string pattern(const Settings& s) {
  std::string program;
  for (char c : s.program)  // '%' would start a pattern flag
    program += c == '%' ? std::string("%%") : std::string(1, c);
  return program + (s.timestamps ? ": %Y-%m-%d %H:%M:%S.%e %l: %v" : ": %v");
}

std::shared_ptr<spdlog::logger> make_logger(const Settings& s) {
  // stderr, unbuffered and locked per line: several threads log (attach's
  // actors, the event loop's tasks)
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(s.program, std::move(sink));
  logger->set_pattern(pattern(s));
  // the trace is below every level and on only when asked for: the logger
  // takes it, and the level is checked by write() (minimum below)
  logger->set_level(s.trace ? spdlog::level::trace : to_spdlog(s.level));
  logger->flush_on(spdlog::level::trace);
  return logger;
}

std::mutex logger_mutex;
/// The level set by setup(): the least important line write() passes on.
std::atomic<int> minimum{static_cast<int>(Level::info)};

/// The logger; replaced only by setup(), before the threads that log start.
std::shared_ptr<spdlog::logger>& current() {
  static std::shared_ptr<spdlog::logger> logger = make_logger(Settings{});
  return logger;
}

std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard<std::mutex> lock(logger_mutex);
  return current();
}

}  // namespace

void setup(const Settings& s) {
  auto fresh = make_logger(s);
  {
    std::lock_guard<std::mutex> lock(logger_mutex);
    current() = std::move(fresh);
  }
  minimum.store(static_cast<int>(s.level), std::memory_order_relaxed);
  detail::trace_on.store(s.trace, std::memory_order_relaxed);
}

std::optional<Level> level_from_string(std::string_view text) {
  if (text == "error")
    return Level::error;
  if (text == "warning" || text == "warn")
    return Level::warning;
  if (text == "info")
    return Level::info;
  if (text == "debug")
    return Level::debug;
  return std::nullopt;
}

const char* name(Level l) noexcept {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warning: return "warning";
    case Level::error: return "error";
  }
  return "info";
}

bool enabled(Level l) noexcept {
  return static_cast<int>(l) >= minimum.load(std::memory_order_relaxed);
}

void write(Level l, std::string_view message) {
  if (enabled(l))
    logger()->log(to_spdlog(l), spdlog::string_view_t(message.data(), message.size()));
}

void trace(std::string_view message) {
  if (tracing())
    logger()->log(spdlog::level::trace, spdlog::string_view_t(message.data(), message.size()));
}

}  // namespace vufront::log
