#include "base/beneath.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace vufront {

namespace {

constexpr int dir_flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;

std::vector<std::string> components(const std::string& path) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= path.size()) {
    size_t slash = path.find('/', at);
    if (slash == std::string::npos)
      slash = path.size();
    out.push_back(path.substr(at, slash - at));
    at = slash + 1;
  }
  return out;
}

Error outside(const std::string& request, const std::string& path, const std::string& why) {
  return make_error(errc::permission_denied, request, "\"" + path + "\" " + why);
}

/// errno of a failed open of a directory on the way, as an Error.
Error open_failed(const std::string& request, const std::string& path, int err) {
  if (err == ELOOP || err == EXDEV)
    return outside(request, path, "goes through a symbolic link or out of the directory");
  if (err == ENOTDIR)
    return make_error(errc::io_error, request, "\"" + path + "\": a component is not a directory", err);
  return make_error(errc::io_error, request, "\"" + path + "\"", err);
}

/// openat2 of `dirs` beneath `root`; ENOSYS (an older kernel, or a seccomp
/// filter that denies it) makes the caller fall back.
int open_with_openat2(int root, const std::string& dirs) {
#ifdef SYS_openat2
  open_how how{};
  how.flags = static_cast<uint64_t>(dir_flags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd;
  do
    fd = ::syscall(SYS_openat2, root, dirs.c_str(), &how, sizeof how);
  while (fd < 0 && errno == EAGAIN);  // a rename raced the lookup: retry
  return static_cast<int>(fd);
#else
  (void)root;
  (void)dirs;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

Result<BeneathPath> open_parent_beneath(int root, const std::string& relative, const std::string& request,
                                        BeneathResolver how) {
  if (relative.empty())
    return make_error(errc::invalid_argument, request, "an empty file name");
  if (relative.front() == '/')
    return outside(request, relative, "is an absolute path");
  std::vector<std::string> parts = components(relative);
  std::vector<std::string> dirs;
  for (const auto& p : parts) {
    if (p == "..")
      return outside(request, relative, "has a \"..\" component");
    if (!p.empty() && p != ".")
      dirs.push_back(p);
  }
  const std::string leaf = parts.back();
  if (leaf.empty() || leaf == ".")
    return make_error(errc::invalid_argument, request, "\"" + relative + "\" does not name a file");
  dirs.pop_back();
  BeneathPath out;
  out.leaf = leaf;
  std::string joined;
  for (const auto& d : dirs)
    joined += (joined.empty() ? "" : "/") + d;
  // OWNERSHIP: every fd opened here is owned by a UniqueFd at once.
  if (joined.empty()) {
    out.dir = UniqueFd::adopt(::openat(root, ".", dir_flags));
    if (!out.dir)
      return open_failed(request, relative, errno);
    return out;
  }
  if (how == BeneathResolver::automatic) {
    int fd = open_with_openat2(root, joined);
    if (fd >= 0) {
      out.dir = UniqueFd::adopt(fd);
      return out;
    }
    if (errno != ENOSYS && errno != EPERM)
      return open_failed(request, relative, errno);
  }
  UniqueFd cur = UniqueFd::adopt(::openat(root, ".", dir_flags));
  if (!cur)
    return open_failed(request, relative, errno);
  for (const auto& d : dirs) {
    UniqueFd next = UniqueFd::adopt(::openat(cur.get(), d.c_str(), dir_flags | O_NOFOLLOW));
    if (!next) {
      int err = errno;
      // O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR: name the link.
      struct stat sb {};
      if (::fstatat(cur.get(), d.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
        err = ELOOP;
      return open_failed(request, relative, err);
    }
    cur = std::move(next);
  }
  out.dir = std::move(cur);
  return out;
}

Result<UniqueFd> open_file_beneath(const BeneathPath& at, int flags, const std::string& request) {
  // OWNERSHIP: owned by the returned UniqueFd.
  UniqueFd fd = UniqueFd::adopt(::openat(at.dir.get(), at.leaf.c_str(), flags | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    int err = errno;
    if (err == ELOOP)
      return outside(request, at.leaf, "is a symbolic link");
    return make_error(errc::io_error, request, "open " + at.leaf, err);
  }
  struct stat sb {};
  if (::fstat(fd.get(), &sb) != 0)
    return make_error(errc::io_error, request, "fstat " + at.leaf, errno);
  if (!S_ISREG(sb.st_mode))
    return make_error(errc::invalid_argument, request, at.leaf + " is not a regular file");
  return fd;
}

}  // namespace vufront
