// Request builders: byte layouts of virtio-blk, virtio-net and FUSE requests,
// reply parsing, and one blk request through a driver/device queue pair.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "tests/virtio/ring_rig.hpp"
#include "virtio/fuse.hpp"
#include "virtio/requests.hpp"

using namespace vufront;
using namespace vufront::virtio;
using vufront::test::RingRig;
using vufront::test::rig_data_gpa;

namespace {

GuestScratch scratch(const RingRig& rig, uint64_t len = 1 << 20) {
  auto s = GuestScratch::create(rig.mem, rig_data_gpa, len);
  REQUIRE(s.ok());
  return std::move(s).value();
}

std::vector<uint8_t> bytes(const GuestScratch& s, uint64_t gpa, uint64_t len) {
  const uint8_t* p = s.ptr(gpa, len);
  REQUIRE(p != nullptr);
  return {p, p + len};
}

}  // namespace

TEST_CASE("requests: scratch allocator alignment and exhaustion") {
  RingRig rig(RingKind::split, 8);
  auto s = scratch(rig, 4096);
  auto a = s.alloc(3, 1);
  auto b = s.alloc(8, 512);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == rig_data_gpa);
  CHECK(*b == rig_data_gpa + 512);
  CHECK(s.alloc(4096).error().code == errc::bad_state);
  CHECK(s.alloc(1, 3).error().code == errc::invalid_argument);
  s.reset();
  CHECK(s.alloc(4096).ok());
  CHECK(GuestScratch::create(rig.mem, 0x10, 16).error().code == errc::invalid_argument);
}

TEST_CASE("requests: virtio-blk request layout and status") {
  RingRig rig(RingKind::split, 8);
  auto s = scratch(rig);
  std::vector<uint8_t> data(1024);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i * 7 + 0x5a);
  auto w = blk_write(s, 8, data);
  REQUIRE(w.ok());
  REQUIRE(w->chain.size() == 3);
  CHECK(w->chain[0].len == 16);
  CHECK_FALSE(w->chain[0].device_writable);
  CHECK(w->chain[1].len == 1024);
  CHECK_FALSE(w->chain[1].device_writable);
  CHECK(w->chain[2].len == 1);
  CHECK(w->chain[2].device_writable);
  CHECK(w->data_gpa % 512 == 0);
  const std::vector<uint8_t> hdr = {1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0};
  CHECK(bytes(s, w->header_gpa, 16) == hdr);
  CHECK(bytes(s, w->data_gpa, 1024) == data);
  CHECK(bytes(s, w->status_gpa, 1)[0] == 0xff);  // poisoned

  auto r = blk_read(s, 0x1'0000'0002, 512);
  REQUIRE(r.ok());
  const std::vector<uint8_t> rhdr = {0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0};
  CHECK(bytes(s, r->header_gpa, 16) == rhdr);
  CHECK(r->chain[1].device_writable);

  auto f = blk_flush(s);
  REQUIRE(f.ok());
  CHECK(f->chain.size() == 2);
  CHECK(bytes(s, f->header_gpa, 4) == std::vector<uint8_t>{4, 0, 0, 0});

  auto id = blk_get_id(s);
  REQUIRE(id.ok());
  CHECK(id->chain[1].len == 20);
  CHECK(id->chain[1].device_writable);
  CHECK(bytes(s, id->header_gpa, 4) == std::vector<uint8_t>{8, 0, 0, 0});

  CHECK(blk_read(s, 0, 0).error().code == errc::invalid_argument);
  CHECK(blk_read(s, 0, 100).error().code == errc::invalid_argument);

  CHECK(blk_status(s, *w, 1).error().code == errc::backend_failure);  // untouched
  *s.ptr(w->status_gpa, 1) = blk_s_unsupp;
  auto unsupp = blk_status(s, *w, 1);
  CHECK(unsupp.error().code == errc::backend_failure);
  CHECK(unsupp.error().detail.find("UNSUPP") != std::string::npos);
  *s.ptr(w->status_gpa, 1) = blk_s_ok;
  CHECK(blk_status(s, *w, 1).ok());
  CHECK(blk_status(s, *w, 0).error().code == errc::invalid_payload);
}

