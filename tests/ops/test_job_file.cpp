// The job file parser and validator (ops/job_file.*): valid files with their
// defaults, every kind of error with its message and place, sizes, the
// examples in docs/examples.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "ops/job_file.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::ops;
using std::chrono::milliseconds;
using vufront::test::TempDir;

namespace {

/// The error detail of parsing `text` ("" when it parses).
std::string error_of(const std::string& text) {
  auto r = parse_job_text(text);
  if (r)
    return "";
  CHECK(r.error().code == errc::invalid_argument);
  CHECK(r.error().request == "job file");
  return r.error().detail;
}

/// A job of one device with `steps` (JSON array text) and extra device keys.
std::string one_device(const std::string& steps, const std::string& extra = "") {
  return R"({"devices": [{"socket": "/tmp/a.sock", )" + extra + R"("steps": )" + steps + "}]}";
}

/// Two devices with these step arrays.
std::string two_devices(const std::string& a, const std::string& b) {
  return R"({"devices": [{"name": "a", "socket": "/tmp/a.sock", "steps": )" + a +
         R"(}, {"name": "b", "socket": "/tmp/b.sock", "steps": )" + b + "}]}";
}

}  // namespace

TEST_CASE("job file: the suggested shape parses, with every value") {
  auto r = parse_job_text(R"({"devices": [
      {"name": "disk0", "socket": "/tmp/a.sock", "kind": "blk", "queues": 2, "queue_size": 256,
       "packed": false, "msix": true, "timeout": 30, "drain_timeout": 90,
       "steps": ["activate", "check", "sleep",
                 {"snapshot": "/no-such-dir/disk0.vfsnap", "max_bytes": "1G"},
                 {"restore": "/no-such-dir/disk0.vfsnap", "socket": "/tmp/b.sock", "timeout": 120},
                 "wake", "check", {"wait": 0.5}, {"barrier": "snapshotted"}, "reset"]},
      {"name": "disk1", "socket": "/tmp/c.sock",
       "steps": ["activate", {"barrier": "snapshotted", "timeout": 5}]}]})");
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  const Job& job = *r;
  REQUIRE(job.devices.size() == 2);
  const JobDevice& d = job.devices[0];
  CHECK(d.name == "disk0");
  CHECK(d.socket == "/tmp/a.sock");
  CHECK(d.kind == DeviceKind::blk);
  CHECK(d.queues == 2);
  CHECK(d.queue_size == 256);
  CHECK(d.msix);
  CHECK_FALSE(d.packed);
  CHECK(d.timeout == milliseconds(30000));
  CHECK(d.drain_timeout == milliseconds(90000));
  REQUIRE(d.steps.size() == 10);
  CHECK(d.steps[0].kind == JobStepKind::activate);
  CHECK(d.steps[0].timeout == milliseconds(30000));  // the device's
  CHECK(d.steps[3].kind == JobStepKind::snapshot);
  CHECK(d.steps[3].path == "/no-such-dir/disk0.vfsnap");
  CHECK(d.steps[3].max_bytes == (uint64_t{1} << 30));
  CHECK(d.steps[4].kind == JobStepKind::restore);
  CHECK(d.steps[4].socket == "/tmp/b.sock");
  CHECK(d.steps[4].timeout == milliseconds(120000));
  CHECK(d.steps[7].kind == JobStepKind::wait);
  CHECK(d.steps[7].wait == milliseconds(500));
  CHECK(d.steps[8].barrier == "snapshotted");
  CHECK(job.devices[1].steps[1].timeout == milliseconds(5000));
  // The slowest device: 9 steps of 30 s (one of 120 s) plus a 0.5 s wait.
  CHECK(job.deadline() == milliseconds(8 * 30000 + 120000 + 500));
}

