// The doctest main of every test executable, with one guard: a run that was
// asked for particular test cases (ctest passes --test-case=NAME) and ran none
// fails. Without it a test case whose name CMake cannot pass through (a ';'
// splits a CMake list) is registered, matches nothing, and "passes".
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace {

int g_test_cases_started = 0;

struct CountingListener : doctest::IReporter {
  explicit CountingListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++g_test_cases_started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("vufront-count", 1, CountingListener);

int main(int argc, char** argv) {
  bool filtered = false;
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strncmp(a, "--test-case=", 12) == 0 || std::strncmp(a, "-tc=", 4) == 0) filtered = true;
    if (std::strncmp(a, "--list", 6) == 0 || std::strncmp(a, "-ltc", 4) == 0 ||
        std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0 || std::strncmp(a, "-lts", 4) == 0 ||
        std::strncmp(a, "--count", 7) == 0 || std::strcmp(a, "-c") == 0 || std::strcmp(a, "--version") == 0 ||
        std::strcmp(a, "-v") == 0)
      listing = true;
  }
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit() || listing) return rc;
  if (rc == 0 && filtered && g_test_cases_started == 0) {
    std::fprintf(stderr,
                 "tests: the --test-case filter matched no test case (a ';' in a TEST_CASE name "
                 "breaks ctest's discovery)\n");
    return 1;
  }
  return rc;
}
