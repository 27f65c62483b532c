#include "snapshot/reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/beneath.hpp"

namespace vufront::snapshot {
namespace {

constexpr const char* kOpen = "snapshot open";
constexpr const char* kRead = "snapshot read";
constexpr size_t kVerifyChunk = 1 << 20;

uint32_t get_u32le(const uint8_t* at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | at[i];
  return v;
}

// Reads exactly len bytes at offset; returns bytes read (< len at EOF) or -1.
ssize_t read_at(int fd, uint8_t* buf, size_t len, uint64_t offset) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (n == 0)
      break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

Error checksum_mismatch(const Manifest& m, uint64_t actual) {
  return make_error(errc::invalid_payload, kRead,
                    "checksum mismatch: state hashes to " + hex(actual) +
                        ", the manifest says " + hex(m.state_checksum));
}

int64_t nanoseconds(const timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

Error truncated_error(const std::string& detail) {
  return make_error(errc::bad_size, kRead,
                    "snapshot file changed during restore (truncated)" + detail);
}

std::string names(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

Result<SnapshotReader> SnapshotReader::open(const std::string& path) {
  // OWNERSHIP: owned from birth, then by the reader.
  UniqueFd fd = UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd)
    return make_error(errc::io_error, kOpen, "open " + path, errno);
  return checked(path, std::move(fd));
}

Result<SnapshotReader> SnapshotReader::open(const std::string& path, const FileTarget& target) {
  if (target.file) {
    UniqueFd own = target.file->duplicate();
    if (!own)
      return make_error(errc::io_error, kOpen, "dup of the snapshot file's fd", errno);
    int fl = ::fcntl(own.get(), F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY)
      return make_error(errc::bad_fds, kOpen, "the snapshot file's fd is not open for reading");
    auto r = checked(path, std::move(own));
    if (r)
      r->passed_fd_ = true;
    return r;
  }
  if (target.dir) {
    BeneathPath at;
    at.dir = target.dir->duplicate();
    at.leaf = target.leaf;
    if (!at.dir)
      return make_error(errc::io_error, kOpen, "dup of the snapshot directory's fd", errno);
    auto fd = open_file_beneath(at, O_RDONLY, kOpen);
    if (!fd)
      return std::move(fd).error();
    return checked(path, std::move(fd).value());
  }
  return open(path);
}

Result<SnapshotReader> SnapshotReader::checked(const std::string& path, UniqueFd fd) {
  SnapshotReader r;
  r.path_ = path;
  r.fd_ = std::move(fd);
  struct stat st {};
  if (::fstat(r.fd_.get(), &st) != 0)
    return make_error(errc::io_error, kOpen, "fstat " + path, errno);
  if (!S_ISREG(st.st_mode))
    return make_error(errc::invalid_argument, kOpen, path + " is not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  r.opened_ = {file_size, nanoseconds(st.st_mtim), nanoseconds(st.st_ctim)};

  uint8_t header[kHeaderSize];
  ssize_t got = read_at(r.fd_.get(), header, sizeof header, 0);
  if (got < 0)
    return make_error(errc::io_error, kOpen, "read " + path, errno);
  if (static_cast<size_t>(got) < sizeof kMagic || std::memcmp(header, kMagic, sizeof kMagic) != 0)
    return make_error(errc::invalid_payload, kOpen,
                      path + " is not a vufront snapshot (bad magic)");
  if (static_cast<size_t>(got) < kHeaderSize)
    return make_error(errc::bad_size, kOpen,
                      "truncated header: file is " + std::to_string(file_size) + " bytes");
  uint32_t version = get_u32le(header + 8);
  uint32_t manifest_len = get_u32le(header + 12);
  uint32_t head_size = get_u32le(header + 16);
  uint32_t reserved = get_u32le(header + 20);
  if (version != format_version)
    return make_error(errc::invalid_payload, kOpen,
                      "format version " + std::to_string(version) +
                          " is not supported (this build reads " +
                          std::to_string(format_version) + ")");
  if (reserved != 0)
    return make_error(errc::invalid_payload, kOpen,
                      "reserved header field is " + hex(reserved) + ", must be 0");
  if (head_size < kHeaderSize || head_size > kMaxHeadSize)
    return make_error(errc::invalid_payload, kOpen,
                      "head size " + std::to_string(head_size) + " is not in " +
                          std::to_string(kHeaderSize) + ".." + std::to_string(kMaxHeadSize));
  if (manifest_len == 0 || manifest_len > head_size - kHeaderSize)
    return make_error(errc::invalid_payload, kOpen,
                      "manifest length " + std::to_string(manifest_len) +
                          " does not fit the head of " + std::to_string(head_size) + " bytes");
  if (file_size < head_size)
    return make_error(errc::bad_size, kOpen,
                      "truncated head: file is " + std::to_string(file_size) +
                          " bytes, the head alone is " + std::to_string(head_size));

  std::vector<uint8_t> head(head_size);
  got = read_at(r.fd_.get(), head.data(), head.size(), 0);
  if (got < 0)
    return make_error(errc::io_error, kOpen, "read " + path, errno);
  if (static_cast<size_t>(got) != head.size())
    return make_error(errc::bad_size, kOpen, "file shrank while being read");
  const size_t pad_from = kHeaderSize + manifest_len;
  auto nonzero = std::find_if(head.begin() + static_cast<std::ptrdiff_t>(pad_from), head.end(),
                              [](uint8_t b) { return b != 0; });
  if (nonzero != head.end())
    return make_error(errc::invalid_payload, kOpen,
                      "non-zero byte in the head padding at offset " +
                          std::to_string(nonzero - head.begin()));

  std::string_view text(reinterpret_cast<const char*>(head.data() + kHeaderSize), manifest_len);
  auto manifest = manifest_from_text(text);
  if (!manifest)
    return std::move(manifest).error();
  r.manifest_ = std::move(*manifest);
  if (r.manifest_.format_version != version)
    return make_error(errc::invalid_payload, kOpen, "manifest format_version differs from header");

  const uint64_t state_len = r.manifest_.state_length;
  const uint64_t have = file_size - head_size;
  if (have < state_len)
    return make_error(errc::bad_size, kOpen,
                      "truncated state: " + std::to_string(have) +
                          " bytes in the file, the manifest says " + std::to_string(state_len));
  if (have > state_len)
    return make_error(errc::bad_size, kOpen,
                      std::to_string(have - state_len) + " extra bytes after the state of " +
                          std::to_string(state_len) + " bytes");
  r.head_size_ = head_size;
  return r;
}

Result<size_t> SnapshotReader::read_state(uint8_t* buf, size_t len) {
  if (failed_)
    return make_error(errc::bad_state, kRead, "an earlier read failed");
  uint64_t remaining = state_remaining();
  if (remaining == 0 && checked_)
    return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(len, remaining));
  if (want > 0 && buf == nullptr)
    return make_error(errc::invalid_argument, kRead, "null buffer");
  size_t got = 0;
  while (got == 0 && want > 0) {
    ssize_t n = ::pread(fd_.get(), buf, want, static_cast<off_t>(head_size_ + position_));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      failed_ = true;
      return make_error(errc::io_error, kRead, "read " + path_, errno);
    }
    if (n == 0) {
      failed_ = true;
      return make_error(errc::bad_size, kRead,
                        "file shrank: state ends " + std::to_string(remaining) +
                            " bytes early");
    }
    got = static_cast<size_t>(n);
  }
  if (auto r = consumed(buf, got); !r)
    return std::move(r).error();
  return got;
}

Result<void> SnapshotReader::consumed(const uint8_t* data, size_t n) {
  hasher_.update(data, n);
  position_ += n;
  if (state_remaining() != 0 || checked_)
    return ok();
  checked_ = true;
  if (map_.truncated()) {  // only a mapping is cut: zeros were hashed
    failed_ = true;
    return truncated_error(": a page of the mapping was cut while it was checked");
  }
  uint64_t actual = hasher_.digest();
  if (actual != manifest_.state_checksum) {
    failed_ = true;
    return checksum_mismatch(manifest_, actual);
  }
  return ok();
}

Result<void> SnapshotReader::verify() const {
  std::vector<uint8_t> buf(static_cast<size_t>(
      std::min<uint64_t>(kVerifyChunk, std::max<uint64_t>(manifest_.state_length, 1))));
  StateHasher hasher;
  uint64_t done = 0;
  while (done < manifest_.state_length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), manifest_.state_length - done));
    ssize_t n = read_at(fd_.get(), buf.data(), want, head_size_ + done);
    if (n < 0)
      return make_error(errc::io_error, kRead, "read " + path_, errno);
    if (static_cast<size_t>(n) != want)
      return make_error(errc::bad_size, kRead,
                        "file shrank: state ends " +
                            std::to_string(manifest_.state_length - done - static_cast<size_t>(n)) +
                            " bytes early");
    hasher.update(buf.data(), want);
    done += want;
  }
  uint64_t actual = hasher.digest();
  if (actual != manifest_.state_checksum)
    return checksum_mismatch(manifest_, actual);
  return ok();
}

