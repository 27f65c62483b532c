// A main() for the libFuzzer targets without libFuzzer: runs every regular
// file named on the command line, or found (recursively) under a directory
// named there, through LLVMFuzzerTestOneInput once. Used by ctest to replay
// the committed corpora with any compiler. Exits non-zero if nothing was run
// or an argument cannot be read; a crash in the target fails the test itself.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool run_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", p.c_str());
    return false;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  // Like libFuzzer: the data pointer is never null, even for an empty input.
  std::vector<uint8_t> copy(bytes.size() + 1);
  std::copy(bytes.begin(), bytes.end(), copy.begin());
  LLVMFuzzerTestOneInput(copy.data(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  size_t runs = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::recursive_directory_iterator(arg, ec))
        if (e.is_regular_file())
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        runs += run_file(f) ? 1 : 0;
    } else if (run_file(arg)) {
      ++runs;
    } else {
      ok = false;
    }
  }
  std::printf("replayed %zu inputs\n", runs);
  return ok && runs > 0 ? 0 : 1;
}
