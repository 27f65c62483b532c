#include "app/checker.hpp"

#include <cstring>
#include <utility>

#include "protocol/virtio_config.hpp"

namespace vufront::app {

namespace {

using Clock = std::chrono::steady_clock;

actors::DeviceConfig device_config(const CheckOptions& o) {
  actors::DeviceConfig c;
  c.socket = o.socket;
  c.connect_timeout = o.timeout;
  c.timeouts.request = o.timeout;
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

namespace blk_bit {
constexpr unsigned seg_max = 2, blk_size = 6, flush = 9, mq = 12;
}
namespace net_bit {
constexpr unsigned mac = 5, status = 16, mq = 22;
}

}  // namespace

Checker::Checker(caf::actor_system& sys, CheckOptions o)
    : opts_(std::move(o)), session_(sys, device_config(opts_)) {}

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
  s.detail = r ? std::move(r).value() : r.error().message();
  if (!s.ok)
    failed_ = name;
  steps_.push_back(s);
  if (opts_.on_step)
    opts_.on_step(steps_.back());
  return s.ok;
}

bool Checker::run() {
  return negotiate() && read_config() && set_memory() && activate() && io("I/O") && sleep() &&
         wake() && io("I/O after wake") && reset() && activate("activate again") &&
         io("I/O after reset");
}

bool Checker::negotiate() {
  return step("negotiate", [this]() -> Result<std::string> {
    actors::NegotiateOptions n;
    n.kind = opts_.device;
    n.queues = total_queues();
    n.max_queue_size = opts_.queue_size;
    auto info = session_.negotiate(n);
    if (!info)
      return std::move(info).error();
    info_ = *info;
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
      return make_error(errc::not_negotiated, "negotiate",
                        "the back-end does not offer features the check needs: " +
                            hex(need & ~info_.backend_features));
    if (!info_.shmem_sizes.empty()) {
      auto w = ShmemWindow::create(info_.shmem_sizes);
      if (!w)
        return std::move(w).error();
      window_ = std::move(w).value();
      if (auto r = session_.set_shared_memory_mapper(window_); !r)
        return std::move(r).error();
    }
    std::string detail = "features " + hex(info_.backend_features) + ", protocol features " +
                         hex(info_.protocol_features) + ", " + std::to_string(info_.queue_num) +
                         " queues";
    if (info_.backend_channel)
      detail += ", back-end channel";
    return detail;
  });
}

bool Checker::read_config() {
  return step("read config", [this]() -> Result<std::string> {
    if (!has_bit(info_.protocol_features, protocol_feature::config))
      return std::string("skipped: the back-end does not offer CONFIG");
    auto cfg = session_.read_config(0, info_.config_size);
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
    auto guest = virtio::GuestDriver::create(g);
    if (!guest)
      return std::move(guest).error();
    guest_ = std::move(guest).value();
    auto spec = actors::memory_spec(guest_->memory());
    if (auto r = session_.set_memory(spec); !r)
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
    if (auto r = session_.activate(spec); !r)
      return std::move(r).error();
    return std::to_string(spec.queues.size()) + " queue(s) of " + std::to_string(opts_.queue_size) +
           ", " + (opts_.packed ? "packed" : "split") + " rings, " +
           (opts_.msix ? "call fds to the back-end" : "interrupts forwarded by the worker");
  });
}

bool Checker::io(const std::string& name) {
  bool r = step(name, [this]() -> Result<std::string> {
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
  constexpr uint32_t len = 4096;
  bool flush = has_bit(driver_features_, blk_bit::flush);
  for (uint16_t q = 0; q < guest_->queue_count(); ++q) {
    uint64_t sector = (uint64_t{q} * 16 + round_) * (len / virtio::blk_sector_size);
    auto data = pattern(len, round_ * 1000 + q);
    if (auto r = guest_->blk_write(q, sector, data); !r)
      return std::move(r).error();
    if (flush)
      if (auto r = guest_->blk_flush(q); !r)
        return std::move(r).error();
    auto back = guest_->blk_read(q, sector, len);
    if (!back)
      return std::move(back).error();
    if (*back != data)
      return make_error(errc::invalid_payload, "blk read",
                        "queue " + std::to_string(q) + ": data read back differs from data written");
  }
  return std::to_string(guest_->queue_count()) + " queue(s): 4 KiB written" +
         (flush ? ", flushed" : "") + ", read back, equal";
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
    if (auto r = session_.sleep(); !r)
      return std::move(r).error();
    auto st = session_.status();
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
    return "rings stopped at the driver's next index: " + bases;
  });
}

bool Checker::wake() {
  return step("wake", [this]() -> Result<std::string> {
    if (auto r = session_.wake(); !r)
      return std::move(r).error();
    return std::string("rings restarted at the saved bases");
  });
}

bool Checker::reset() {
  return step("reset", [this]() -> Result<std::string> {
    if (auto r = session_.reset(); !r)
      return std::move(r).error();
    if (auto r = guest_->reset_queues(); !r)
      return std::move(r).error();
    // A reset device starts a new FUSE session.
    fuse_initialised_ = false;
    return std::string("device reset, fresh rings");
  });
}

}  // namespace vufront::app