void SnapshotReader::rewind() {
  position_ = 0;
  dropped_ = 0;
  hasher_.reset();
  failed_ = false;
  checked_ = false;
}

Result<void> SnapshotReader::map() {
  if (passed_fd_)
    return make_error(errc::bad_state, kRead, "a file passed as an fd is not mapped");
  if (mapped())
    return make_error(errc::bad_state, kRead, "already mapped");
  const uint64_t len = head_size_ + manifest_.state_length;
  // BOUNDS: open() checked the file is exactly head + state bytes.
  auto m = MappedFile::map(fd_.get(), static_cast<size_t>(len), kRead);
  if (!m)
    return std::move(m).error();
  map_ = std::move(m).value();
  return ok();
}

Result<size_t> SnapshotReader::verify_mapped(size_t len) {
  if (failed_)
    return make_error(errc::bad_state, kRead, "an earlier read failed");
  if (!mapped())
    return make_error(errc::bad_state, kRead, "not mapped");
  const uint64_t remaining = state_remaining();
  if (remaining == 0 && checked_)
    return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(len, remaining));
  // BOUNDS: position_ + n <= state_length; the mapping covers head + state.
  auto r = consumed(mapped_state() + position_, n);
  drop_mapped_before(position_);
  if (!r)
    return std::move(r).error();
  return n;
}