TEST_CASE("job file: defaults") {
  auto r = parse_job_text(one_device(R"(["activate", "sleep", {"snapshot": "s.vfsnap"},
      {"restore": "s.vfsnap"}, "wake", {"restore": "s.vfsnap", "socket": "/tmp/b.sock"},
      {"restore": "s.vfsnap"}])"));
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  const JobDevice& d = r->devices[0];
  CHECK(d.name == "dev0");
  CHECK(d.kind == DeviceKind::blk);
  CHECK(d.queues == 1);
  CHECK(d.queue_size == 128);
  CHECK_FALSE(d.packed);
  CHECK_FALSE(d.msix);
  CHECK(d.timeout == milliseconds(60000));
  CHECK(d.drain_timeout == milliseconds(30000));
  CHECK(d.steps[2].max_bytes == (uint64_t{64} << 30));
  // restore without a socket: the device's socket at that point
  CHECK(d.steps[3].socket == "/tmp/a.sock");
  CHECK(d.steps[5].socket == "/tmp/b.sock");
  CHECK(d.steps[6].socket == "/tmp/b.sock");
}

TEST_CASE("job file: comments, other kinds, packed rings of any size") {
  auto r = parse_job_text(R"(// a comment
    {"comment": "two devices", /* block comment */
     "devices": [{"socket": "/tmp/n.sock", "kind": "net", "queues": 2, "steps": ["activate", "check"]},
                 {"socket": "/tmp/f.sock", "kind": "fs", "fs_file": "hello.txt", "packed": true,
                  "queue_size": 100, "comment": "virtiofsd", "steps": ["activate", "check"]}]})");
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->devices[0].kind == DeviceKind::net);
  CHECK(r->devices[1].name == "dev1");
  CHECK(r->devices[1].fs_file == "hello.txt");
  CHECK(r->devices[1].queue_size == 100);
}

TEST_CASE("job file: sizes") {
  auto size_of = [](const std::string& v) -> uint64_t {
    auto r = parse_job_text(one_device(R"(["activate", "sleep", {"snapshot": "f", "max_bytes": )" + v +
                                       "}]"));
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    return r->devices[0].steps[2].max_bytes;
  };
  CHECK(size_of("4096") == 4096);
  CHECK(size_of(R"("4096")") == 4096);
  CHECK(size_of(R"("512K")") == 512 * 1024);
  CHECK(size_of(R"("512M")") == uint64_t{512} << 20);
  CHECK(size_of(R"("4G")") == uint64_t{4} << 30);
  CHECK(size_of(R"("4GiB")") == uint64_t{4} << 30);
  CHECK(size_of(R"("1t")") == uint64_t{1} << 40);
  auto err = [](const std::string& v) {
    return error_of(one_device(R"(["activate", "sleep", {"snapshot": "f", "max_bytes": )" + v + "}]"));
  };
  CHECK(err(R"("1X")") ==
        R"(devices[0].steps[2].max_bytes: unknown unit "X" (use K, M, G or T, e.g. 512M))");
  CHECK(err(R"("0")") == "devices[0].steps[2].max_bytes: must be at least 1 byte");
  CHECK(err("0") == "devices[0].steps[2].max_bytes: 0 is not in 1..4611686018427387904");
  CHECK(err("-1") == "devices[0].steps[2].max_bytes: -1 is not in 1..4611686018427387904");
  CHECK(err("1.5") ==
        R"(devices[0].steps[2].max_bytes: expected a size (bytes, or a string like "512M"), got 1.5)");
  CHECK(err(R"("G")").find("not a size") != std::string::npos);
  CHECK(err(R"("99999999999T")").find("too large") != std::string::npos);
}

TEST_CASE("job file: syntax errors and duplicate keys") {
  CHECK(error_of(R"({"devices": [)").rfind("not valid JSON: parse error at line 1, column 14", 0) == 0);
  CHECK(error_of("").rfind("not valid JSON", 0) == 0);
  CHECK(error_of(R"({"devices": [], "devices": []})") == R"(duplicate key "devices")");
  CHECK(error_of(R"({"devices": [{"socket": "/a", "steps": ["activate"]},
                                 {"socket": "/b", "socket": "/c", "steps": ["activate"]}]})") ==
        R"(devices[1]: duplicate key "socket")");
  CHECK(error_of(one_device(R"(["activate", "sleep", {"snapshot": "a", "snapshot": "b"}])")) ==
        R"(devices[0].steps[2]: duplicate key "snapshot")");
}

