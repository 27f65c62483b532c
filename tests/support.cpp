#include "tests/support.hpp"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace vufront::test {

TempDir::TempDir() {
  std::string tmpl = "/tmp/vufront-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace vufront::test
