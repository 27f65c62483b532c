#pragma once
// `vufront job FILE.json`: runs a scripted job (docs/jobs.md) - devices
// driven concurrently through their steps (activate, check, sleep, snapshot,
// restore into a new back-end, wake, reset, wait, barriers) - with a live
// display on a terminal or JSON-lines events, and a summary at the end.

#include <string>

namespace vufront::app {

struct JobCommandOptions {
  std::string file;
  bool json_progress = false;  ///< JSON lines on stdout even on a terminal
  bool no_progress = false;    ///< only the summary
};

/// Exit status: 0 every device did every step, 1 a device failed (named on
/// stderr with its step) or the job was cancelled, 2 an invalid job file.
[[nodiscard]] int job_main(const JobCommandOptions& opts);

}  // namespace vufront::app
