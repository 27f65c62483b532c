// The attach commands as device payloads (actors/control_commands.hpp): fds
// taken by index and checked for their kind, every fd used once, arguments
// checked field by field, results as JSON.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/control_commands.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::actors;
using control::Args;
using control::json;

namespace {

std::vector<UniqueFd> fds_of(std::initializer_list<int> raw) {
  std::vector<UniqueFd> out;
  for (int fd : raw)
    out.push_back(UniqueFd::adopt(fd));
  return out;
}

json queue(int kick, std::optional<int> call = std::nullopt) {
  json q = {{"index", 0}, {"size", 64}, {"desc", "0x100000000"}, {"driver", "0x100000400"},
            {"device", "0x100000800"}, {"kick", kick}};
  if (call)
    q["call"] = *call;
  return q;
}

}  // namespace

TEST_CASE("control commands: activate takes its eventfds by index, MSI-X or forwarded") {
  test::FdCount leak;
  {
    FdPool fds(fds_of({make_eventfd().release(), make_eventfd().release(), make_eventfd().release()}));
    json args = {{"features", "0x100000000"}, {"interrupt_fd", 2},
                 {"queues", json::array({queue(0, 1)})}};
    Args a(args, "args");
    auto spec = activation_from(a, fds);
    REQUIRE(spec);
    CHECK(fds.all_used());
    CHECK(spec->driver_features == (uint64_t{1} << 32));
    REQUIRE(spec->queues.size() == 1);
    CHECK(spec->queues[0].desc == 0x100000000);
    CHECK(spec->queues[0].kick);
    CHECK(spec->queues[0].call);
    CHECK(spec->sink.eventfd);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("control commands: missing, reused, unused and wrong-kind fds are bad_fds") {
  test::FdCount leak;
  {
    FdPool none(fds_of({}));
    json args = {{"features", 1}, {"queues", json::array({queue(0)})}};
    Args a(args, "args");
    auto r = activation_from(a, none);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::bad_fds);
    CHECK(r.error().detail.find("args.queues[0].kick refers to fd 0, the message has 0") == 0);
  }
  {
    FdPool one(fds_of({make_eventfd().release()}));
    json args = {{"features", 1}, {"queues", json::array({queue(0, 0)})}};
    Args a(args, "args");
    auto r = activation_from(a, one);
    REQUIRE_FALSE(r);
    CHECK(r.error().detail.find("used twice") != std::string::npos);
  }
  {
    FdPool two(fds_of({make_eventfd().release(), make_eventfd().release()}));
    json args = {{"features", 1}, {"queues", json::array({queue(0)})}};
    Args a(args, "args");
    REQUIRE(activation_from(a, two));
    auto r = two.all_used();
    REQUIRE_FALSE(r);
    CHECK(r.error().detail == "2 fd(s) sent, 1 not referred to by the command");
  }
  {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    FdPool pipe_fds(fds_of({p[0], p[1]}));
    json args = {{"features", 1}, {"queues", json::array({queue(0)})}};
    Args a(args, "args");
    auto r = activation_from(a, pipe_fds);
    REQUIRE_FALSE(r);
    CHECK(r.error().detail.find("is not an eventfd") != std::string::npos);
    json mem = {{"regions", json::array({json{{"gpa", 0}, {"size", 4096}, {"fd", 1}}})}};
    Args m(mem, "args");
    auto bad = memory_from(m, pipe_fds);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().detail.find("not a memory file") != std::string::npos);
  }
  CHECK(leak.leaked() == 0);
}

TEST_CASE("control commands: memory regions, connect and add_device arguments") {
  FdPool fds(fds_of({make_memfd("t", 1 << 20).release()}));
  json mem = {{"regions", json::array({json{{"gpa", "0x100000000"}, {"size", 1 << 20}, {"fd", 0}}})}};
  Args m(mem, "args");
  auto spec = memory_from(m, fds);
  REQUIRE(spec);
  CHECK((*spec)[0].gpa == 0x100000000);
  CHECK((*spec)[0].fd_offset == 0);
  json typo = {{"regions", json::array()}, {"extra", 1}};
  Args t(typo, "args");
  CHECK_FALSE(memory_from(t, fds));  // no regions

  NegotiateOptions defaults;
  defaults.queues = 2;
  json none = json::object();
  Args n(none, "args");
  auto o = negotiate_from(n, defaults);
  REQUIRE(o);
  CHECK(o->queues == 2);
  json big = {{"max_queue_size", 65536}};
  Args b(big, "args");
  CHECK_FALSE(negotiate_from(b, defaults));

  json dev = {{"id", "disk1"}, {"backend", "/tmp/x.sock"}, {"kind", "net"}, {"queues", 2}};
  Args d(dev, "args");
  auto setup = device_setup_from(d);
  REQUIRE(setup);
  CHECK(setup->id == "disk1");
  CHECK(setup->negotiate.kind == DeviceKind::net);
  CHECK(setup->negotiate.queues == 2);
  json bad_id = {{"id", "a b"}, {"backend", "/tmp/x.sock"}};
  Args e(bad_id, "args");
  CHECK_FALSE(device_setup_from(e));
}

