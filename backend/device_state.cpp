#include "backend/device_state.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <xxhash.h>

namespace vufront::backend {

namespace {

constexpr const char* op_save = "SET_DEVICE_STATE_FD(save)";
constexpr const char* op_load = "SET_DEVICE_STATE_FD(load)";

/// XXH3-64 (seed 0) of the disk bytes, fed chunk by chunk.
class DiskHasher {
public:
  DiskHasher() : st_(XXH3_createState()) {
    if (st_ != nullptr)
      (void)XXH3_64bits_reset(st_);
  }
  ~DiskHasher() { XXH3_freeState(st_); }
  DiskHasher(const DiskHasher&) = delete;
  DiskHasher& operator=(const DiskHasher&) = delete;
  [[nodiscard]] bool ok() const { return st_ != nullptr; }
  void update(const uint8_t* p, uint64_t n) { (void)XXH3_64bits_update(st_, p, n); }
  [[nodiscard]] uint64_t digest() const { return XXH3_64bits_digest(st_); }

private:
  XXH3_state_t* st_;
};

/// The largest piece moved by one read() or write(): the chunk size, so a
/// disk chunk is one system call when the pipe has room for it.
constexpr uint64_t piece_bytes = state_chunk_bytes;

Result<void> wait_fd(int fd, short events, int stall_ms, const char* what) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int r = ::poll(&p, 1, stall_ms);
    if (r > 0)
      return ok();
    if (r == 0)
      return make_error(errc::timeout, what, "no progress for " + std::to_string(stall_ms) + " ms");
    if (errno != EINTR)
      return make_error(errc::io_error, what, "poll", errno);
  }
}

/// One transfer's end of the pipe: moves bytes in pieces of at most 1 MiB,
/// counts them and applies the plan's byte budget.
class Transfer {
public:
  Transfer(int fd, const TransferPlan& plan, int stall_ms, const char* op)
      : fd_(fd), plan_(plan), stall_ms_(stall_ms), op_(op) {}

  Result<void> write_all(const void* data, uint64_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      auto now = allowance(std::min<uint64_t>(n, piece_bytes));
      if (!now)
        return std::move(now).error();
      if (auto w = wait_fd(fd_, POLLOUT, stall_ms_, op_); !w)
        return w;
      const ssize_t r = ::write(fd_, p, *now);
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN)
          continue;
        return make_error(errc::io_error, op_, "write", errno);
      }
      moved_ += static_cast<uint64_t>(r);
      p += r;
      n -= static_cast<uint64_t>(r);
    }
    return ok();
  }

  /// Reads exactly n bytes.
  Result<void> read_exact(void* data, uint64_t n) {
    auto* p = static_cast<uint8_t*>(data);
    while (n > 0) {
      auto now = allowance(std::min<uint64_t>(n, piece_bytes));
      if (!now)
        return std::move(now).error();
      if (auto w = wait_fd(fd_, POLLIN, stall_ms_, op_); !w)
        return w;
      const ssize_t r = ::read(fd_, p, *now);
      if (r == 0)
        return make_error(errc::disconnected, op_, "state stream ended early");
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN)
          continue;
        return make_error(errc::io_error, op_, "read", errno);
      }
      moved_ += static_cast<uint64_t>(r);
      p += r;
      n -= static_cast<uint64_t>(r);
    }
    return ok();
  }

  /// Checks the stream ends here (trailing bytes are an error). Moves no
  /// state, so the budget does not apply.
  Result<void> read_eof() {
    uint8_t extra = 0;
    for (;;) {
      if (auto w = wait_fd(fd_, POLLIN, stall_ms_, op_); !w)
        return w;
      const ssize_t r = ::read(fd_, &extra, 1);
      if (r == 0)
        return ok();
      if (r > 0)
        return make_error(errc::invalid_payload, op_, "bytes after the end of the state");
      if (errno != EINTR && errno != EAGAIN)
        return make_error(errc::io_error, op_, "read", errno);
    }
  }

private:
  /// How many of `want` bytes may move now: clipped to what is left of the
  /// budget; once it is spent the plan's hook runs (once) before anything
  /// else moves.
  Result<uint64_t> allowance(uint64_t want) {
    if (hook_done_ || !plan_.at_budget)
      return want;
    if (moved_ < plan_.budget)
      return std::min(want, plan_.budget - moved_);
    hook_done_ = true;
    if (auto r = plan_.at_budget(fd_); !r)
      return std::move(r).error();
    return want;
  }

  int fd_;
  const TransferPlan& plan_;
  int stall_ms_;
  const char* op_;
  uint64_t moved_ = 0;
  bool hook_done_ = false;
};

