// The job file parser: the job, its devices and their steps, and the checks across
// devices (snapshot files, barriers). Reading and validating single JSON values is in
// job_file_values.cpp.

#include "ops/job_file.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "ops/job_file_values.hpp"

namespace vufront::ops {

using nlohmann::json;
using namespace job_file_values;

const char* name(JobStepKind k) noexcept {
  switch (k) {
    case JobStepKind::activate: return "activate";
    case JobStepKind::sleep: return "sleep";
    case JobStepKind::wake: return "wake";
    case JobStepKind::reset: return "reset";
    case JobStepKind::check: return "check";
    case JobStepKind::snapshot: return "snapshot";
    case JobStepKind::restore: return "restore";
    case JobStepKind::migrate: return "migrate";
    case JobStepKind::wait: return "wait";
    case JobStepKind::barrier: return "barrier";
  }
  return "?";
}

std::chrono::milliseconds Job::deadline() const {
  std::chrono::milliseconds worst{0};
  for (const auto& d : devices) {
    std::chrono::milliseconds sum{0};
    for (const auto& s : d.steps)
      sum += s.kind == JobStepKind::wait ? s.wait : s.timeout;
    worst = std::max(worst, sum);
  }
  return worst;
}

namespace {

constexpr JobStepKind all_steps[] = {JobStepKind::activate, JobStepKind::sleep,   JobStepKind::wake,
                                     JobStepKind::reset,    JobStepKind::check,   JobStepKind::snapshot,
                                     JobStepKind::restore,  JobStepKind::migrate, JobStepKind::wait,
                                     JobStepKind::barrier};

bool takes_argument(JobStepKind k) {
  return k == JobStepKind::snapshot || k == JobStepKind::restore || k == JobStepKind::migrate ||
         k == JobStepKind::wait || k == JobStepKind::barrier;
}

std::optional<JobStepKind> step_kind(const std::string& s) {
  for (auto k : all_steps)
    if (s == name(k))
      return k;
  return std::nullopt;
}

std::vector<std::string> step_names() {
  std::vector<std::string> out;
  for (auto k : all_steps)
    out.emplace_back(name(k));
  return out;
}

// ---- one step ----------------------------------------------------------------------

/// {"migrate": {"socket": S, "threshold_pages": N, "max_rounds": N, "io": B,
/// "chunk_pages": N, "state_dir": DIR}}: the argument object.
void parse_migrate(JobStep& s, const json& arg, const std::string& where) {
  if (!arg.is_object())
    fail(where, "expected an object ({\"socket\": \"SOCKET\", ...}), got " + describe(arg));
  only_keys(arg, where,
            {"socket", "threshold_pages", "max_rounds", "io", "chunk_pages", "state_dir"});
  if (!arg.contains("socket"))
    fail(where, "missing key \"socket\" (the destination back-end's vhost-user socket)");
  s.socket = get_socket(arg.at("socket"), at(where, "socket"));
  if (arg.contains("threshold_pages"))
    s.threshold_pages = get_uint(arg.at("threshold_pages"), at(where, "threshold_pages"), 0,
                                 uint64_t{1} << 40);
  if (arg.contains("max_rounds"))
    s.max_rounds = static_cast<unsigned>(get_uint(arg.at("max_rounds"), at(where, "max_rounds"), 1, 1000));
  if (arg.contains("io"))
    s.io = get_bool(arg.at("io"), at(where, "io"));
  if (arg.contains("chunk_pages"))
    s.chunk_pages = get_uint(arg.at("chunk_pages"), at(where, "chunk_pages"), 1, uint64_t{1} << 20);
  if (arg.contains("state_dir"))
    s.state_dir = get_string(arg.at("state_dir"), at(where, "state_dir"));
}

JobStep parse_step(const json& v, const std::string& where, const JobDevice& dev) {
  JobStep s;
  s.timeout = dev.timeout;
  if (v.is_string()) {
    auto text = v.get<std::string>();
    auto k = step_kind(text);
    if (!k)
      fail(where, "unknown step " + in_quotes(text) + suggestion(text, step_names()));
    if (takes_argument(*k)) {
      const char* example = *k == JobStepKind::wait       ? "{\"wait\": SECONDS}"
                            : *k == JobStepKind::barrier ? "{\"barrier\": \"NAME\"}"
                            : *k == JobStepKind::restore ? "{\"restore\": \"FILE\", \"socket\": \"SOCKET\"}"
                            : *k == JobStepKind::migrate ? "{\"migrate\": {\"socket\": \"SOCKET\"}}"
                                                         : "{\"snapshot\": \"FILE\"}";
      fail(where, in_quotes(text) + " needs an argument: " + example);
    }
    s.kind = *k;
    return s;
  }
  if (!v.is_object())
    fail(where, "a step is a name (\"sleep\") or an object ({\"wait\": 0.5}), got " + describe(v));
  std::vector<std::string> found;
  for (const auto& [k, x] : v.items())
    if (step_kind(k))
      found.push_back(k);
  if (found.empty()) {
    if (v.empty())
      fail(where, "an empty object is no step (steps: " + join(step_names()) + ")");
    std::string first = v.begin().key();
    fail(where, "unknown step " + in_quotes(first) + suggestion(first, step_names()));
  }
  if (found.size() > 1)
    fail(where, "one step per object, found " + in_quotes(found[0]) + " and " + in_quotes(found[1]));
  s.kind = *step_kind(found[0]);
  const json& arg = v.at(found[0]);
  std::string argw = at(where, found[0]);
  std::vector<std::string> options;
  switch (s.kind) {
    case JobStepKind::snapshot: options = {"max_bytes", "force", "timeout"}; break;
    case JobStepKind::restore: options = {"socket", "timeout"}; break;
    case JobStepKind::barrier: options = {"timeout"}; break;
    case JobStepKind::migrate: options = {"timeout"}; break;
    case JobStepKind::wait: break;
    default:
      fail(where, in_quotes(found[0]) + " takes no argument: write the string " + in_quotes(found[0]));
  }
  for (const auto& [k, x] : v.items()) {
    if (k == found[0])
      continue;
    if (std::find(options.begin(), options.end(), k) == options.end())
      fail(at(where, k), "not an option of " + in_quotes(found[0]) +
                             (options.empty() ? std::string(" (it has none)")
                                              : " (options: " + join(options) + ")") +
                             suggestion(k, options));
  }
  switch (s.kind) {
    case JobStepKind::snapshot:
      s.path = get_string(arg, argw);
      if (v.contains("max_bytes"))
        s.max_bytes = get_size(v.at("max_bytes"), at(where, "max_bytes"));
      if (v.contains("force"))
        s.force = get_bool(v.at("force"), at(where, "force"));
      break;
    case JobStepKind::restore:
      s.path = get_string(arg, argw);
      if (v.contains("socket"))
        s.socket = get_socket(v.at("socket"), at(where, "socket"));
      break;
    case JobStepKind::migrate: parse_migrate(s, arg, argw); break;
    case JobStepKind::wait: s.wait = get_seconds(arg, argw, true); break;
    case JobStepKind::barrier:
      s.barrier = get_string(arg, argw, 64);
      break;
    default: break;
  }
  if (v.contains("timeout"))
    s.timeout = get_seconds(v.at("timeout"), at(where, "timeout"), false);
  return s;
}

// ---- the device's state along its steps -------------------------------------------------

enum class SimState { fresh, negotiated, active, sleeping };

const char* describe_state(SimState s) {
  switch (s) {
    case SimState::fresh: return "not connected yet";
    case SimState::negotiated: return "reset (negotiated, not active)";
    case SimState::active: return "active";
    case SimState::sleeping: return "sleeping";
  }
  return "?";
}

/// Walks the steps as the device will: each must fit the state the
/// previous ones leave. Also fills in restore's default socket.
void check_order(JobDevice& d, const std::string& where) {
  SimState st = SimState::fresh;
  std::string socket = d.socket;
  for (size_t i = 0; i < d.steps.size(); ++i) {
    JobStep& s = d.steps[i];
    auto needs = [&](const char* what, std::initializer_list<SimState> ok) {
      if (std::find(ok.begin(), ok.end(), st) != ok.end())
        return;
      std::string now = i == 0 ? "at the start it is " + std::string(describe_state(st))
                               : "after steps[" + std::to_string(i - 1) + "] (" +
                                     in_quotes(name(d.steps[i - 1].kind)) + ") it is " +
                                     describe_state(st);
      std::string hint = st == SimState::fresh ? " (begin with \"activate\")" : "";
      fail(where + ".steps[" + std::to_string(i) + "]",
           in_quotes(name(s.kind)) + " needs " + what + "; " + now + hint);
    };
    switch (s.kind) {
      case JobStepKind::activate:
        needs("a new or reset device", {SimState::fresh, SimState::negotiated});
        st = SimState::active;
        break;
      case JobStepKind::sleep:
        needs("an active device", {SimState::active});
        st = SimState::sleeping;
        break;
      case JobStepKind::wake:
        needs("a sleeping device", {SimState::sleeping});
        st = SimState::active;
        break;
      case JobStepKind::reset:
        needs("an activated device", {SimState::active, SimState::sleeping, SimState::negotiated});
        st = SimState::negotiated;
        break;
      case JobStepKind::check: needs("an active device", {SimState::active}); break;
      case JobStepKind::snapshot: needs("a sleeping device", {SimState::sleeping}); break;
      case JobStepKind::restore:
        needs("the guest's rings (activate first)",
              {SimState::active, SimState::sleeping, SimState::negotiated});
        if (s.socket.empty())
          s.socket = socket;
        socket = s.socket;
        st = SimState::sleeping;
        break;
      case JobStepKind::migrate:
        needs("an active device", {SimState::active});
        if (d.kind != DeviceKind::blk)
          fail(where + ".steps[" + std::to_string(i) + "]",
               "\"migrate\" moves blk devices only (its I/O during the copy is checked)");
        if (d.packed)
          fail(where + ".steps[" + std::to_string(i) + "]",
               "\"migrate\" needs split rings (dirty logging refuses packed rings)");
        socket = s.socket;
        break;
      case JobStepKind::wait:
      case JobStepKind::barrier: break;
    }
  }
}

// ---- one device ---------------------------------------------------------------------------

JobDevice parse_device(const json& v, const std::string& where, size_t index) {
  object_at(v, where);
  only_keys(v, where,
            {"name", "socket", "kind", "queues", "queue_size", "packed", "msix", "fs_file",
             "timeout", "drain_timeout", "wait_for_backend", "reconnect", "reconnect_give_up",
             "reconnect_max_delay", "steps", "comment"});
  JobDevice d;
  d.name = "dev" + std::to_string(index);
  if (v.contains("name")) {
    d.name = get_string(v.at("name"), at(where, "name"), 4096);
    if (!valid_name(d.name))
      fail(at(where, "name"), in_quotes(d.name) +
                                  ": 1 to 32 letters, digits, '-', '_' or '.' (it names the device "
                                  "in the output)");
  }
  if (!v.contains("socket"))
    fail(where, "missing key \"socket\" (the back-end's vhost-user socket)");
  d.socket = get_socket(v.at("socket"), at(where, "socket"));
  if (v.contains("kind")) {
    auto k = get_string(v.at("kind"), at(where, "kind"));
    if (k != "blk" && k != "net" && k != "fs")
      fail(at(where, "kind"), in_quotes(k) + " is not a device kind (blk, net, fs)" +
                                  suggestion(k, {"blk", "net", "fs"}));
    d.kind = *device_kind_from_string(k);
  }
  if (v.contains("queues"))
    d.queues = static_cast<uint16_t>(get_uint(v.at("queues"), at(where, "queues"), 1, 64));
  if (v.contains("queue_size"))
    d.queue_size =
        static_cast<uint16_t>(get_uint(v.at("queue_size"), at(where, "queue_size"), 2, 32768));
  if (v.contains("packed"))
    d.packed = get_bool(v.at("packed"), at(where, "packed"));
  if (v.contains("wait_for_backend"))
    d.wait_for_backend = get_bool(v.at("wait_for_backend"), at(where, "wait_for_backend"));
  if (!d.packed && (d.queue_size & (d.queue_size - 1)) != 0)
    fail(at(where, "queue_size"), std::to_string(d.queue_size) +
                                      " is not a power of two (split rings need one; packed rings "
                                      "do not)");
  if (v.contains("msix"))
    d.msix = get_bool(v.at("msix"), at(where, "msix"));
  if (v.contains("fs_file")) {
    if (d.kind != DeviceKind::fs)
      fail(at(where, "fs_file"), "only for \"kind\": \"fs\"");
    d.fs_file = get_string(v.at("fs_file"), at(where, "fs_file"));
  }
  if (v.contains("timeout"))
    d.timeout = get_seconds(v.at("timeout"), at(where, "timeout"), false);
  if (v.contains("drain_timeout"))
    d.drain_timeout = get_seconds(v.at("drain_timeout"), at(where, "drain_timeout"), false);
  if (v.contains("reconnect"))
    d.reconnect.enabled = get_bool(v.at("reconnect"), at(where, "reconnect"));
  if (v.contains("reconnect_give_up"))
    d.reconnect.give_up_after = get_seconds(v.at("reconnect_give_up"), at(where, "reconnect_give_up"), true);
  if (v.contains("reconnect_max_delay"))
    d.reconnect.max_delay = get_seconds(v.at("reconnect_max_delay"), at(where, "reconnect_max_delay"), false);
  if (!d.reconnect.enabled && (v.contains("reconnect_give_up") || v.contains("reconnect_max_delay")))
    fail(at(where, "reconnect"), "false, so reconnect_give_up and reconnect_max_delay do not apply");
  if (v.contains("comment"))
    get_string(v.at("comment"), at(where, "comment"));
  if (!v.contains("steps"))
    fail(where, "missing key \"steps\" (what to do with the device)");
  const json& steps = v.at("steps");
  if (!steps.is_array())
    fail(at(where, "steps"), "expected an array, got " + describe(steps));
  if (steps.empty())
    fail(at(where, "steps"), "no steps");
  if (steps.size() > max_job_steps)
    fail(at(where, "steps"), "more than " + std::to_string(max_job_steps) + " steps");
  for (size_t i = 0; i < steps.size(); ++i)
    d.steps.push_back(parse_step(steps[i], at(where, "steps") + "[" + std::to_string(i) + "]", d));
  check_order(d, where);
  return d;
}

// ---- across devices -------------------------------------------------------------------------

std::string step_at(size_t d, size_t s) {
  return "devices[" + std::to_string(d) + "].steps[" + std::to_string(s) + "]";
}

/// Two devices writing one snapshot file at once would overwrite each other;
/// without "force", a snapshot may not replace a file that exists before the
/// job or that an earlier step of the same device wrote.
void check_snapshot_paths(const Job& job) {
  std::map<std::string, std::pair<size_t, size_t>> writers;
  for (size_t d = 0; d < job.devices.size(); ++d)
    for (size_t s = 0; s < job.devices[d].steps.size(); ++s) {
      const auto& step = job.devices[d].steps[s];
      if (step.kind != JobStepKind::snapshot)
        continue;
      auto key = std::filesystem::path(step.path).lexically_normal().string();
      auto [it, fresh] = writers.emplace(key, std::make_pair(d, s));
      if (!fresh && it->second.first != d)
        fail(step_at(d, s), step_at(it->second.first, it->second.second) +
                                " writes the same snapshot file " + in_quotes(step.path));
      if (step.force)
        continue;
      std::error_code ec;
      if (fresh && std::filesystem::exists(step.path, ec))
        fail(step_at(d, s), in_quotes(step.path) + " exists (\"force\": true replaces it)");
      if (!fresh)
        fail(step_at(d, s), step_at(it->second.first, it->second.second) + " writes " +
                                in_quotes(step.path) + " first (\"force\": true replaces it)");
    }
}

/// Every device that uses a barrier reaches it equally often, at least two
/// devices use it, and no order of barriers can deadlock.
void check_barriers(const Job& job) {
  struct Use {
    size_t device;
    std::vector<size_t> steps;  // where it reaches the barrier
  };
  std::map<std::string, std::vector<Use>> uses;
  for (size_t d = 0; d < job.devices.size(); ++d)
    for (size_t s = 0; s < job.devices[d].steps.size(); ++s) {
      const auto& step = job.devices[d].steps[s];
      if (step.kind != JobStepKind::barrier)
        continue;
      auto& u = uses[step.barrier];
      if (u.empty() || u.back().device != d)
        u.push_back({d, {}});
      u.back().steps.push_back(s);
    }
  for (const auto& [name, u] : uses) {
    if (u.size() < 2)
      fail(step_at(u[0].device, u[0].steps[0]),
           "barrier " + in_quotes(name) + " is used by devices[" + std::to_string(u[0].device) +
               "] only: a barrier makes two or more devices wait for each other (a typo?)");
    for (const auto& other : u)
      if (other.steps.size() != u[0].steps.size())
        fail(step_at(other.device, other.steps.back()),
             "barrier " + in_quotes(name) + ": devices[" + std::to_string(u[0].device) +
                 "] reaches it " + std::to_string(u[0].steps.size()) + " time(s), devices[" +
                 std::to_string(other.device) + "] " + std::to_string(other.steps.size()) +
                 ": every device using a barrier must reach it equally often");
  }
  // Deadlock: the k-th passage of each barrier is a node; each device orders
  // the nodes it passes. A cycle in that order can never be passed.
  using Node = std::pair<std::string, size_t>;
  struct Edge {
    Node to;
    size_t device, step;
  };
  std::map<Node, std::vector<Edge>> next;
  for (size_t d = 0; d < job.devices.size(); ++d) {
    std::map<std::string, size_t> seen;
    std::optional<Node> prev;
    for (size_t s = 0; s < job.devices[d].steps.size(); ++s) {
      const auto& step = job.devices[d].steps[s];
      if (step.kind != JobStepKind::barrier)
        continue;
      Node n{step.barrier, seen[step.barrier]++};
      next[n];
      if (prev)
        next[*prev].push_back({n, d, s});
      prev = n;
    }
  }
  auto label = [&](const Node& n) {
    return in_quotes(n.first) + (uses[n.first][0].steps.size() > 1
                                  ? " (passage " + std::to_string(n.second + 1) + ")"
                                  : "");
  };
  std::map<Node, int> colour;  // 0 new, 1 on the path, 2 done
  std::vector<std::pair<Node, const Edge*>> path;
  std::function<void(const Node&)> visit = [&](const Node& n) {
    colour[n] = 1;
    for (const auto& e : next[n]) {
      if (colour[e.to] == 1) {
        // The cycle: from e.to along the path back to n, then e.
        std::string chain;
        std::string who;
        size_t start = 0;
        while (path[start].first != e.to)
          ++start;
        for (size_t i = start; i < path.size(); ++i) {
          chain += label(path[i].first) + " -> ";
          if (i + 1 < path.size())
            who += "devices[" + std::to_string(path[i + 1].second->device) + "], ";
        }
        who += "devices[" + std::to_string(e.device) + "]";
        fail(step_at(e.device, e.step),
             "barriers would deadlock: " + chain + label(e.to) +
                 ", each reached before the next by " + who);
      }
      if (colour[e.to] == 0) {
        path.push_back({e.to, &e});
        visit(e.to);
        path.pop_back();
      }
    }
    colour[n] = 2;
  };
  for (const auto& [n, edges] : next)
    if (colour[n] == 0) {
      path.push_back({n, nullptr});
      visit(n);
      path.pop_back();
    }
}

}  // namespace

Result<Job> parse_job(const json& j) {
  try {
    object_at(j, "job file");
    only_keys(j, "job file", {"devices", "comment"});
    if (!j.contains("devices"))
      fail("job file", "missing key \"devices\" (a job file is {\"devices\": [...]})");
    const json& devs = j.at("devices");
    if (!devs.is_array())
      fail("devices", "expected an array, got " + describe(devs));
    if (devs.empty())
      fail("devices", "no devices");
    if (devs.size() > max_job_devices)
      fail("devices", "more than " + std::to_string(max_job_devices) + " devices");
    if (j.contains("comment"))
      get_string(j.at("comment"), "comment");
    Job job;
    std::map<std::string, size_t> names;
    for (size_t i = 0; i < devs.size(); ++i) {
      std::string where = "devices[" + std::to_string(i) + "]";
      job.devices.push_back(parse_device(devs[i], where, i));
      auto [it, fresh] = names.emplace(job.devices.back().name, i);
      if (!fresh)
        fail(at(where, "name"), in_quotes(it->first) + " is already the name of devices[" +
                                    std::to_string(it->second) + "]");
    }
    check_snapshot_paths(job);
    check_barriers(job);
    return job;
  } catch (const JobFileInvalid& e) {
    return make_error(errc::invalid_argument, "job file",
                      e.where.empty() ? e.what : e.where + ": " + e.what);
  }
}

Result<Job> parse_job_text(std::string_view text) {
  DuplicateKeys dups;
  json j;
  try {
    j = json::parse(text.begin(), text.end(),
                    [&dups](int depth, json::parse_event_t ev, json& parsed) {
                      return dups(depth, ev, parsed);
                    },
                    /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    if (auto p = msg.find("] "); msg.rfind("[json.exception.", 0) == 0 && p != std::string::npos)
      msg = msg.substr(p + 2);
    return make_error(errc::invalid_argument, "job file", "not valid JSON: " + msg);
  }
  if (dups.found)
    return make_error(errc::invalid_argument, "job file", *dups.found);
  return parse_job(j);
}

Result<Job> load_job(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(errc::io_error, "job file", path + ": cannot open", errno);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    return make_error(errc::io_error, "job file", path + ": read error", errno);
  return parse_job_text(text.str());
}

}  // namespace vufront::ops
