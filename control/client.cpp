#include "control/client.hpp"

#include <utility>

namespace vufront::control {

namespace {

Result<void> as_void(Result<json> r) {
  if (!r)
    return std::move(r).error();
  return ok();
}

/// A number as JSON: plain when it fits a double exactly, else a hex string.
json number(uint64_t v) {
  if (v <= (uint64_t{1} << 53))
    return v;
  return hex(v);
}

}  // namespace

Result<Client> Client::connect(const std::string& path, Options o) {
  auto fd = connect_to(path, o.connect_timeout);
  if (!fd)
    return std::move(fd).error();
  Client c(std::move(fd).value(), o);
  auto p = c.read_one(Clock::now() + o.connect_timeout, "greeting");
  if (!p)
    return std::move(p).error();
  json m = json::parse(p->text, nullptr, false);
  if (m.is_discarded() || !m.is_object() || !m.contains("event"))
    return make_error(errc::bad_message, "greeting", "the server's first message is not an event");
  if (m["event"] == "refused")
    return error_from_json(m.value("error", json::object()), "connect");
  if (m["event"] != "hello")
    return make_error(errc::bad_message, "greeting", "expected a hello event, got " + m["event"].dump());
  if (m.value("protocol", 0) != protocol_version)
    return make_error(errc::bad_message, "greeting",
                      "the server speaks protocol " + m.value("protocol", json(nullptr)).dump() +
                          ", this client " + std::to_string(protocol_version));
  c.greeting_ = std::move(m);
  return c;
}

std::vector<std::string> Client::devices() const {
  std::vector<std::string> out;
  if (greeting_.contains("devices") && greeting_["devices"].is_array())
    for (const auto& d : greeting_["devices"])
      if (d.is_object() && d.contains("id") && d["id"].is_string())
        out.push_back(d["id"].get<std::string>());
  return out;
}

Result<Packet> Client::read_one(Clock::time_point deadline, const char* what) {
  auto p = receive_packet(fd_.get(), deadline);
  if (!p)
    return std::move(p).error();
  if (!*p)
    return make_error(errc::disconnected, what, "vufront closed the control connection");
  if ((*p)->truncated)
    return make_error(errc::oversized, what, "a message from vufront is larger than the limit");
  return std::move(**p);
}

Result<void> Client::queue_event(Packet p, json message) {
  Event ev;
  ev.name = message["event"].is_string() ? message["event"].get<std::string>() : "";
  if (message.contains("device") && message["device"].is_string())
    ev.device = message["device"].get<std::string>();
  ev.message = std::move(message);
  ev.fds = std::move(p.fds);
  events_.push_back(std::move(ev));
  return ok();
}

Result<json> Client::call(const std::string& cmd, json args, const std::vector<int>& fds,
                          const std::optional<std::string>& device) {
  return call_with_timeout(opts_.reply_timeout, cmd, std::move(args), fds, device);
}

Result<json> Client::call_with_timeout(std::chrono::milliseconds timeout, const std::string& cmd,
                                       json args, const std::vector<int>& fds,
                                       const std::optional<std::string>& device) {
  auto r = exchange(timeout, cmd, std::move(args), fds, device);
  if (!r)
    return std::move(r).error();
  return std::move(r->result);
}

Result<Client::Reply> Client::exchange(std::chrono::milliseconds timeout, const std::string& cmd,
                                       json args, const std::vector<int>& fds,
                                       const std::optional<std::string>& device) {
  const uint64_t id = next_id_++;
  auto deadline = Clock::now() + timeout;
  if (auto s = send_packet(fd_.get(), to_wire(make_command(id, cmd, device, std::move(args))), fds,
                           deadline);
      !s) {
    Error e = std::move(s).error();
    e.request = cmd;
    return e;
  }
  for (;;) {
    auto p = read_one(deadline, cmd.c_str());
    if (!p) {
      Error e = std::move(p).error();
      e.request = cmd;
      if (e.code == errc::timeout)
        e.detail = "no reply within " + std::to_string(timeout.count()) + " ms";
      return e;
    }
    json m = json::parse(p->text, nullptr, false);
    if (m.is_discarded() || !m.is_object())
      return make_error(errc::bad_message, cmd, "vufront sent a message that is not a JSON object");
    if (m.contains("event")) {
      if (m["event"] == "transfer_progress") {
        deadline = Clock::now() + timeout;  // the transfer moves: the reply may take longer
        if (on_progress_) {
          Event ev;
          ev.name = "transfer_progress";
          if (m.contains("device") && m["device"].is_string())
            ev.device = m["device"].get<std::string>();
          ev.message = std::move(m);
          on_progress_(ev);
          continue;
        }
      }
      if (auto q = queue_event(std::move(p).value(), std::move(m)); !q)
        return std::move(q).error();
      continue;
    }
    if (!m.contains("id") || m["id"] != json(id))
      continue;  // a reply to a command of an earlier, timed-out call
    if (m.value("ok", false))
      return Reply{m.value("result", json::object()), std::move(p->fds)};
    return error_from_json(m.value("error", json::object()), cmd);
  }
}

Result<std::optional<Event>> Client::next_event(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!events_.empty()) {
      Event ev = std::move(events_.front());
      events_.pop_front();
      return std::optional<Event>{std::move(ev)};
    }
    auto p = receive_packet(fd_.get(), deadline);
    if (!p) {
      if (p.error().code == errc::timeout)
        return std::optional<Event>{};
      return std::move(p).error();
    }
    if (!*p)
      return make_error(errc::disconnected, "event", "vufront closed the control connection");
    json m = json::parse((*p)->text, nullptr, false);
    if (m.is_discarded() || !m.is_object() || !m.contains("event"))
      continue;  // a late reply nobody waits for
    if (auto q = queue_event(std::move(**p), std::move(m)); !q)
      return std::move(q).error();
  }
}

