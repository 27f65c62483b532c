// vufront-backend --device net, the echoing virtio-net back-end, driven
// directly through BackendClient: frames of several sizes come back
// identical on split and packed rings (header inline or in its own buffer,
// direct or indirect chains), two queue pairs at once, the backlog for frames
// sent before any RX buffer, oversized and malformed frames, config space,
// the first-pair auto-enable and device state.
#include <doctest/doctest.h>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backend/device_state.hpp"
#include "protocol/virtio_config.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/direct_device.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

constexpr uint8_t default_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/// An Ethernet frame of `size` bytes (>= 16) to the device's MAC, its
/// payload numbered with `n` and otherwise patterned.
std::vector<uint8_t> frame(size_t size, uint32_t n) {
  std::vector<uint8_t> f = pattern(size, static_cast<uint8_t>(n * 7 + size));
  std::copy(default_mac, default_mac + 6, f.begin());
  const uint8_t src[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
  std::copy(src, src + 6, f.begin() + 6);
  f[12] = 0x88;  // local experimental ethertype
  f[13] = 0xb5;
  for (int i = 0; i < 2; ++i)
    f[14 + i] = static_cast<uint8_t>(n >> (8 * i));
  return f;
}

/// Receives one frame on `pair` and checks it equals `want` with a plain header.
void expect_echo(DirectDevice& dev, uint16_t pair, const std::vector<uint8_t>& want) {
  auto got = must(dev.net_receive(pair), "net receive");
  CHECK(got.header.num_buffers == 1);
  CHECK(got.header.flags == 0);
  CHECK(got.header.gso_type == 0);
  CHECK(got.frame.size() == want.size());
  CHECK(got.frame == want);
}

DirectDeviceOptions net_options(const std::string& socket, uint16_t pairs) {
  DirectDeviceOptions o{socket, DeviceKind::net, static_cast<uint16_t>(2 * pairs)};
  return o;
}

}  // namespace

TEST_CASE("vufront-backend net: frames echo identical through split and packed rings") {
  const size_t sizes[] = {60, 64, 100, 512, 1000, 1514};
  for (auto ring : {virtio::RingKind::split, virtio::RingKind::packed}) {
    for (bool indirect : {false, true}) {
      CAPTURE(virtio::to_string(ring));
      CAPTURE(indirect);
      TempDir tmp;
      PeerProcess be(tmp.file("n.sock"), backend_command(tmp.file("n.sock"), {"--device", "net"}));
      FdCount fds;
      {
        DirectDeviceOptions o = net_options(be.socket(), 1);
        o.ring = ring;
        o.indirect = indirect;
        o.queue_size = 8;  // small, so the rings wrap several times
        auto dev = must(DirectDevice::start(o), "bring-up");
        const uint64_t acked = dev->client().acked_features();
        CHECK(has_bit(acked, 5));   // MAC
        CHECK(has_bit(acked, 16));  // STATUS
        CHECK_FALSE(has_bit(dev->client().backend_features(), 22));  // no MQ with one pair
        uint32_t n = 0;
        for (bool split_header : {false, true})
          for (size_t size : sizes) {
            CAPTURE(size);
            CAPTURE(split_header);
            auto f = frame(size, n++);
            must(dev->net_send(0, f, split_header), "net send");
            expect_echo(*dev, 0, f);
          }
        CHECK(must(dev->stop_queue(1), "GET_VRING_BASE tx") == dev->queue(1).next_avail_base());
        CHECK(must(dev->stop_queue(0), "GET_VRING_BASE rx") == dev->queue(0).next_avail_base());
      }
      CHECK(fds.leaked() == 0);
    }
  }
}

TEST_CASE("vufront-backend net: two queue pairs echo concurrently on packed rings") {
  TempDir tmp;
  PeerProcess be(tmp.file("mq.sock"),
                 backend_command(tmp.file("mq.sock"), {"--device", "net", "--queues", "2"}));
  DirectDeviceOptions o = net_options(be.socket(), 2);
  o.ring = virtio::RingKind::packed;
  auto dev = must(DirectDevice::start(o), "bring-up");
  CHECK(has_bit(dev->client().acked_features(), 22));  // MQ
  CHECK(must(dev->client().get_queue_num(), "GET_QUEUE_NUM") == 4);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (uint16_t p = 0; p < 2; ++p)
    threads.emplace_back([&dev, &errors, p] {
      for (uint32_t i = 0; i < 64; ++i) {
        auto f = frame(60 + (i * 97) % 1455, p * 1000 + i);
        auto sent = dev->net_send(p, f);
        auto got = sent ? dev->net_receive(p) : Result<virtio::NetFrame>(sent.error());
        if (!got || got->frame != f) {
          errors[p] = got ? "frame " + std::to_string(i) + " differs" : got.error().message();
          return;
        }
      }
    });
  for (auto& t : threads)
    t.join();
  for (uint16_t p = 0; p < 2; ++p) {
    CAPTURE(p);
    CHECK(errors[p] == "");
  }
}

