// Error rendering/classification and virtio config decoding.
#include <doctest/doctest.h>

#include <cstring>

#include "base/error.hpp"
#include "protocol/virtio_config.hpp"

using namespace vufront;

TEST_CASE("Error::message names the request, the code, the detail and errno") {
  auto e = make_error(errc::io_error, "SET_MEM_TABLE", "sendmsg failed", EPIPE);
  CHECK(e.message() == std::string("SET_MEM_TABLE: io_error: sendmsg failed (") +
                           std::strerror(EPIPE) + ")");
  CHECK(make_error(errc::timeout, "GET_FEATURES", "").message() == "GET_FEATURES: timeout");
  CHECK(make_error(errc::bad_state, "", "x").message() == "error: bad_state: x");
}

TEST_CASE("every errc has a name and a reconnect classification") {
  for (int c = static_cast<int>(errc::io_error); c <= static_cast<int>(errc::permission_denied); ++c) {
    auto code = static_cast<errc>(c);
    CAPTURE(c);
    CHECK(std::string(to_string(code)) != "unknown_error");
    errc back{};
    CHECK(errc_from_string(to_string(code), back));
    CHECK(back == code);
  }
  errc none{};
  CHECK_FALSE(errc_from_string("no_such_code", none));
  CHECK(make_error(errc::disconnected, "GET_FEATURES", "").reconnect_may_help());
  CHECK(make_error(errc::timeout, "GET_FEATURES", "").reconnect_may_help());
  CHECK(make_error(errc::bad_size, "GET_FEATURES", "").reconnect_may_help());
  CHECK_FALSE(make_error(errc::backend_failure, "SET_CONFIG", "").reconnect_may_help());
  CHECK_FALSE(make_error(errc::invalid_argument, "SET_MEM_TABLE", "").reconnect_may_help());
  CHECK_FALSE(make_error(errc::not_negotiated, "GET_CONFIG", "").reconnect_may_help());
}

TEST_CASE("Result carries a value or an error") {
  Result<int> good = 7;
  REQUIRE(good.ok());
  CHECK(*good == 7);
  Result<int> bad = make_error(errc::timeout, "GET_QUEUE_NUM", "");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == errc::timeout);
  Result<void> v = ok();
  CHECK(v.ok());
  Result<void> f = make_error(errc::broken, "SET_OWNER", "");
  CHECK(f.error().request == "SET_OWNER");
}

TEST_CASE("virtio-blk config decodes the fields qemu-storage-daemon serves") {
  virtio::BlkConfig c{};
  c.capacity = 131072;
  c.seg_max = 126;
  c.blk_size = 512;
  c.num_queues = 4;
  c.max_discard_sectors = 32768;
  std::vector<uint8_t> bytes(sizeof c);
  std::memcpy(bytes.data(), &c, sizeof c);
  auto f = virtio::decode_config(DeviceKind::blk, bytes);
  REQUIRE(f.size() == 19);
  CHECK(f[0].name == "capacity");
  CHECK(f[0].text == "131072 sectors (64.0 MiB)");
  CHECK(f[0].number == uint64_t{131072});  // JSON: the number, in sectors
  auto find = [&f](const char* k) {
    for (auto& field : f)
      if (field.name == k)
        return field.text;
    return std::string("<missing>");
  };
  CHECK(find("cylinders") == "0");
  CHECK(find("seg_max") == "126");
  CHECK(find("blk_size") == "512");
  CHECK(find("num_queues") == "4");
  CHECK(find("max_discard_sectors") == "32768");
  // too few bytes: nothing decoded, nothing read out of bounds
  bytes.resize(59);
  CHECK(virtio::decode_config(DeviceKind::blk, bytes).empty());
}

TEST_CASE("virtio-net and virtio-fs configs decode, generic does not") {
  std::vector<uint8_t> net = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 2, 0, 0xdc, 0x05};
  auto f = virtio::decode_config(DeviceKind::net, net);
  REQUIRE(f.size() == 4);
  CHECK(f[0].text == "52:54:00:12:34:56");
  CHECK_FALSE(f[0].number.has_value());  // a MAC is text, also in JSON
  CHECK(f[2].text == "2");
  CHECK(f[3].number == uint64_t{1500});

  std::vector<uint8_t> fs(40, 0);
  std::memcpy(fs.data(), "myfs\x01", 5);
  fs[36] = 1;
  auto g = virtio::decode_config(DeviceKind::fs, fs);
  REQUIRE(g.size() == 2);
  CHECK(g[0].text == "myfs?");  // non-printable bytes are masked
  CHECK(g[1].number == uint64_t{1});
  CHECK(virtio::decode_config(DeviceKind::generic, fs).empty());
  CHECK(virtio::config_size(DeviceKind::blk) == 60);
  CHECK(virtio::config_size(DeviceKind::generic) == 256);
}