Result<Event> Client::wait_event(const std::string& name, const std::optional<std::string>& device,
                                 std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return make_error(errc::timeout, "event", "no " + name + " event within " +
                                                    std::to_string(timeout.count()) + " ms");
    auto ev = next_event(left);
    if (!ev)
      return std::move(ev).error();
    if (*ev && (*ev)->name == name && (!device || (*ev)->device == device))
      return std::move(**ev);
  }
}

// ---- typed commands ----------------------------------------------------------------

Result<json> Client::status(const std::optional<std::string>& device) {
  return call("status", json::object(), {}, device);
}

Result<void> Client::set_memory(const std::optional<std::string>& device,
                                const std::vector<MemoryRegion>& regions) {
  json list = json::array();
  std::vector<int> fds;
  for (const auto& r : regions) {
    list.push_back({{"gpa", number(r.gpa)}, {"size", number(r.size)}, {"offset", number(r.offset)},
                    {"fd", fds.size()}});
    fds.push_back(r.fd);
  }
  return as_void(call("set_memory", {{"regions", list}}, fds, device));
}

json Client::activation_args(const Activation& a, std::vector<int>& fds) {
  json queues = json::array();
  for (const auto& q : a.queues) {
    json one = {{"index", q.index}, {"size", q.size}, {"desc", number(q.desc)},
                {"driver", number(q.driver)}, {"device", number(q.device)}, {"kick", fds.size()}};
    fds.push_back(q.kick);
    if (q.call >= 0) {
      one["call"] = fds.size();
      fds.push_back(q.call);
    }
    queues.push_back(std::move(one));
  }
  json args = {{"features", number(a.features)}, {"queues", queues}};
  if (a.interrupt_fd >= 0) {
    args["interrupt_fd"] = fds.size();
    fds.push_back(a.interrupt_fd);
  }
  return args;
}

Result<void> Client::activate(const std::optional<std::string>& device, const Activation& a) {
  std::vector<int> fds;
  json args = activation_args(a, fds);
  return as_void(call("activate", std::move(args), fds, device));
}

