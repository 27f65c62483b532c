// What `vufront job` and the transfer commands report, and the barrier book:
// sizes and numbers as users read them, the JSON-lines events and the
// summary of a job, who a barrier releases and when.
#include <doctest/doctest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "actors/job_barrier.hpp"
#include "actors/progress_line.hpp"
#include "ops/job_display.hpp"
#include "ops/job_steps.hpp"
#include "ops/transfer_report.hpp"

using namespace vufront;
using namespace vufront::ops;
using vufront::actors::BarrierBook;
using vufront::actors::DeviceOutcome;
using vufront::actors::JobEvent;
using vufront::actors::JobOutcome;

namespace {

Job job_of(const std::string& text) {
  auto r = parse_job_text(text);
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  return std::move(r).value();
}

/// The barrier book of a job file, as its coordinator keeps it.
BarrierBook book_of(const Job& job) { return BarrierBook(*job_plan(std::make_shared<const Job>(job))); }

const char* three_with_barriers = R"({"devices": [
    {"name": "a", "socket": "/a", "steps": [{"barrier": "x"}, {"barrier": "y"}, {"barrier": "x"}]},
    {"name": "b", "socket": "/b", "steps": [{"barrier": "x"}, {"barrier": "y"}, {"barrier": "x"}]},
    {"name": "c", "socket": "/c", "steps": [{"barrier": "y"}]}]})";

}  // namespace

TEST_CASE("parse_size and the numbers users read") {
  CHECK(*parse_size("1") == 1);
  CHECK(*parse_size("512M") == uint64_t{512} << 20);
  CHECK(*parse_size("4g") == uint64_t{4} << 30);
  CHECK(*parse_size("64GB") == uint64_t{64} << 30);
  CHECK(*parse_size("8192B") == 8192);
  CHECK_FALSE(parse_size("").ok());
  CHECK_FALSE(parse_size("-1").ok());
  CHECK_FALSE(parse_size("1.5G").ok());
  CHECK_FALSE(parse_size("12iB").ok());
  CHECK_FALSE(parse_size("1 G").ok());
  CHECK_FALSE(parse_size("0K").ok());
  CHECK(*parse_size("8388607T") == uint64_t{8388607} << 40);
  CHECK_FALSE(parse_size("8388609T").ok());
  CHECK(parse_size("1X").error().message() ==
        R"(size "1X": invalid_argument: unknown unit "X" (use K, M, G or T, e.g. 512M))");

  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1536) == "1.50 KiB");
  CHECK(format_bytes(uint64_t{64} << 20) == "64.0 MiB");
  CHECK(format_bytes(uint64_t{4} << 30) == "4.00 GiB");
  CHECK(format_rate(uint64_t{64} << 20, 500000) == "128.0 MiB/s");
  CHECK(format_rate(1, 0) == "-");
  CHECK(format_duration_us(312000) == "312 ms");
  CHECK(format_duration_us(1250000) == "1.25 s");
  CHECK(checksum_hex(0xabc) == "0000000000000abc");

  CHECK(progress_bar(5, 10, 10) == "[#####.....]");
  CHECK(progress_bar(20, 10, 4) == "[####]");
  CHECK(progress_bar(0, 0, 6) == "[###...]");
  CHECK(progress_bar(5 << 20, 0, 6, 2) == "[..###.]");
  CHECK(progress_bar(5 << 20, 0, 6, 3) == "[...###]");
  CHECK(progress_bar(5 << 20, 0, 6, 5) == "[.###..]");  // on its way back
}

TEST_CASE("transfer summary and JSON") {
  actors::SnapshotInfo info;
  info.path = "/tmp/s.vfsnap";
  info.state_bytes = uint64_t{64} << 20;
  info.checksum = 0x0123456789abcdef;
  info.features = 0x100000000;
  info.queues = {{0, 128, 3, 0}};
  info.elapsed_us = 500000;
  CHECK(transfer_summary(info) == "64.0 MiB of state, checksum 0123456789abcdef, 500 ms, 128.0 MiB/s");
  auto j = transfer_json(info, DeviceKind::blk);
  CHECK(j["checksum"] == "0123456789abcdef");
  CHECK(j["state_bytes"] == uint64_t{64} << 20);
  CHECK(j["features"]["bits"] == "0x0000000100000000");
  CHECK(j["features"]["names"] == nlohmann::json::array({"VERSION_1"}));
  CHECK(j["queues"][0]["base"] == 3);
  CHECK(j["bytes_per_second"] == uint64_t{128} << 20);
}

