#include "ops/job_display.hpp"

#include <algorithm>
#include <cstdio>

#include "ops/units.hpp"

namespace vufront::ops {

using actors::DeviceOutcome;
using actors::JobEvent;
using actors::JobOutcome;

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto redraw_interval = std::chrono::milliseconds(100);

const char* to_string(DeviceOutcome::Result r) {
  switch (r) {
    case DeviceOutcome::Result::ok: return "ok";
    case DeviceOutcome::Result::failed: return "failed";
    case DeviceOutcome::Result::cancelled: return "cancelled";
  }
  return "?";
}

std::string seconds(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", ms / 1000.0);
  return buf;
}

std::string pad(std::string s, size_t width) {
  if (s.size() < width)
    s.append(width - s.size(), ' ');
  return s;
}

bool is_transfer(JobStepKind k) {
  return k == JobStepKind::snapshot || k == JobStepKind::restore || k == JobStepKind::migrate;
}

}  // namespace

JobDisplay::JobDisplay(Mode mode, const Job& job, std::ostream& json_out, std::ostream& text_out,
                       unsigned columns)
    : mode_(mode), job_(job), json_out_(json_out), text_out_(text_out), columns_(columns) {
  lines_.resize(job.devices.size());
  for (const auto& d : job.devices)
    name_width_ = std::max(name_width_, d.name.size());
  for (auto& l : lines_)
    l.status = "waiting";
  if (mode_ == Mode::terminal)
    redraw(true);
}

void JobDisplay::event(const JobEvent& e) {
  if (e.device >= job_.devices.size() || e.step >= job_.devices[e.device].steps.size())
    return;
  const auto& dev = job_.devices[e.device];
  const JobStep& step = dev.steps[e.step];
  if (mode_ == Mode::json) {
    nlohmann::ordered_json j{{"device", dev.name},
                     {"step", e.step},
                     {"name", name(step.kind)},
                     {"event", to_string(e.kind)}};
    switch (e.kind) {
      case JobEvent::Kind::start: break;
      case JobEvent::Kind::progress:
        j["bytes"] = e.bytes;
        j["total"] = e.total ? nlohmann::ordered_json(e.total) : nlohmann::ordered_json(nullptr);
        break;
      case JobEvent::Kind::done:
        j["ms"] = e.ms;
        j["bytes"] = is_transfer(step.kind) ? nlohmann::ordered_json(e.bytes)
                                            : nlohmann::ordered_json(nullptr);
        j["detail"] = e.detail;
        j["migrate"] = e.figures.empty() ? nlohmann::ordered_json(nullptr)
                                         : nlohmann::ordered_json::parse(e.figures);
        break;
      case JobEvent::Kind::failed:
        j["ms"] = e.ms;
        j["error"] = e.detail;
        break;
    }
    json_out_ << j.dump() << '\n' << std::flush;
    return;
  }
  if (mode_ != Mode::terminal)
    return;
  Line& l = lines_[e.device];
  switch (e.kind) {
    case JobEvent::Kind::start:
      l = Line{name(step.kind), e.step, true, true, 0, 0, Clock::now(), ""};
      if (step.kind == JobStepKind::barrier)
        l.step += " " + step.barrier;
      break;
    case JobEvent::Kind::progress:
      if (!l.busy || l.index != e.step)
        return;
      l.bytes = e.bytes;
      l.total = e.total;
      redraw(false);
      return;
    case JobEvent::Kind::done:
      if (!l.begun || l.index != e.step)
        l.step = name(step.kind);
      l.busy = false;
      l.begun = true;
      l.index = e.step;
      l.status = e.step + 1 == dev.steps.size() ? "done" : "ok " + l.step;
      break;
    case JobEvent::Kind::failed:
      if (!l.begun || l.index != e.step)
        l.step = name(step.kind);
      l.busy = false;
      l.begun = true;
      l.index = e.step;
      l.status = "FAILED at steps[" + std::to_string(e.step) + "] " + name(step.kind) + ": " + e.detail;
      break;
  }
  redraw(true);
}

