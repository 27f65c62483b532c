// Table tests for the pure reply validators (protocol/reply.hpp).

#include <doctest/doctest.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "protocol/reply.hpp"
#include "tests/fakes/fake_backend.hpp"
#include "tests/support.hpp"

using namespace vufront;
using vufront::test::bytes_of;

namespace {

constexpr uint32_t ok_flags = flag_version | flag_reply;

Message make(FrontendReq req, std::vector<uint8_t> body, size_t nfds = 0,
             uint32_t flags = ok_flags, std::optional<uint32_t> code = std::nullopt) {
  Message m;
  m.header = {code.value_or(static_cast<uint32_t>(req)), flags,
              static_cast<uint32_t>(body.size())};
  m.body = std::move(body);
  for (size_t i = 0; i < nfds; ++i)
    m.fds.push_back(make_eventfd());
  return m;
}

std::vector<uint8_t> u64(uint64_t v) { return bytes_of(wire::U64{v}); }

template <class T>
std::optional<errc> code_of(const Result<T>& r) {
  if (r.ok())
    return std::nullopt;
  return r.error().code;
}

}  // namespace

TEST_CASE("reply: max_body and max_fds") {
  CHECK(reply::max_body(FrontendReq::get_features) == 8);
  CHECK(reply::max_body(FrontendReq::set_mem_table) == 8);  // ack
  CHECK(reply::max_body(FrontendReq::get_vring_base) == 8);
  CHECK(reply::max_body(FrontendReq::get_config, 16) == 28);
  CHECK(reply::max_body(FrontendReq::get_config, 0xFFFFFFFF) == wire::max_payload_size);
  CHECK(reply::max_body(FrontendReq::get_inflight_fd) == 24);
  CHECK(reply::max_body(FrontendReq::get_shmem_config) == 2056);
  CHECK(reply::max_fds(FrontendReq::get_inflight_fd) == 1);
  CHECK(reply::max_fds(FrontendReq::set_device_state_fd) == 1);
  CHECK(reply::max_fds(FrontendReq::get_features) == 0);
  CHECK(reply::max_fds(FrontendReq::set_mem_table) == 0);
}

TEST_CASE("reply: check_header table") {
  struct Row {
    const char* name;
    uint32_t request;
    uint32_t flags;
    std::optional<errc> want;
  };
  const uint32_t gf = static_cast<uint32_t>(FrontendReq::get_features);
  const Row rows[] = {
      {"good", gf, 0x5, std::nullopt},
      {"other request", static_cast<uint32_t>(FrontendReq::get_status), 0x5, errc::unexpected_reply},
      {"unknown request", 999, 0x5, errc::unexpected_reply},
      {"missing reply bit", gf, 0x1, errc::bad_flags},
      {"version 0", gf, 0x4, errc::bad_flags},
      {"version 2", gf, 0x6, errc::bad_flags},
      {"need_reply set", gf, 0xd, errc::bad_flags},
      {"reserved bit 4", gf, 0x15, errc::bad_flags},
      {"reserved bit 31", gf, 0x80000005, errc::bad_flags},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    auto r = reply::check_header(FrontendReq::get_features, wire::Header{row.request, row.flags, 8});
    CHECK(code_of(r) == row.want);
    if (!r.ok())
      CHECK(r.error().request == "GET_FEATURES");
  }
}

TEST_CASE("reply: parse_u64 and parse_ack table") {
  struct Row {
    const char* name;
    std::vector<uint8_t> body;
    size_t nfds;
    uint32_t flags;
    std::optional<errc> want_u64;
    std::optional<errc> want_ack;
  };
  const Row rows[] = {
      {"zero", u64(0), 0, ok_flags, std::nullopt, std::nullopt},
      {"non-zero", u64(5), 0, ok_flags, std::nullopt, errc::backend_failure},
      {"4-byte body", {1, 0, 0, 0}, 0, ok_flags, errc::bad_size, errc::bad_size},
      {"empty body", {}, 0, ok_flags, errc::bad_size, errc::bad_size},
      {"16-byte body", std::vector<uint8_t>(16, 0), 0, ok_flags, errc::bad_size, errc::bad_size},
      {"with an fd", u64(0), 1, ok_flags, errc::bad_fds, errc::bad_fds},
      {"bad flags", u64(0), 0, 0x1, errc::bad_flags, errc::bad_flags},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    vufront::test::FdCount fds;
    {
      auto m = make(FrontendReq::set_mem_table, row.body, row.nfds, row.flags);
      auto v = reply::parse_u64(FrontendReq::set_mem_table, m);
      CHECK(code_of(v) == row.want_u64);
      auto a = reply::parse_ack(FrontendReq::set_mem_table, m);
      CHECK(code_of(a) == row.want_ack);
      if (!a.ok())
        CHECK(a.error().request == "SET_MEM_TABLE");
    }
    CHECK(fds.leaked() == 0);
  }
  auto m = make(FrontendReq::get_features, {1, 0, 0, 0});
  auto v = reply::parse_u64(FrontendReq::get_features, m);
  REQUIRE_FALSE(v.ok());
  CHECK(v.error().detail == "reply body is 4 bytes, expected 8");
}

