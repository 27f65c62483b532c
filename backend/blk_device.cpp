#include "backend/blk_device.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace vufront::backend {

namespace {

constexpr const char* op = "blk device";

/// Walks a chain's segments of one direction as one flat byte range.
class Cursor {
public:
  Cursor(const virtio::Chain& c, bool writable) : chain_(c), writable_(writable) {}

  /// Copies up to n bytes out of (to_chain=false) / into (true) the chain at
  /// the cursor and advances it; returns the bytes copied.
  uint64_t transfer(uint8_t* local, uint64_t n, bool to_chain) {
    uint64_t done = 0, skip = pos_;
    for (const auto& s : chain_.segments) {
      if (s.writable != writable_)
        continue;
      if (skip >= s.len) {
        skip -= s.len;
        continue;
      }
      const uint64_t take = std::min<uint64_t>(n - done, s.len - skip);
      // BOUNDS: [skip, skip+take) lies inside the translated segment.
      if (to_chain)
        std::memcpy(s.ptr + skip, local + done, take);
      else
        std::memcpy(local + done, s.ptr + skip, take);
      done += take;
      skip = 0;
      if (done == n)
        break;
    }
    pos_ += done;
    return done;
  }

private:
  const virtio::Chain& chain_;
  bool writable_;
  uint64_t pos_ = 0;
};

struct ReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
VUFRONT_LAYOUT_SIZE(ReqHeader, 16);

}  // namespace

BlkDevice::BlkDevice(BlkDevice&& o) noexcept
    : Device(),
      fd_(std::move(o.fd_)),
      data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      num_queues_(o.num_queues_),
      file_backed_(o.file_backed_) {}

BlkDevice::~BlkDevice() {
  if (data_ != nullptr)
    ::munmap(data_, size_);
}

Result<BlkDevice> BlkDevice::open(uint64_t size, const std::string& image, uint16_t num_queues) {
  BlkDevice d;
  d.num_queues_ = num_queues;
  if (image.empty()) {
    d.fd_ = make_memfd("vufront-backend-disk", size);
    if (!d.fd_)
      return make_error(errc::io_error, op, "memfd of " + std::to_string(size) + " bytes", errno);
  } else {
    // OWNERSHIP: adopted at once.
    d.fd_ = UniqueFd::adopt(::open(image.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!d.fd_)
      return make_error(errc::io_error, op, "open " + image, errno);
    struct stat st {};
    if (::fstat(d.fd_.get(), &st) != 0)
      return make_error(errc::io_error, op, "fstat " + image, errno);
    if (st.st_size == 0) {
      if (::ftruncate(d.fd_.get(), static_cast<off_t>(size)) != 0)
        return make_error(errc::io_error, op, "ftruncate " + image, errno);
    } else {
      size = static_cast<uint64_t>(st.st_size);
    }
    if (size % 512 != 0)
      return make_error(errc::invalid_argument, op, image + ": size is not a multiple of 512");
    d.file_backed_ = true;
  }
  // OWNERSHIP: the mapping is released by ~BlkDevice.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, d.fd_.get(), 0);
  if (p == MAP_FAILED)
    return make_error(errc::io_error, op, "mmap of the disk", errno);
  d.data_ = static_cast<uint8_t*>(p);
  d.size_ = size;
  return d;
}

uint64_t BlkDevice::device_features() const noexcept {
  uint64_t f = bit(blk_feature::flush) | bit(blk_feature::blk_size) | bit(blk_feature::seg_max);
  if (num_queues_ > 1)
    f |= bit(blk_feature::mq);
  return f;
}

std::vector<uint8_t> BlkDevice::config() const {
  const virtio::BlkConfig c = blk_config();
  const auto* b = reinterpret_cast<const uint8_t*>(&c);
  return std::vector<uint8_t>(b, b + sizeof c);
}

void BlkDevice::process(uint32_t index, Rings& rings) {
  while (auto chain = rings.pop(index))
    if (!rings.push(index, *chain, execute(*chain)))
      return;
}

virtio::BlkConfig BlkDevice::blk_config() const noexcept {
  virtio::BlkConfig c{};
  c.capacity = size_ / 512;
  c.seg_max = blk_seg_max;
  c.blk_size = 512;
  c.min_io_size = 1;
  c.opt_io_size = 1;
  c.num_queues = num_queues_;
  return c;
}

Result<void> BlkDevice::flush() {
  if (file_backed_ && ::msync(data_, size_, MS_SYNC) != 0)
    return make_error(errc::io_error, op, "msync", errno);
  return ok();
}

uint32_t BlkDevice::execute(const virtio::Chain& chain) {
  const uint64_t wlen = chain.writable_bytes();
  if (wlen == 0 || wlen > UINT32_MAX)
    return 0;
  const uint64_t data_out = wlen - 1;  // writable bytes before the status byte
  Cursor in(chain, false);
  Cursor out(chain, true);
  // The status byte is the last writable byte of the chain.
  auto finish = [&](uint8_t status, uint64_t written) -> uint32_t {
    uint64_t off = data_out;
    for (const auto& s : chain.segments) {
      if (!s.writable)
        continue;
      if (off < s.len) {
        s.ptr[off] = status;  // BOUNDS: off < s.len
        break;
      }
      off -= s.len;
    }
    return static_cast<uint32_t>(written + 1);
  };
  ReqHeader h{};
  if (in.transfer(reinterpret_cast<uint8_t*>(&h), sizeof h, false) != sizeof h)
    return finish(blk_s_ioerr, 0);
  const uint64_t rlen = chain.readable_bytes() - sizeof h;
  switch (h.type) {
    case blk_t_in:
    case blk_t_out: {
      const uint64_t len = h.type == blk_t_in ? data_out : rlen;
      uint64_t off = 0, end = 0;
      if (len % 512 != 0 || __builtin_mul_overflow(h.sector, uint64_t{512}, &off) ||
          __builtin_add_overflow(off, len, &end) || end > size_)
        return finish(blk_s_ioerr, 0);
      if (h.type == blk_t_in) {
        out.transfer(data_ + off, len, true);
        return finish(blk_s_ok, len);
      }
      in.transfer(data_ + off, len, false);
      return finish(blk_s_ok, 0);
    }
    case blk_t_flush:
      return finish(flush() ? blk_s_ok : blk_s_ioerr, 0);
    case blk_t_get_id: {
      uint8_t id[20] = {};
      std::memcpy(id, blk_serial, std::strlen(blk_serial));
      const uint64_t n = std::min<uint64_t>(sizeof id, data_out);
      out.transfer(id, n, true);
      return finish(blk_s_ok, n);
    }
    default:
      return finish(blk_s_unsupp, 0);
  }
}

}  // namespace vufront::backend
