#include "ops/checker.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include <caf/scoped_actor.hpp>

#include "ops/transfer_report.hpp"
#include "protocol/virtio_config.hpp"
#include "snapshot/reader.hpp"

namespace vufront::ops {

namespace {

using Clock = std::chrono::steady_clock;

actors::DeviceConfig device_config(const CheckOptions& o) {
  actors::DeviceConfig c;
  c.socket = o.socket;
  c.connect_timeout = o.timeout;
  c.timeouts.request = o.timeout;
  c.timeouts.drain = o.drain_timeout;
  if (o.timeouts)
    c.timeouts = *o.timeouts;
  c.reconnect = o.reconnect;
  c.listen = o.listen;
  c.wait_for_backend = o.wait_for_backend;
  return c;
}

/// Bytes that differ per queue and round, so stale data cannot pass.
std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = 0x9e3779b9u * (seed + 1);
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return out;
}

/// blk I/O: round r of queue q uses 4 KiB at slot (r mod 32, q); 32 slots
/// of 64 queues stay in the first 8 MiB of the disk.
constexpr unsigned io_slots = 32;
constexpr uint32_t io_len = 4096;
uint64_t io_sector(uint16_t q, unsigned round) {
  return (uint64_t{round % io_slots} * 64 + q) * (io_len / virtio::blk_sector_size);
}
std::vector<uint8_t> io_pattern(uint16_t q, unsigned round) {
  return pattern(io_len, round * 1000 + q);
}

namespace blk_bit {
constexpr unsigned seg_max = 2, blk_size = 6, flush = 9, mq = 12;
}
namespace net_bit {
constexpr unsigned mac = 5, status = 16, mq = 22;
}

/// The features a check needs that the back-end does not offer, by name, and
/// what to change: "... 0x1000 (MQ): it has one queue; check with --queues 1".
Error missing_features(uint64_t missing, DeviceKind kind) {
  std::string names;
  for (const auto& n : feature_names(missing, kind))
    names += (names.empty() ? "" : " ") + n;
  std::string hints;
  auto hint = [&](const std::string& h) { hints += "; " + h; };
  const unsigned mq = kind == DeviceKind::net ? net_bit::mq : blk_bit::mq;
  if (kind != DeviceKind::fs && has_bit(missing, mq))
    hint("it offers no multiqueue: check with --queues 1");
  if (has_bit(missing, feature::ring_packed))
    hint("it offers split rings only: check without --packed");
  if (has_bit(missing, feature::version_1))
    hint("it is a legacy (pre-1.0) virtio device, which vufront does not drive");
  return make_error(errc::not_negotiated, "negotiate",
                    "the back-end does not offer features the check needs: " + hex(missing) + " (" +
                        names + ")" + hints);
}

}  // namespace

Checker::Checker(caf::actor_system& sys, CheckOptions o)
    : sys_(sys),
      opts_(std::move(o)),
      session_(std::make_unique<actors::DeviceSession>(sys, device_config(opts_))) {
  if (opts_.on_session)
    opts_.on_session(*session_);
}

void Checker::set_timeout(std::chrono::milliseconds t) {
  timeout_ = t;
  session_->set_timeout(t);
}

uint16_t Checker::total_queues() const {
  switch (opts_.device) {
    case DeviceKind::net: return static_cast<uint16_t>(2 * opts_.queues);
    case DeviceKind::fs: return static_cast<uint16_t>(1 + opts_.queues);
    default: return opts_.queues;
  }
}

bool Checker::step(const std::string& name, const std::function<Result<std::string>()>& fn) {
  if (!failed_.empty())
    return false;
  auto t0 = Clock::now();
  auto r = fn();
  CheckStep s;
  s.name = name;
  s.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  s.ok = r.ok();
  if (r) {
    s.detail = std::move(r).value();
  } else {
    s.detail = r.error().message();
    s.error = r.error();
  }
  if (!s.ok)
    failed_ = name;
  if (opts_.report_events)
    s.events = drain_events();
  steps_.push_back(s);
  if (opts_.on_step)
    opts_.on_step(steps_.back());
  return s.ok;
}

