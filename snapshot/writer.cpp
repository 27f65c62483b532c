#include "snapshot/writer.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/wait.hpp"

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

std::string leaf_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Writes all of [data, data+len) at `offset` (pwrite: a passed file's offset,
// shared with the VMM, is never used); retries short writes and EINTR.
bool write_all(int fd, const uint8_t* data, size_t len, uint64_t offset) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

/// "XXXXXX" of a temporary's name: six random letters and digits.
std::string random_suffix() {
  static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd;
  std::string s(6, 'x');
  for (auto& c : s)
    c = letters[rd() % (sizeof letters - 1)];
  return s;
}

/// A passed file: regular, open for writing, not O_APPEND (pwrite would append).
Result<UniqueFd> writable_file(const SharedFd& file, const std::string& path) {
  UniqueFd own = file ? file->duplicate() : UniqueFd{};
  if (!own)
    return make_error(errc::io_error, kWrite, "dup of the snapshot file's fd " + path, errno);
  struct stat sb {};
  if (::fstat(own.get(), &sb) != 0)
    return make_error(errc::io_error, kWrite, "fstat of the snapshot file's fd", errno);
  int fl = ::fcntl(own.get(), F_GETFL);
  if (!S_ISREG(sb.st_mode) || fl < 0 || (fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND) != 0)
    return make_error(errc::bad_fds, kWrite,
                      "the snapshot file's fd must be a regular file open for writing, without O_APPEND");
  return own;
}

}  // namespace

Result<SnapshotWriter> SnapshotWriter::create(const std::string& path, uint64_t max_state_bytes,
                                              Existing existing) {
  return create(path, FileTarget{}, max_state_bytes, existing);
}

Result<SnapshotWriter> SnapshotWriter::create(const std::string& path, const FileTarget& target,
                                              uint64_t max_state_bytes, Existing existing) {
  auto w = create_target(path, target, max_state_bytes);
  if (w)
    w->existing_ = existing;
  return w;
}

Result<SnapshotWriter> SnapshotWriter::create_target(const std::string& path, const FileTarget& target,
                                                     uint64_t max_state_bytes) {
  if (target.file) {
    auto fd = writable_file(target.file, path);
    if (!fd)
      return std::move(fd).error();
    if (::ftruncate(fd->get(), 0) != 0)
      return make_error(errc::io_error, kWrite, "truncate the snapshot file", errno);
    SnapshotWriter w;
    w.path_ = path;
    w.in_place_ = true;
    w.fd_ = std::move(fd).value();
    w.max_bytes_ = max_state_bytes;
    return w;
  }
  if (target.dir) {
    UniqueFd dir = target.dir->duplicate();
    if (!dir)
      return make_error(errc::io_error, kWrite, "dup of the snapshot directory's fd", errno);
    return create_in(path, std::move(dir), target.leaf, max_state_bytes);
  }
  if (path.empty() || path.back() == '/')
    return make_error(errc::invalid_argument, kWrite, "\"" + path + "\" is not a file path");
  const std::string dir_path = directory_of(path);
  // OWNERSHIP: the directory's fd is owned from birth.
  UniqueFd dir = UniqueFd::adopt(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir)
    return make_error(errc::io_error, kWrite, "cannot open the directory " + dir_path, errno);
  return create_in(path, std::move(dir), leaf_of(path), max_state_bytes);
}

