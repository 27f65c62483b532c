// Real I/O through real rings against real back-ends, driven directly
// through BackendClient + GuestMemory + the guest-side virtqueue driver.
#include <doctest/doctest.h>

#include <fstream>
#include <thread>

#include "tests/integration/checks.hpp"
#include "tests/integration/direct_device.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"
#include "virtio/fuse.hpp"

using namespace vufront;
using namespace vufront::test;

TEST_CASE("qemu-storage-daemon: blk write, flush, read back through a split ring") {
  TempDir tmp;
  std::string image = tmp.file("disk.img");
  PeerProcess qsd(tmp.file("b.sock"), qsd_command(tmp.file("b.sock"), image));
  FdCount fds;
  {
    auto dev = must(DirectDevice::start({qsd.socket()}), "bring-up");
    auto data = pattern(8192, 3);
    must(dev->blk_write(0, 8, data), "blk_write");
    must(dev->blk_flush(0), "blk_flush");
    auto back = must(dev->blk_read(0, 8, 8192), "read");
    CHECK(back == data);
    auto other = must(dev->blk_read(0, 1000, 512), "read elsewhere");
    CHECK(other == std::vector<uint8_t>(512, 0));
    CHECK(must(dev->blk_get_id(0), "get id") == "vhost_user_blk");
    // four requests, and the ring stops at the next avail index
    CHECK(must(dev->stop_queue(0), "GET_VRING_BASE") == 5);
  }
  CHECK(fds.leaked() == 0);
  // the data landed in the image file at sector 8
  std::ifstream img(image, std::ios::binary);
  img.seekg(8 * 512);
  std::vector<uint8_t> on_disk(8192);
  img.read(reinterpret_cast<char*>(on_disk.data()), static_cast<std::streamsize>(on_disk.size()));
  CHECK(on_disk == pattern(8192, 3));
}

TEST_CASE("qemu-storage-daemon: four queues carry requests concurrently") {
  TempDir tmp;
  PeerProcess qsd(tmp.file("q.sock"), qsd_command(tmp.file("q.sock"), tmp.file("disk.img")),
                  {"QSD_NUM_QUEUES=4"});
  auto dev = must(DirectDevice::start({qsd.socket(), DeviceKind::blk, 4}), "bring-up");
  REQUIRE(dev->queue_count() == 4);
  // one thread per queue, each with its own ring, scratch and eventfds
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (uint16_t q = 0; q < 4; ++q) {
    threads.emplace_back([&dev, &errors, q] {
      for (uint64_t i = 0; i < 16; ++i) {
        uint64_t sector = q * 1024 + i * 8;
        auto data = pattern(4096, static_cast<uint8_t>(q * 16 + i));
        if (auto w = dev->blk_write(q, sector, data); !w) {
          errors[q] = w.error().message();
          return;
        }
        auto r = dev->blk_read(q, sector, 4096);
        if (!r || *r != data) {
          errors[q] = r ? "data mismatch at sector " + std::to_string(sector) : r.error().message();
          return;
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (uint16_t q = 0; q < 4; ++q) {
    CAPTURE(q);
    CHECK(errors[q] == "");
    CHECK(must(dev->stop_queue(q), "GET_VRING_BASE") == 32);
  }
}

TEST_CASE("virtiofsd: FUSE_INIT, LOOKUP, OPEN and READ of a shared file") {
  TempDir tmp;
  std::string share = tmp.file("share");
  REQUIRE(::mkdir(share.c_str(), 0755) == 0);
  {
    std::ofstream f(share + "/hello.txt");
    f << "hello from the host\n";
  }
  PeerProcess fsd(tmp.file("f.sock"), virtiofsd_command(tmp.file("f.sock"), share));
  auto dev = must(DirectDevice::start({fsd.socket(), DeviceKind::fs, 2}), "bring-up");
  auto& s = dev->scratch(1);  // queue 0 is hiprio, 1 the request queue
  auto call = [&](Result<virtio::fuse::Request> req) {
    auto r = must(std::move(req), "build request");
    auto used = must(dev->submit(1, r.chain), "submit");
    return must(virtio::fuse::reply(s, r, used.len), "reply");
  };
  auto init = call(virtio::fuse::init(s, 1));
  REQUIRE(init.error == 0);
  auto init_out = must(virtio::fuse::decode_init(init.body), "init body");
  CHECK(init_out.major == 7);
  auto lookup = call(virtio::fuse::lookup(s, 2, virtio::fuse::root_nodeid, "hello.txt"));
  REQUIRE(lookup.error == 0);
  auto entry = must(virtio::fuse::decode_entry(lookup.body), "entry");
  auto opened = call(virtio::fuse::open(s, 3, entry.nodeid, 0));
  REQUIRE(opened.error == 0);
  auto fh = must(virtio::fuse::decode_open(opened.body), "open body").fh;
  auto data = call(virtio::fuse::read(s, 4, entry.nodeid, fh, 0, 4096));
  REQUIRE(data.error == 0);
  CHECK(std::string(data.body.begin(), data.body.end()) == "hello from the host\n");
  auto missing = call(virtio::fuse::lookup(s, 5, virtio::fuse::root_nodeid, "nope.txt"));
  CHECK(missing.error == -ENOENT);
}
