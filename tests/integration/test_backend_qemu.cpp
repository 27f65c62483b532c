// vufront-backend driven with the request sequence QEMU 7.2 sends a
// vhost-user-blk back-end (../shared/docs/qemu-7.2-sequences.md, recorded
// with ../shared/peers/vu-tap.py): realize, the firmware's start, the guest
// kernel's reset of the device, the kernel's start, poweroff. With STATUS
// negotiated QEMU stops a device with SET_STATUS 0 *before* SET_VRING_ENABLE 0
// and GET_VRING_BASE, so the back-end must take SET_STATUS 0 as a stop: keep
// what was negotiated and the rings' positions (README.md, "The reference
// back-end").
//
// The requests go through BackendClient one by one in QEMU's order. With
// REPLY_ACK acked every request carries NEED_REPLY, so a back-end that drops
// the connection is caught at the request that made it drop.
#include <doctest/doctest.h>

#include "protocol/mem_table.hpp"
#include "tests/integration/checks.hpp"
#include "tests/integration/peer_process.hpp"
#include "tests/support.hpp"
#include "virtio/requests.hpp"

using namespace vufront;
using namespace vufront::test;

namespace {

constexpr uint16_t queue_size = 128;  // QEMU's vhost-user-blk default
constexpr uint64_t ram_size = 4 << 20;
constexpr uint64_t firmware_rings = 0x100000;  // GPAs inside the one RAM region
constexpr uint64_t kernel_rings = 0x200000;
constexpr uint64_t scratch_gpa = 0x300000;
constexpr auto io_deadline = std::chrono::seconds(10);
/// What QEMU 7.2 knows of the protocol features (bits 0..16, STATUS the last):
/// it acks what the back-end offers within that.
constexpr uint64_t qemu_protocol_mask = (uint64_t{1} << 17) - 1;
/// The features the two drivers acked, as recorded (SeaBIOS, then Linux's virtio_blk).
constexpr uint64_t firmware_features = 0x140000046;
constexpr uint64_t kernel_features = 0x170007e46;

/// One driver's view of queue 0: its ring, its eventfds and a scratch area.
struct DriverRing {
  virtio::DriverQueue q;
  virtio::GuestScratch scratch;
  UniqueFd kick = make_eventfd();
  UniqueFd call = make_eventfd();

  Result<virtio::BlkRequest> run(const std::function<Result<virtio::BlkRequest>(virtio::GuestScratch&)>& build) {
    scratch.reset();
    auto req = build(scratch);
    if (!req)
      return req;
    auto id = q.add_chain(req->chain);
    if (!id)
      return std::move(id).error();
    if (auto k = q.kick(kick.get()); !k)
      return std::move(k).error();
    auto used = q.wait_used(call.get(), std::chrono::steady_clock::now() + io_deadline);
    if (!used)
      return std::move(used).error();
    if (auto st = virtio::blk_status(scratch, *req, used->len); !st)
      return std::move(st).error();
    return req;
  }
};

DriverRing fresh_ring(const GuestMemory& mem, uint64_t gpa) {
  auto areas = must(virtio::place_rings(mem, gpa, 0x10000, virtio::RingKind::split, queue_size),
                    "place rings");
  return DriverRing{must(virtio::DriverQueue::create(mem, virtio::RingKind::split, queue_size, areas),
                         "driver queue"),
                    must(virtio::GuestScratch::create(mem, scratch_gpa, 0x100000), "scratch")};
}

/// QEMU's vhost_user_set_features with STATUS: SET_FEATURES, then
/// GET_STATUS and SET_STATUS(| FEATURES_OK) unless it is set already.
void set_features(BackendClient& c, uint64_t driver_features) {
  must(c.set_features((driver_features & c.backend_features()) | bit(feature::protocol_features)),
       "SET_FEATURES");
  const uint8_t s = must(c.get_status(), "GET_STATUS");
  if (!(s & status_bit::features_ok))
    must(c.set_status(s | status_bit::features_ok), "SET_STATUS(FEATURES_OK)");
}

/// A device start as QEMU does it for one driver: features, the in-flight
/// region, the call fds, features again, memory (first start only), queue 0
/// only, every queue enabled, DRIVER_OK (the order test_qemu_guest.py's
/// QEMU 7.2 sends with STATUS and INFLIGHT_SHMFD negotiated).
void start(BackendClient& c, const GuestMemory& mem, DriverRing& ring, uint64_t driver_features,
           bool add_memory, UniqueFd& inflight_fd) {
  UniqueFd call1 = make_eventfd();
  set_features(c, driver_features);
  auto inflight = must(c.get_inflight_fd(2, queue_size), "GET_INFLIGHT_FD");
  REQUIRE(inflight.fd);
  must(c.set_inflight_fd(inflight.desc, inflight.fd.get()), "SET_INFLIGHT_FD");
  inflight_fd = std::move(inflight.fd);
  must(c.set_vring_call(0, ring.call.get()), "SET_VRING_CALL q0");
  must(c.set_vring_call(1, call1.get()), "SET_VRING_CALL q1");
  set_features(c, driver_features);
  if (add_memory)
    must(c.add_mem_reg(must(region_payload(mem, 0), "region"), mem.fds().at(0)), "ADD_MEM_REG");
  must(c.set_vring_num(0, queue_size), "SET_VRING_NUM q0");
  must(c.set_vring_base(0, ring.q.next_avail_base()), "SET_VRING_BASE q0");
  must(c.set_vring_addr(must(virtio::vring_addr(mem, 0, ring.q.areas()), "vring addr")),
       "SET_VRING_ADDR q0");
  must(c.set_vring_kick(0, ring.kick.get()), "SET_VRING_KICK q0");
  must(c.set_vring_enable(0, true), "SET_VRING_ENABLE q0 1");
  must(c.set_vring_enable(1, true), "SET_VRING_ENABLE q1 1");  // enabled, never set up
  const uint8_t s = must(c.get_status(), "GET_STATUS");
  must(c.set_status(s | status_bit::acknowledge | status_bit::driver | status_bit::driver_ok),
       "SET_STATUS(DRIVER_OK)");
}

/// QEMU's vhost_dev_stop with STATUS: SET_STATUS 0 (the reset_status hook),
/// SET_VRING_ENABLE 0 on every queue, GET_VRING_BASE of the started queue.
uint32_t stop(BackendClient& c) {
  must(c.set_status(0), "SET_STATUS 0");
  must(c.set_vring_enable(0, false), "SET_VRING_ENABLE q0 0 after SET_STATUS 0");
  must(c.set_vring_enable(1, false), "SET_VRING_ENABLE q1 0 after SET_STATUS 0");
  return must(c.get_vring_base(0), "GET_VRING_BASE q0 after SET_STATUS 0");
}

}  // namespace