TEST_CASE("reply: parse_log_base takes libvhost-user's u64 and rust-vmm's echoed Log") {
  using R = FrontendReq;
  CHECK(reply::max_body(R::set_log_base) == 16);
  CHECK(reply::parse_log_base(make(R::set_log_base, u64(4096))).ok());  // libvhost-user
  CHECK(reply::parse_log_base(make(R::set_log_base, bytes_of(wire::Log{4096, 0}))).ok());
  auto short_body = reply::parse_log_base(make(R::set_log_base, {1, 0, 0, 0}));
  REQUIRE_FALSE(short_body.ok());
  CHECK(short_body.error().code == errc::bad_size);
  CHECK(short_body.error().request == "SET_LOG_BASE");
  CHECK(short_body.error().detail ==
        "reply body is 4 bytes, expected 8 (a u64) or 16 (the Log echoed)");
  CHECK(code_of(reply::parse_log_base(make(R::set_log_base, std::vector<uint8_t>(24, 0)))) ==
        errc::bad_size);
  CHECK(code_of(reply::parse_log_base(make(R::set_log_base, std::vector<uint8_t>(5, 0), 0, 0x1))) ==
        errc::bad_flags);  // the header is checked first
  vufront::test::FdCount fds;
  {
    CHECK(code_of(reply::parse_log_base(make(R::set_log_base, u64(0), 1))) == errc::bad_fds);
    CHECK(code_of(reply::parse_log_base(make(R::get_features, u64(0), 0, ok_flags,
                                             static_cast<uint32_t>(R::get_features))))
              .has_value());  // a reply to another request
  }
  CHECK(fds.leaked() == 0);
}

TEST_CASE("reply: parse_queue_num / parse_max_mem_slots / parse_status ranges") {
  struct Row {
    uint64_t v;
    bool queue_ok;
    bool slots_ok;
    bool status_ok;
  };
  const Row rows[] = {
      {0, false, false, true},        {1, true, true, true},         {255, true, true, true},
      {256, true, true, false},       {512, true, true, false},      {513, true, false, false},
      {0x8000, true, false, false},   {0x8001, false, false, false}, {~0ULL, false, false, false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.v);
    auto q = reply::parse_queue_num(make(FrontendReq::get_queue_num, u64(row.v)));
    CHECK(q.ok() == row.queue_ok);
    if (q.ok())
      CHECK(*q == row.v);
    else
      CHECK(q.error().code == errc::invalid_payload);
    auto s = reply::parse_max_mem_slots(make(FrontendReq::get_max_mem_slots, u64(row.v)));
    CHECK(s.ok() == row.slots_ok);
    if (!s.ok())
      CHECK(s.error().code == errc::invalid_payload);
    auto st = reply::parse_status(make(FrontendReq::get_status, u64(row.v)));
    CHECK(st.ok() == row.status_ok);
    if (st.ok())
      CHECK(*st == row.v);
  }
  // the request code is checked against the right request
  CHECK(reply::parse_queue_num(make(FrontendReq::get_features, u64(1))).error().code ==
        errc::unexpected_reply);
}

TEST_CASE("reply: parse_vring_base table") {
  struct Row {
    const char* name;
    std::vector<uint8_t> body;
    uint32_t index;
    bool packed;
    std::optional<errc> want;
  };
  const Row rows[] = {
      {"split ok", bytes_of(wire::VringState{2, 0xffff}), 2, false, std::nullopt},
      {"split too big", bytes_of(wire::VringState{2, 0x10000}), 2, false, errc::invalid_payload},
      {"packed big ok", bytes_of(wire::VringState{2, 0x80008000}), 2, true, std::nullopt},
      {"wrong index", bytes_of(wire::VringState{3, 1}), 2, false, errc::invalid_payload},
      {"short body", {0, 0, 0, 0}, 2, false, errc::bad_size},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    auto r = reply::parse_vring_base(make(FrontendReq::get_vring_base, row.body), row.index, row.packed);
    CHECK(code_of(r) == row.want);
    if (!r.ok())
      CHECK(r.error().request == "GET_VRING_BASE");
  }
}

