#include "backend/device_state.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vufront::backend {

namespace {

constexpr const char* op_save = "SET_DEVICE_STATE_FD(save)";
constexpr const char* op_load = "SET_DEVICE_STATE_FD(load)";

uint64_t fnv1a(uint64_t h, const uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
constexpr uint64_t fnv_basis = 0xcbf29ce484222325ull;

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

Result<void> write_all(int fd, const void* data, uint64_t n, int stall_ms) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (auto w = wait_fd(fd, POLLOUT, stall_ms, op_save); !w)
      return w;
    const ssize_t r = ::write(fd, p, std::min<uint64_t>(n, 1u << 16));
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return make_error(errc::io_error, op_save, "write", errno);
    }
    p += r;
    n -= static_cast<uint64_t>(r);
  }
  return ok();
}

/// Reads exactly n bytes; n == 0 checks for EOF instead (trailing bytes = error).
Result<void> read_exact(int fd, void* data, uint64_t n, int stall_ms) {
  auto* p = static_cast<uint8_t*>(data);
  if (n == 0) {
    uint8_t extra = 0;
    for (;;) {
      if (auto w = wait_fd(fd, POLLIN, stall_ms, op_load); !w)
        return w;
      const ssize_t r = ::read(fd, &extra, 1);
      if (r == 0)
        return ok();
      if (r > 0)
        return make_error(errc::invalid_payload, op_load, "bytes after the end of the state");
      if (errno != EINTR && errno != EAGAIN)
        return make_error(errc::io_error, op_load, "read", errno);
    }
  }
  while (n > 0) {
    if (auto w = wait_fd(fd, POLLIN, stall_ms, op_load); !w)
      return w;
    const ssize_t r = ::read(fd, p, std::min<uint64_t>(n, 1u << 16));
    if (r == 0)
      return make_error(errc::disconnected, op_load, "state stream ended early");
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return make_error(errc::io_error, op_load, "read", errno);
    }
    p += r;
    n -= static_cast<uint64_t>(r);
  }
  return ok();
}

}  // namespace

Result<void> save_state(int fd, const DeviceState& s, const uint8_t* disk, uint64_t disk_bytes,
                        int stall_ms) {
  StateHeader h{};
  std::memcpy(h.magic, state_magic, sizeof h.magic);
  h.version = state_version;
  h.num_queues = static_cast<uint32_t>(s.vring_bases.size());
  h.disk_bytes = disk_bytes;
  h.features = s.features;
  h.config_bytes = static_cast<uint32_t>(s.config.size());
  h.status = s.status;
  if (auto r = write_all(fd, &h, sizeof h, stall_ms); !r)
    return r;
  if (auto r = write_all(fd, s.config.data(), s.config.size(), stall_ms); !r)
    return r;
  if (auto r = write_all(fd, s.vring_bases.data(), s.vring_bases.size() * sizeof(uint32_t),
                         stall_ms);
      !r)
    return r;
  uint64_t sum = fnv_basis;
  for (uint64_t off = 0; off < disk_bytes;) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(state_chunk_bytes, disk_bytes - off));
    const StateChunk c{n, 0};
    if (auto r = write_all(fd, &c, sizeof c, stall_ms); !r)
      return r;
    if (auto r = write_all(fd, disk + off, n, stall_ms); !r)
      return r;
    sum = fnv1a(sum, disk + off, n);
    off += n;
  }
  const StateChunk end{0, 0};
  if (auto r = write_all(fd, &end, sizeof end, stall_ms); !r)
    return r;
  return write_all(fd, &sum, sizeof sum, stall_ms);
}

Result<DeviceState> load_state(int fd, uint8_t* disk, uint64_t disk_bytes, uint32_t num_queues,
                               uint32_t config_bytes, int stall_ms) {
  StateHeader h{};
  if (auto r = read_exact(fd, &h, sizeof h, stall_ms); !r)
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
  if (auto r = read_exact(fd, s.config.data(), s.config.size(), stall_ms); !r)
    return std::move(r).error();
  if (auto r = read_exact(fd, s.vring_bases.data(), num_queues * sizeof(uint32_t), stall_ms); !r)
    return std::move(r).error();
  uint64_t off = 0, sum = fnv_basis;
  for (;;) {
    StateChunk c{};
    if (auto r = read_exact(fd, &c, sizeof c, stall_ms); !r)
      return std::move(r).error();
    if (c.bytes == 0)
      break;
    if (c.reserved != 0 || c.bytes > state_chunk_bytes || c.bytes > disk_bytes - off)
      return make_error(errc::invalid_payload, op_load, "bad disk chunk");
    // BOUNDS: off + c.bytes <= disk_bytes checked above.
    if (auto r = read_exact(fd, disk + off, c.bytes, stall_ms); !r)
      return std::move(r).error();
    sum = fnv1a(sum, disk + off, c.bytes);
    off += c.bytes;
  }
  if (off != disk_bytes)
    return make_error(errc::invalid_payload, op_load, "disk data incomplete");
  uint64_t want = 0;
  if (auto r = read_exact(fd, &want, sizeof want, stall_ms); !r)
    return std::move(r).error();
  if (want != sum)
    return make_error(errc::invalid_payload, op_load, "disk checksum mismatch");
  if (auto r = read_exact(fd, nullptr, 0, stall_ms); !r)
    return std::move(r).error();
  return s;
}

}  // namespace vufront::backend