TEST_CASE("step_message names the request that failed") {
  // the operation is the step's own: the request names what failed in it
  Error in_snapshot = make_error(errc::backend_failure, "SET_DEVICE_STATE_FD", "refused");
  in_snapshot.op = "snapshot";
  CHECK(step_message(in_snapshot, "snapshot") == "SET_DEVICE_STATE_FD: backend_failure: refused");
  // another operation's error keeps its name
  CHECK(step_message(in_snapshot, "restore") ==
        "snapshot: SET_DEVICE_STATE_FD: backend_failure: refused");
  CHECK(step_message(make_error(errc::bad_state, "snapshot", "busy"), "snapshot") ==
        "snapshot: bad_state: busy");
  CHECK(step_message(make_error(errc::timeout, "", "late"), "restore") == "restore: timeout: late");
  CHECK(step_message(make_error(errc::io_error, "connect /x", "gone"), "negotiate") ==
        "connect /x: io_error: gone");
}

TEST_CASE("barriers: a passage opens when every user arrived") {
  Job job = job_of(three_with_barriers);
  BarrierBook book = book_of(job);
  CHECK(book.arrive(0, "x").empty());
  CHECK(book.waiting_at(0) == std::make_pair(std::string("x"), size_t{0}));
  CHECK(book.missing_for(0) == std::vector<std::string>{"b"});
  auto r = book.arrive(1, "x");  // c does not use x
  REQUIRE(r.size() == 2);
  CHECK(r[0].note.empty());
  CHECK(book.waiting_at(0).first.empty());
  // y needs all three
  CHECK(book.arrive(2, "y").empty());
  CHECK(book.arrive(0, "y").empty());
  CHECK(book.missing_for(2) == std::vector<std::string>{"b"});
  CHECK(book.arrive(1, "y").size() == 3);
  // the second passage of x is a new one
  CHECK(book.arrive(1, "x").empty());
  CHECK(book.waiting_at(1) == std::make_pair(std::string("x"), size_t{1}));
  CHECK(book.arrive(0, "x").size() == 2);
}

TEST_CASE("barriers: a device that leaves releases those waiting for it, and says so") {
  Job job = job_of(three_with_barriers);
  BarrierBook book = book_of(job);
  CHECK(book.arrive(0, "x").empty());
  auto r = book.leave(1, "failed at steps[0] barrier");
  REQUIRE(r.size() == 1);
  CHECK(r[0].device == 0);
  CHECK(r[0].note == "released without b (failed at steps[0] barrier)");
  CHECK(book.leave(1, "again").empty());  // idempotent
  // later passages do not wait for it either
  CHECK(book.arrive(2, "y").empty());
  auto y = book.arrive(0, "y");
  CHECK(y.size() == 2);
  // a waiting device that times out stops waiting; the others may go on
  BarrierBook other = book_of(job);
  CHECK(other.arrive(0, "y").empty());
  CHECK(other.arrive(2, "y").empty());
  auto t = other.leave(0, "timed out at barrier \"y\"");
  CHECK(t.empty());  // b is still missing
  CHECK(other.missing_for(2) == std::vector<std::string>{"b"});
  auto last = other.arrive(1, "y");
  REQUIRE(last.size() == 2);
  CHECK(last[0].note == "released without a (timed out at barrier \"y\")");
}

TEST_CASE("job display: JSON lines and the summary") {
  Job job = job_of(R"({"devices": [
      {"name": "disk0", "socket": "/a", "steps": ["activate", "sleep", {"snapshot": "/tmp/s"}]},
      {"name": "disk1", "socket": "/b", "steps": ["activate"]}]})");
  std::ostringstream out, text;
  JobDisplay d(JobDisplay::Mode::json, job, out, text);
  d.event({0, 2, JobEvent::Kind::start, 0, 0, 0, "", ""});
  d.event({0, 2, JobEvent::Kind::progress, 4096, 0, 0, "", ""});
  d.event({0, 2, JobEvent::Kind::done, 8192, 0, 12.5, "saved", ""});
  d.event({1, 0, JobEvent::Kind::failed, 0, 0, 3, "negotiate: timeout", ""});
  d.event({7, 0, JobEvent::Kind::start, 0, 0, 0, "", ""});  // no such device: ignored
  CHECK(out.str() ==
        "{\"device\":\"disk0\",\"step\":2,\"name\":\"snapshot\",\"event\":\"start\"}\n"
        "{\"device\":\"disk0\",\"step\":2,\"name\":\"snapshot\",\"event\":\"progress\",\"bytes\":4096,\"total\":null}\n"
        "{\"device\":\"disk0\",\"step\":2,\"name\":\"snapshot\",\"event\":\"done\",\"ms\":12.5,\"bytes\":8192,\"detail\":\"saved\",\"migrate\":null}\n"
        "{\"device\":\"disk1\",\"step\":0,\"name\":\"activate\",\"event\":\"failed\",\"ms\":3.0,\"error\":\"negotiate: timeout\"}\n");
  CHECK(text.str().empty());

  JobOutcome o;
  o.ms = 1500;
  o.devices.push_back({"disk0", 3, 3, 8192, 1400, DeviceOutcome::Result::ok, std::nullopt, ""});
  o.devices.push_back({"disk1", 1, 0, 0, 3, DeviceOutcome::Result::failed, 0, "negotiate: timeout"});
  CHECK_FALSE(o.ok());
  out.str("");
  d.finish(o);
  auto j = nlohmann::json::parse(out.str());
  CHECK(j["event"] == "summary");
  CHECK(j["ok"] == false);
  CHECK(j["devices"][0]["state_bytes"] == 8192);
  CHECK(j["devices"][1]["failed_step"] == 0);
  CHECK(j["devices"][0]["failed_step"].is_null());  // every key, null when it does not apply
  CHECK(j["devices"][1]["failed_name"] == "activate");
  CHECK(j["devices"][1]["error"] == "negotiate: timeout");
  std::string table = d.summary_table(o);
  CHECK(table.find("disk0   3/3      8.00 KiB     1.40 s    ok\n") != std::string::npos);
  CHECK(table.find("failed at steps[0] activate: negotiate: timeout") != std::string::npos);
  CHECK(table.find("job: FAILED (1 of 2 device(s) failed, 1.50 s)") != std::string::npos);
}

