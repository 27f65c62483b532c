// Real I/O against vufront-backend, the reference back-end, driven directly
// through BackendClient: both ring kinds, indirect chains, four concurrent
// queues, and device state saved from one back-end and loaded into another.
#include <doctest/doctest.h>

#include <thread>

#include <csignal>

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocol/backend_request.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/direct_device.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

/// Reads `fd` to EOF (bounded by a deadline) into memory; test-sized states only.
std::vector<uint8_t> read_all(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    ssize_t n = ::read(fd, buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0)
      return out;
    out.insert(out.end(), buf, buf + n);
  }
}

void write_all(int fd, const std::vector<uint8_t>& data) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    REQUIRE(n > 0);
    off += static_cast<size_t>(n);
  }
}

}  // namespace

TEST_CASE("vufront-backend: blk I/O through split and packed rings, direct and indirect") {
  for (auto ring : {virtio::RingKind::split, virtio::RingKind::packed}) {
    for (bool indirect : {false, true}) {
      CAPTURE(virtio::to_string(ring));
      CAPTURE(indirect);
      TempDir tmp;
      PeerProcess be(tmp.file("be.sock"), backend_command(tmp.file("be.sock")));
      FdCount fds;
      {
        DirectDeviceOptions o{be.socket()};
        o.ring = ring;
        o.indirect = indirect;
        o.queue_size = 8;  // small, so 40 requests wrap the ring several times
        auto dev = must(DirectDevice::start(o), "bring-up");
        for (uint8_t i = 0; i < 20; ++i) {
          auto data = pattern(4096, i);
          must(dev->blk_write(0, i * 8u, data), "write");
          CHECK(must(dev->blk_read(0, i * 8u, 4096), "read") == data);
        }
        must(dev->blk_flush(0), "flush");
        CHECK(must(dev->blk_get_id(0), "get id") == "vufront-backend");
        uint32_t base = must(dev->stop_queue(0), "GET_VRING_BASE");
        CHECK(base == dev->queue(0).next_avail_base());
      }
      CHECK(fds.leaked() == 0);
    }
  }
}

TEST_CASE("vufront-backend: four queues, packed rings, concurrently") {
  TempDir tmp;
  PeerProcess be(tmp.file("mq.sock"), backend_command(tmp.file("mq.sock"), {"--queues", "4"}));
  DirectDeviceOptions o{be.socket(), DeviceKind::blk, 4};
  o.ring = virtio::RingKind::packed;
  auto dev = must(DirectDevice::start(o), "bring-up");
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (uint16_t q = 0; q < 4; ++q)
    threads.emplace_back([&dev, &errors, q] {
      for (uint64_t i = 0; i < 32; ++i) {
        uint64_t sector = q * 4096 + i * 8;
        auto data = pattern(4096, static_cast<uint8_t>(q * 32 + i));
        auto w = dev->blk_write(q, sector, data);
        auto r = w ? dev->blk_read(q, sector, 4096) : Result<std::vector<uint8_t>>(w.error());
        if (!r || *r != data) {
          errors[q] = r ? "mismatch at sector " + std::to_string(sector) : r.error().message();
          return;
        }
      }
    });
  for (auto& t : threads)
    t.join();
  for (uint16_t q = 0; q < 4; ++q) {
    CAPTURE(q);
    CHECK(errors[q] == "");
  }
}

