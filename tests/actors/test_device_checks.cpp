// The device's input checks: memory regions and activations are refused
// with a message naming what is wrong, before anything reaches a back-end.
#include <doctest/doctest.h>

#include "actors/device_checks.hpp"
#include "base/unique_fd.hpp"

using namespace vufront;
using namespace vufront::actors;

namespace {

SharedFd memfd_of(uint64_t size) {
  auto fd = make_memfd("test", size);
  REQUIRE(fd);
  return share(std::move(fd));
}

constexpr uint64_t base = 0x1'0000'0000;

MemorySpec one_region(uint64_t size = 1 << 20) { return {{base, size, 0, memfd_of(size)}}; }

DeviceInfo info_blk() {
  DeviceInfo i;
  i.backend_features = bit(feature::version_1) | bit(feature::protocol_features) |
                       bit(feature::ring_packed) | bit(9);
  i.queue_num = 2;
  i.max_queue_size = 256;
  return i;
}

QueueSpec queue(uint16_t index, uint64_t at, uint16_t size = 128) {
  QueueSpec q;
  q.index = index;
  q.size = size;
  q.desc = at;
  q.driver = at + 0x1000;
  q.device = at + 0x2000;
  q.kick = share(make_eventfd());
  q.call = share(make_eventfd());
  return q;
}

std::string why(const Result<uint64_t>& r) { return r ? "" : r.error().detail; }

}  // namespace

TEST_CASE("check_memory builds the table with synthetic user addresses") {
  auto t = check_memory(one_region(), 8);
  REQUIRE(t);
  REQUIRE(t->size() == 1);
  CHECK((*t)[0].guest_phys_addr == base);
  CHECK((*t)[0].user_addr == base + user_addr_bias);
  CHECK((*t)[0].memory_size == (1u << 20));
}

TEST_CASE("check_memory refuses empty, overlapping, fd-less, too many and too small regions") {
  CHECK(check_memory({}, 8).error().code == errc::invalid_argument);
  auto overlap = one_region();
  overlap.push_back({base + 4096, 4096, 0, memfd_of(4096)});
  CHECK(check_memory(overlap, 8).error().detail.find("overlaps") != std::string::npos);
  MemorySpec nofd{{base, 4096, 0, nullptr}};
  CHECK(check_memory(nofd, 8).error().detail.find("no fd") != std::string::npos);
  MemorySpec two = one_region();
  two.push_back({base + (2 << 20), 4096, 0, memfd_of(4096)});
  CHECK(check_memory(two, 1).error().detail.find("at most 1") != std::string::npos);
  MemorySpec small{{base, 1 << 20, 0, memfd_of(4096)}};
  CHECK(check_memory(small, 8).error().detail.find("fd holds") != std::string::npos);
  MemorySpec wrap{{~0ull - 4095, 8192, 0, memfd_of(8192)}};
  CHECK(check_memory(wrap, 8).error().detail.find("wraps") != std::string::npos);
}

TEST_CASE("check_activation accepts a valid activation and adds PROTOCOL_FEATURES") {
  auto t = check_memory(one_region(), 8).value();
  ActivateSpec spec;
  spec.driver_features = bit(feature::version_1);
  spec.queues = {queue(0, base)};
  auto r = check_activation(spec, info_blk(), t);
  REQUIRE_MESSAGE(r, why(r));
  CHECK(*r == (bit(feature::version_1) | bit(feature::protocol_features)));
}

TEST_CASE("check_activation refuses what the back-end or the ring rules do not allow") {
  auto t = check_memory(one_region(), 8).value();
  auto info = info_blk();
  auto attempt = [&](auto&& mutate) {
    ActivateSpec spec;
    spec.driver_features = bit(feature::version_1);
    spec.queues = {queue(0, base)};
    mutate(spec);
    auto r = check_activation(spec, info, t);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::invalid_argument);
    return r.error().detail;
  };
  CHECK(attempt([](ActivateSpec& s) { s.driver_features |= bit(feature::event_idx); })
            .find("not offered") != std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues.clear(); }) == "no queues");
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].index = 2; }).find("has 2 queues") !=
        std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues.push_back(queue(0, base + 0x8000)); })
            .find("twice") != std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].size = 100; }).find("not valid") !=
        std::string::npos);  // split rings need a power of two
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].size = 512; }).find("at most 256") !=
        std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].kick = nullptr; }).find("kick") !=
        std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].call = nullptr; }).find("no interrupt sink") !=
        std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].desc = base + 8; }).find("aligned") !=
        std::string::npos);
  CHECK(attempt([](ActivateSpec& s) { s.queues[0].device = base + (1 << 20) - 64; })
            .find("not inside guest memory") != std::string::npos);
}

TEST_CASE("check_activation refuses LOG_ALL from the driver, even when the back-end offers it") {
  auto t = check_memory(one_region(), 8).value();
  auto info = info_blk();
  info.backend_features |= bit(feature::log_all);
  ActivateSpec spec;
  spec.driver_features = bit(feature::version_1) | bit(feature::log_all);
  spec.queues = {queue(0, base)};
  auto r = check_activation(spec, info, t);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_argument);
  CHECK(r.error().detail.find("dirty_log_start") != std::string::npos);
  spec.driver_features = bit(feature::version_1);
  CHECK(check_activation(spec, info, t));
}

TEST_CASE("vring_addr: log_guest_addr is the used ring's guest-physical address") {
  auto t = check_memory(one_region(), 8).value();
  const QueueSpec q = queue(0, base + 0x4000);
  auto a = vring_addr(q, false, t);
  REQUIRE(a);
  CHECK(a->log == q.device);  // a GPA, never the synthetic user address of `used`
  CHECK(a->used != q.device);
  CHECK(a->flags == 0);
}

TEST_CASE("a packed queue may have any size up to the maximum") {
  auto t = check_memory(one_region(), 8).value();
  ActivateSpec spec;
  spec.driver_features = bit(feature::version_1) | bit(feature::ring_packed);
  spec.queues = {queue(0, base, 100)};
  auto r = check_activation(spec, info_blk(), t);
  CHECK_MESSAGE(r, why(r));
}