TEST_CASE("vufront-backend net: frames sent before RX buffers wait in a bounded backlog") {
  TempDir tmp;
  PeerProcess be(tmp.file("bl.sock"), backend_command(tmp.file("bl.sock"), {"--device", "net"}));
  DirectDeviceOptions o = net_options(be.socket(), 1);
  o.queue_size = 256;
  auto dev = must(DirectDevice::start(o), "bring-up");

  // a few frames, then the buffers: delivered in order on the RX kick
  std::vector<std::vector<uint8_t>> sent;
  for (uint32_t i = 0; i < 5; ++i) {
    sent.push_back(frame(i % 2 ? 1514 : 60, i));
    must(dev->net_send(0, sent.back()), "net send");
  }
  for (int i = 0; i < 5; ++i)
    must(dev->net_post_rx(0), "post rx");
  for (const auto& f : sent)
    expect_echo(*dev, 0, f);
  CHECK(dev->net_rx_posted(0) == 0);

  // 300 frames overflow the 256-frame backlog: the 44 oldest are dropped
  for (uint32_t i = 0; i < 300; ++i)
    must(dev->net_send(0, frame(60, 1000 + i)), "net send");
  for (int i = 0; i < 256; ++i)
    must(dev->net_post_rx(0, 128), "post rx");
  for (uint32_t i = 44; i < 300; ++i) {
    auto got = must(dev->net_receive(0), "net receive");
    REQUIRE(got.frame == frame(60, 1000 + i));
  }
  // the backlog is empty now: a new frame is the next one received
  auto f = frame(200, 7);
  must(dev->net_send(0, f), "net send");
  expect_echo(*dev, 0, f);
}

TEST_CASE("vufront-backend net: an oversized frame is dropped and its RX buffer reused") {
  for (auto ring : {virtio::RingKind::split, virtio::RingKind::packed}) {
    CAPTURE(virtio::to_string(ring));
    TempDir tmp;
    PeerProcess be(tmp.file("big.sock"), backend_command(tmp.file("big.sock"), {"--device", "net"}));
    DirectDeviceOptions o = net_options(be.socket(), 1);
    o.ring = ring;
    auto dev = must(DirectDevice::start(o), "bring-up");
    must(dev->net_post_rx(0, 100), "post a 100-byte rx buffer");
    must(dev->net_send(0, frame(1514, 1)), "send 1514 bytes");  // does not fit: dropped
    auto small = frame(60, 2);
    must(dev->net_send(0, small), "send 60 bytes");
    expect_echo(*dev, 0, small);  // lands in the buffer the big frame did not take
    CHECK(dev->net_rx_posted(0) == 0);
  }
}

TEST_CASE("vufront-backend net: malformed TX chains complete empty and echo nothing") {
  TempDir tmp;
  PeerProcess be(tmp.file("bad.sock"), backend_command(tmp.file("bad.sock"), {"--device", "net"}));
  auto dev = must(DirectDevice::start(net_options(be.socket(), 1)), "bring-up");
  auto& s = dev->scratch(1);
  s.reset();
  const uint64_t a = must(s.alloc(64), "alloc");
  const uint64_t b = must(s.alloc(64), "alloc");
  const std::vector<std::vector<virtio::Buffer>> bad = {
      {{a, 5, false}},                   // shorter than the header
      {{a, 12, false}},                  // a header and no frame
      {{a, 40, false}, {b, 64, true}},   // TX buffers are never device-writable
      {{a, 6, false}, {b, 6, false}},    // a header split over two buffers, no frame
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    CAPTURE(i);
    auto used = must(dev->submit(1, bad[i]), "submit malformed");
    CHECK(used.len == 0);
  }
  // nothing was echoed: the first frame received is the good one
  auto f = frame(60, 3);
  must(dev->net_send(0, f), "net send");
  expect_echo(*dev, 0, f);
}

