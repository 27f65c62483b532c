// The one builder of "the requests that bring a device to where it was"
// (actors/replay.*), as a pure function of DeviceData: what each target
// includes, in which state it leaves the device, and that nothing the device
// set up is left out of a replay.
#include <doctest/doctest.h>

#include "actors/device_checks.hpp"
#include "actors/replay.hpp"
#include "base/unique_fd.hpp"

using namespace vufront;
using namespace vufront::actors;

namespace {

constexpr uint64_t gpa = 0x1'0000'0000;
constexpr uint64_t acked = 0x140001244;

SharedFd eventfd() { return share(make_eventfd()); }

/// A device as activate leaves it: one 1 MiB region, two queues (the second
/// stopped at base 7), an in-flight region.
DeviceData active_device() {
  DeviceData st;
  auto fd = make_memfd("replay-test", 1 << 20);
  REQUIRE(fd);
  st.memory = {{gpa, 1 << 20, 0, share(std::move(fd))}};
  auto table = check_memory(st.memory, 8);
  REQUIRE(table);
  st.mem_table = *table;
  for (uint16_t i = 0; i < 2; ++i) {
    DeviceData::Queue q;
    q.spec.index = i;
    q.spec.size = 128;
    q.spec.desc = gpa + 0x10000 * (i + 1);
    q.spec.driver = q.spec.desc + 0x1000;
    q.spec.device = q.spec.desc + 0x2000;
    q.spec.kick = eventfd();
    q.call = eventfd();
    q.base = i == 0 ? 0 : 7;
    st.queues.push_back(q);
  }
  st.acked_features = acked;
  st.inflight = wire::InflightDesc{4096, 0, 2, 128, {}};
  st.inflight_fd = share(make_memfd("inflight", 4096));
  return st;
}

constexpr uint8_t features_ok = status_bit::acknowledge | status_bit::driver | status_bit::features_ok;

}  // namespace

TEST_CASE("replay: running brings every setting, the rings at their bases, DRIVER_OK") {
  const DeviceData st = active_device();
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.features == acked);
  CHECK(r.features_ok_status == features_ok);
  CHECK(r.driver_ok_status == (features_ok | status_bit::driver_ok));
  CHECK(replayed_status(ReplayTo::running) == r.driver_ok_status);
  REQUIRE(r.mem_table.size() == 1);
  CHECK(r.mem_table[0].guest_phys_addr == gpa);
  REQUIRE(r.mem_fds.size() == 1);
  CHECK(r.mem_fds[0] == st.memory[0].fd);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.inflight.num_queues == 2);
  REQUIRE(r.queues.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(r.queues[i].addr.index == i);
    CHECK(r.queues[i].num == 128);
    CHECK(r.queues[i].base == st.queues[i].base);
    CHECK(r.queues[i].kick == st.queues[i].spec.kick);
    CHECK(r.queues[i].call == st.queues[i].call);
    // user addresses: the device's synthetic ones, never the guest's GPA
    CHECK(r.queues[i].addr.desc == st.queues[i].spec.desc + user_addr_bias);
  }
}

TEST_CASE("replay: rings stopped keeps memory and the in-flight region, leaves rings and DRIVER_OK to wake") {
  const DeviceData st = active_device();
  const ActivateRequest r = replay_request(st, ReplayTo::rings_stopped, st.acked_features);
  CHECK(r.features == acked);
  CHECK(r.features_ok_status == features_ok);
  CHECK(r.driver_ok_status == 0);
  CHECK(replayed_status(ReplayTo::rings_stopped) == features_ok);
  CHECK(r.mem_table.size() == 1);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.queues.empty());
}

TEST_CASE("replay: a state load sends the snapshot's features, memory only into a guest") {
  const DeviceData st = active_device();
  const uint64_t snap_features = 0x100000000;
  const ActivateRequest bare = replay_request(st, ReplayTo::state_load, snap_features);
  CHECK(bare.features == snap_features);
  CHECK(bare.features_ok_status == features_ok);
  CHECK(bare.driver_ok_status == 0);
  CHECK(bare.mem_table.empty());
  CHECK(bare.mem_fds.empty());
  CHECK_FALSE(bare.inflight_fd);
  CHECK(bare.queues.empty());
  const ActivateRequest guest = replay_request(st, ReplayTo::state_load_with_memory, snap_features);
  CHECK(guest.mem_table.size() == 1);
  CHECK(guest.mem_fds.size() == 1);
  CHECK_FALSE(guest.inflight_fd);  // a restored device has no in-flight region yet
  CHECK(guest.queues.empty());
}

TEST_CASE("replay: a device without an in-flight region or memory replays none") {
  DeviceData st;
  st.acked_features = acked;
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.mem_table.empty());
  CHECK_FALSE(r.inflight_fd);
  CHECK(r.queues.empty());
}

TEST_CASE("replay: packed rings lost while running go back at their last known bases, the in-flight region first") {
  // The new back-end takes their position from the region (docs/lifecycle.md,
  // "reconnect"): the replay hands it the region and the bases vufront has.
  DeviceData st = active_device();
  st.packed = true;
  st.queues[0].base = 0x8000'8000;
  st.queues[1].base = 0x8008'8008;  // where the last wake started it
  const ActivateRequest r = replay_request(st, ReplayTo::running, st.acked_features);
  CHECK(r.inflight_fd == st.inflight_fd);
  CHECK(r.inflight.mmap_size == 4096);
  REQUIRE(r.queues.size() == 2);
  CHECK(r.queues[0].base == 0x8000'8000);
  CHECK(r.queues[1].base == 0x8008'8008);
  // packed: the device and driver areas are the event suppression structures
  CHECK(r.queues[1].addr.avail == st.queues[1].spec.driver + user_addr_bias);
}