std::vector<std::string> Checker::drain_events() {
  using Kind = actors::DeviceEvent::Kind;
  std::vector<std::string> out;
  if (!session_)
    return out;
  while (auto e = session_->next_event(std::chrono::milliseconds(0))) {
    if (e->kind == Kind::backend_lost || e->kind == Kind::resumed ||
        e->kind == Kind::resume_failed || e->kind == Kind::backend_notice)
      out.push_back(std::string(actors::to_string(e->kind)) + ": " + e->detail);
  }
  return out;
}

bool Checker::run() {
  return negotiate() && read_config() && set_memory() && activate() && io("I/O") && sleep() &&
         wake() && io("I/O after wake") && reset() && activate("activate again") &&
         io("I/O after reset");
}

bool Checker::negotiate() {
  return step("negotiate", [this] { return negotiate_session(false); });
}

Result<std::string> Checker::negotiate_session(bool keep_features) {
  actors::NegotiateOptions n;
  n.kind = opts_.device;
  n.queues = total_queues();
  n.max_queue_size = opts_.queue_size;
  n.inflight = opts_.inflight;
  auto info = session_->negotiate(n);
  if (!info)
    return std::move(info).error();
  info_ = *info;
  if (keep_features) {
    if (uint64_t missing = driver_features_ & ~info_.backend_features; missing != 0)
      return make_error(errc::not_negotiated, "negotiate",
                        "the new back-end does not offer features the guest driver acked: " +
                            hex(missing));
  } else {
    // What a guest driver would ack: the basics, and what was asked for.
    uint64_t want = bit(feature::version_1);
    uint64_t need = want;
    if (opts_.packed)
      need |= bit(feature::ring_packed);
    if (opts_.device == DeviceKind::blk) {
      want |= bit(blk_bit::seg_max) | bit(blk_bit::blk_size) | bit(blk_bit::flush);
      if (opts_.queues > 1)
        need |= bit(blk_bit::mq);
    } else if (opts_.device == DeviceKind::net) {
      want |= bit(net_bit::mac) | bit(net_bit::status);
      if (opts_.queues > 1)
        need |= bit(net_bit::mq);
    }
    want |= need;
    driver_features_ = info_.backend_features & want;
    if ((driver_features_ & need) != need)
      return missing_features(need & ~info_.backend_features, opts_.device);
  }
  window_.reset();
  if (!info_.shmem_sizes.empty()) {
    auto w = ShmemWindow::create(info_.shmem_sizes);
    if (!w)
      return std::move(w).error();
    window_ = std::move(w).value();
    if (auto r = session_->set_shared_memory_mapper(window_); !r)
      return std::move(r).error();
  }
  std::string detail = "features " + hex(info_.backend_features) + ", protocol features " +
                       hex(info_.protocol_features) + ", " + std::to_string(info_.queue_num) +
                       " queues";
  if (info_.backend_channel)
    detail += ", back-end channel";
  if (!info_.kind_doubt.empty())
    detail += "; warning: " + info_.kind_doubt;
  return detail;
}

bool Checker::read_config() {
  return step("read config", [this]() -> Result<std::string> {
    if (!has_bit(info_.protocol_features, protocol_feature::config))
      return std::string("skipped: the back-end does not offer CONFIG");
    auto cfg = session_->read_config(0, info_.config_size);
    if (!cfg)
      return std::move(cfg).error();
    std::string detail = std::to_string(cfg->size()) + " bytes";
    if (opts_.device == DeviceKind::blk && cfg->size() >= sizeof(uint64_t)) {
      uint64_t capacity = 0;
      std::memcpy(&capacity, cfg->data(), sizeof capacity);
      detail += ", capacity " + std::to_string(capacity) + " sectors";
    }
    return detail;
  });
}

bool Checker::set_memory() {
  return step("set memory", [this]() -> Result<std::string> {
    virtio::GuestDriverOptions g;
    g.queues = total_queues();
    g.queue_size = opts_.queue_size;
    g.ring = opts_.packed ? virtio::RingKind::packed : virtio::RingKind::split;
    g.ram_bytes = opts_.ram_bytes;
    auto guest = virtio::GuestDriver::create(g);
    if (!guest)
      return std::move(guest).error();
    guest_ = std::move(guest).value();
    auto spec = actors::memory_spec(guest_->memory());
    if (auto r = session_->set_memory(spec); !r)
      return std::move(r).error();
    uint64_t bytes = 0;
    for (const auto& r : spec)
      bytes += r.size;
    return std::to_string(spec.size()) + " region(s), " + std::to_string(bytes >> 20) + " MiB";
  });
}

