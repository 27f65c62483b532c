#pragma once
// Where a snapshot file is written or read when it is not simply a path
// (attach, docs/attach-protocol.md "Snapshot files"): a file the VMM opened
// and passed (SCM_RIGHTS), or a name in a directory already opened beneath
// attach's --snapshot-dir (base/beneath.hpp). An empty target means "the
// path": the CLI and a VMM of vufront's own uid name files by path.

#include <string>

#include "base/unique_fd.hpp"

namespace vufront::snapshot {

struct FileTarget {
  /// With `leaf`: the file is `leaf` in this directory (O_DIRECTORY);
  /// a snapshot is written to a temporary there and renamed (renameat).
  SharedFd dir;
  std::string leaf;
  /// The file itself, opened by the VMM: a snapshot is written into it in
  /// place (truncated first, no rename), a restore reads from it.
  SharedFd file;

  [[nodiscard]] bool empty() const noexcept { return !dir && !file; }
};

}  // namespace vufront::snapshot