TEST_CASE("job file: the top level") {
  CHECK(error_of("[]") == "job file: expected an object, got an array");
  CHECK(error_of("{}") == R"(job file: missing key "devices" (a job file is {"devices": [...]}))");
  CHECK(error_of(R"({"devices": {}})") == "devices: expected an array, got an object");
  CHECK(error_of(R"({"devices": []})") == "devices: no devices");
  CHECK(error_of(R"({"device": []})") ==
        R"(job file: unknown key "device" (did you mean "devices"?) (keys: devices, comment))");
}

TEST_CASE("job file: device errors name the key") {
  CHECK(error_of(R"({"devices": [{"steps": ["activate"]}]})") ==
        R"(devices[0]: missing key "socket" (the back-end's vhost-user socket))");
  CHECK(error_of(R"({"devices": [{"socket": "/a"}]})") ==
        R"(devices[0]: missing key "steps" (what to do with the device))");
  CHECK(error_of(R"({"devices": [{"sockt": "/a", "steps": ["activate"]}]})")
            .rfind(R"(devices[0]: unknown key "sockt" (did you mean "socket"?))", 0) == 0);
  CHECK(error_of(R"({"devices": ["disk"]})") == R"(devices[0]: expected an object, got the string "disk")");
  CHECK(error_of(one_device(R"(["activate"])", R"("kind": "bkl", )")) ==
        R"(devices[0].kind: "bkl" is not a device kind (blk, net, fs) (did you mean "blk"?))");
  CHECK(error_of(one_device(R"(["activate"])", R"("queues": 0, )")) == "devices[0].queues: 0 is not in 1..64");
  CHECK(error_of(one_device(R"(["activate"])", R"("queues": "2", )")) ==
        R"(devices[0].queues: expected an integer, got the string "2")");
  CHECK(error_of(one_device(R"(["activate"])", R"("queue_size": 100, )")) ==
        "devices[0].queue_size: 100 is not a power of two (split rings need one; packed rings do not)");
  CHECK(error_of(one_device(R"(["activate"])", R"("queue_size": 65536, )")) ==
        "devices[0].queue_size: 65536 is not in 2..32768");
  CHECK(error_of(one_device(R"(["activate"])", R"("packed": "yes", )")) ==
        R"(devices[0].packed: expected true or false, got the string "yes")");
  CHECK(error_of(one_device(R"(["activate"])", R"("timeout": 0, )")) ==
        "devices[0].timeout: 0 is not in 0.001..86400 seconds");
  CHECK(error_of(one_device(R"(["activate"])", R"("timeout": -5, )")) ==
        "devices[0].timeout: -5 is not in 0.001..86400 seconds");
  CHECK(error_of(one_device(R"(["activate"])", R"("drain_timeout": 0, )")) ==
        "devices[0].drain_timeout: 0 is not in 0.001..86400 seconds");
  CHECK(error_of(one_device(R"(["activate"])", R"("fs_file": "x", )")) ==
        R"(devices[0].fs_file: only for "kind": "fs")");
  CHECK(error_of(one_device(R"(["activate"])", R"("name": "disk 0", )")).rfind(
            R"(devices[0].name: "disk 0": 1 to 32 letters)", 0) == 0);
  CHECK(error_of(R"({"devices": [{"socket": "/a", "steps": ["activate"]},
                                 {"name": "dev0", "socket": "/b", "steps": ["activate"]}]})") ==
        R"(devices[1].name: "dev0" is already the name of devices[0])");
  std::string long_socket(120, 's');
  CHECK(error_of(R"({"devices": [{"socket": ")" + long_socket + R"(", "steps": ["activate"]}]})")
            .rfind("devices[0].socket: a unix socket path has at most 107 bytes", 0) == 0);
  CHECK(error_of(R"({"devices": [{"socket": "", "steps": ["activate"]}]})") ==
        "devices[0].socket: must not be empty");
}

