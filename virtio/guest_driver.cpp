#include "virtio/guest_driver.hpp"

#include <cerrno>
#include <utility>

namespace vufront::virtio {

namespace {

constexpr uint64_t rings_slot = 1 << 20;    // per queue, rings + indirect tables
constexpr uint64_t scratch_slot = 1 << 20;  // per queue, request buffers
constexpr uint16_t indirect_entries = 8;

template <class T>
Error fail(Result<T>&& r) {
  return std::move(r).error();
}

}  // namespace

Result<std::unique_ptr<GuestDriver>> GuestDriver::create(const GuestDriverOptions& o) {
  if (o.queues == 0)
    return make_error(errc::invalid_argument, "guest driver", "no queues");
  std::unique_ptr<GuestDriver> g(new GuestDriver(o));
  const uint64_t ram = (o.ram_bytes + 0xfff) & ~uint64_t{0xfff};
  uint64_t size = (rings_slot + scratch_slot) * o.queues + ram;
  if (auto r = g->mem_.add_region(guest_base, size); !r)
    return fail(std::move(r));
  g->intx_ = share(make_eventfd());
  if (!*g->intx_)
    return make_error(errc::io_error, "guest driver", "eventfd", errno);
  uint16_t indirect = o.indirect ? indirect_entries : 0;
  for (uint16_t i = 0; i < o.queues; ++i) {
    auto areas = place_rings(g->mem_, guest_base + i * rings_slot, rings_slot, o.ring,
                             o.queue_size, indirect);
    if (!areas)
      return fail(std::move(areas));
    auto driver = DriverQueue::create(g->mem_, o.ring, o.queue_size, *areas);
    if (!driver)
      return fail(std::move(driver));
    auto scratch = GuestScratch::create(g->mem_, guest_base + o.queues * rings_slot + i * scratch_slot,
                                        scratch_slot);
    if (!scratch)
      return fail(std::move(scratch));
    Queue q{std::move(*driver), std::move(*scratch), share(make_eventfd()), share(make_eventfd())};
    if (!*q.kick || !*q.call)
      return make_error(errc::io_error, "guest driver", "eventfd", errno);
    g->queues_.push_back(std::move(q));
  }
  return g;
}

uint64_t GuestDriver::ram_gpa() const noexcept {
  return guest_base + (rings_slot + scratch_slot) * opts_.queues;
}

Result<GuestMemory> GuestDriver::move_to(GuestMemory dest) {
  for (const auto& q : queues_)
    if (q.driver.in_flight() != 0)
      return make_error(errc::bad_state, "guest driver move",
                        "a request is in flight on a queue: the rings must be stopped first");
  for (const GuestRegion* r : mem_.regions()) {
    const GuestRegion* d = dest.region(r->gpa());
    if (d == nullptr || d->size() != r->size())
      return make_error(errc::invalid_argument, "guest driver move",
                        "the destination lacks the region at " + std::to_string(r->gpa()));
  }
  GuestMemory old = std::move(mem_);
  mem_ = std::move(dest);
  for (auto& q : queues_) {
    const DriverQueue& d = q.driver;
    auto moved = DriverQueue::resume(mem_, d.kind(), d.size(), d.areas(), d.next_avail_base());
    if (!moved)
      return fail(std::move(moved));
    auto scratch = GuestScratch::create(mem_, q.scratch.gpa(), q.scratch.size());
    if (!scratch)
      return fail(std::move(scratch));
    q.driver = std::move(*moved);
    q.scratch = std::move(*scratch);
  }
  return old;
}

Result<void> GuestDriver::reset_queues() {
  for (auto& q : queues_) {
    auto fresh = DriverQueue::create(mem_, opts_.ring, opts_.queue_size, q.driver.areas());
    if (!fresh)
      return fail(std::move(fresh));
    q.driver = std::move(*fresh);
  }
  return ok();
}

Deadline GuestDriver::deadline() const { return std::chrono::steady_clock::now() + opts_.io_timeout; }

int GuestDriver::wait_fd(uint16_t q) const {
  return use_intx_ ? intx_->get() : queues_.at(q).call->get();
}

Result<Used> GuestDriver::wait(uint16_t q, uint16_t id) {
  auto used = queues_.at(q).driver.wait_used(wait_fd(q), deadline());
  if (!used) {
    Error e = std::move(used).error();
    e.detail = "queue " + std::to_string(q) + ": " + e.detail;  // which ring stalled
    return e;
  }
  if (used->id != id)
    return make_error(errc::invalid_payload, "used ring",
                      "queue " + std::to_string(q) + ": completion for id " +
                          std::to_string(used->id) + ", expected " + std::to_string(id));
  return used;
}

Result<Used> GuestDriver::submit(uint16_t q, const std::vector<Buffer>& chain) {
  if (q >= queues_.size())
    return make_error(errc::invalid_argument, "submit", "no queue " + std::to_string(q));
  Queue& queue = queues_[q];
  auto id = queue.driver.add_chain(chain, opts_.indirect);
  if (!id)
    return fail(std::move(id));
  if (auto r = queue.driver.kick(queue.kick->get()); !r)
    return std::move(r).error();
  return wait(q, *id);
}

Result<BlkRequest> GuestDriver::blk_request(uint16_t q, Result<BlkRequest> req) {
  if (!req)
    return req;
  auto used = submit(q, req->chain);
  if (!used)
    return fail(std::move(used));
  if (auto st = blk_status(scratch(q), *req, used->len); !st)
    return std::move(st).error();
  return req;
}

Result<void> GuestDriver::blk_write(uint16_t q, uint64_t sector, const std::vector<uint8_t>& d) {
  scratch(q).reset();
  auto req = blk_request(q, virtio::blk_write(scratch(q), sector, d));
  if (!req)
    return fail(std::move(req));
  return ok();
}

Result<std::vector<uint8_t>> GuestDriver::blk_read(uint16_t q, uint64_t sector, uint32_t len) {
  scratch(q).reset();
  auto req = blk_request(q, virtio::blk_read(scratch(q), sector, len));
  if (!req)
    return fail(std::move(req));
  return blk_data(scratch(q), *req);
}

Result<void> GuestDriver::blk_flush(uint16_t q) {
  scratch(q).reset();
  auto req = blk_request(q, virtio::blk_flush(scratch(q)));
  if (!req)
    return fail(std::move(req));
  return ok();
}

Result<std::string> GuestDriver::blk_get_id(uint16_t q) {
  scratch(q).reset();
  auto req = blk_request(q, virtio::blk_get_id(scratch(q)));
  if (!req)
    return fail(std::move(req));
  std::string id;
  for (uint8_t b : blk_data(scratch(q), *req)) {
    if (b == 0)
      break;
    id.push_back(static_cast<char>(b));
  }
  return id;
}

Result<std::vector<uint8_t>> GuestDriver::net_echo(uint16_t pair, const std::vector<uint8_t>& frame) {
  uint16_t rx = static_cast<uint16_t>(2 * pair);
  uint16_t tx = static_cast<uint16_t>(rx + 1);
  if (tx >= queues_.size())
    return make_error(errc::invalid_argument, "net_echo", "no queue pair " + std::to_string(pair));
  scratch(rx).reset();
  scratch(tx).reset();
  auto buf = net_rx_buffer(scratch(rx));
  if (!buf)
    return fail(std::move(buf));
  auto rx_id = queue(rx).add_chain(buf->chain, opts_.indirect);
  if (!rx_id)
    return fail(std::move(rx_id));
  if (auto r = queue(rx).kick(kick(rx)->get()); !r)
    return std::move(r).error();
  auto out = net_tx_frame(scratch(tx), frame);
  if (!out)
    return fail(std::move(out));
  if (auto sent = submit(tx, out->chain); !sent)
    return fail(std::move(sent));
  auto used = wait(rx, *rx_id);
  if (!used)
    return fail(std::move(used));
  auto got = net_rx_frame(scratch(rx), *buf, used->len);
  if (!got)
    return fail(std::move(got));
  return std::move(got->frame);
}

Result<fuse::Reply> GuestDriver::fuse_call(uint16_t q, Result<fuse::Request> req) {
  if (!req)
    return fail(std::move(req));
  auto used = submit(q, req->chain);
  if (!used)
    return fail(std::move(used));
  return fuse::reply(scratch(q), *req, used->len);
}

}  // namespace vufront::virtio