bool Checker::activate(const std::string& name) {
  return step(name, [this]() -> Result<std::string> {
    auto spec = actors::activate_spec(*guest_, driver_features_, opts_.msix);
    if (auto r = session_->activate(spec); !r)
      return std::move(r).error();
    return std::to_string(spec.queues.size()) + " queue(s) of " + std::to_string(opts_.queue_size) +
           ", " + (opts_.packed ? "packed" : "split") + " rings, " +
           (opts_.msix ? "call fds to the back-end" : "interrupts forwarded by the worker");
  });
}

bool Checker::io(const std::string& name) {
  bool r = step(name, [this]() -> Result<std::string> {
    // The guest's I/O waits on the rings, not on the device: a device whose
    // back-end is lost for good (no reconnect, or given up) fails the step
    // at once instead of after its deadline. Asked from an actor of its
    // own: I/O may run on another thread than the one using the session.
    if (session_) {
      caf::scoped_actor self{sys_};
      std::optional<actors::DeviceStatus> st;
      self->request(session_->device(), std::chrono::seconds(5), actors::status_atom_v)
          .receive([&](actors::DeviceStatus& s) { st = std::move(s); }, [](caf::error&) {});
      if (st && st->state == actors::DeviceState::broken)
        return make_error(errc::broken, "I/O", "the back-end was lost: " + st->last_error);
    }
    switch (opts_.device) {
      case DeviceKind::net: return net_io();
      case DeviceKind::fs: return fs_io();
      default: return blk_io();
    }
  });
  ++round_;
  return r;
}

Result<std::string> Checker::blk_io() {
  bool flush = has_bit(driver_features_, blk_bit::flush);
  // This round's slot takes the place of the round that used it before.
  written_.erase(std::remove_if(written_.begin(), written_.end(),
                                [&](unsigned r) { return r % io_slots == round_ % io_slots; }),
                 written_.end());
  for (uint16_t q = 0; q < guest_->queue_count(); ++q) {
    auto data = io_pattern(q, round_);
    if (auto r = guest_->blk_write(q, io_sector(q, round_), data); !r)
      return std::move(r).error();
    if (flush)
      if (auto r = guest_->blk_flush(q); !r)
        return std::move(r).error();
    auto back = guest_->blk_read(q, io_sector(q, round_), io_len);
    if (!back)
      return std::move(back).error();
    if (*back != data)
      return make_error(errc::invalid_payload, "blk read",
                        "queue " + std::to_string(q) + ": data read back differs from data written");
    // What earlier rounds wrote must still be there (across sleep, reset
    // and restores into another back-end).
    for (unsigned earlier : written_) {
      auto old = guest_->blk_read(q, io_sector(q, earlier), io_len);
      if (!old)
        return std::move(old).error();
      if (*old != io_pattern(q, earlier))
        return make_error(errc::invalid_payload, "blk read",
                          "queue " + std::to_string(q) + ": the data written by I/O round " +
                              std::to_string(earlier) + " is gone (read back differs)");
    }
  }
  written_.push_back(round_);
  if (auto r = migration_writes_intact(); !r)
    return std::move(r).error();
  std::string detail = std::to_string(guest_->queue_count()) + " queue(s): 4 KiB written" +
                       (flush ? ", flushed" : "") + ", read back, equal";
  if (written_.size() > 1)
    detail += "; " + std::to_string(written_.size() - 1) + " earlier write(s) per queue intact";
  return detail;
}

Result<std::string> Checker::net_io() {
  for (uint16_t p = 0; p < opts_.queues; ++p)
    for (size_t len : {size_t{60}, size_t{1514}}) {
      auto frame = pattern(len, round_ * 1000 + p * 10 + static_cast<unsigned>(len));
      auto back = guest_->net_echo(p, frame);
      if (!back)
        return std::move(back).error();
      if (*back != frame)
        return make_error(errc::invalid_payload, "net rx",
                          "pair " + std::to_string(p) + ": the frame that came back differs");
    }
  return std::to_string(opts_.queues) + " queue pair(s): 60- and 1514-byte frames echoed, equal";
}