TEST_CASE("job file: step errors name the step") {
  CHECK(error_of(one_device(R"("activate")")) == R"(devices[0].steps: expected an array, got the string "activate")");
  CHECK(error_of(one_device("[]")) == "devices[0].steps: no steps");
  CHECK(error_of(R"({"devices": [{"socket": "/a", "steps": ["activate"]},
      {"socket": "/b", "steps": ["activate", "check", "sleep", "slep"]}]})") ==
        R"(devices[1].steps[3]: unknown step "slep" (did you mean "sleep"?))");
  CHECK(error_of(one_device(R"(["activate", "fly"])")) == R"(devices[0].steps[1]: unknown step "fly")");
  CHECK(error_of(one_device(R"(["activate", "sleep", "snapshot"])")) ==
        R"(devices[0].steps[2]: "snapshot" needs an argument: {"snapshot": "FILE"})");
  CHECK(error_of(one_device(R"(["activate", "wait"])")) ==
        R"(devices[0].steps[1]: "wait" needs an argument: {"wait": SECONDS})");
  CHECK(error_of(one_device(R"(["activate", {"wait": 1, "barrier": "x"}])")) ==
        R"(devices[0].steps[1]: one step per object, found "barrier" and "wait")");
  CHECK(error_of(one_device(R"(["activate", {}])")).rfind(
            "devices[0].steps[1]: an empty object is no step", 0) == 0);
  CHECK(error_of(one_device(R"(["activate", {"snapshto": "f"}])")) ==
        R"(devices[0].steps[1]: unknown step "snapshto" (did you mean "snapshot"?))");
  CHECK(error_of(one_device(R"(["activate", {"sleep": true}])")) ==
        R"(devices[0].steps[1]: "sleep" takes no argument: write the string "sleep")");
  CHECK(error_of(one_device(R"(["activate", 42])")) ==
        R"(devices[0].steps[1]: a step is a name ("sleep") or an object ({"wait": 0.5}), got 42)");
  CHECK(error_of(one_device(R"(["activate", "sleep", {"restore": "f", "max_bytes": 5}])")) ==
        R"(devices[0].steps[2].max_bytes: not an option of "restore" (options: socket, timeout))");
  CHECK(error_of(one_device(R"(["activate", {"wait": 1, "timeout": 5}])")) ==
        R"(devices[0].steps[1].timeout: not an option of "wait" (it has none))");
  CHECK(error_of(one_device(R"(["activate", "sleep", {"snapshot": "f", "max_byte": 5}])")) ==
        R"(devices[0].steps[2].max_byte: not an option of "snapshot" (options: max_bytes, force, timeout) (did you mean "max_bytes"?))");
  CHECK(error_of(one_device(R"(["activate", {"wait": -1}])")) ==
        "devices[0].steps[1].wait: -1 is not in 0..86400 seconds");
  CHECK(error_of(one_device(R"(["activate", {"wait": "1s"}])")) ==
        R"(devices[0].steps[1].wait: expected a number of seconds, got the string "1s")");
  CHECK(error_of(one_device(R"(["activate", "sleep", {"snapshot": ""}])")) ==
        "devices[0].steps[2].snapshot: must not be empty");
  CHECK(error_of(one_device(R"(["activate", "sleep", {"snapshot": "f", "timeout": 0}])")) ==
        "devices[0].steps[2].timeout: 0 is not in 0.001..86400 seconds");
  CHECK(error_of(one_device(R"(["activate", {"barrier": 3}])")) ==
        "devices[0].steps[1].barrier: expected a string, got 3");
}

