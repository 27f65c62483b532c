#include "snapshot/writer.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vufront::snapshot {
namespace {

constexpr const char* kWrite = "snapshot write";
constexpr const char* kCommit = "snapshot commit";

void put_u32le(uint8_t* at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    at[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

// Writes all of [data, data+len) at `offset` (pwrite), or at the file
// position when offset < 0; retries short writes and EINTR.
bool write_all(int fd, const uint8_t* data, size_t len, off_t offset) {
  while (len > 0) {
    ssize_t n = offset < 0 ? ::write(fd, data, len) : ::pwrite(fd, data, len, offset);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
    if (offset >= 0)
      offset += n;
  }
  return true;
}

}  // namespace

Result<SnapshotWriter> SnapshotWriter::create(const std::string& path,
                                              uint64_t max_state_bytes, Existing existing) {
  if (path.empty() || path.back() == '/')
    return make_error(errc::invalid_argument, kWrite, "\"" + path + "\" is not a file path");
  SnapshotWriter w;
  w.path_ = path;
  w.max_bytes_ = max_state_bytes;
  w.existing_ = existing;
  std::string tmpl = path + ".tmp.XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);  // mode 0600
  if (fd < 0)
    return make_error(errc::io_error, kWrite, "cannot create a temporary file " + tmpl, errno);
  w.fd_ = UniqueFd::adopt(fd);
  w.temp_path_ = std::move(tmpl);
  // The state starts after the head; the head is written by commit().
  if (::lseek(fd, kHeadSize, SEEK_SET) < 0) {
    int err = errno;
    w.abandon();
    return make_error(errc::io_error, kWrite, "lseek", err);
  }
  return w;
}

SnapshotWriter::SnapshotWriter(SnapshotWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::move(other.fd_)),
      hasher_(std::move(other.hasher_)),
      max_bytes_(other.max_bytes_),
      written_(other.written_),
      existing_(other.existing_),
      done_(std::exchange(other.done_, true)) {}

SnapshotWriter& SnapshotWriter::operator=(SnapshotWriter&& other) noexcept {
  if (this != &other) {
    abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, std::string());
    fd_ = std::move(other.fd_);
    hasher_ = std::move(other.hasher_);
    max_bytes_ = other.max_bytes_;
    written_ = other.written_;
    existing_ = other.existing_;
    done_ = std::exchange(other.done_, true);
  }
  return *this;
}

SnapshotWriter::~SnapshotWriter() { abandon(); }

std::vector<std::string> SnapshotWriter::remove_temporaries(const std::string& path) {
  std::vector<std::string> removed;
  const std::string dir = directory_of(path);
  const auto slash = path.rfind('/');
  const std::string prefix =
      (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr)
    return removed;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() != prefix.size() + 6 || name.compare(0, prefix.size(), prefix) != 0)
      continue;
    const std::string full = dir + "/" + name;
    if (::unlink(full.c_str()) == 0)
      removed.push_back(full);
  }
  ::closedir(d);
  return removed;
}

Result<void> SnapshotWriter::move_into_place() noexcept {
  if (existing_ == Existing::replace) {
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
      return make_error(errc::io_error, kCommit, "rename " + temp_path_ + " to " + path_, errno);
    return {};
  }
  int rc = ::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE);
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
    // No RENAME_NOREPLACE here: link() refuses an existing name just as
    // atomically; the temporary's name then goes (abandon() would too).
    rc = ::link(temp_path_.c_str(), path_.c_str());
    if (rc == 0)
      ::unlink(temp_path_.c_str());
  }
  if (rc == 0)
    return {};
  if (errno == EEXIST)
    return make_error(errc::invalid_argument, kCommit,
                      path_ + " exists (it appeared during the snapshot); not replaced");
  return make_error(errc::io_error, kCommit, "rename " + temp_path_ + " to " + path_, errno);
}

void SnapshotWriter::abandon() noexcept {
  fd_.reset();
  if (!temp_path_.empty())
    (void)::unlink(temp_path_.c_str());
  temp_path_.clear();
  done_ = true;
}

Error SnapshotWriter::fail(Error e) noexcept {
  abandon();
  return e;
}

Result<void> SnapshotWriter::write_state(const uint8_t* data, size_t len) {
  if (done_)
    return make_error(errc::bad_state, kWrite, "the snapshot was committed or abandoned");
  if (len == 0)
    return ok();
  if (data == nullptr)
    return make_error(errc::invalid_argument, kWrite, "null buffer");
  if (len > max_bytes_ - written_)
    return fail(make_error(errc::oversized, kWrite,
                           "state exceeds the cap of " + std::to_string(max_bytes_) +
                               " bytes (" + std::to_string(written_) + " written, " +
                               std::to_string(len) + " more offered)"));
  if (!write_all(fd_.get(), data, len, -1))
    return fail(make_error(errc::io_error, kWrite, "write to " + temp_path_, errno));
  hasher_.update(data, len);
  written_ += len;
  return ok();
}

Result<Manifest> SnapshotWriter::commit(Manifest m) {
  if (done_)
    return make_error(errc::bad_state, kCommit, "the snapshot was committed or abandoned");
  m.format_version = format_version;
  m.state_length = written_;
  m.state_checksum = hasher_.digest();
  if (m.created.empty())
    m.created = utc_now();
  if (auto r = validate(m); !r)
    return fail(std::move(r).error());
  std::string text = to_json(m).dump();
  if (text.size() > kHeadSize - kHeaderSize)
    return fail(make_error(errc::oversized, kCommit,
                           "manifest is " + std::to_string(text.size()) +
                               " bytes, the head holds " +
                               std::to_string(kHeadSize - kHeaderSize)));

  std::vector<uint8_t> head(kHeadSize, 0);
  std::memcpy(head.data(), kMagic, sizeof kMagic);
  put_u32le(head.data() + 8, format_version);
  put_u32le(head.data() + 12, static_cast<uint32_t>(text.size()));
  put_u32le(head.data() + 16, kHeadSize);
  put_u32le(head.data() + 20, 0);
  std::memcpy(head.data() + kHeaderSize, text.data(), text.size());
  if (!write_all(fd_.get(), head.data(), head.size(), 0))
    return fail(make_error(errc::io_error, kCommit, "write head to " + temp_path_, errno));
  if (::fsync(fd_.get()) != 0)
    return fail(make_error(errc::io_error, kCommit, "fsync " + temp_path_, errno));
  if (::close(fd_.release()) != 0)
    return fail(make_error(errc::io_error, kCommit, "close " + temp_path_, errno));
  if (auto placed = move_into_place(); !placed)
    return fail(std::move(placed).error());
  temp_path_.clear();
  done_ = true;
  // The rename is durable only once the directory is synced. The file is in
  // place either way; report the failure so the caller does not rely on it.
  std::string dir = directory_of(path_);
  UniqueFd dfd = UniqueFd::adopt(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd)
    return make_error(errc::io_error, kCommit, "open directory " + dir, errno);
  if (::fsync(dfd.get()) != 0)
    return make_error(errc::io_error, kCommit, "fsync directory " + dir, errno);
  return m;
}

}  // namespace vufront::snapshot