Result<std::string> Checker::fs_io() {
  constexpr uint16_t q = 1;  // first request queue (0 is hiprio)
  namespace fuse = virtio::fuse;
  uint64_t unique = 1 + round_ * 100;
  auto call = [&](auto build) -> Result<fuse::Reply> {
    guest_->scratch(q).reset();
    auto reply = guest_->fuse_call(q, build(guest_->scratch(q)));
    if (reply && reply->error != 0)
      return make_error(errc::backend_failure, "FUSE", "error " + std::to_string(reply->error));
    return reply;
  };
  std::string detail;
  if (!fuse_initialised_) {
    auto init = call([&](auto& s) { return fuse::init(s, unique++); });
    if (!init)
      return std::move(init).error();
    auto out = fuse::decode_init(init->body);
    if (!out)
      return std::move(out).error();
    fuse_initialised_ = true;
    detail = "FUSE " + std::to_string(out->major) + "." + std::to_string(out->minor);
  } else {
    detail = "FUSE session kept";
  }
  if (opts_.fs_file.empty())
    return detail;
  auto entry_reply = call([&](auto& s) {
    return fuse::lookup(s, unique++, fuse::root_nodeid, opts_.fs_file);
  });
  if (!entry_reply)
    return std::move(entry_reply).error();
  auto entry = fuse::decode_entry(entry_reply->body);
  if (!entry)
    return std::move(entry).error();
  auto opened_reply = call([&](auto& s) { return fuse::open(s, unique++, entry->nodeid, 0); });
  if (!opened_reply)
    return std::move(opened_reply).error();
  auto opened = fuse::decode_open(opened_reply->body);
  if (!opened)
    return std::move(opened).error();
  auto data = call([&](auto& s) {
    return fuse::read(s, unique++, entry->nodeid, opened->fh, 0, 4096);
  });
  if (!data)
    return std::move(data).error();
  if (data->body.size() != std::min<uint64_t>(entry->attr.size, 4096))
    return make_error(errc::invalid_payload, "FUSE_READ",
                      "read " + std::to_string(data->body.size()) + " bytes of a " +
                          std::to_string(entry->attr.size) + "-byte file");
  return detail + ", read " + std::to_string(data->body.size()) + " bytes of " + opts_.fs_file;
}

bool Checker::sleep() {
  return step("sleep", [this]() -> Result<std::string> {
    if (auto r = session_->sleep(); !r)
      return std::move(r).error();
    auto st = session_->status();
    if (!st)
      return std::move(st).error();
    std::string bases;
    for (const auto& q : st->queues) {
      uint32_t expected = guest_->queue(q.index).next_avail_base();
      if (q.base != expected)
        return make_error(errc::invalid_payload, "GET_VRING_BASE",
                          "queue " + std::to_string(q.index) + " stopped at base " + hex(q.base) +
                              ", the driver is at " + hex(expected));
      if (bases.size() < 60)
        bases += (bases.empty() ? "" : " ") + std::string("q") + std::to_string(q.index) + "=" +
                 hex(q.base);
    }
    std::string detail = "rings stopped at the driver's next index: " + bases;
    // what the device works around in this back-end, each said once
    for (; notices_shown_ < st->notices.size(); ++notices_shown_)
      detail += "; note: " + st->notices[notices_shown_];
    return detail;
  });
}

bool Checker::wake() {
  return step("wake", [this]() -> Result<std::string> {
    if (auto r = session_->wake(); !r)
      return std::move(r).error();
    return std::string("rings restarted at the saved bases");
  });
}

bool Checker::reset() {
  return step("reset", [this]() -> Result<std::string> {
    if (auto r = session_->reset(); !r)
      return std::move(r).error();
    if (auto r = guest_->reset_queues(); !r)
      return std::move(r).error();
    // A reset device starts a new FUSE session.
    fuse_initialised_ = false;
    return std::string("device reset, fresh rings");
  });
}

// ---- moving the device: snapshot and restore -------------------------------------