TEST_CASE("job file: each step must fit the device's state at that point") {
  CHECK(error_of(one_device(R"(["wake"])")) ==
        R"(devices[0].steps[0]: "wake" needs a sleeping device; at the start it is not connected yet (begin with "activate"))");
  CHECK(error_of(one_device(R"(["activate", "check", "wake"])")) ==
        R"(devices[0].steps[2]: "wake" needs a sleeping device; after steps[1] ("check") it is active)");
  CHECK(error_of(one_device(R"(["activate", "sleep", "check"])")) ==
        R"(devices[0].steps[2]: "check" needs an active device; after steps[1] ("sleep") it is sleeping)");
  CHECK(error_of(one_device(R"(["activate", {"snapshot": "f"}])")) ==
        R"(devices[0].steps[1]: "snapshot" needs a sleeping device; after steps[0] ("activate") it is active)");
  CHECK(error_of(one_device(R"(["activate", "activate"])")) ==
        R"(devices[0].steps[1]: "activate" needs a new or reset device; after steps[0] ("activate") it is active)");
  CHECK(error_of(one_device(R"([{"restore": "f"}])")) ==
        R"(devices[0].steps[0]: "restore" needs the guest's rings (activate first); at the start it is not connected yet (begin with "activate"))");
  CHECK(error_of(one_device(R"(["reset"])")).rfind(R"(devices[0].steps[0]: "reset" needs an activated device)", 0) == 0);
  CHECK(error_of(one_device(R"(["activate", {"restore": "f"}, "activate"])")) ==
        R"(devices[0].steps[2]: "activate" needs a new or reset device; after steps[1] ("restore") it is sleeping)");
  // what is fine: reset from sleeping, activate after reset, waits anywhere
  CHECK(error_of(one_device(R"([{"wait": 0}, "activate", "sleep", "reset", "activate", "check",
                                "sleep", {"restore": "f"}, "wake", "check", "reset"])")) == "");
}

TEST_CASE("job file: barriers") {
  CHECK(error_of(two_devices(R"(["activate", {"barrier": "x"}])", R"(["activate"])")) ==
        R"(devices[0].steps[1]: barrier "x" is used by devices[0] only: a barrier makes two or more devices wait for each other (a typo?))");
  CHECK(error_of(two_devices(R"(["activate", {"barrier": "x"}, {"barrier": "x"}])",
                             R"(["activate", {"barrier": "x"}])")) ==
        R"(devices[1].steps[1]: barrier "x": devices[0] reaches it 2 time(s), devices[1] 1: every device using a barrier must reach it equally often)");
  CHECK(error_of(two_devices(R"([{"barrier": "a"}, {"barrier": "b"}])",
                             R"([{"barrier": "b"}, {"barrier": "a"}])"))
            .find(R"(barriers would deadlock: "a" -> "b" -> "a", each reached before the next by devices[0], devices[1])") !=
        std::string::npos);
  // three devices, no two of which disagree, still a cycle
  CHECK(error_of(R"({"devices": [
      {"name": "a", "socket": "/a", "steps": [{"barrier": "x"}, {"barrier": "y"}]},
      {"name": "b", "socket": "/b", "steps": [{"barrier": "y"}, {"barrier": "z"}]},
      {"name": "c", "socket": "/c", "steps": [{"barrier": "z"}, {"barrier": "x"}]}]})")
            .find("barriers would deadlock") != std::string::npos);
  // repeated barriers in the same order are fine
  CHECK(error_of(two_devices(R"(["activate", {"barrier": "x"}, {"barrier": "y"}, {"barrier": "x"}])",
                             R"([{"barrier": "x"}, {"wait": 0}, {"barrier": "y"}, {"barrier": "x"}])")) ==
        "");
}