TEST_CASE("requests: virtio-blk read through a driver and a device queue") {
  for (RingKind k : {RingKind::split, RingKind::packed}) {
    CAPTURE(to_string(k));
    RingRig rig(k, 16, 4);
    auto drv = rig.driver();
    auto dev = rig.device();
    auto s = scratch(rig);
    auto req = blk_get_id(s);
    REQUIRE(req.ok());
    auto head = drv.add_chain(req->chain, true);
    REQUIRE(head.ok());
    auto c = dev.pop();
    REQUIRE(c.ok());
    REQUIRE(c->has_value());
    const Chain& chain = **c;
    REQUIRE(chain.segments.size() == 3);
    BlkReqHeader h{};
    std::memcpy(&h, chain.segments[0].ptr, sizeof h);
    CHECK(h.type == blk_t_get_id);
    std::memcpy(chain.segments[1].ptr, "vufront-serial", 15);
    chain.segments[2].ptr[0] = blk_s_ok;
    REQUIRE(dev.push(chain.id, 21).ok());
    auto u = drv.poll_used();
    REQUIRE(u.ok());
    REQUIRE(u->has_value());
    CHECK((*u)->id == *head);
    CHECK(blk_status(s, *req, (*u)->len).ok());
    const auto serial = blk_data(s, *req);
    CHECK(std::string(reinterpret_cast<const char*>(serial.data())) == "vufront-serial");
  }
}

TEST_CASE("requests: virtio-net header and frames") {
  RingRig rig(RingKind::split, 8);
  auto s = scratch(rig);
  const std::vector<uint8_t> frame = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54,
                                      0x00, 0x12, 0x34, 0x56, 0x88, 0xb5, 'h',  'i'};
  auto tx = net_tx_frame(s, frame);
  REQUIRE(tx.ok());
  REQUIRE(tx->chain.size() == 1);
  CHECK(tx->len == 12 + frame.size());
  CHECK_FALSE(tx->chain[0].device_writable);
  auto raw = bytes(s, tx->gpa, tx->len);
  CHECK(std::vector<uint8_t>(raw.begin(), raw.begin() + 12) == std::vector<uint8_t>(12, 0));
  CHECK(std::vector<uint8_t>(raw.begin() + 12, raw.end()) == frame);
  CHECK(net_tx_frame(s, {}).error().code == errc::invalid_argument);

  auto rx = net_rx_buffer(s, 2048);
  REQUIRE(rx.ok());
  CHECK(rx->chain[0].device_writable);
  CHECK(rx->chain[0].len == 2048);
  // The device writes a header with num_buffers 1 and the frame.
  NetHdrV1 h{};
  h.num_buffers = 1;
  std::memcpy(s.ptr(rx->gpa, 12), &h, 12);
  std::memcpy(s.ptr(rx->gpa + 12, frame.size()), frame.data(), frame.size());
  const auto used = static_cast<uint32_t>(12 + frame.size());
  auto got = net_rx_frame(s, *rx, used);
  REQUIRE(got.ok());
  CHECK(got->frame == frame);
  CHECK(got->header.num_buffers == 1);
  CHECK(net_rx_frame(s, *rx, 11).error().code == errc::invalid_payload);
  CHECK(net_rx_frame(s, *rx, 2049).error().code == errc::invalid_payload);
  h.num_buffers = 2;
  std::memcpy(s.ptr(rx->gpa, 12), &h, 12);
  CHECK(net_rx_frame(s, *rx, used).error().code == errc::invalid_payload);
}

