#pragma once
// What `vufront job` reports: step events as they happen and the outcome at
// the end, in one of three forms (docs/jobs.md):
//   terminal  one line per device, redrawn in place (bar and bytes while a
//             snapshot or restore moves state), then a summary table;
//   json      one JSON object per event and line, then a summary line;
//   none      only the summary table.
// It sends and receives nothing: the job's coordinator actor owns it (as its
// JobView, actors/job_plan.hpp) and feeds it in order.

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/job_messages.hpp"
#include "actors/job_plan.hpp"
#include "ops/job_file.hpp"

namespace vufront::ops {

class JobDisplay final : public actors::JobView {
public:
  enum class Mode : uint8_t { terminal, json, none };

  /// `json_out`: where JSON lines go (stdout); `text_out`: the live lines
  /// and the summary table (stderr). `columns`: width of the terminal.
  JobDisplay(Mode mode, const Job& job, std::ostream& json_out, std::ostream& text_out,
             unsigned columns = 80);

  void event(const actors::JobEvent& e) override;
  /// Redraws a live display (times move on while nothing happens).
  void tick() override {
    if (mode_ == Mode::terminal)
      redraw(false);
  }
  /// Whether it is a live display (wants tick()).
  [[nodiscard]] bool live() const noexcept override { return mode_ == Mode::terminal; }
  /// The last redraw, then the summary (table, or the JSON summary line).
  void finish(const actors::JobOutcome& o) override;

  /// The summary as a JSON object ({"event": "summary", "ok", "ms", "devices": [...]}).
  [[nodiscard]] nlohmann::ordered_json summary_json(const actors::JobOutcome& o) const;
  /// The summary as a text table.
  [[nodiscard]] std::string summary_table(const actors::JobOutcome& o) const;

private:
  struct Line {
    std::string step;       // current step's name
    uint32_t index = 0;     // current (or last) step
    bool begun = false;
    bool busy = false;
    uint64_t bytes = 0, total = 0;
    std::chrono::steady_clock::time_point since;
    std::string status;     // shown when not busy ("done", "FAILED ...")
  };
  void redraw(bool force);
  [[nodiscard]] std::string render(size_t device) const;

  Mode mode_;
  const Job& job_;
  std::ostream& json_out_;
  std::ostream& text_out_;
  unsigned columns_;
  std::vector<Line> lines_;
  size_t name_width_ = 6;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace vufront::ops