TEST_CASE("job file: two devices may not write one snapshot file") {
  CHECK(error_of(two_devices(R"(["activate", "sleep", {"snapshot": "/no-such-dir/s.vfsnap"}])",
                             R"(["activate", "sleep", {"snapshot": "/no-such-dir/./s.vfsnap"}])")) ==
        R"(devices[1].steps[2]: devices[0].steps[2] writes the same snapshot file "/no-such-dir/./s.vfsnap")");
  // one device writing it twice is sequential: fine when the second may replace the first
  CHECK(error_of(one_device(R"(["activate", "sleep", {"snapshot": "s"}, {"snapshot": "s"}])")) ==
        R"(devices[0].steps[3]: devices[0].steps[2] writes "s" first ("force": true replaces it))");
  CHECK(error_of(one_device(
            R"(["activate", "sleep", {"snapshot": "s"}, {"snapshot": "s", "force": true}])")) == "");
}

TEST_CASE("job file: a snapshot of a file that exists needs \"force\"") {
  TempDir dir;
  const std::string f = dir.file("old.vfsnap");
  { std::ofstream(f) << "an older snapshot"; }
  const std::string steps = R"(["activate", "sleep", {"snapshot": ")" + f + R"("}])";
  CHECK(error_of(one_device(steps)) ==
        "devices[0].steps[2]: \"" + f + "\" exists (\"force\": true replaces it)");
  const std::string forced = R"(["activate", "sleep", {"snapshot": ")" + f + R"(", "force": true}])";
  CHECK(error_of(one_device(forced)) == "");
}

TEST_CASE("job file: load_job reads files, the examples in docs/examples are valid") {
  auto missing = load_job("/nonexistent/job.json");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == errc::io_error);
  for (const char* name : {"migrate-one-disk.json", "consistent-two-disks.json",
                           "lifecycle-two-devices.json"}) {
    auto r = load_job(std::string(VUFRONT_SOURCE_DIR) + "/docs/examples/" + name);
    CHECK_MESSAGE(r.ok(), name << ": " << (r ? "" : r.error().message()));
  }
}

TEST_CASE("job file: migrate takes an object with the destination socket and options, on an active blk device") {
  auto job = parse_job_text(one_device(
      R"(["activate", {"migrate": {"socket": "/tmp/b.sock", "threshold_pages": 8, "max_rounds": 4,
          "io": false, "chunk_pages": 16, "state_dir": "/tmp"}, "timeout": 9}, "check",
          {"migrate": {"socket": "/tmp/c.sock"}}, "sleep", {"restore": "s.vfsnap"}])"));
  REQUIRE_MESSAGE(job, job.error().message());
  const auto& s = job->devices[0].steps;
  CHECK(s[1].kind == JobStepKind::migrate);
  CHECK(s[1].socket == "/tmp/b.sock");
  CHECK(s[1].threshold_pages == 8);
  CHECK(s[1].max_rounds == 4);
  CHECK_FALSE(s[1].io);
  CHECK(s[1].chunk_pages == 16);
  CHECK(s[1].state_dir == "/tmp");
  CHECK(s[1].timeout == milliseconds(9000));
  CHECK(s[3].threshold_pages == 256);  // the defaults
  CHECK(s[3].max_rounds == 30);
  CHECK(s[3].io);
  // a restore without a socket: where the last migrate moved the device
  CHECK(s[5].socket == "/tmp/c.sock");

  CHECK(error_of(one_device(R"(["activate", "sleep", {"migrate": {"socket": "/tmp/b.sock"}}])"))
            .find("devices[0].steps[2]: \"migrate\" needs an active device") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": {}}])"))
            .find("devices[0].steps[1].migrate: missing key \"socket\"") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": "/tmp/b.sock"}])"))
            .find("expected an object") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", "migrate"])")).find("needs an argument") !=
        std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": {"socket": "/tmp/b.sock", "rounds": 2}}])"))
            .find("devices[0].steps[1].migrate: unknown key \"rounds\"") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": {"socket": "/tmp/b.sock", "max_rounds": 0}}])"))
            .find("max_rounds") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": {"socket": "/tmp/b.sock"}}])", R"("kind": "net",)"))
            .find("blk devices only") != std::string::npos);
  CHECK(error_of(one_device(R"(["activate", {"migrate": {"socket": "/tmp/b.sock"}}])", R"("packed": true,)"))
            .find("split rings") != std::string::npos);
}