/// Endless save: disk chunks after the header, round and round (zero-filled
/// ones without a disk), until a write fails. Returns that error.
Error write_endless(Transfer& out, const uint8_t* disk, uint64_t disk_bytes) {
  static const uint8_t zeros[1u << 16] = {};
  for (uint64_t off = 0;;) {
    const uint8_t* data = zeros;
    uint32_t n = sizeof zeros;
    if (disk_bytes > 0) {
      data = disk + off;
      n = static_cast<uint32_t>(std::min<uint64_t>(state_chunk_bytes, disk_bytes - off));
      off = off + n == disk_bytes ? 0 : off + n;
    }
    const StateChunk c{n, 0};
    if (auto r = out.write_all(&c, sizeof c); !r)
      return std::move(r).error();
    if (auto r = out.write_all(data, n); !r)
      return std::move(r).error();
  }
}

}  // namespace

Result<void> save_state(int fd, const DeviceState& s, const uint8_t* disk, uint64_t disk_bytes,
                        const TransferPlan& plan, int stall_ms) {
  Transfer out(fd, plan, stall_ms, op_save);
  StateHeader h{};
  std::memcpy(h.magic, state_magic, sizeof h.magic);
  h.version = state_version;
  h.num_queues = static_cast<uint32_t>(s.vring_bases.size());
  h.disk_bytes = disk_bytes;
  h.features = s.features;
  h.config_bytes = static_cast<uint32_t>(s.config.size());
  h.status = s.status;
  if (auto r = out.write_all(&h, sizeof h); !r)
    return r;
  if (auto r = out.write_all(s.config.data(), s.config.size()); !r)
    return r;
  if (auto r = out.write_all(s.vring_bases.data(), s.vring_bases.size() * sizeof(uint32_t)); !r)
    return r;
  if (plan.endless)
    return write_endless(out, disk, disk_bytes);
  DiskHasher sum;
  if (!sum.ok())
    return make_error(errc::io_error, op_save, "XXH3_createState failed");
  for (uint64_t off = 0; off < disk_bytes;) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(state_chunk_bytes, disk_bytes - off));
    const StateChunk c{n, 0};
    if (auto r = out.write_all(&c, sizeof c); !r)
      return r;
    if (auto r = out.write_all(disk + off, n); !r)
      return r;
    sum.update(disk + off, n);
    off += n;
  }
  const StateChunk end{0, 0};
  if (auto r = out.write_all(&end, sizeof end); !r)
    return r;
  const uint64_t digest = sum.digest();
  return out.write_all(&digest, sizeof digest);
}

Result<DeviceState> load_state(int fd, uint8_t* disk, uint64_t disk_bytes, uint32_t num_queues,
                               uint32_t config_bytes, const TransferPlan& plan, int stall_ms) {
  Transfer in(fd, plan, stall_ms, op_load);
  StateHeader h{};
  if (auto r = in.read_exact(&h, sizeof h); !r)
    return std::move(r).error();
  if (std::memcmp(h.magic, state_magic, sizeof h.magic) != 0)
    return make_error(errc::invalid_payload, op_load, "bad magic");
  if (h.version != state_version)
    return make_error(errc::invalid_payload, op_load,
                      "unsupported version " + std::to_string(h.version));
  if (h.disk_bytes != disk_bytes)
    return make_error(errc::invalid_payload, op_load,
                      "disk is " + std::to_string(h.disk_bytes) + " bytes, this device has " +
                          std::to_string(disk_bytes));
  if (h.num_queues != num_queues || h.config_bytes != config_bytes || h.status > 0xff)
    return make_error(errc::invalid_payload, op_load, "queue count, config size or status differ");
  DeviceState s;
  s.features = h.features;
  s.status = static_cast<uint8_t>(h.status);
  s.config.resize(config_bytes);
  s.vring_bases.resize(num_queues);
  if (auto r = in.read_exact(s.config.data(), s.config.size()); !r)
    return std::move(r).error();
  if (auto r = in.read_exact(s.vring_bases.data(), num_queues * sizeof(uint32_t)); !r)
    return std::move(r).error();
  uint64_t off = 0;
  DiskHasher sum;
  if (!sum.ok())
    return make_error(errc::io_error, op_load, "XXH3_createState failed");
  for (;;) {
    StateChunk c{};
    if (auto r = in.read_exact(&c, sizeof c); !r)
      return std::move(r).error();
    if (c.bytes == 0)
      break;
    if (c.reserved != 0 || c.bytes > state_chunk_bytes || c.bytes > disk_bytes - off)
      return make_error(errc::invalid_payload, op_load, "bad disk chunk");
    // BOUNDS: off + c.bytes <= disk_bytes checked above.
    if (auto r = in.read_exact(disk + off, c.bytes); !r)
      return std::move(r).error();
    sum.update(disk + off, c.bytes);
    off += c.bytes;
  }
  if (off != disk_bytes)
    return make_error(errc::invalid_payload, op_load, "disk data incomplete");
  uint64_t want = 0;
  if (auto r = in.read_exact(&want, sizeof want); !r)
    return std::move(r).error();
  if (want != sum.digest())
    return make_error(errc::invalid_payload, op_load, "disk checksum mismatch");
  if (auto r = in.read_eof(); !r)
    return std::move(r).error();
  return s;
}

}  // namespace vufront::backend
