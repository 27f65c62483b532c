// Paths that must stay inside a directory (base/beneath.hpp): "..",
// absolute paths and symbolic links are refused, with openat2 and with the
// per-component fallback alike.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "base/beneath.hpp"
#include "tests/support.hpp"

using namespace vufront;

TEST_CASE("beneath: a path is opened inside the directory, never outside it") {
  test::FdCount fds;
  {
    test::TempDir tmp;
    const std::string root_path = tmp.file("root");
    REQUIRE(::mkdir(root_path.c_str(), 0700) == 0);
    REQUIRE(::mkdir(tmp.file("root/a").c_str(), 0700) == 0);
    REQUIRE(::mkdir(tmp.file("root/a/b").c_str(), 0700) == 0);
    REQUIRE(::mkdir(tmp.file("outside").c_str(), 0700) == 0);
    { std::ofstream(tmp.file("outside/secret")) << "s"; }
    { std::ofstream(tmp.file("root/a/f")) << "f"; }
    REQUIRE(::symlink(tmp.file("outside").c_str(), tmp.file("root/out").c_str()) == 0);
    REQUIRE(::symlink("b", tmp.file("root/a/inner").c_str()) == 0);  // inside, but a link
    REQUIRE(::symlink(tmp.file("outside/secret").c_str(), tmp.file("root/a/leaf").c_str()) == 0);
    UniqueFd root = UniqueFd::adopt(::open(root_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(root.valid());

    BeneathResolver how = BeneathResolver::automatic;
    SUBCASE("openat2") {}
    SUBCASE("per component") { how = BeneathResolver::per_component; }

    for (const char* good : {"x", "a/f", "a/b/new", "./a/./b/c", "a//b/c"}) {
      auto p = open_parent_beneath(root.get(), good, "snapshot", how);
      REQUIRE_MESSAGE(p.ok(), good, ": ", p.error().message());
      CHECK(p->dir.valid());
    }
    auto f = open_parent_beneath(root.get(), "a/f", "snapshot", how);
    REQUIRE(f.ok());
    CHECK(f->leaf == "f");
    CHECK(open_file_beneath(*f, O_RDONLY, "restore").ok());

    for (const char* bad : {"../outside/secret", "/etc/passwd", "out/secret", "a/inner/c", "a/../f",
                            "a/b/../../../outside/secret"}) {
      auto p = open_parent_beneath(root.get(), bad, "snapshot", how);
      REQUIRE_FALSE_MESSAGE(p.ok(), bad);
      CHECK_MESSAGE(p.error().code == errc::permission_denied, bad, ": ", p.error().message());
      CHECK(p.error().request == "snapshot");
    }
    for (const char* bad : {"", "a/", "a/.", "."}) {
      auto p = open_parent_beneath(root.get(), bad, "snapshot", how);
      REQUIRE_FALSE(p.ok());
      CHECK(p.error().code == errc::invalid_argument);
    }
    auto missing = open_parent_beneath(root.get(), "nope/x", "snapshot", how);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == errc::io_error);

    auto leaf = open_parent_beneath(root.get(), "a/leaf", "restore", how);
    REQUIRE(leaf.ok());  // the directory is fine; the link itself is refused on open
    auto opened = open_file_beneath(*leaf, O_RDONLY, "restore");
    REQUIRE_FALSE(opened.ok());
    CHECK(opened.error().code == errc::permission_denied);
    auto dir_as_file = open_parent_beneath(root.get(), "a/b", "restore", how);
    REQUIRE(dir_as_file.ok());
    auto d = open_file_beneath(*dir_as_file, O_RDONLY, "restore");
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().code == errc::invalid_argument);
  }
  CHECK_MESSAGE(fds.leaked() == 0, test::FdCount::listing());
}
