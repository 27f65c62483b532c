#include "tests/integration/direct_device.hpp"

#include "protocol/mem_table.hpp"

namespace vufront::test {

namespace {

constexpr uint64_t guest_base = 0x1'0000'0000;  // != 0 and != any user address
constexpr uint64_t per_queue_rings = 1 << 20;
constexpr uint64_t per_queue_scratch = 1 << 20;
constexpr auto io_deadline = std::chrono::seconds(10);

template <class T>
Error fail(Result<T>&& r) {
  return std::move(r).error();
}

}  // namespace

Result<std::unique_ptr<DirectDevice>> DirectDevice::start(const DirectDeviceOptions& o) {
  auto client = BackendClient::connect(o.socket, std::chrono::seconds(5));
  if (!client)
    return fail(std::move(client));
  if (auto r = client->set_owner(); !r)
    return std::move(r).error();
  auto offered = client->get_features();
  if (!offered)
    return fail(std::move(offered));

  uint64_t want = bit(feature::version_1) | bit(feature::protocol_features);
  if (o.ring == virtio::RingKind::packed)
    want |= bit(feature::ring_packed);
  if (o.indirect)
    want |= bit(feature::indirect_desc);
  uint64_t optional = 0;  // taken when offered
  if (o.kind == DeviceKind::blk) {
    optional = bit(9) /*FLUSH*/ | bit(6) /*BLK_SIZE*/ | bit(2) /*SEG_MAX*/;
    want |= o.queues > 1 ? bit(12) /*MQ*/ : 0;
  } else if (o.kind == DeviceKind::net) {
    optional = bit(5) /*MAC*/ | bit(16) /*STATUS*/;
    want |= o.queues > 2 ? bit(22) /*MQ*/ : 0;
  }
  want |= optional;
  uint64_t acked = *offered & want;
  uint64_t required = want & ~optional;
  if ((acked & required) != required)
    return make_error(errc::not_negotiated, "GET_FEATURES",
                      "back-end lacks features the test needs: offered 0x" +
                          std::to_string(*offered));

  if (has_bit(*offered, feature::protocol_features)) {
    auto pf = client->get_protocol_features();
    if (!pf)
      return fail(std::move(pf));
    uint64_t pwant = bit(protocol_feature::mq) | bit(protocol_feature::reply_ack) |
                     bit(protocol_feature::config) | bit(protocol_feature::status);
    if (o.backend_channel)
      pwant |= bit(protocol_feature::backend_req) | bit(protocol_feature::backend_send_fd) |
               bit(protocol_feature::shmem);
    if (auto r = client->set_protocol_features(*pf & pwant); !r)
      return std::move(r).error();
  }
  std::optional<Connection> channel;
  if (o.backend_channel) {
    if (!client->protocol_feature(protocol_feature::backend_req))
      return make_error(errc::not_negotiated, "SET_BACKEND_REQ_FD", "back-end offers no BACKEND_REQ");
    auto pair = make_socketpair();
    if (!pair.first)
      return make_error(errc::io_error, "SET_BACKEND_REQ_FD", "socketpair", errno);
    if (auto r = client->set_backend_req_fd(pair.second.get()); !r)
      return std::move(r).error();
    channel.emplace(std::move(pair.first));
  }
  if (client->protocol_feature(protocol_feature::mq)) {
    auto n = client->get_queue_num();
    if (!n)
      return fail(std::move(n));
    if (*n < o.queues)
      return make_error(errc::invalid_argument, "GET_QUEUE_NUM",
                        "back-end has " + std::to_string(*n) + " queues, test needs " +
                            std::to_string(o.queues));
  }
  if (auto r = client->set_features(acked); !r)
    return std::move(r).error();

  GuestMemory mem;
  uint64_t size = (per_queue_rings + per_queue_scratch) * o.queues + (2 << 20);
  if (auto r = mem.add_region(guest_base, size); !r)
    return fail(std::move(r));
  if (auto r = client->set_mem_table(mem_table(mem), mem.fds()); !r)
    return std::move(r).error();

  std::unique_ptr<DirectDevice> dev(new DirectDevice(std::move(*client), std::move(mem)));
  dev->channel_ = std::move(channel);
  for (uint16_t i = 0; i < o.queues; ++i) {
    uint64_t rings = guest_base + i * per_queue_rings;
    uint64_t scratch = guest_base + o.queues * per_queue_rings + i * per_queue_scratch;
    if (auto r = dev->setup_queue(i, o, rings, scratch); !r)
      return std::move(r).error();
  }
  BackendClient& c = dev->client_;
  if (c.protocol_feature(protocol_feature::status)) {
    if (auto r = c.set_status(status_bit::acknowledge | status_bit::driver |
                              status_bit::features_ok | status_bit::driver_ok);
        !r)
      return std::move(r).error();
  }
  if (o.enable_rings && has_bit(c.acked_features(), feature::protocol_features))
    for (uint16_t i = 0; i < o.queues; ++i)
      if (auto r = c.set_vring_enable(i, true); !r)
        return std::move(r).error();
  return dev;
}

Result<void> DirectDevice::setup_queue(uint16_t index, const DirectDeviceOptions& o,
                                       uint64_t rings_gpa, uint64_t scratch_gpa) {
  uint16_t indirect_max = o.indirect ? 8 : 0;
  auto areas = virtio::place_rings(mem_, rings_gpa, per_queue_rings, o.ring, o.queue_size,
                                   indirect_max);
  if (!areas)
    return fail(std::move(areas));
  auto driver = virtio::DriverQueue::create(mem_, o.ring, o.queue_size, *areas);
  if (!driver)
    return fail(std::move(driver));
  auto scratch = virtio::GuestScratch::create(mem_, scratch_gpa, per_queue_scratch);
  if (!scratch)
    return fail(std::move(scratch));
  auto addr = virtio::vring_addr(mem_, index, *areas);
  if (!addr)
    return fail(std::move(addr));
  Queue q{std::move(*driver), std::move(*scratch), make_eventfd(), make_eventfd(), {}};
  if (!q.kick || !q.call)
    return make_error(errc::io_error, "eventfd", "cannot create kick/call eventfds", errno);
  if (auto r = client_.set_vring_num(index, o.queue_size); !r)
    return r;
  if (auto r = client_.set_vring_addr(*addr); !r)
    return r;
  if (auto r = client_.set_vring_base(index, q.driver.next_avail_base()); !r)
    return r;
  if (auto r = client_.set_vring_call(index, q.call.get()); !r)
    return r;
  if (auto r = client_.set_vring_kick(index, q.kick.get()); !r)
    return r;
  queues_.push_back(std::move(q));
  return ok();
}

Result<virtio::Used> DirectDevice::submit(uint16_t q, const std::vector<virtio::Buffer>& chain) {
  Queue& queue = queues_.at(q);
  auto id = queue.driver.add_chain(chain, queue.driver.areas().indirect_max > 0);
  if (!id)
    return fail(std::move(id));
  if (auto r = queue.driver.kick(queue.kick.get()); !r)
    return std::move(r).error();
  auto used = queue.driver.wait_used(queue.call.get(), std::chrono::steady_clock::now() + io_deadline);
  if (!used)
    return used;
  if (used->id != *id)
    return make_error(errc::invalid_payload, "used ring",
                      "completion for id " + std::to_string(used->id) + ", expected " +
                          std::to_string(*id));
  return used;
}

Result<virtio::BlkRequest> DirectDevice::blk_request(
    uint16_t q, const std::function<Result<virtio::BlkRequest>(virtio::GuestScratch&)>& build) {
  auto& s = scratch(q);
  s.reset();
  auto req = build(s);
  if (!req)
    return req;
  auto used = submit(q, req->chain);
  if (!used)
    return fail(std::move(used));
  if (auto st = virtio::blk_status(s, *req, used->len); !st)
    return std::move(st).error();
  return req;
}

Result<void> DirectDevice::blk_write(uint16_t q, uint64_t sector, const std::vector<uint8_t>& d) {
  auto req = blk_request(q, [&](auto& s) { return virtio::blk_write(s, sector, d); });
  if (!req)
    return fail(std::move(req));
  return ok();
}

Result<std::vector<uint8_t>> DirectDevice::blk_read(uint16_t q, uint64_t sector, uint32_t len) {
  auto req = blk_request(q, [&](auto& s) { return virtio::blk_read(s, sector, len); });
  if (!req)
    return fail(std::move(req));
  return virtio::blk_data(scratch(q), *req);
}

Result<void> DirectDevice::blk_flush(uint16_t q) {
  auto req = blk_request(q, [](auto& s) { return virtio::blk_flush(s); });
  if (!req)
    return fail(std::move(req));
  return ok();
}

Result<std::string> DirectDevice::blk_get_id(uint16_t q) {
  auto req = blk_request(q, [](auto& s) { return virtio::blk_get_id(s); });
  if (!req)
    return fail(std::move(req));
  std::string id;
  for (uint8_t b : virtio::blk_data(scratch(q), *req)) {
    if (b == 0)
      break;
    id.push_back(static_cast<char>(b));
  }
  return id;
}

Result<void> DirectDevice::net_send(uint16_t p, const std::vector<uint8_t>& frame,
                                    bool split_header) {
  const uint16_t q = static_cast<uint16_t>(2 * p + 1);
  auto& s = scratch(q);
  s.reset();
  auto b = virtio::net_tx_frame(s, frame);
  if (!b)
    return fail(std::move(b));
  std::vector<virtio::Buffer> chain = b->chain;
  if (split_header) {
    const uint32_t hdr = sizeof(virtio::NetHdrV1);
    chain = {{b->gpa, hdr, false}, {b->gpa + hdr, b->len - hdr, false}};
  }
  auto used = submit(q, chain);
  if (!used)
    return fail(std::move(used));
  if (used->len != 0)
    return make_error(errc::invalid_payload, "net tx",
                      "used len " + std::to_string(used->len) + " for a TX buffer");
  return ok();
}

Result<void> DirectDevice::net_post_rx(uint16_t p, uint32_t len) {
  Queue& queue = queues_.at(2u * p);
  if (queue.rx.empty())
    queue.scratch.reset();
  auto b = virtio::net_rx_buffer(queue.scratch, len);
  if (!b)
    return fail(std::move(b));
  auto id = queue.driver.add_chain(b->chain, queue.driver.areas().indirect_max > 0);
  if (!id)
    return fail(std::move(id));
  queue.rx.emplace(*id, std::move(*b));
  return queue.driver.kick(queue.kick.get());
}

Result<virtio::NetFrame> DirectDevice::net_receive(uint16_t p) {
  Queue& queue = queues_.at(2u * p);
  if (queue.rx.empty())
    if (auto r = net_post_rx(p); !r)
      return std::move(r).error();
  auto used = queue.driver.wait_used(queue.call.get(), std::chrono::steady_clock::now() + io_deadline);
  if (!used)
    return fail(std::move(used));
  auto it = queue.rx.find(used->id);
  if (it == queue.rx.end())
    return make_error(errc::invalid_payload, "net rx",
                      "completion for id " + std::to_string(used->id) + ", not a posted buffer");
  const virtio::NetBuffer b = std::move(it->second);
  queue.rx.erase(it);
  return virtio::net_rx_frame(queue.scratch, b, used->len);
}

Result<uint32_t> DirectDevice::stop_queue(uint16_t q) {
  return client_.get_vring_base(q, queues_.at(q).driver.kind() == virtio::RingKind::packed);
}

}  // namespace vufront::test
