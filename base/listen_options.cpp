#include "base/listen_options.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

namespace vufront {

Result<unsigned> parse_socket_mode(const std::string& text, const std::string& option) {
  unsigned v = 0;
  bool good = !text.empty() && text.size() <= 4;
  for (char c : text) {
    if (c < '0' || c > '7') {
      good = false;
      break;
    }
    v = v * 8 + static_cast<unsigned>(c - '0');
  }
  if (!good || v > 0777)
    return make_error(errc::invalid_argument, option,
                      "\"" + text + "\" is not an octal mode 0..0777 (e.g. 0660)");
  return v;
}

Result<uint32_t> parse_group(const std::string& text, const std::string& option) {
  if (text.empty())
    return make_error(errc::invalid_argument, option, "a group name or number");
  bool numeric = text.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    if (text.size() > 10 || std::stoull(text) > 0xfffffffeULL)
      return make_error(errc::invalid_argument, option, "group number " + text + " is out of range");
    return static_cast<uint32_t>(std::stoull(text));
  }
  long size = ::sysconf(_SC_GETGR_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  group g{};
  group* found = nullptr;
  int err = 0;
  while ((err = ::getgrnam_r(text.c_str(), &g, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (size_t{1} << 20))
    buf.resize(buf.size() * 2);
  if (err != 0)
    return make_error(errc::invalid_argument, option, "looking up group " + text, err);
  if (found == nullptr)
    return make_error(errc::invalid_argument, option, "no group named " + text);
  return static_cast<uint32_t>(found->gr_gid);
}

Result<uint32_t> parse_user(const std::string& text, const std::string& option) {
  if (text.empty())
    return make_error(errc::invalid_argument, option, "a user name or number");
  bool numeric = text.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    if (text.size() > 10 || std::stoull(text) > 0xfffffffeULL)
      return make_error(errc::invalid_argument, option, "user number " + text + " is out of range");
    return static_cast<uint32_t>(std::stoull(text));
  }
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
  passwd p{};
  passwd* found = nullptr;
  int err = 0;
  while ((err = ::getpwnam_r(text.c_str(), &p, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (size_t{1} << 20))
    buf.resize(buf.size() * 2);
  if (err != 0)
    return make_error(errc::invalid_argument, option, "looking up user " + text, err);
  if (found == nullptr)
    return make_error(errc::invalid_argument, option, "no user named " + text);
  return static_cast<uint32_t>(found->pw_uid);
}

ListenOptions listen_options(std::optional<unsigned> mode, std::optional<uint32_t> group,
                             bool other_uids_connect) {
  ListenOptions o;
  if (group)
    o.group = static_cast<long long>(*group);
  if (mode)
    o.mode = *mode;
  else if (group)
    o.mode = 0660;
  else if (other_uids_connect)
    o.mode = 0666;
  else
    o.mode = 0600;
  return o;
}

std::string describe(const ListenOptions& o) {
  char m[8];
  std::snprintf(m, sizeof m, "%04o", o.mode);
  std::string out = std::string("mode ") + m;
  if (o.group >= 0)
    out += ", group " + std::to_string(o.group);
  return out;
}

}  // namespace vufront
