#pragma once
// Opening a path that must stay inside a directory the operator named (attach
// --snapshot-dir): no absolute paths, no "..", and no symbolic link anywhere
// on the way, so a file name from a less privileged peer cannot reach outside
// the directory. openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) when the
// kernel has it (Linux 5.6), else one openat(O_NOFOLLOW | O_DIRECTORY) per
// component from the directory's fd. The file itself is then used relative
// to the fd returned (openat / renameat), never by its path again.

#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront {

/// How the directories of a path are opened (tests force the fallback).
enum class BeneathResolver { automatic, per_component };

/// Where a file is: the directory it is (to be) in, opened, and its name there.
struct BeneathPath {
  UniqueFd dir;      ///< O_RDONLY | O_DIRECTORY | O_CLOEXEC
  std::string leaf;  ///< one component: no '/', not "." or ".."
};

/// Opens the directory of `relative` beneath `root` (an O_DIRECTORY fd).
/// `relative` is a relative path whose components are not "..", whose last
/// component names a file, and in which no directory is a symbolic link.
/// Errors: permission_denied naming the path (absolute, "..", a symbolic
/// link, or anything else that would leave `root`), invalid_argument (empty,
/// ends in '/'), io_error (a directory is missing, or another errno).
[[nodiscard]] Result<BeneathPath> open_parent_beneath(int root, const std::string& relative,
                                                      const std::string& request,
                                                      BeneathResolver how = BeneathResolver::automatic);

/// `leaf` in `dir` opened with `flags` (O_CLOEXEC | O_NOFOLLOW added): a
/// symbolic link there is refused (permission_denied), so is anything but a
/// regular file once open (invalid_argument).
[[nodiscard]] Result<UniqueFd> open_file_beneath(const BeneathPath& at, int flags, const std::string& request);

}  // namespace vufront