TEST_CASE("requests: FUSE struct layouts and request encoding") {
  static_assert(sizeof(fuse::InHeader) == 40 && sizeof(fuse::OutHeader) == 16);
  static_assert(sizeof(fuse::EntryOut) == 128 && offsetof(fuse::EntryOut, attr) + 8 == 48);
  RingRig rig(RingKind::split, 8);
  auto s = scratch(rig);
  auto init = fuse::init(s, 1);
  REQUIRE(init.ok());
  REQUIRE(init->chain.size() == 2);
  CHECK(init->chain[0].len == 40 + 16);
  CHECK_FALSE(init->chain[0].device_writable);
  CHECK(init->chain[1].device_writable);
  CHECK(init->chain[1].len == 16 + 64);
  fuse::InHeader ih{};
  std::memcpy(&ih, s.ptr(init->chain[0].gpa, 40), 40);
  CHECK(ih.len == 56);
  CHECK(ih.opcode == fuse::op_init);
  CHECK(ih.unique == 1);
  CHECK(ih.nodeid == 0);
  CHECK(ih.pid == static_cast<uint32_t>(::getpid()));
  fuse::InitIn ii{};
  std::memcpy(&ii, s.ptr(init->chain[0].gpa + 40, 16), 16);
  CHECK(ii.major == 7);
  CHECK(ii.minor == 31);

  auto lk = fuse::lookup(s, 2, fuse::root_nodeid, "hello.txt");
  REQUIRE(lk.ok());
  CHECK(lk->chain[0].len == 40 + 10);
  CHECK(bytes(s, lk->chain[0].gpa + 40, 10) ==
        std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '.', 't', 'x', 't', 0});
  std::memcpy(&ih, s.ptr(lk->chain[0].gpa, 40), 40);
  CHECK(ih.nodeid == 1);
  CHECK(ih.opcode == fuse::op_lookup);

  auto rd = fuse::read(s, 4, 7, 0xabc, 4096, 100);
  REQUIRE(rd.ok());
  fuse::ReadIn ri{};
  std::memcpy(&ri, s.ptr(rd->chain[0].gpa + 40, 40), 40);
  CHECK(ri.fh == 0xabc);
  CHECK(ri.offset == 4096);
  CHECK(ri.size == 100);
  CHECK(rd->chain[1].len == 116);
}

TEST_CASE("requests: FUSE reply decoding and validation") {
  RingRig rig(RingKind::split, 8);
  auto s = scratch(rig);
  auto lk = fuse::lookup(s, 9, 1, "f");
  REQUIRE(lk.ok());
  uint8_t* out = s.ptr(lk->out_gpa, lk->out_len);
  const auto write_out = [&](uint32_t len, int32_t err, uint64_t unique) {
    const fuse::OutHeader h{len, err, unique};
    std::memcpy(out, &h, sizeof h);
  };
  fuse::EntryOut e{};
  e.nodeid = 42;
  e.attr.size = 1234;
  std::memcpy(out + 16, &e, sizeof e);
  write_out(16 + 128, 0, 9);
  auto ok = fuse::reply(s, *lk, 16 + 128);
  REQUIRE(ok.ok());
  CHECK(ok->error == 0);
  auto entry = fuse::decode_entry(ok->body);
  REQUIRE(entry.ok());
  CHECK(entry->nodeid == 42);
  CHECK(entry->attr.size == 1234);

  write_out(16, -2, 9);
  auto enoent = fuse::reply(s, *lk, 16);
  REQUIRE(enoent.ok());
  CHECK(enoent->error == -2);
  CHECK(enoent->body.empty());

  write_out(16 + 128, 0, 8);
  CHECK(fuse::reply(s, *lk, 144).error().code == errc::invalid_payload);  // unique
  write_out(200, 0, 9);
  CHECK(fuse::reply(s, *lk, 144).error().code == errc::invalid_payload);  // len > used
  write_out(8, 0, 9);
  CHECK(fuse::reply(s, *lk, 144).error().code == errc::invalid_payload);  // len < header
  write_out(16, 5, 9);
  CHECK(fuse::reply(s, *lk, 16).error().code == errc::invalid_payload);  // positive error
  write_out(32, -5, 9);
  CHECK(fuse::reply(s, *lk, 32).error().code == errc::invalid_payload);  // error with body
  CHECK(fuse::reply(s, *lk, 15).error().code == errc::invalid_payload);
  CHECK(fuse::reply(s, *lk, lk->out_len + 1).error().code == errc::invalid_payload);

  CHECK(fuse::decode_entry(std::vector<uint8_t>(127)).error().code == errc::invalid_payload);
  std::vector<uint8_t> init_body(24);  // an old 7.2x server's short init reply
  init_body[0] = 7;
  init_body[4] = 31;
  auto io = fuse::decode_init(init_body);
  REQUIRE(io.ok());
  CHECK(io->major == 7);
  CHECK(io->minor == 31);
  CHECK(io->max_pages == 0);
  std::vector<uint8_t> open_body(16);
  open_body[0] = 0x77;
  auto oo = fuse::decode_open(open_body);
  REQUIRE(oo.ok());
  CHECK(oo->fh == 0x77);
}