TEST_CASE("vufront-backend net: config space, MAC option and the auto-enabled first pair") {
  TempDir tmp;
  PeerProcess be(tmp.file("cfg.sock"),
                 backend_command(tmp.file("cfg.sock"), {"--device", "net", "--queues", "3",
                                                        "--mac", "02:00:5e:10:20:3F"}));
  DirectDeviceOptions o = net_options(be.socket(), 3);
  o.enable_rings = false;  // vrings 0 and 1 start enabled anyway (vhost-user spec, "Ring states")
  auto dev = must(DirectDevice::start(o), "bring-up");
  auto bytes = must(dev->client().get_config(0, sizeof(virtio::NetConfig)), "GET_CONFIG");
  REQUIRE(bytes.size() == sizeof(virtio::NetConfig));
  virtio::NetConfig cfg{};
  std::memcpy(&cfg, bytes.data(), sizeof cfg);
  CHECK(std::vector<uint8_t>(cfg.mac, cfg.mac + 6) ==
        std::vector<uint8_t>{0x02, 0x00, 0x5e, 0x10, 0x20, 0x3f});
  CHECK(cfg.status == 1);  // LINK_UP
  CHECK(cfg.max_virtqueue_pairs == 3);
  CHECK(must(dev->client().get_config(6, 2), "GET_CONFIG status") ==
        std::vector<uint8_t>{1, 0});
  CHECK(must(dev->client().get_queue_num(), "GET_QUEUE_NUM") == 6);
  auto f = frame(1514, 9);
  must(dev->net_send(0, f), "net send on the never-enabled first pair");
  expect_echo(*dev, 0, f);
}

TEST_CASE("vufront-backend net: device state of a net back-end saves and loads") {
  TempDir tmp;
  // what DirectDevice does not negotiate: a connection for DEVICE_STATE only
  auto negotiate = [](const std::string& sock) {
    auto c = must(BackendClient::connect(sock, std::chrono::seconds(5)), "connect");
    must(c.set_owner(), "SET_OWNER");
    auto f = must(c.get_features(), "GET_FEATURES");
    auto pf = must(c.get_protocol_features(), "GET_PROTOCOL_FEATURES");
    REQUIRE(has_bit(pf, protocol_feature::device_state));
    must(c.set_protocol_features(pf & (bit(protocol_feature::device_state) |
                                       bit(protocol_feature::reply_ack))),
         "SET_PROTOCOL_FEATURES");
    must(c.set_features(f & (bit(feature::version_1) | bit(feature::protocol_features))),
         "SET_FEATURES");
    return c;
  };
  auto transfer = [](BackendClient& c, uint32_t direction, std::vector<uint8_t>& data) {
    auto pipe = make_pipe();
    REQUIRE(pipe.read_end);
    const bool save = direction == wire::device_state_save;
    auto reply = must(c.set_device_state_fd(direction, wire::device_state_phase_stopped,
                                            save ? pipe.write_end.get() : pipe.read_end.get()),
                      "SET_DEVICE_STATE_FD");
    REQUIRE_FALSE(reply.backend_fd.has_value());  // vufront-backend never hands out its own fd
    if (save) {
      pipe.write_end.reset();
      uint8_t buf[4096];
      for (;;) {
        pollfd p{pipe.read_end.get(), POLLIN, 0};
        REQUIRE(::poll(&p, 1, 10000) == 1);
        const ssize_t n = ::read(pipe.read_end.get(), buf, sizeof buf);
        REQUIRE(n >= 0);
        if (n == 0)
          break;
        data.insert(data.end(), buf, buf + n);
      }
    } else {
      pipe.read_end.reset();
      REQUIRE(::write(pipe.write_end.get(), data.data(), data.size()) ==
              static_cast<ssize_t>(data.size()));  // a few bytes: fits the pipe
      pipe.write_end.reset();
    }
  };
  std::vector<uint8_t> state;
  {
    PeerProcess src(tmp.file("s.sock"),
                    backend_command(tmp.file("s.sock"), {"--device", "net", "--queues", "2"}));
    auto dev = must(DirectDevice::start(net_options(src.socket(), 2)), "bring-up source");
    auto f = frame(60, 1);
    must(dev->net_send(1, f), "net send");
    expect_echo(*dev, 1, f);
    for (uint16_t q = 0; q < 4; ++q)
      must(dev->stop_queue(q), "GET_VRING_BASE");
    dev.reset();
    auto c = negotiate(src.socket());
    transfer(c, wire::device_state_save, state);
    must(c.check_device_state(), "CHECK_DEVICE_STATE after save");
  }
  // header (40) + 12 config bytes + 4 vring bases + end chunk (8) + checksum (8): no disk
  REQUIRE(state.size() == 40 + 12 + 4 * 4 + 8 + 8);
  CHECK(std::string(state.begin(), state.begin() + 8) == std::string(backend::state_magic, sizeof backend::state_magic));
  CHECK(std::vector<uint8_t>(state.begin() + 40, state.begin() + 46) ==
        std::vector<uint8_t>(default_mac, default_mac + 6));
  for (const char* queues : {"2", "1"}) {
    CAPTURE(queues);
    const std::string sock = tmp.file(std::string("d") + queues + ".sock");
    PeerProcess dst(sock, backend_command(sock, {"--device", "net", "--queues", queues}));
    auto c = negotiate(dst.socket());
    transfer(c, wire::device_state_load, state);
    // a net back-end with another pair count refuses the state
    CHECK(c.check_device_state().ok() == (std::string(queues) == "2"));
  }
}
