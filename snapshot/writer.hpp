#pragma once
// Writes a snapshot file: the state is streamed in first, the head (header +
// manifest) is written last, then fsync. Two ways:
//
//  * atomically at a path or at a name in a directory (FileTarget::dir): a
//    temporary next to the destination, renamed over it (renameat relative
//    to the directory's fd), then fsync of the directory. Until commit()
//    succeeds nothing exists at the destination (an older file there stays
//    untouched); a writer dropped without commit removes its temporary;
//  * into a file the VMM opened and passed (FileTarget::file): truncated
//    first, written in place with pwrite (its file offset is left alone), no
//    rename. A writer dropped without commit truncates it to 0 bytes, so a
//    half-written snapshot is never left behind to be restored.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "snapshot/file_target.hpp"
#include "snapshot/format.hpp"
#include "snapshot/manifest.hpp"

namespace vufront::snapshot {

/// What commit() does when a file already exists at the destination (not
/// for a passed file, which is the destination).
enum class Existing { replace, refuse };

class SnapshotWriter {
public:
  /// Creates "<path>.tmp.XXXXXX" (0600, O_CLOEXEC) in path's directory.
  /// `max_state_bytes` caps the state; more is errc::oversized. With
  /// Existing::refuse, commit() fails (invalid_argument, the temporary
  /// removed) rather than replace a file that is at `path` by then, checked
  /// atomically with the rename (RENAME_NOREPLACE, or linkat() where the file
  /// system lacks it).
  [[nodiscard]] static Result<SnapshotWriter> create(const std::string& path,
                                                     uint64_t max_state_bytes,
                                                     Existing existing = Existing::replace);
  /// The same for a target; `path` only names the file in errors and
  /// results when the target is not empty. A passed file must be a regular
  /// file open for writing without O_APPEND (bad_fds otherwise).
  [[nodiscard]] static Result<SnapshotWriter> create(const std::string& path, const FileTarget& target,
                                                     uint64_t max_state_bytes,
                                                     Existing existing = Existing::replace);

  /// Removes the temporaries of unfinished writers of `path` ("<path>.tmp."
  /// and six characters, as create() names them), e.g. of a process about to
  /// quit mid-snapshot; returns their names.
  static std::vector<std::string> remove_temporaries(const std::string& path);

  SnapshotWriter(SnapshotWriter&& other) noexcept;
  SnapshotWriter& operator=(SnapshotWriter&& other) noexcept;
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  /// Without a successful commit: removes the temporary file (or truncates
  /// a passed file).
  ~SnapshotWriter();

  /// Appends state bytes (hashing and counting them). Any failure abandons
  /// the snapshot: the temporary is removed and later calls fail (bad_state).
  [[nodiscard]] Result<void> write_state(const uint8_t* data, size_t len);

  /// Fills in format_version, state_length, state_checksum (and `created`
  /// when empty), validates the manifest, writes the head, fsyncs, renames
  /// over the destination and fsyncs the directory (a passed file: no
  /// rename). Returns the manifest as written. On failure the temporary is
  /// removed and the destination is untouched. Only once.
  [[nodiscard]] Result<Manifest> commit(Manifest m);

  [[nodiscard]] uint64_t state_bytes() const noexcept { return written_; }
  /// The temporary: "<path>.tmp.XXXXXX" (empty for a passed file).
  [[nodiscard]] const std::string& temp_path() const noexcept { return temp_path_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
  SnapshotWriter() = default;
  [[nodiscard]] static Result<SnapshotWriter> create_target(const std::string& path,
                                                            const FileTarget& target,
                                                            uint64_t max_state_bytes);
  [[nodiscard]] static Result<SnapshotWriter> create_in(std::string path, UniqueFd dir, std::string leaf,
                                                        uint64_t max_state_bytes);
  void abandon() noexcept;
  [[nodiscard]] Result<void> move_into_place() noexcept;
  Error fail(Error e) noexcept;

  std::string path_;       ///< for errors and results
  UniqueFd dir_;           ///< the destination's directory (not for a passed file)
  std::string leaf_;       ///< the destination's name in dir_
  std::string temp_name_;  ///< the temporary's name in dir_; empty once renamed or removed
  std::string temp_path_;  ///< the same for errors: "<path>.tmp.XXXXXX"
  bool in_place_ = false;  ///< a passed file: written in place
  UniqueFd fd_;
  StateHasher hasher_;
  uint64_t max_bytes_ = 0;
  uint64_t written_ = 0;
  Existing existing_ = Existing::replace;
  bool done_ = false;  ///< committed or abandoned
};

}  // namespace vufront::snapshot