bool Checker::snapshot(const actors::SnapshotOptions& o, const std::string& name) {
  return step(name, [&]() -> Result<std::string> {
    auto info = session_->snapshot(o);
    if (!info)
      return std::move(info).error();
    transfer_ = std::move(info).value();
    transfer_.path = o.path;
    return "saved to " + transfer_.path + ": " + transfer_summary(transfer_);
  });
}

Result<void> Checker::fits_guest(const snapshot::Manifest& m) const {
  constexpr const char* op = "restore";
  if (m.kind != opts_.device)
    return make_error(errc::invalid_argument, op,
                      std::string("the snapshot is of a ") + name(m.kind) + " device, this one is " +
                          name(opts_.device));
  // PROTOCOL_FEATURES (bit 30) is the device's business, not the driver's.
  const uint64_t mask = ~bit(feature::protocol_features);
  if ((m.features & mask) != (driver_features_ & mask))
    return make_error(errc::invalid_argument, op,
                      "the snapshot's driver features " + hex(m.features & mask) +
                          " are not this guest driver's " + hex(driver_features_ & mask));
  if (m.queues.size() != guest_->queue_count())
    return make_error(errc::invalid_argument, op,
                      "the snapshot has " + std::to_string(m.queues.size()) +
                          " queue(s), the guest " + std::to_string(guest_->queue_count()) +
                          (m.queues.empty() ? " (a snapshot without activation: use `vufront restore`)"
                                            : ""));
  for (const auto& q : m.queues) {
    if (q.index >= guest_->queue_count())
      return make_error(errc::invalid_argument, op,
                        "the snapshot has queue " + std::to_string(q.index) + ", the guest " +
                            std::to_string(guest_->queue_count()) + " queue(s)");
    auto& dq = guest_->queue(q.index);
    if (q.size != dq.size())
      return make_error(errc::invalid_argument, op,
                        "queue " + std::to_string(q.index) + " has " + std::to_string(q.size) +
                            " entries in the snapshot, " + std::to_string(dq.size()) +
                            " in the guest");
    if (q.base != dq.next_avail_base())
      return make_error(errc::invalid_argument, op,
                        "queue " + std::to_string(q.index) + " stopped at base " + hex(q.base) +
                            " in the snapshot, the guest's driver is at " +
                            hex(dq.next_avail_base()) +
                            ": the snapshot is not of the guest's current point");
  }
  return vufront::ok();
}

bool Checker::restore(const std::string& socket, actors::RestoreOptions o, const std::string& name) {
  return step(name, [&] { return restore_into(socket, std::move(o)); });
}

Result<void> Checker::new_session(const std::string& socket) {
  // The old device (and its connection) goes first, so a back-end
  // restarted on the same socket can take the new connection.
  session_.reset();
  opts_.socket = socket;
  session_ = std::make_unique<actors::DeviceSession>(sys_, device_config(opts_));
  notices_shown_ = 0;
  if (timeout_)
    session_->set_timeout(*timeout_);
  if (opts_.on_session)
    opts_.on_session(*session_);
  if (auto r = negotiate_session(true); !r)
    return std::move(r).error();
  return session_->set_memory(actors::memory_spec(guest_->memory()));
}

Result<std::string> Checker::restore_into(const std::string& socket, actors::RestoreOptions o) {
  if (!guest_)
    return make_error(errc::bad_state, "restore", "no guest driver yet: activate the device first");
  {
    auto file = snapshot::SnapshotReader::open(o.path);
    if (!file)
      return std::move(file).error();
    if (auto r = fits_guest(file->manifest()); !r)
      return std::move(r).error();
  }
  if (auto r = new_session(socket); !r)
    return std::move(r).error();
  o.activation = actors::activate_spec(*guest_, driver_features_, opts_.msix);
  auto info = session_->restore(o);
  if (!info)
    return std::move(info).error();
  transfer_ = std::move(info).value();
  transfer_.path = o.path;
  std::string bases;
  for (const auto& q : transfer_.queues)
    if (bases.size() < 60)
      bases += (bases.empty() ? "" : " ") + std::string("q") + std::to_string(q.index) + "=" +
               hex(q.base);
  return "into " + socket + ": " + transfer_summary(transfer_) + "; sleeping, rings at " +
         (bases.empty() ? std::string("the snapshot's bases") : bases);
}

}  // namespace vufront::ops