TEST_CASE("vufront-backend: device state saved from one back-end restores into a fresh one") {
  TempDir tmp;
  auto data = pattern(64 * 1024, 42);
  std::vector<uint8_t> state;
  uint32_t base = 0;
  // DirectDevice does not ack DEVICE_STATE; the transfer gets its own connection
  // negotiating just what it needs (the back-end keeps its disk across front-ends).
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
  {
    // write through the rings, stop them, save
    PeerProcess src(tmp.file("s2.sock"), backend_command(tmp.file("s2.sock"), {"--size", "8M"}));
    auto dev = must(DirectDevice::start({src.socket()}), "bring-up source");
    must(dev->blk_write(0, 64, data), "write");
    must(dev->blk_flush(0), "flush");
    base = must(dev->stop_queue(0), "GET_VRING_BASE");
    CHECK(base == 2);
    dev.reset();  // front-end goes away; the back-end keeps the disk for the next one
    auto c = negotiate(src.socket());
    auto pipe = make_pipe();
    REQUIRE(pipe.read_end);
    auto reply = must(c.set_device_state_fd(wire::device_state_save,
                                            wire::device_state_phase_stopped,
                                            pipe.write_end.get()),
                      "SET_DEVICE_STATE_FD save");
    pipe.write_end.reset();  // our copy of the given-away end, or EOF never comes
    state = read_all(reply.backend_fd ? reply.backend_fd->get() : pipe.read_end.get());
    must(c.check_device_state(), "CHECK_DEVICE_STATE after save");
  }
  REQUIRE(state.size() > data.size());
  {
    PeerProcess dst(tmp.file("d.sock"), backend_command(tmp.file("d.sock"), {"--size", "8M"}));
    {
      auto c = negotiate(dst.socket());
      auto pipe = make_pipe();
      REQUIRE(pipe.write_end);
      auto reply = must(c.set_device_state_fd(wire::device_state_load,
                                              wire::device_state_phase_stopped,
                                              pipe.read_end.get()),
                        "SET_DEVICE_STATE_FD load");
      pipe.read_end.reset();
      if (reply.backend_fd) {
        write_all(reply.backend_fd->get(), state);
        reply.backend_fd->reset();
      } else {
        write_all(pipe.write_end.get(), state);
        pipe.write_end.reset();
      }
      must(c.check_device_state(), "CHECK_DEVICE_STATE after load");
    }
    // a fresh front-end reads the data written on the source back-end
    auto dev = must(DirectDevice::start({dst.socket()}), "bring-up destination");
    CHECK(must(dev->blk_read(0, 64, static_cast<uint32_t>(data.size())), "read back") == data);
  }
  {
    // a truncated state is refused by CHECK_DEVICE_STATE
    PeerProcess bad(tmp.file("x.sock"), backend_command(tmp.file("x.sock"), {"--size", "8M"}));
    auto c = negotiate(bad.socket());
    auto pipe = make_pipe();
    auto reply = must(c.set_device_state_fd(wire::device_state_load,
                                            wire::device_state_phase_stopped,
                                            pipe.read_end.get()),
                      "SET_DEVICE_STATE_FD load");
    pipe.read_end.reset();
    std::vector<uint8_t> cut(state.begin(), state.end() - 1);
    int w = reply.backend_fd ? reply.backend_fd->get() : pipe.write_end.get();
    write_all(w, cut);
    pipe.write_end.reset();
    if (reply.backend_fd)
      reply.backend_fd->reset();
    auto check = c.check_device_state();
    REQUIRE_FALSE(check.ok());
    CHECK(check.error().code == errc::backend_failure);
  }
}

namespace {

/// Receives one back-end request from the channel, decodes it and acks it
/// when the back-end asked for a reply.
BackendRequest serve_one(Connection& ch, uint64_t acked_protocol) {
  auto m = must(ch.receive(backend_request_max_body, backend_request_max_fds,
                           deadline_in(std::chrono::seconds(10)), "back-end channel"),
                "receive back-end request");
  auto req = must(decode_backend_request(std::move(m), acked_protocol), "decode back-end request");
  if (req.need_reply) {
    auto reply = encode_backend_reply(static_cast<uint32_t>(req.type), 0);
    must(ch.send(static_cast<uint32_t>(req.type), flag_version | flag_reply, reply.data() + 12,
                 reply.size() - 12, nullptr, 0, deadline_in(std::chrono::seconds(5)), "ack"),
         "ack back-end request");
  }
  return req;
}

}  // namespace

TEST_CASE("vufront-backend: back-end channel carries SHMEM_MAP, SHMEM_UNMAP and CONFIG_CHANGE") {
  TempDir tmp;
  PeerProcess be(tmp.file("sh.sock"),
                 backend_command(tmp.file("sh.sock"), {"--size", "8M", "--shmem-size", "1M"}));
  DirectDeviceOptions o{be.socket()};
  o.backend_channel = true;
  auto dev = must(DirectDevice::start(o), "bring-up");
  BackendClient& c = dev->client();
  REQUIRE(c.protocol_feature(protocol_feature::shmem));
  auto shm = must(c.get_shmem_config(), "GET_SHMEM_CONFIG");
  CHECK(shm.nregions == 1);
  CHECK(shm.sizes[0] == (1u << 20));
  auto& ch = *dev->backend_channel();

  // the device started: the back-end maps its disk window into region 0
  auto map = serve_one(ch, c.acked_protocol_features());
  REQUIRE(map.type == BackendReq::shmem_map);
  auto m = std::get<wire::ShmemMap>(map.payload);
  CHECK(m.shmid == 0);
  CHECK(m.shm_offset == 0);
  CHECK(m.len == (1u << 20));
  REQUIRE(map.fds.size() == 1);
  // what the window shows is the disk: data written through the ring appears in it
  auto data = pattern(4096, 9);
  must(dev->blk_write(0, 16, data), "write");
  auto* window = static_cast<uint8_t*>(
      ::mmap(nullptr, m.len, PROT_READ, MAP_SHARED, map.fds[0].get(), static_cast<off_t>(m.fd_offset)));
  REQUIRE(window != MAP_FAILED);
  CHECK(std::vector<uint8_t>(window + 16 * 512, window + 16 * 512 + 4096) == data);
  ::munmap(window, m.len);

  REQUIRE(be.signal(SIGUSR2));
  auto unmap = serve_one(ch, c.acked_protocol_features());
  CHECK(unmap.type == BackendReq::shmem_unmap);
  CHECK(std::get<wire::ShmemMap>(unmap.payload).len == (1u << 20));
  CHECK(unmap.fds.empty());

  REQUIRE(be.signal(SIGUSR1));
  auto change = serve_one(ch, c.acked_protocol_features());
  CHECK(change.type == BackendReq::config_change_msg);
  // the device keeps working after the channel traffic
  CHECK(must(dev->blk_read(0, 16, 4096), "read") == data);
}
