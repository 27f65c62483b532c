#pragma once
// What `vufront attach` does for a service manager (docs/service.md): its
// pid file (--pidfile) and its readiness, told through sd_notify(3) when
// NOTIFY_SOCKET is set (systemd's Type=notify).

#include <string>
#include <utility>

#include <sys/types.h>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront::app {

/// --pidfile PATH. claim() at start refuses a PATH that names a live process
/// (or that another vufront holds); write() puts this process's pid there
/// once the sockets listen; the destructor removes the file if it is still
/// the one written here. While written, the file is locked (flock), so a
/// second attach that names it is refused even before it reads the pid.
class PidFile {
public:
  /// Nothing is written yet. Errors: bad_state ("PATH names a live process
  /// (pid N)"), io_error (the file exists and cannot be read).
  [[nodiscard]] static Result<PidFile> claim(const std::string& path);

  /// Writes "PID\n" to a temporary file beside PATH, locks it and renames it
  /// to PATH (so PATH never holds half a pid); checks again first that no
  /// other process took PATH meanwhile. Errors: bad_state, io_error.
  [[nodiscard]] Result<void> write();

  /// Removes PATH if it is still the file write() made.
  void remove() noexcept;

  PidFile(PidFile&& other) noexcept;
  PidFile& operator=(PidFile&&) = delete;
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  ~PidFile() { remove(); }

  [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
  explicit PidFile(std::string path) : path_(std::move(path)) {}

  std::string path_;
  UniqueFd fd_;  ///< the written file, locked; empty before write()
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

/// sd_notify(3): no-ops when NOTIFY_SOCKET is not set. STATUS= is the one
/// line `systemctl status` shows.
void notify_status(const std::string& status);
/// READY=1: the control socket listens and every device is negotiated.
void notify_ready(const std::string& status);
/// STOPPING=1: a signal came, the devices are being stopped.
void notify_stopping();

}  // namespace vufront::app