TEST_CASE("vufront-backend: QEMU 7.2's vhost-user-blk sequence with STATUS, reset and restart") {
  TempDir tmp;
  PeerProcess be(tmp.file("be.sock"), backend_command(tmp.file("be.sock"), {"--queues", "2"}));
  GuestMemory mem;
  must(mem.add_region(0, ram_size), "guest RAM");
  {
    // ---- realize: the opening as recorded (SET_OWNER after the protocol features)
    auto c = must(BackendClient::connect(be.socket(), std::chrono::seconds(5)), "connect");
    const uint64_t offered = must(c.get_features(), "GET_FEATURES");
    REQUIRE(has_bit(offered, feature::protocol_features));
    const uint64_t pf = must(c.get_protocol_features(), "GET_PROTOCOL_FEATURES");
    REQUIRE(has_bit(pf, protocol_feature::status));  // the case this test is about
    REQUIRE(has_bit(pf, protocol_feature::inflight_shmfd));
    must(c.set_protocol_features(pf & qemu_protocol_mask), "SET_PROTOCOL_FEATURES");
    const uint64_t queues = must(c.get_queue_num(), "GET_QUEUE_NUM");
    CHECK(queues == 2);
    must(c.get_max_mem_slots(), "GET_MAX_MEM_SLOTS");
    SocketPair channel = make_socketpair();
    must(c.set_backend_req_fd(channel.second.get()), "SET_BACKEND_REQ_FD");
    channel.second.reset();
    must(c.set_owner(), "SET_OWNER");
    must(c.get_features(), "GET_FEATURES");
    UniqueFd call0 = make_eventfd(), err0 = make_eventfd(), call1 = make_eventfd(),
             err1 = make_eventfd();
    must(c.set_vring_call(0, call0.get()), "SET_VRING_CALL q0");
    must(c.set_vring_err(0, err0.get()), "SET_VRING_ERR q0");
    must(c.set_vring_call(1, call1.get()), "SET_VRING_CALL q1");
    must(c.set_vring_err(1, err1.get()), "SET_VRING_ERR q1");
    const auto config = must(c.get_config(0, 60), "GET_CONFIG");
    CHECK(config.size() == 60);

    // ---- the firmware (SeaBIOS) boots from the disk: one read
    UniqueFd inflight;
    DriverRing bios = fresh_ring(mem, firmware_rings);
    start(c, mem, bios, firmware_features, true, inflight);
    must(bios.run([](auto& s) { return virtio::blk_read(s, 0, 512); }), "firmware read");

    // ---- the guest kernel resets the device: QEMU stops it, the ring at 1
    // (values first, then CHECK: a failed must() inside CHECK would be caught
    // by it and the replay would go on)
    const uint32_t firmware_base = stop(c);
    CHECK(firmware_base == 1);
    const uint8_t status = must(c.get_status(), "GET_STATUS after the stop");
    CHECK(status == 0);

    // ---- Linux's virtio_blk starts it again on new rings and does real I/O
    DriverRing linux_ring = fresh_ring(mem, kernel_rings);
    start(c, mem, linux_ring, kernel_features, false, inflight);
    const auto data = pattern(4096, 7);
    must(linux_ring.run([&](auto& s) { return virtio::blk_write(s, 8, data); }), "kernel write");
    must(linux_ring.run([](auto& s) { return virtio::blk_flush(s); }), "kernel flush");
    auto read = must(linux_ring.run([](auto& s) { return virtio::blk_read(s, 8, 4096); }),
                     "kernel read");
    CHECK(virtio::blk_data(linux_ring.scratch, read) == data);
    must(linux_ring.run([](auto& s) { return virtio::blk_read(s, 0, 512); }), "kernel read 0");

    // ---- poweroff: stopped again, at 4
    const uint32_t kernel_base = stop(c);
    CHECK(kernel_base == 4);
  }
  CHECK(be.alive());
  CHECK(be.log().find("dropping front-end") == std::string::npos);
}