TEST_CASE("control commands: results and events as JSON") {
  DeviceStatus s;
  s.state = DeviceState::sleeping;
  s.socket = "/tmp/b.sock";
  s.info.backend_features = uint64_t{1} << 60;  // above 2^53: a hex string
  s.info.queue_num = 2;
  s.queues.push_back({0, 128, 7, 3});
  json j = status_json(s, true);
  CHECK(j["state"] == "sleeping");
  CHECK(j["features"] == "0x1000000000000000");
  CHECK(j["queues"][0]["base"] == 7);
  CHECK(j["shmem_owner"] == "vmm");
  SnapshotInfo info;
  info.checksum = 0xab;
  info.state_bytes = 10;
  CHECK(transfer_json(info)["checksum"] == "00000000000000ab");
  DeviceEvent lost{DeviceEvent::Kind::backend_lost, DeviceState::broken, -1, "EOF"};
  CHECK(event_json("disk0", lost) == json{{"event", "backend_lost"}, {"device", "disk0"}, {"reason", "EOF"}});
  DeviceEvent mapped{DeviceEvent::Kind::shmem_mapped, DeviceState::active, -1, "x"};
  CHECK(event_json("disk0", mapped).is_null());
}

TEST_CASE("control commands: a snapshot file by fd, or by path under the rules of --snapshot-dir") {
  test::FdCount leak;
  {
    test::TempDir tmp;
    const std::string dir = tmp.file("snaps");
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::symlink("/etc", (dir + "/etc").c_str()) == 0);
    REQUIRE(::symlink("/etc/passwd", (dir + "/pw").c_str()) == 0);
    FilePolicy own{1000, 1000, {}, ""};
    FilePolicy other{65534, 1000, {}, ""};
    FilePolicy confined = other;
    confined.snapshot_dir = share(UniqueFd::adopt(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
    confined.snapshot_dir_path = dir;

    auto file = [&](const json& args, const FilePolicy& p, bool writing, std::vector<UniqueFd> fds = {}) {
      FdPool pool(std::move(fds));
      Args a(args, "args");
      auto r = file_from(a, pool, p, writing);
      if (r.ok()) {
        auto d = a.done();
        REQUIRE_MESSAGE(d.ok(), d.error().message());
        REQUIRE(pool.all_used().ok());
      }
      return r;
    };
    auto code_of = [](const Result<TransferFile>& r) { return r.ok() ? errc{} : r.error().code; };

    // vufront's own uid names any path (as before); another uid none without --snapshot-dir
    auto mine = file({{"path", "/var/tmp/x.vfsnap"}}, own, true);
    REQUIRE(mine.ok());
    CHECK(mine->path == "/var/tmp/x.vfsnap");
    CHECK(mine->target.empty());
    auto theirs = file({{"path", "/var/tmp/x.vfsnap"}}, other, true);
    REQUIRE_FALSE(theirs.ok());
    CHECK(theirs.error().code == errc::permission_denied);
    CHECK(theirs.error().detail.find("pass the file as an fd") != std::string::npos);

    // beneath --snapshot-dir: relative or absolute under it; nothing outside
    auto rel = file({{"path", "vm.vfsnap"}}, confined, true);
    REQUIRE_MESSAGE(rel.ok(), rel.error().message());
    CHECK(rel->target.dir);
    CHECK(rel->target.leaf == "vm.vfsnap");
    CHECK(rel->path == "vm.vfsnap");
    auto abs = file({{"path", dir + "/vm.vfsnap"}}, confined, false);
    REQUIRE(abs.ok());
    CHECK(abs->target.leaf == "vm.vfsnap");
    for (const std::string& bad : {std::string("../x"), std::string("/etc/passwd"), dir + "/../x", dir + "x/y",
                                  std::string("etc/passwd"), std::string("pw"), std::string("a/../../x")}) {
      CHECK_MESSAGE(code_of(file({{"path", bad}}, confined, true)) == errc::permission_denied, bad);
      CHECK_MESSAGE(code_of(file({{"path", bad}}, confined, false)) == errc::permission_denied, bad);
    }

    // by fd: a regular file open for writing (no O_APPEND) / for reading
    const std::string f = tmp.file("f");
    auto fd = [&](int flags) { return UniqueFd::adopt(::open(f.c_str(), flags | O_CREAT | O_CLOEXEC, 0600)); };
    std::vector<UniqueFd> one;
    one.push_back(fd(O_WRONLY));
    auto w = file({{"fd", 0}}, other, true, std::move(one));
    REQUIRE_MESSAGE(w.ok(), w.error().message());
    CHECK(w->target.file);
    CHECK(w->path.empty());
    struct Case {
      int flags;
      bool writing;
    };
    for (Case c : {Case{O_RDONLY, true}, Case{O_WRONLY | O_APPEND, true}, Case{O_WRONLY, false}}) {
      std::vector<UniqueFd> v;
      v.push_back(fd(c.flags));
      CHECK(code_of(file({{"fd", 0}}, other, c.writing, std::move(v))) == errc::bad_fds);
    }
    std::vector<UniqueFd> ev;
    ev.push_back(make_eventfd());
    CHECK(code_of(file({{"fd", 0}}, other, false, std::move(ev))) == errc::bad_fds);
    // exactly one of the two
    CHECK(code_of(file(json::object(), own, true)) == errc::bad_message);
    std::vector<UniqueFd> both;
    both.push_back(fd(O_WRONLY));
    CHECK(code_of(file({{"fd", 0}, {"path", "x"}}, own, true, std::move(both))) == errc::bad_message);
  }
  CHECK_MESSAGE(leak.leaked() == 0, test::FdCount::listing());
}
