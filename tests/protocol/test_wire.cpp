// Wire structs round-trip through bytes; request codes convert only through
// the checked functions; names are the spec's.

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "protocol/messages.hpp"
#include "protocol/wire.hpp"

using namespace vufront;

namespace {

template <class T>
std::vector<uint8_t> encode(const T& v) {
  std::vector<uint8_t> out(sizeof(T));
  // BOUNDS: `out` holds exactly sizeof(T) bytes.
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

/// Round trip plus the size checks of decode_exact / decode_prefix.
template <class T>
T round_trip(const T& v) {
  auto bytes = encode(v);
  auto back = wire::decode_exact<T>(bytes.data(), bytes.size());
  REQUIRE(back.has_value());
  CHECK(std::memcmp(&*back, &v, sizeof(T)) == 0);
  // one byte short / one byte long are rejected
  CHECK_FALSE(wire::decode_exact<T>(bytes.data(), bytes.size() - 1).has_value());
  auto longer = bytes;
  longer.push_back(0xAA);
  CHECK_FALSE(wire::decode_exact<T>(longer.data(), longer.size()).has_value());
  // prefix: accepts longer buffers, rejects shorter ones
  auto pre = wire::decode_prefix<T>(longer.data(), longer.size());
  REQUIRE(pre.has_value());
  CHECK(std::memcmp(&*pre, &v, sizeof(T)) == 0);
  CHECK_FALSE(wire::decode_prefix<T>(bytes.data(), bytes.size() - 1).has_value());
  return *back;
}

}  // namespace

TEST_CASE("wire: every struct round-trips field by field") {
  SUBCASE("Header") {
    auto b = round_trip(wire::Header{24, 0x5, 0x1000});
    CHECK(b.request == 24);
    CHECK(b.flags == 0x5);
    CHECK(b.size == 0x1000);
  }
  SUBCASE("U64") { CHECK(round_trip(wire::U64{0x0123456789abcdefULL}).value == 0x0123456789abcdefULL); }
  SUBCASE("VringState") {
    auto b = round_trip(wire::VringState{7, 0x80008000});
    CHECK(b.index == 7);
    CHECK(b.num == 0x80008000);
  }
  SUBCASE("VringAddr") {
    auto b = round_trip(wire::VringAddr{3, wire::vring_addr_flag_log, 0x1000, 0x2000, 0x3000, 0x4000});
    CHECK(b.index == 3);
    CHECK(b.flags == 1);
    CHECK(b.desc == 0x1000);
    CHECK(b.used == 0x2000);
    CHECK(b.avail == 0x3000);
    CHECK(b.log == 0x4000);
  }
  SUBCASE("MemoryRegion / MemoryTableHeader / SingleMemoryRegion") {
    wire::MemoryRegion r{0x100000, 0x200000, 0x7f0000000000, 0x1000};
    auto b = round_trip(r);
    CHECK(b.guest_phys_addr == 0x100000);
    CHECK(b.memory_size == 0x200000);
    CHECK(b.user_addr == 0x7f0000000000);
    CHECK(b.mmap_offset == 0x1000);
    auto h = round_trip(wire::MemoryTableHeader{8, 0});
    CHECK(h.nregions == 8);
    CHECK(h.padding == 0);
    auto s = round_trip(wire::SingleMemoryRegion{0, r});
    CHECK(s.padding == 0);
    CHECK(s.region.memory_size == 0x200000);
    CHECK(s.region.mmap_offset == 0x1000);
  }
  SUBCASE("Log") {
    auto b = round_trip(wire::Log{0x4000, 0x100});
    CHECK(b.mmap_size == 0x4000);
    CHECK(b.mmap_offset == 0x100);
  }
  SUBCASE("Iotlb") {
    wire::Iotlb t{};
    t.iova = 1;
    t.size = 2;
    t.uaddr = 3;
    t.perm = 3;
    t.type = 2;
    auto b = round_trip(t);
    CHECK(b.iova == 1);
    CHECK(b.size == 2);
    CHECK(b.uaddr == 3);
    CHECK(b.perm == 3);
    CHECK(b.type == 2);
  }
  SUBCASE("ConfigHeader") {
    auto b = round_trip(wire::ConfigHeader{0x10, 0x20, 1});
    CHECK(b.offset == 0x10);
    CHECK(b.size == 0x20);
    CHECK(b.flags == 1);
  }
  SUBCASE("VringArea") {
    auto b = round_trip(wire::VringArea{0x105, 4096, 0x2000});
    CHECK(b.u64 == 0x105);
    CHECK(b.size == 4096);
    CHECK(b.offset == 0x2000);
  }
  SUBCASE("InflightDesc") {
    wire::InflightDesc d{};
    d.mmap_size = 0x3000;
    d.mmap_offset = 0x10;
    d.num_queues = 4;
    d.queue_size = 256;
    auto b = round_trip(d);
    CHECK(b.mmap_size == 0x3000);
    CHECK(b.mmap_offset == 0x10);
    CHECK(b.num_queues == 4);
    CHECK(b.queue_size == 256);
  }
  SUBCASE("SharedObject") {
    wire::SharedObject o{};
    for (uint8_t i = 0; i < 16; ++i)
      o.uuid[i] = static_cast<uint8_t>(i * 7);
    auto b = round_trip(o);
    CHECK(b.uuid[0] == 0);
    CHECK(b.uuid[15] == 105);
  }
  SUBCASE("DeviceStateTransfer") {
    auto b = round_trip(wire::DeviceStateTransfer{wire::device_state_load, wire::device_state_phase_stopped});
    CHECK(b.direction == 1);
    CHECK(b.phase == 0);
  }
  SUBCASE("ShmemMap") {
    wire::ShmemMap m{};
    m.shmid = 2;
    m.fd_offset = 0x1000;
    m.shm_offset = 0x2000;
    m.len = 0x3000;
    m.flags = wire::shmem_map_flag_rw;
    auto b = round_trip(m);
    CHECK(b.shmid == 2);
    CHECK(b.fd_offset == 0x1000);
    CHECK(b.shm_offset == 0x2000);
    CHECK(b.len == 0x3000);
    CHECK(b.flags == 1);
  }
  SUBCASE("ShmemConfig") {
    wire::ShmemConfig c{};
    c.nregions = 2;
    c.sizes[0] = 0x10000;
    c.sizes[255] = 0x200000;
    auto b = round_trip(c);
    CHECK(b.nregions == 2);
    CHECK(b.sizes[0] == 0x10000);
    CHECK(b.sizes[1] == 0);
    CHECK(b.sizes[255] == 0x200000);
  }
}

TEST_CASE("wire: header bytes are host order at the documented offsets") {
  auto bytes = encode(wire::Header{0x01020304, 0x5, 0x0c});
  uint32_t at4;
  // BOUNDS: bytes holds 12 bytes; reads 4 at offset 4.
  std::memcpy(&at4, bytes.data() + 4, 4);
  CHECK(at4 == 0x5);
  CHECK(bytes.size() == 12);
  CHECK_FALSE(wire::decode_exact<wire::Header>(bytes.data(), 0).has_value());
}

TEST_CASE("messages: frontend_req_from_code accepts exactly 1..max") {
  CHECK_FALSE(frontend_req_from_code(0).has_value());
  for (uint32_t c = 1; c <= frontend_req_max; ++c) {
    auto r = frontend_req_from_code(c);
    REQUIRE(r.has_value());
    CHECK(static_cast<uint32_t>(*r) == c);
    CHECK(std::string(name(*r)) != "UNKNOWN");
    CHECK(frontend_req_name(c) == name(*r));
  }
  CHECK_FALSE(frontend_req_from_code(frontend_req_max + 1).has_value());
  CHECK_FALSE(frontend_req_from_code(0xFFFFFFFFu).has_value());
  CHECK(frontend_req_name(0) == "UNKNOWN(0)");
  CHECK(frontend_req_name(frontend_req_max + 1) == "UNKNOWN(46)");
  CHECK(frontend_req_name(0xFFFFFFFFu) == "UNKNOWN(4294967295)");
}

TEST_CASE("messages: backend_req_from_code accepts exactly 1..max") {
  CHECK_FALSE(backend_req_from_code(0).has_value());
  for (uint32_t c = 1; c <= backend_req_max; ++c) {
    auto r = backend_req_from_code(c);
    REQUIRE(r.has_value());
    CHECK(static_cast<uint32_t>(*r) == c);
    CHECK(backend_req_name(c) == name(*r));
  }
  CHECK_FALSE(backend_req_from_code(backend_req_max + 1).has_value());
  CHECK_FALSE(backend_req_from_code(0xFFFFFFFFu).has_value());
  CHECK(backend_req_name(0) == "UNKNOWN(0)");
  CHECK(backend_req_name(11) == "UNKNOWN(11)");
}

TEST_CASE("messages: spec names") {
  CHECK(std::string(name(FrontendReq::get_features)) == "GET_FEATURES");
  CHECK(std::string(name(FrontendReq::set_mem_table)) == "SET_MEM_TABLE");
  CHECK(std::string(name(FrontendReq::set_backend_req_fd)) == "SET_BACKEND_REQ_FD");
  CHECK(std::string(name(FrontendReq::set_device_state_fd)) == "SET_DEVICE_STATE_FD");
  CHECK(std::string(name(FrontendReq::get_vring_base_skip_drain)) == "GET_VRING_BASE_SKIP_DRAIN");
  CHECK(std::string(name(BackendReq::iotlb_msg)) == "BACKEND_IOTLB_MSG");
  CHECK(std::string(name(BackendReq::shmem_map)) == "BACKEND_SHMEM_MAP");
  CHECK(std::string(name(BackendReq::shmem_unmap)) == "BACKEND_SHMEM_UNMAP");
}

TEST_CASE("messages: feature and protocol feature names") {
  CHECK(feature_name(feature::version_1, DeviceKind::generic) == "VERSION_1");
  CHECK(feature_name(feature::protocol_features, DeviceKind::blk) == "PROTOCOL_FEATURES");
  CHECK(feature_name(feature::ring_packed, DeviceKind::net) == "RING_PACKED");
  CHECK(feature_name(9, DeviceKind::blk) == "FLUSH");
  CHECK(feature_name(9, DeviceKind::generic) == "bit9");
  CHECK(feature_name(63, DeviceKind::generic) == "bit63");
  CHECK(protocol_feature_name(protocol_feature::mq) == "MQ");
  CHECK(protocol_feature_name(protocol_feature::reply_ack) == "REPLY_ACK");
  CHECK(protocol_feature_name(protocol_feature::device_state) == "DEVICE_STATE");
  CHECK(protocol_feature_name(protocol_feature::shmem) == "SHMEM");
  CHECK(protocol_feature_name(protocol_feature::get_vring_base_skip_drain) == "GET_VRING_BASE_SKIP_DRAIN");
  CHECK(protocol_feature_name(24) == "bit24");
  auto names = protocol_feature_names(bit(protocol_feature::mq) | bit(protocol_feature::reply_ack));
  REQUIRE(names.size() == 2);
  CHECK(names[0] == "MQ");
  CHECK(names[1] == "REPLY_ACK");
}