Result<SnapshotWriter> SnapshotWriter::create_in(std::string path, UniqueFd dir, std::string leaf,
                                                 uint64_t max_state_bytes) {
  if (leaf.empty() || leaf == "." || leaf == ".." || leaf.find('/') != std::string::npos)
    return make_error(errc::invalid_argument, kWrite, "\"" + path + "\" is not a file path");
  SnapshotWriter w;
  w.path_ = std::move(path);
  w.dir_ = std::move(dir);
  w.leaf_ = std::move(leaf);
  w.max_bytes_ = max_state_bytes;
  int err = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string suffix = ".tmp." + random_suffix();
    std::string name = w.leaf_ + suffix;
    // OWNERSHIP: the temporary's fd is owned from birth.
    w.fd_ = UniqueFd::adopt(::openat(w.dir_.get(), name.c_str(),
                                     O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (w.fd_) {
      w.temp_name_ = std::move(name);
      w.temp_path_ = w.path_ + suffix;
      return w;
    }
    err = errno;
    if (err != EEXIST)
      break;
  }
  return make_error(errc::io_error, kWrite, "cannot create a temporary file " + w.path_ + ".tmp.XXXXXX", err);
}

SnapshotWriter::SnapshotWriter(SnapshotWriter&& other) noexcept { *this = std::move(other); }

SnapshotWriter& SnapshotWriter::operator=(SnapshotWriter&& other) noexcept {
  if (this != &other) {
    abandon();
    path_ = std::move(other.path_);
    dir_ = std::move(other.dir_);
    leaf_ = std::move(other.leaf_);
    temp_name_ = std::exchange(other.temp_name_, std::string());
    temp_path_ = std::exchange(other.temp_path_, std::string());
    in_place_ = std::exchange(other.in_place_, false);
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

Result<void> SnapshotWriter::move_into_place() noexcept {
  if (existing_ == Existing::replace) {
    if (::renameat(dir_.get(), temp_name_.c_str(), dir_.get(), leaf_.c_str()) != 0)
      return make_error(errc::io_error, kCommit, "rename " + temp_path_ + " to " + path_, errno);
    return {};
  }
  int rc = ::renameat2(dir_.get(), temp_name_.c_str(), dir_.get(), leaf_.c_str(), RENAME_NOREPLACE);
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
    // No RENAME_NOREPLACE here: linkat() refuses an existing name just as
    // atomically; the temporary's name then goes.
    rc = ::linkat(dir_.get(), temp_name_.c_str(), dir_.get(), leaf_.c_str(), 0);
    if (rc == 0)
      ::unlinkat(dir_.get(), temp_name_.c_str(), 0);
  }
  if (rc == 0)
    return {};
  if (errno == EEXIST)
    return make_error(errc::invalid_argument, kCommit,
                      path_ + " exists (it appeared during the snapshot); not replaced");
  return make_error(errc::io_error, kCommit, "rename " + temp_path_ + " to " + path_, errno);
}

std::vector<std::string> SnapshotWriter::remove_temporaries(const std::string& path) {
  std::vector<std::string> removed;
  const std::string dir = directory_of(path);
  const std::string prefix = leaf_of(path) + ".tmp.";
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

void SnapshotWriter::abandon() noexcept {
  if (in_place_ && !done_ && fd_)
    (void)::ftruncate(fd_.get(), 0);  // no half-written snapshot left in the VMM's file
  fd_.reset();
  if (!temp_name_.empty() && dir_)
    (void)::unlinkat(dir_.get(), temp_name_.c_str(), 0);
  temp_name_.clear();
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
  // The state starts after the head; the head is written by commit().
  if (!write_all(fd_.get(), data, len, kHeadSize + written_))
    return fail(make_error(errc::io_error, kWrite,
                           "write to " + (in_place_ ? path_ + " (the passed file)" : temp_path_), errno));
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
  const std::string what = in_place_ ? path_ + " (the passed file)" : temp_path_;
  if (!write_all(fd_.get(), head.data(), head.size(), 0))
    return fail(make_error(errc::io_error, kCommit, "write head to " + what, errno));
  if (in_place_ && ::ftruncate(fd_.get(), static_cast<off_t>(kHeadSize + written_)) != 0)
    return fail(make_error(errc::io_error, kCommit, "truncate " + what, errno));
  if (::fsync(fd_.get()) != 0)
    return fail(make_error(errc::io_error, kCommit, "fsync " + what, errno));
  if (in_place_) {
    done_ = true;
    fd_.reset();
    return m;
  }
  note_fd_closing(fd_.get());
  if (::close(fd_.release()) != 0)
    return fail(make_error(errc::io_error, kCommit, "close " + what, errno));
  if (auto placed = move_into_place(); !placed)
    return fail(std::move(placed).error());
  temp_name_.clear();
  temp_path_.clear();
  done_ = true;
  // The rename is durable only once the directory is synced. The file is in
  // place either way; report the failure so the caller does not rely on it.
  if (::fsync(dir_.get()) != 0)
    return make_error(errc::io_error, kCommit, "fsync the directory of " + path_, errno);
  return m;
}

}  // namespace vufront::snapshot