TEST_CASE("job display: the terminal form redraws one line per device in place") {
  Job job = job_of(R"({"devices": [
      {"name": "disk0", "socket": "/a", "steps": ["activate", "sleep", {"snapshot": "/tmp/s"}]},
      {"name": "disk1", "socket": "/b", "steps": ["activate"]}]})");
  std::ostringstream out, text;
  JobDisplay d(JobDisplay::Mode::terminal, job, out, text, 60);
  CHECK(text.str() == "\r\x1b[Kdisk0    0/3   waiting\n\r\x1b[Kdisk1    0/1   waiting\n");
  text.str("");
  d.event({0, 2, JobEvent::Kind::start, 0, 0, 0, "", ""});
  d.event({0, 2, JobEvent::Kind::progress, uint64_t{1} << 20, uint64_t{2} << 20, 0, "", ""});
  d.event({1, 0, JobEvent::Kind::done, 0, 0, 1, "ok", ""});
  std::string s = text.str();
  CHECK(s.rfind("\x1b[2A", 0) == 0);  // back up two lines first
  CHECK(s.find("disk0    3/3   snapshot") != std::string::npos);
  CHECK(s.find("disk1    1/1   done") != std::string::npos);
  for (size_t at = 0, end; (end = s.find('\n', at)) != std::string::npos; at = end + 1)
    CHECK(end - at < 60 + 8);  // clipped to the terminal (plus the escape codes)
  CHECK(out.str().empty());
  JobOutcome o;
  o.devices.push_back({"disk0", 3, 3, 0, 1, DeviceOutcome::Result::ok, std::nullopt, ""});
  o.devices.push_back({"disk1", 1, 1, 0, 1, DeviceOutcome::Result::ok, std::nullopt, ""});
  d.finish(o);
  CHECK(text.str().find("job: ok (2 device(s)") != std::string::npos);
}

TEST_CASE("app: a transfer's progress line shows the total and an ETA when the total is known") {
  // a restore: the file's size is known; a quarter in one second, three to go
  const std::string restore = progress_text("restore", 16u << 20, 64u << 20, 1000000, 200);
  CHECK_MESSAGE(restore.find("16.0 MiB / 64.0 MiB") != std::string::npos, restore);
  CHECK_MESSAGE(restore.find("ETA 3.00 s") != std::string::npos, restore);
  // a snapshot: the back-end's state size is known only at the end
  const std::string save = progress_text("snapshot", 16u << 20, 0, 1000000, 200);
  CHECK_MESSAGE(save.find("16.0 MiB (total known at the end)") != std::string::npos, save);
  CHECK_MESSAGE(save.find("ETA") == std::string::npos, save);
  // done: ETA 0; cut to the width
  CHECK(progress_text("snapshot", 64u << 20, 64u << 20, 1000000, 200).find("ETA 0") !=
        std::string::npos);
  CHECK(progress_text("restore", 1, 2, 1000, 30).size() == 29);
}

TEST_CASE("app: the ETA of a transfer: unknown without a total or before any byte") {
  CHECK_FALSE(actors::eta_us(100, 0, 1000).has_value());
  CHECK_FALSE(actors::eta_us(0, 100, 1000).has_value());
  CHECK(actors::eta_us(100, 100, 1000) == uint64_t{0});
  CHECK(actors::eta_us(25, 100, 1000) == uint64_t{3000});
}
