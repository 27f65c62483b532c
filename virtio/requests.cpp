#include "virtio/requests.hpp"

#include <cstring>
#include <string>

namespace vufront::virtio {

// ---- scratch ---------------------------------------------------------------------

Result<GuestScratch> GuestScratch::create(const GuestMemory& mem, uint64_t gpa, uint64_t len) {
  if (len == 0 || mem.host_ptr(gpa, len) == nullptr)
    return make_error(errc::invalid_argument, "scratch area",
                      "range is empty or not inside one guest region");
  GuestScratch s;
  s.mem_ = &mem;
  s.gpa_ = gpa;
  s.len_ = len;
  return s;
}

Result<uint64_t> GuestScratch::alloc(uint64_t len, uint64_t align) {
  if (align == 0 || (align & (align - 1)) != 0)
    return make_error(errc::invalid_argument, "scratch alloc", "alignment not a power of two");
  const uint64_t start = align_up(gpa_ + used_, align) - gpa_;
  if (start > len_ || len > len_ - start)
    return make_error(errc::bad_state, "scratch alloc",
                      "scratch area exhausted (" + std::to_string(len) + " bytes wanted)");
  used_ = start + len;
  std::memset(mem_->host_ptr(gpa_ + start, len), 0, len);
  // the driver writes what it allocates (zeroes, then the request): logged
  // for a migration (GuestMemory::mark_written; nothing when not logging)
  mem_->mark_written(gpa_ + start, len);
  return gpa_ + start;
}

uint8_t* GuestScratch::ptr(uint64_t gpa, uint64_t len) const noexcept {
  if (gpa < gpa_ || gpa - gpa_ > len_ || len > len_ - (gpa - gpa_))
    return nullptr;
  return mem_->host_ptr(gpa, len);
}

// ---- virtio-blk ------------------------------------------------------------------

namespace {

constexpr uint8_t status_poison = 0xff;

Result<BlkRequest> blk_build(GuestScratch& s, uint32_t type, uint64_t sector, uint32_t data_len,
                             bool data_writable) {
  BlkRequest r;
  auto hdr = s.alloc(sizeof(BlkReqHeader));
  if (!hdr)
    return std::move(hdr).error();
  r.header_gpa = *hdr;
  const BlkReqHeader h{type, 0, sector};
  std::memcpy(s.ptr(r.header_gpa, sizeof h), &h, sizeof h);
  r.chain.push_back({r.header_gpa, sizeof h, false});
  if (data_len != 0) {
    auto data = s.alloc(data_len, 512);
    if (!data)
      return std::move(data).error();
    r.data_gpa = *data;
    r.data_len = data_len;
    r.chain.push_back({r.data_gpa, data_len, data_writable});
  }
  auto st = s.alloc(1, 1);
  if (!st)
    return std::move(st).error();
  r.status_gpa = *st;
  *s.ptr(r.status_gpa, 1) = status_poison;
  r.chain.push_back({r.status_gpa, 1, true});
  return r;
}

Result<void> check_sectors(uint64_t len, const char* op) {
  if (len == 0 || len % blk_sector_size != 0 || len > UINT32_MAX)
    return make_error(errc::invalid_argument, op,
                      "length " + std::to_string(len) + " is not a non-zero sector multiple");
  return ok();
}

}  // namespace

Result<BlkRequest> blk_read(GuestScratch& s, uint64_t sector, uint32_t len) {
  if (auto c = check_sectors(len, "blk read"); !c)
    return std::move(c).error();
  return blk_build(s, blk_t_in, sector, len, true);
}

Result<BlkRequest> blk_write(GuestScratch& s, uint64_t sector, const std::vector<uint8_t>& data) {
  if (auto c = check_sectors(data.size(), "blk write"); !c)
    return std::move(c).error();
  auto r = blk_build(s, blk_t_out, sector, static_cast<uint32_t>(data.size()), false);
  if (r)
    std::memcpy(s.ptr(r->data_gpa, data.size()), data.data(), data.size());
  return r;
}

Result<BlkRequest> blk_flush(GuestScratch& s) { return blk_build(s, blk_t_flush, 0, 0, false); }

Result<BlkRequest> blk_get_id(GuestScratch& s) {
  return blk_build(s, blk_t_get_id, 0, blk_id_bytes, true);
}

Result<void> blk_status(const GuestScratch& s, const BlkRequest& r, uint32_t used_len) {
  constexpr const char* op = "blk request";
  if (used_len < 1)
    return make_error(errc::invalid_payload, op, "used length 0: status byte not written");
  const uint8_t st = *s.ptr(r.status_gpa, 1);
  if (st == blk_s_ok)
    return ok();
  const char* what = st == blk_s_ioerr    ? "IOERR"
                     : st == blk_s_unsupp ? "UNSUPP"
                     : st == status_poison ? "untouched (0xff)"
                                           : "unknown";
  return make_error(errc::backend_failure, op,
                    "status " + std::to_string(st) + " " + what);
}

std::vector<uint8_t> blk_data(const GuestScratch& s, const BlkRequest& r) {
  if (r.data_len == 0)
    return {};
  const uint8_t* p = s.ptr(r.data_gpa, r.data_len);
  return {p, p + r.data_len};
}

// ---- virtio-net ------------------------------------------------------------------

Result<NetBuffer> net_tx_frame(GuestScratch& s, const std::vector<uint8_t>& frame) {
  if (frame.empty() || frame.size() > UINT32_MAX - sizeof(NetHdrV1))
    return make_error(errc::invalid_argument, "net tx", "frame size out of range");
  NetBuffer b;
  b.len = static_cast<uint32_t>(sizeof(NetHdrV1) + frame.size());
  auto g = s.alloc(b.len);
  if (!g)
    return std::move(g).error();
  b.gpa = *g;
  const NetHdrV1 h{};  // no offloads; num_buffers is device-to-driver only
  uint8_t* p = s.ptr(b.gpa, b.len);
  std::memcpy(p, &h, sizeof h);
  std::memcpy(p + sizeof h, frame.data(), frame.size());
  b.chain.push_back({b.gpa, b.len, false});
  return b;
}

Result<NetBuffer> net_rx_buffer(GuestScratch& s, uint32_t len) {
  if (len < sizeof(NetHdrV1))
    return make_error(errc::invalid_argument, "net rx", "buffer smaller than the header");
  NetBuffer b;
  b.len = len;
  auto g = s.alloc(len);
  if (!g)
    return std::move(g).error();
  b.gpa = *g;
  b.chain.push_back({b.gpa, b.len, true});
  return b;
}

Result<NetFrame> net_rx_frame(const GuestScratch& s, const NetBuffer& b, uint32_t used_len) {
  constexpr const char* op = "net rx";
  if (used_len < sizeof(NetHdrV1) || used_len > b.len)
    return make_error(errc::invalid_payload, op,
                      "used length " + std::to_string(used_len) + " outside [12, " +
                          std::to_string(b.len) + "]");
  const uint8_t* p = s.ptr(b.gpa, used_len);
  NetFrame f;
  std::memcpy(&f.header, p, sizeof f.header);  // BOUNDS: used_len >= 12
  if (f.header.num_buffers > 1)
    return make_error(errc::invalid_payload, op,
                      "num_buffers " + std::to_string(f.header.num_buffers) +
                          " but mergeable buffers are not used");
  f.frame.assign(p + sizeof(NetHdrV1), p + used_len);
  return f;
}

}  // namespace vufront::virtio