void SnapshotReader::drop_mapped_before(uint64_t state_pos) noexcept {
  if (!mapped())
    return;
  const uint64_t to = head_size_ + std::min(state_pos, manifest_.state_length);
  if (to < dropped_ + kDropStep && state_pos < manifest_.state_length)
    return;
  map_.drop(static_cast<size_t>(dropped_), static_cast<size_t>(to));
  dropped_ = to;
}

Result<void> SnapshotReader::check_unchanged() const {
  if (map_.truncated())
    return truncated_error(": a page of the mapping was cut");
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0)
    return make_error(errc::io_error, kRead, "fstat " + path_, errno);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < opened_.size)
    return truncated_error(": " + path_ + " is " + std::to_string(size) + " bytes now, was " +
                           std::to_string(opened_.size));
  if (size != opened_.size || nanoseconds(st.st_mtim) != opened_.mtime_ns ||
      nanoseconds(st.st_ctim) != opened_.ctime_ns)
    return make_error(errc::invalid_payload, kRead,
                      "snapshot file changed during restore (modified): " + path_ +
                          (size != opened_.size ? " grew to " + std::to_string(size) + " bytes"
                                                : " has new modification or change times"));
  return ok();
}

Result<void> check_compatible(const Manifest& m, DeviceKind backend_kind,
                              uint64_t backend_features, uint64_t backend_protocol_features,
                              uint16_t backend_queue_num) {
  constexpr const char* kWhat = "snapshot compatibility";
  if (m.kind != backend_kind)
    return make_error(errc::invalid_argument, kWhat,
                      std::string("snapshot is of a ") + name(m.kind) +
                          " device, the back-end is " + name(backend_kind));
  if (uint64_t missing = m.features & ~backend_features; missing != 0)
    return make_error(errc::not_negotiated, kWhat,
                      "back-end does not offer features " + hex(missing) + " (" +
                          names(feature_names(missing, m.kind)) + ") the snapshot negotiated");
  // INFLIGHT_SHMFD is the connection's, not the device's state: a restored
  // device starts with nothing in flight.
  const uint64_t per_connection = uint64_t{1} << protocol_feature::inflight_shmfd;
  if (uint64_t missing = m.protocol_features & ~backend_protocol_features & ~per_connection;
      missing != 0)
    return make_error(errc::not_negotiated, kWhat,
                      "back-end does not offer protocol features " + hex(missing) + " (" +
                          names(protocol_feature_names(missing)) + ") the snapshot negotiated");
  if (backend_queue_num > 0) {
    for (const QueueState& q : m.queues)
      if (q.index >= backend_queue_num)
        return make_error(errc::not_negotiated, kWhat,
                          "snapshot has queue " + std::to_string(q.index) +
                              ", the back-end has " + std::to_string(backend_queue_num) +
                              " queues");
  }
  return ok();
}

}  // namespace vufront::snapshot
