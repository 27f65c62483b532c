#pragma once
// Writes a snapshot file atomically: the state is streamed into a temporary
// file next to the destination, the head (header + manifest) is written last,
// then fsync, rename over the destination, fsync of the directory. Until
// commit() succeeds nothing exists at the destination (an older file there
// stays untouched); a writer dropped without commit removes its temporary.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "snapshot/format.hpp"
#include "snapshot/manifest.hpp"

namespace vufront::snapshot {

/// What commit() does when a file already exists at the destination.
enum class Existing { replace, refuse };

class SnapshotWriter {
public:
  /// Creates "<path>.tmp.XXXXXX" (0600, O_CLOEXEC) in path's directory.
  /// `max_state_bytes` caps the state; more is errc::oversized. With
  /// Existing::refuse, commit() fails (invalid_argument, the temporary
  /// removed) rather than replace a file that is at `path` by then, checked
  /// atomically with the rename (RENAME_NOREPLACE, or link() where the file
  /// system lacks it).
  [[nodiscard]] static Result<SnapshotWriter> create(const std::string& path,
                                                     uint64_t max_state_bytes,
                                                     Existing existing = Existing::replace);

  SnapshotWriter(SnapshotWriter&& other) noexcept;
  SnapshotWriter& operator=(SnapshotWriter&& other) noexcept;
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  /// Without a successful commit: removes the temporary file.
  ~SnapshotWriter();

  /// Appends state bytes (hashing and counting them). Any failure abandons
  /// the snapshot: the temporary is removed and later calls fail (bad_state).
  [[nodiscard]] Result<void> write_state(const uint8_t* data, size_t len);

  /// Fills in format_version, state_length, state_checksum (and `created`
  /// when empty), validates the manifest, writes the head, fsyncs, renames
  /// over the destination and fsyncs the directory. Returns the manifest as
  /// written. On failure the temporary is removed and the destination is
  /// untouched. Only once.
  [[nodiscard]] Result<Manifest> commit(Manifest m);

  /// Removes the temporaries of unfinished writers of `path` ("<path>.tmp."
  /// and six characters, as create() names them), e.g. of a process about to
  /// quit mid-snapshot; returns their names.
  static std::vector<std::string> remove_temporaries(const std::string& path);

  [[nodiscard]] uint64_t state_bytes() const noexcept { return written_; }
  [[nodiscard]] const std::string& temp_path() const noexcept { return temp_path_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
  SnapshotWriter() = default;
  void abandon() noexcept;
  [[nodiscard]] Result<void> move_into_place() noexcept;
  Error fail(Error e) noexcept;

  std::string path_;
  std::string temp_path_;  ///< empty once renamed or removed
  UniqueFd fd_;
  StateHasher hasher_;
  uint64_t max_bytes_ = 0;
  uint64_t written_ = 0;
  Existing existing_ = Existing::replace;
  bool done_ = false;  ///< committed or abandoned
};

}  // namespace vufront::snapshot