std::string JobDisplay::render(size_t d) const {
  const auto& dev = job_.devices[d];
  const Line& l = lines_[d];
  std::string out = pad(dev.name, name_width_) + "  ";
  char count[32];
  std::snprintf(count, sizeof count, "%2u/%-2zu  ", l.begun ? l.index + 1 : 0u, dev.steps.size());
  out += count;
  if (!l.busy)
    return out + l.status;
  out += pad(l.step, 10) + "  ";
  auto us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - l.since).count());
  if (is_transfer(dev.steps[l.index].kind)) {
    out += progress_bar(l.bytes, l.total, 20, us / 100000) + "  " + format_bytes(l.bytes);
    if (l.total)
      out += " / " + format_bytes(l.total);
    // the rate last: on a narrow terminal it is what gets cut
    return out + "  " + format_duration_us(us) + "  " + format_rate(l.bytes, us);
  }
  return out + format_duration_us(us);
}

void JobDisplay::redraw(bool force) {
  auto now = Clock::now();
  if (!force && drawn_ && now - last_draw_ < redraw_interval)
    return;
  last_draw_ = now;
  std::string out;
  if (drawn_)
    out += "\x1b[" + std::to_string(lines_.size()) + "A";  // back to the first line
  for (size_t d = 0; d < lines_.size(); ++d) {
    std::string line = render(d);
    if (columns_ > 1 && line.size() >= columns_)
      line.resize(columns_ - 1);  // a wrapped line would break the cursor arithmetic
    out += "\r\x1b[K" + line + "\n";
  }
  text_out_ << out << std::flush;
  drawn_ = true;
}

nlohmann::ordered_json JobDisplay::summary_json(const JobOutcome& o) const {
  nlohmann::ordered_json devs = nlohmann::ordered_json::array();
  for (size_t i = 0; i < o.devices.size(); ++i) {
    const auto& d = o.devices[i];
    nlohmann::ordered_json j{{"device", d.name},      {"steps_ok", d.steps_ok},
                     {"steps", d.steps_total}, {"state_bytes", d.state_bytes},
                     {"ms", d.ms},             {"result", to_string(d.result)},
                     {"failed_step", nullptr}, {"failed_name", nullptr}, {"error", nullptr}};
    if (d.failed_step) {
      j["failed_step"] = *d.failed_step;
      if (i < job_.devices.size() && *d.failed_step < job_.devices[i].steps.size())
        j["failed_name"] = name(job_.devices[i].steps[*d.failed_step].kind);
      j["error"] = d.error;
    }
    devs.push_back(std::move(j));
  }
  return {{"event", "summary"}, {"ok", o.ok()}, {"ms", o.ms}, {"devices", devs}};
}

std::string JobDisplay::summary_table(const JobOutcome& o) const {
  size_t w = name_width_;
  std::string out = pad("device", w) + "  steps    state        time      result\n";
  size_t failed = 0;
  for (size_t i = 0; i < o.devices.size(); ++i) {
    const auto& d = o.devices[i];
    char steps[32];
    std::snprintf(steps, sizeof steps, "%zu/%zu", d.steps_ok, d.steps_total);
    std::string result = to_string(d.result);
    if (d.failed_step && i < job_.devices.size() && *d.failed_step < job_.devices[i].steps.size())
      result += " at steps[" + std::to_string(*d.failed_step) + "] " +
                name(job_.devices[i].steps[*d.failed_step].kind) + ": " + d.error;
    if (d.result != DeviceOutcome::Result::ok)
      ++failed;
    out += pad(d.name, w) + "  " + pad(steps, 7) + "  " +
           pad(d.state_bytes ? format_bytes(d.state_bytes) : "-", 11) + "  " +
           pad(seconds(d.ms), 8) + "  " + result + "\n";
  }
  size_t cancelled = static_cast<size_t>(std::count_if(
      o.devices.begin(), o.devices.end(),
      [](const auto& d) { return d.result == DeviceOutcome::Result::cancelled; }));
  std::string n = std::to_string(o.devices.size());
  if (o.ok())
    out += "job: ok (" + n + " device(s), ";
  else if (cancelled)
    out += "job: CANCELLED (" + std::to_string(cancelled) + " of " + n + " device(s) cancelled, ";
  else
    out += "job: FAILED (" + std::to_string(failed) + " of " + n + " device(s) failed, ";
  out += seconds(o.ms) + ")\n";
  return out;
}

void JobDisplay::finish(const JobOutcome& o) {
  if (mode_ == Mode::terminal)
    redraw(true);
  if (mode_ == Mode::json) {
    json_out_ << summary_json(o).dump() << '\n' << std::flush;
    return;
  }
  if (mode_ == Mode::terminal)
    text_out_ << '\n';
  text_out_ << summary_table(o) << std::flush;
}

}  // namespace vufront::ops