Result<std::vector<uint8_t>> Client::read_config(const std::optional<std::string>& device,
                                                 uint32_t offset, uint32_t size) {
  auto r = call("read_config", {{"offset", offset}, {"size", size}}, {}, device);
  if (!r)
    return std::move(r).error();
  if (!r->contains("data") || !(*r)["data"].is_string())
    return make_error(errc::bad_message, "read_config", "the reply has no data");
  return from_hex((*r)["data"].get<std::string>(), "read_config: data");
}

Result<void> Client::write_config(const std::optional<std::string>& device, uint32_t offset,
                                  const std::vector<uint8_t>& data) {
  return as_void(call("write_config", {{"offset", offset}, {"data", to_hex(data)}}, {}, device));
}

Result<void> Client::sleep(const std::optional<std::string>& device) {
  return as_void(call("sleep", json::object(), {}, device));
}
Result<void> Client::wake(const std::optional<std::string>& device) {
  return as_void(call("wake", json::object(), {}, device));
}
Result<void> Client::reconnect(const std::optional<std::string>& device) {
  return as_void(call("reconnect", json::object(), {}, device));
}
Result<void> Client::reset(const std::optional<std::string>& device) {
  return as_void(call("reset", json::object(), {}, device));
}

Result<json> Client::snapshot(const std::optional<std::string>& device, const std::string& path,
                              std::chrono::seconds timeout) {
  return call_with_timeout(timeout + std::chrono::seconds(10), "snapshot",
                           {{"path", path}, {"timeout", timeout.count()}}, {}, device);
}

Result<json> Client::restore(const std::optional<std::string>& device, const std::string& path,
                             const std::optional<Activation>& activation, std::chrono::seconds timeout) {
  std::vector<int> fds;
  json args = {{"path", path}, {"timeout", timeout.count()}};
  if (activation)
    args["activation"] = activation_args(*activation, fds);
  return call_with_timeout(timeout + std::chrono::seconds(10), "restore", std::move(args), fds, device);
}

Result<json> Client::snapshot_to_fd(const std::optional<std::string>& device, int file_fd,
                                    std::chrono::seconds timeout) {
  return call_with_timeout(timeout + std::chrono::seconds(10), "snapshot",
                           {{"fd", 0}, {"timeout", timeout.count()}}, {file_fd}, device);
}

Result<json> Client::restore_from_fd(const std::optional<std::string>& device, int file_fd,
                                     const std::optional<Activation>& activation, std::chrono::seconds timeout) {
  std::vector<int> fds;
  json args = {{"timeout", timeout.count()}};
  if (activation)
    args["activation"] = activation_args(*activation, fds);
  args["fd"] = fds.size();
  fds.push_back(file_fd);
  return call_with_timeout(timeout + std::chrono::seconds(10), "restore", std::move(args), fds, device);
}

Result<DirtyLogFd> Client::dirty_log_start(const std::optional<std::string>& device) {
  auto r = exchange(opts_.reply_timeout, "dirty_log_start", json::object(), {}, device);
  if (!r)
    return std::move(r).error();
  const json& res = r->result;
  if (!res.contains("fd") || !res["fd"].is_number_unsigned() || !res.contains("size") ||
      !res["size"].is_number_unsigned())
    return make_error(errc::bad_message, "dirty_log_start", "the reply has no \"fd\" and \"size\"");
  const auto index = res["fd"].get<uint64_t>();
  if (index >= r->fds.size())
    return make_error(errc::bad_fds, "dirty_log_start", "the reply's fd " + std::to_string(index) +
                                                            " did not come with it");
  return DirtyLogFd{std::move(r->fds[index]), res["size"].get<uint64_t>()};
}

Result<void> Client::dirty_log_stop(const std::optional<std::string>& device) {
  return as_void(call("dirty_log_stop", json::object(), {}, device));
}

}  // namespace vufront::control
