#pragma once
// Reads a snapshot file with every field checked. open() checks the header,
// the manifest and the file size; the state is then streamed (read_state),
// never held whole, and its checksum checked when the last byte has been
// read. verify() streams it once up front so a corrupt file is refused before
// anything reaches a back-end.
//
// A file vufront opened itself (a path, or a name beneath --snapshot-dir)
// may instead be mapped (map()): verify_mapped() checks the checksum on the
// mapping, the load then writes from mapped_state() (no copy into a buffer
// of ours), and check_unchanged() tells whether the file changed since
// open() (size, modification and change times, a page cut under the
// mapping's SIGBUS guard, memory/mapped_file.hpp). A file the VMM passed
// as an fd is never mapped: the VMM may change it under us, so its
// checksum is checked on the bytes sent (read_state).

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "memory/mapped_file.hpp"
#include "protocol/messages.hpp"
#include "snapshot/file_target.hpp"
#include "snapshot/format.hpp"
#include "snapshot/manifest.hpp"

namespace vufront::snapshot {

class SnapshotReader {
public:
  /// Opens and checks: magic, version, head size, reserved field, zero
  /// padding, the manifest (parsed and validated), and that the file is
  /// exactly head + state_length bytes (truncation and extra bytes are
  /// errors). Does not read the state.
  [[nodiscard]] static Result<SnapshotReader> open(const std::string& path);
  /// The same for a target (a file the VMM passed, which must be open for
  /// reading, or a name in a directory opened beneath --snapshot-dir, a
  /// symbolic link there refused); `path` names it in errors and results.
  /// The reader reads through its own duplicate of the fd with pread (the
  /// passed file's offset is left alone).
  [[nodiscard]] static Result<SnapshotReader> open(const std::string& path, const FileTarget& target);

  [[nodiscard]] const Manifest& manifest() const noexcept { return manifest_; }
  /// File offset of the first state byte.
  [[nodiscard]] uint64_t state_offset() const noexcept { return head_size_; }
  /// State bytes read_state() has not returned yet.
  [[nodiscard]] uint64_t state_remaining() const noexcept {
    return manifest_.state_length - position_;
  }

  /// Reads up to `len` state bytes into `buf`; 0 at the end. The checksum
  /// covers exactly the bytes returned in `buf` (each byte is read from the
  /// file once, into `buf`, and hashed there), so a caller that sends `buf`
  /// on knows the check is about what it sent, even when the file changes
  /// meanwhile. When the call reaches the end the checksum is compared: a
  /// mismatch is errc::invalid_payload "checksum mismatch" (the bytes just
  /// read must then be discarded). After any error the reader is unusable
  /// (bad_state).
  [[nodiscard]] Result<size_t> read_state(uint8_t* buf, size_t len);

  /// Streams the whole state once (in a bounded buffer) and compares the
  /// checksum. Does not move read_state()'s position.
  [[nodiscard]] Result<void> verify() const;

  /// Back to the first state byte.
  void rewind();

  /// Maps the file read-only under a SIGBUS guard. Errors: bad_state (a
  /// file the VMM passed as an fd: never mapped; or already mapped),
  /// io_error (mmap), busy (no guard slot free).
  [[nodiscard]] Result<void> map();
  [[nodiscard]] bool mapped() const noexcept { return map_.data() != nullptr; }
  /// Whether map() may be used: the file was opened by vufront itself.
  [[nodiscard]] bool mappable() const noexcept { return !passed_fd_; }

  /// Hashes the next up to `len` state bytes on the mapping (read_state's
  /// position and checksum, without a copy); 0 at the end. At the end the
  /// checksum is compared (invalid_payload "checksum mismatch"), and a page
  /// cut under the mapping fails it (bad_size "snapshot file changed during
  /// restore (truncated)"). Errors also: bad_state (not mapped, or an
  /// earlier error). rewind() before the load.
  [[nodiscard]] Result<size_t> verify_mapped(size_t len);

  /// The state bytes on the mapping (state_offset() into the file), or
  /// nullptr if not mapped.
  [[nodiscard]] const uint8_t* mapped_state() const noexcept {
    return mapped() ? map_.data() + head_size_ : nullptr;
  }

  /// Drops the mapping's pages of the state before `state_pos` from this
  /// process's resident set (MappedFile::drop), in steps of kDropStep and at
  /// the end: a 1 GiB restore does not grow vufront's RSS by 1 GiB. The
  /// load calls it as it goes; verify_mapped does itself.
  void drop_mapped_before(uint64_t state_pos) noexcept;
  static constexpr uint64_t kDropStep = uint64_t{32} << 20;

  /// Whether the file is as it was at open(): same size, modification and
  /// change times, and no page of the mapping cut. Errors (bad_size
  /// "snapshot file changed during restore (truncated)", invalid_payload
  /// "... (modified)", io_error for fstat). A same-size rewrite within one
  /// tick of the file system's timestamps is not seen (the checksum on the
  /// mapping was checked before the load; a VMM's fd is never mapped).
  [[nodiscard]] Result<void> check_unchanged() const;

private:
  SnapshotReader() = default;
  /// `n` state bytes at position_ were read (or are on the mapping): hashed,
  /// position_ moves on; at the state's end the checksum is compared, once
  /// (a page cut under the mapping fails it first). For read_state and
  /// verify_mapped.
  [[nodiscard]] Result<void> consumed(const uint8_t* data, size_t n);
  [[nodiscard]] static Result<SnapshotReader> checked(const std::string& path, UniqueFd fd);

  std::string path_;
  UniqueFd fd_;
  Manifest manifest_;
  uint32_t head_size_ = 0;
  uint64_t position_ = 0;  ///< state bytes returned so far
  StateHasher hasher_;
  bool failed_ = false;
  bool checked_ = false;  ///< checksum compared at the end
  bool passed_fd_ = false;  ///< the VMM passed the file as an fd: never mapped
  struct stat_at_open {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
  } opened_;
  MappedFile map_;
  uint64_t dropped_ = 0;  ///< file offset below which the mapping's pages were dropped
};

/// Whether a back-end can take this snapshot: the device kind must match and
/// it must offer every feature and protocol feature the snapshot negotiated;
/// with `backend_queue_num` > 0 it must also have every queue the snapshot
/// lists. The error (errc::not_negotiated, or invalid_argument for a kind
/// mismatch) names the missing bits in hex and by name.
[[nodiscard]] Result<void> check_compatible(const Manifest& m, DeviceKind backend_kind,
                                            uint64_t backend_features,
                                            uint64_t backend_protocol_features,
                                            uint16_t backend_queue_num = 0);

}  // namespace vufront::snapshot