TEST_CASE("reply: parse_config table") {
  auto cfg = [](uint32_t off, uint32_t size, size_t data) {
    auto b = bytes_of(wire::ConfigHeader{off, size, 0});
    for (size_t i = 0; i < data; ++i)
      b.push_back(static_cast<uint8_t>(i + 1));
    return b;
  };
  struct Row {
    const char* name;
    std::vector<uint8_t> body;
    size_t nfds;
    std::optional<errc> want;
  };
  const Row rows[] = {
      {"good", cfg(0, 8, 8), 0, std::nullopt},
      {"empty reply refusal", {}, 0, errc::backend_failure},
      {"size 0 refusal", cfg(0, 0, 0), 0, errc::backend_failure},
      {"other offset", cfg(4, 8, 8), 0, errc::invalid_payload},
      {"other size", cfg(0, 4, 4), 0, errc::invalid_payload},
      {"short data", cfg(0, 8, 7), 0, errc::bad_size},
      {"long data", cfg(0, 8, 9), 0, errc::bad_size},
      {"short header", {1, 2, 3}, 0, errc::bad_size},
      {"fd", cfg(0, 8, 8), 1, errc::bad_fds},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    auto r = reply::parse_config(make(FrontendReq::get_config, row.body, row.nfds), 0, 8);
    CHECK(code_of(r) == row.want);
    if (r.ok()) {
      CHECK(*r == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    } else {
      CHECK(r.error().request == "GET_CONFIG");
      CHECK(reply::is_refusal(r.error()) == (row.want == errc::backend_failure));
    }
  }
}

TEST_CASE("reply: parse_inflight table") {
  auto desc = [](uint64_t size, uint64_t off, uint16_t nq, uint16_t qs) {
    wire::InflightDesc d{};
    d.mmap_size = size;
    d.mmap_offset = off;
    d.num_queues = nq;
    d.queue_size = qs;
    return bytes_of(d);
  };
  struct Row {
    const char* name;
    std::vector<uint8_t> body;
    size_t nfds;
    std::optional<errc> want;
  };
  const Row rows[] = {
      {"good with fd", desc(4096, 0, 2, 128), 1, std::nullopt},
      {"declined without fd", desc(0, 0, 0, 0), 0, std::nullopt},
      {"missing fd", desc(4096, 0, 2, 128), 0, errc::bad_fds},
      {"declined with fd", desc(0, 0, 2, 128), 1, errc::bad_fds},
      {"two fds", desc(4096, 0, 2, 128), 2, errc::bad_fds},
      {"other queue count", desc(4096, 0, 3, 128), 1, errc::invalid_payload},
      {"other queue size", desc(4096, 0, 2, 256), 1, errc::invalid_payload},
      {"overflow", desc(4096, ~0ULL - 10, 2, 128), 1, errc::invalid_payload},
      {"short body", std::vector<uint8_t>(16, 0), 0, errc::bad_size},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    vufront::test::FdCount fds;
    {
      auto m = make(FrontendReq::get_inflight_fd, row.body, row.nfds);
      auto r = reply::parse_inflight(m, 2, 128);
      CHECK(code_of(r) == row.want);
      if (r.ok()) {
        CHECK(r->fd.valid() == (r->desc.mmap_size != 0));
        CHECK(m.fds.empty());
      }
    }
    CHECK(fds.leaked() == 0);
  }
}

TEST_CASE("reply: parse_shmem_config table") {
  wire::ShmemConfig c{};
  c.nregions = 2;
  c.sizes[0] = 0x1000;
  c.sizes[7] = 0x2000;
  CHECK(reply::parse_shmem_config(make(FrontendReq::get_shmem_config, bytes_of(c))).ok());
  c.nregions = 3;
  CHECK(code_of(reply::parse_shmem_config(make(FrontendReq::get_shmem_config, bytes_of(c)))) ==
        errc::invalid_payload);
  CHECK(code_of(reply::parse_shmem_config(make(FrontendReq::get_shmem_config, u64(0)))) ==
        errc::bad_size);
  wire::ShmemConfig none{};
  CHECK(reply::parse_shmem_config(make(FrontendReq::get_shmem_config, bytes_of(none))).ok());
}

TEST_CASE("reply: parse_device_state table") {
  struct Row {
    const char* name;
    uint64_t value;
    size_t nfds;
    std::optional<errc> want;
    bool backend_fd;
  };
  const Row rows[] = {
      {"own pipe", 0x100, 0, std::nullopt, false},
      {"back-end fd", 0x0, 1, std::nullopt, true},
      {"nofd but fd", 0x100, 1, errc::bad_fds, false},
      {"fd promised, none", 0x0, 0, errc::bad_fds, false},
      {"two fds", 0x0, 2, errc::bad_fds, false},
      {"error", 0x1, 0, errc::backend_failure, false},
      {"error with nofd", 0x105, 0, errc::backend_failure, false},
      {"error with fd", 0x1, 1, errc::bad_fds, false},
      {"undefined bits", 0x200, 0, errc::invalid_payload, false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.name);
    vufront::test::FdCount fds;
    {
      auto m = make(FrontendReq::set_device_state_fd, u64(row.value), row.nfds);
      auto r = reply::parse_device_state(m);
      CHECK(code_of(r) == row.want);
      if (r.ok())
        CHECK(r->backend_fd.has_value() == row.backend_fd);
      else
        CHECK(r.error().request == "SET_DEVICE_STATE_FD");
    }
    CHECK(fds.leaked() == 0);
  }
}

TEST_CASE("reply: is_refusal only for backend_failure") {
  CHECK(reply::is_refusal(make_error(errc::backend_failure, "X", "")));
  for (errc c : {errc::io_error, errc::disconnected, errc::timeout, errc::broken, errc::oversized,
                 errc::bad_size, errc::bad_flags, errc::unexpected_reply, errc::bad_fds,
                 errc::invalid_payload, errc::not_negotiated, errc::invalid_argument})
    CHECK_FALSE(reply::is_refusal(make_error(c, "X", "")));
}
