#pragma once
// Reads a snapshot file with every field checked. open() checks the header,
// the manifest and the file size; the state is then streamed (read_state),
// never held whole, and its checksum checked when the last byte has been
// read. verify() streams it once up front so a corrupt file is refused before
// anything reaches a back-end.

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
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

private:
  SnapshotReader() = default;
  [[nodiscard]] static Result<SnapshotReader> checked(const std::string& path, UniqueFd fd);

  std::string path_;
  UniqueFd fd_;
  Manifest manifest_;
  uint32_t head_size_ = 0;
  uint64_t position_ = 0;  ///< state bytes returned so far
  StateHasher hasher_;
  bool failed_ = false;
  bool checked_ = false;  ///< checksum compared at the end
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
