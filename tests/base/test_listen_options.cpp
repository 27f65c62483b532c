// Who may connect to a socket vufront listens on (base/listen_options.hpp,
// ListenOptions in base/unix_socket.hpp): the command line's words, the one
// rule, and the mode and group a listening socket gets before listen().
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/listen_options.hpp"
#include "base/unix_socket.hpp"
#include "tests/support.hpp"

using namespace vufront;

TEST_CASE("listen options: octal modes and groups by name or number") {
  CHECK(*parse_socket_mode("0660", "--control-mode") == 0660u);
  CHECK(*parse_socket_mode("600", "--control-mode") == 0600u);
  CHECK(*parse_socket_mode("0", "--control-mode") == 0u);
  for (const char* bad : {"", "0999", "8", "1777", "66a", "-1", "07777"}) {
    auto m = parse_socket_mode(bad, "--control-mode");
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == errc::invalid_argument);
    CHECK(m.error().request == "--control-mode");
  }
  CHECK(*parse_group("0", "--control-group") == 0u);
  CHECK(*parse_group("root", "--control-group") == 0u);
  CHECK(*parse_group("65534", "--control-group") == 65534u);
  auto none = parse_group("no-such-group-vufront", "--control-group");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().detail.find("no group named") != std::string::npos);
  CHECK_FALSE(parse_group("", "--control-group").ok());
  CHECK_FALSE(parse_group("99999999999", "--control-group").ok());
}

TEST_CASE("listen options: a user by name (getpwnam) or number, for --allow-uid") {
  CHECK(*parse_user("0", "--allow-uid") == 0u);
  CHECK(*parse_user("root", "--allow-uid") == 0u);
  CHECK(*parse_user("65534", "--allow-uid") == 65534u);
  auto none = parse_user("no-such-user-vufront", "--allow-uid");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().request == "--allow-uid");
  CHECK(none.error().detail.find("no user named no-such-user-vufront") != std::string::npos);
  CHECK_FALSE(parse_user("", "--allow-uid").ok());
  CHECK_FALSE(parse_user("99999999999", "--allow-uid").ok());
}

TEST_CASE("listen options: the rule - a mode wins, a group opens to the group, other uids to all") {
  CHECK(listen_options(std::nullopt, std::nullopt, false).mode == 0600u);
  CHECK(listen_options(std::nullopt, std::nullopt, false).group == -1);
  CHECK(listen_options(std::nullopt, std::nullopt, true).mode == 0666u);
  auto g = listen_options(std::nullopt, 36u, true);
  CHECK(g.mode == 0660u);
  CHECK(g.group == 36);
  CHECK(listen_options(0600u, std::nullopt, true).mode == 0600u);
  CHECK(listen_options(0640u, 5u, false).mode == 0640u);
  CHECK(describe(g) == "mode 0660, group 36");
  CHECK(describe(ListenOptions{}) == "mode 0600");
}

TEST_CASE("listen options: a listening socket gets its mode and group before anyone connects") {
  test::TempDir dir;
  const std::string path = dir.file("s.sock");
  ListenFailure why{};
  ListenOptions o;
  o.mode = 0660;
  o.group = 65534;
  auto l = make_listening_socket(path, SOCK_SEQPACKET, 0, o, 4, why);
  REQUIRE(l.valid());
  struct stat sb {};
  REQUIRE(::lstat(path.c_str(), &sb) == 0);
  CHECK(S_ISSOCK(sb.st_mode));
  CHECK((sb.st_mode & 07777) == 0660u);
  if (::geteuid() == 0)  // only root may give a file to a group it is not in
    CHECK(sb.st_gid == 65534u);
}
