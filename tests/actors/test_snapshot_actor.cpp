// The snapshot actor alone, against a scripted connection: a peer thread
// plays the back-end's side of the pipe (writes a state and closes, writes
// too much, holds the pipe open, closes early, returns its own fd). Every
// transfer ends with the file committed and verified, or with an error
// naming the request, no file at the destination and no fd left open.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <functional>
#include <thread>

#include <caf/typed_event_based_actor.hpp>

#include "actors/snapshot.hpp"
#include "snapshot/reader.hpp"
#include "snapshot/writer.hpp"
#include "tests/actors/fixture.hpp"
#include "tests/support.hpp"

using namespace vufront;
using namespace vufront::actors;
using namespace vufront::test;
using namespace std::chrono_literals;

namespace {

/// The back-end's side of one transfer: given the fd the front-end sent
/// (already dup'ed, owned), returns the fd to reply with (empty = use ours).
using Script = std::function<SharedFd(uint32_t direction, UniqueFd given)>;

/// A connection actor whose state-transfer steps run `script`; CHECK_DEVICE_STATE
/// runs `on_check` (if set) and answers `check` (empty = ok); RESET_DEVICE
/// counts in `resets`. Other steps are not used here.
connection_actor::behavior_type fake_conn(connection_actor::pointer, Script script,
                                          std::shared_ptr<std::string> check,
                                          std::shared_ptr<std::atomic<int>> resets,
                                          std::shared_ptr<std::function<void()>> on_check) {
  auto unused = [](const char* what) { return to_caf(make_error(errc::bad_state, what, "unused")); };
  return {
      [=](negotiate_atom, const NegotiateRequest&) -> caf::result<DeviceInfo, SharedFd> {
        return unused("negotiate");
      },
      [=](activate_atom, const ActivateRequest&) -> caf::result<caf::ok_atom> {
        return unused("activate");
      },
      [=](mem_table_atom, const std::vector<wire::MemoryRegion>&,
          const std::vector<SharedFd>&) -> caf::result<caf::ok_atom> { return unused("mem"); },
      [=](add_mem_reg_atom, const wire::MemoryRegion&, const SharedFd&) -> caf::result<caf::ok_atom> {
        return unused("add_mem_reg");
      },
      [=](rem_mem_reg_atom, const wire::MemoryRegion&) -> caf::result<caf::ok_atom> {
        return unused("rem_mem_reg");
      },
      [=](start_queues_atom, const std::vector<QueueStart>&) -> caf::result<caf::ok_atom> {
        return unused("start");
      },
      [=](stop_queues_atom, const std::vector<uint16_t>&,
          bool) -> caf::result<std::vector<uint32_t>, int32_t> { return unused("stop"); },
      [=](get_config_atom, uint32_t, uint32_t) -> caf::result<std::vector<uint8_t>> {
        return unused("get_config");
      },
      [=](set_config_atom, uint32_t, const std::vector<uint8_t>&) -> caf::result<caf::ok_atom> {
        return unused("set_config");
      },
      [=](reset_device_atom) -> caf::result<caf::ok_atom> {
        ++*resets;
        return caf::ok_atom_v;
      },
      [=](state_fd_atom, uint32_t direction, const SharedFd& fd) -> caf::result<SharedFd> {
        UniqueFd dup = UniqueFd::adopt(::fcntl(fd->get(), F_DUPFD_CLOEXEC, 0));
        return script(direction, std::move(dup));
      },
      [=](check_state_atom) -> caf::result<caf::ok_atom> {
        if (*on_check)
          (*on_check)();
        if (check->empty())
          return caf::ok_atom_v;
        return to_caf(make_error(errc::backend_failure, "CHECK_DEVICE_STATE", *check));
      },
      [=](status_atom, uint8_t) -> caf::result<caf::ok_atom> { return unused("status"); },
      [=](inflight_atom, uint16_t, uint16_t) -> caf::result<wire::InflightDesc, SharedFd> {
        return unused("inflight");
      },
      [=](vmm_fwd_atom, const proxy::Forward&, const proxy::Answer&) -> caf::result<proxy::ForwardResult> {
        return unused("vmm forward");
      },
      [=](dirty_log_atom, const LogChange&) -> caf::result<caf::ok_atom> {
        return unused("dirty log");
      },
      [=](step_done_atom, uint64_t) {},  // the real actor's own; never sent to this fake
  };
}

std::vector<uint8_t> state_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  return v;
}

/// Writes all of `data` to a blocking fd; false when the reader went away.
bool write_all(int fd, const uint8_t* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w <= 0)
      return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

std::vector<uint8_t> read_all(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0)
      return out;
    out.insert(out.end(), buf, buf + n);
  }
}

/// A restore of the file at `path`; with `as_fd`, of that file opened here
/// and passed as an fd, as a VMM passes one (then never mapped).
RestoreOptions restore_of(const std::string& path, bool as_fd = false) {
  RestoreOptions o;
  o.path = path;
  if (as_fd) {
    o.target.file = share(UniqueFd::adopt(::open(path.c_str(), O_RDONLY | O_CLOEXEC)));
    REQUIRE(o.target.file->valid());
  }
  return o;
}

std::shared_ptr<const snapshot::Manifest> manifest() {
  auto m = std::make_shared<snapshot::Manifest>();
  m->kind = DeviceKind::blk;
  m->created = snapshot::utc_now();
  return m;
}

/// The peer threads of one test, joined at the end (an eventfd releases the
/// ones that hold a pipe open).
struct Peers {
  UniqueFd release = make_eventfd();
  std::vector<std::thread> threads;
  void let_go() {
    uint64_t one = 1;
    (void)!::write(release.get(), &one, sizeof one);
  }
  /// Blocks until let_go() (every holder wakes: the eventfd is polled, not read).
  void hold() const {
    pollfd p{release.get(), POLLIN, 0};
    (void)::poll(&p, 1, -1);
  }
  ~Peers() {
    let_go();
    for (auto& t : threads)
      t.join();
  }
};

struct SnapFixture : RtFixture {
  // The peer threads write into pipes whose reader went away (as a back-end
  // would): EPIPE for them, not the test process's death.
  SnapFixture() { std::signal(SIGPIPE, SIG_IGN); }
  TempDir tmp;
  Peers peers;
  std::shared_ptr<std::string> check = std::make_shared<std::string>();
  std::shared_ptr<std::atomic<int>> resets = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::function<void()>> on_check = std::make_shared<std::function<void()>>();

  snapshot_actor start(Script script) {
    auto conn = spawn(fake_conn, std::move(script), check, resets, on_check);
    return spawn<caf::detached>(snapshot_impl, conn, caf::actor{});
  }

  std::pair<std::optional<SnapshotInfo>, std::string> save(const snapshot_actor& a,
                                                           const std::string& path,
                                                           uint64_t cap = 1 << 30,
                                                           std::chrono::milliseconds d = 10s) {
    SaveJob job{path, {}, cap, TransferDeadline::in(d), manifest()};
    return ask<SnapshotInfo>(a, d + 5s, save_atom_v, job);
  }
};

/// The peer writes state_bytes(n) into the pipe and closes it. The bytes are
/// made on the peer's thread: a buffer built here and copied on an actor's
/// thread crosses CAF's (uninstrumented) hand-off, which ThreadSanitizer
/// would report byte range by byte range, for minutes.
Script writes(Peers& peers, size_t n) {
  return [&peers, n](uint32_t, UniqueFd fd) {
    peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), n] {
      auto data = state_bytes(n);
      write_all(fd->get(), data.data(), data.size());
    });
    return SharedFd{};
  };
}

}  // namespace

TEST_CASE("snapshot actor: a saved state is committed whole and verifies") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(3 << 20);
    auto a = f.start(writes(f.peers, data.size()));
    auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
    REQUIRE_MESSAGE(info, err);
    CHECK(info->state_bytes == data.size());
    CHECK(info->checksum == snapshot::StateHasher::of(data.data(), data.size()));
    auto r = snapshot::SnapshotReader::open(f.tmp.file("s.vfsnap"));
    REQUIRE(r.ok());
    CHECK(r->verify().ok());
    CHECK(test::dir_entries(f.tmp.path()) == 1);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a state over the cap, a stream that never ends, a cancel") {
  FdCount fds;
  {
    SnapFixture f;
    SUBCASE("over the cap") {
      auto a = f.start(writes(f.peers, 4 << 20));
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"), 1 << 20);
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("SET_DEVICE_STATE_FD(save): oversized") == 0, err);
    }
    SUBCASE("no end before the deadline") {
      auto a = f.start([&](uint32_t, UniqueFd fd) {
        f.peers.threads.emplace_back([&f, fd = std::make_shared<UniqueFd>(std::move(fd))] {
          auto d = state_bytes(4096);
          write_all(fd->get(), d.data(), d.size());
          f.peers.hold();
        });
        return SharedFd{};
      });
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"), 1 << 30, 300ms);
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("SET_DEVICE_STATE_FD(save): timeout") == 0, err);
      CHECK_MESSAGE(err.find("4096 bytes") != std::string::npos, err);
    }
    SUBCASE("cancelled") {
      UniqueFd handed = make_eventfd(false);
      auto a = f.start([&](uint32_t, UniqueFd fd) {
        f.peers.threads.emplace_back([&f, fd = std::make_shared<UniqueFd>(std::move(fd))] {
          auto d = state_bytes(8192);
          write_all(fd->get(), d.data(), d.size());
          f.peers.hold();
        });
        uint64_t one = 1;
        (void)!::write(handed.get(), &one, sizeof one);
        return SharedFd{};
      });
      SaveJob job{f.tmp.file("s.vfsnap"), {}, 1 << 30, TransferDeadline::in(60s), manifest()};
      std::string err;
      auto pending = f.self->request(a, 10s, save_atom_v, job);
      // Cancelled while the bytes flow (the back-end has its fd).
      pollfd p{handed.get(), POLLIN, 0};
      REQUIRE(::poll(&p, 1, 5000) == 1);
      caf::anon_send(a, cancel_atom_v);
      pending.receive([](SnapshotInfo&) {},
                      [&](caf::error& e) { err = from_caf(e, "save").message(); });
      CHECK_MESSAGE(err.find("cancelled") != std::string::npos, err);
    }
    SUBCASE("cancelled before it began") {
      bool asked = false;
      auto a = f.start([&](uint32_t, UniqueFd) {
        asked = true;
        return SharedFd{};
      });
      // A cancel between steps (restore: after the file check) is kept.
      caf::anon_send(a, cancel_atom_v);
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("SET_DEVICE_STATE_FD(save): cancelled: cancelled before it began") == 0,
                    err);
      CHECK_FALSE(asked);  // the back-end was never given a pipe
    }
    SUBCASE("CHECK_DEVICE_STATE fails") {
      *f.check = "the back-end could not serialise its state";
      auto a = f.start(writes(f.peers, 1000));
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("CHECK_DEVICE_STATE: backend_failure") == 0, err);
    }
    f.peers.let_go();
    CHECK(test::dir_entries(f.tmp.path()) == 0);  // no file, no temporary
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: the file's write fails mid-stream: reported, the pipe closed, no file") {
  FdCount fds;
  {
    SnapFixture f;
    // A file-size limit cuts the file's writes short at 2 MiB of state (then
    // EFBIG, as a full disk gives ENOSPC), on the writer thread; SIGXFSZ is
    // ignored while it holds, and both are restored at the end.
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    rlimit lim = old;
    lim.rlim_cur = snapshot::kHeadSize + (2 << 20);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    // 0: writing, 1: the back-end wrote it all, 2: its write failed (the
    // front-end closed the pipe: EPIPE)
    auto outcome = std::make_shared<std::atomic<int>>(0);
    auto a = f.start([&f, outcome](uint32_t, UniqueFd fd) {
      f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), outcome] {
        auto data = state_bytes(32 << 20);
        *outcome = write_all(fd->get(), data.data(), data.size()) ? 1 : 2;
      });
      return SharedFd{};
    });
    auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    (void)::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    CHECK_FALSE(info);
    CHECK_MESSAGE(err.find("SET_DEVICE_STATE_FD(save): io_error: write to " + f.tmp.file("s.vfsnap") +
                           ".tmp.") == 0,
                  err);
    CHECK_MESSAGE(err.find("File too large") != std::string::npos, err);
    // The reader stopped: at most a few MiB of the 32 were taken from the pipe.
    CHECK(*outcome == 2);
    CHECK(test::dir_entries(f.tmp.path()) == 0);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: the deadline follows progress: a slow stream passes, a stalled one fails") {
  FdCount fds;
  {
    SnapFixture f;
    SUBCASE("slow but moving: longer in all than the window") {
      // 20 chunks, one every 50 ms: about twice the 500 ms window in all,
      // never 500 ms without a byte (a whole-transfer deadline fails it)
      auto a = f.start([&](uint32_t, UniqueFd fd) {
        f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd))] {
          auto d = state_bytes(20 * 4096);
          for (size_t off = 0; off < d.size(); off += 4096) {
            write_all(fd->get(), d.data() + off, 4096);
            std::this_thread::sleep_for(50ms);
          }
        });
        return SharedFd{};
      });
      SaveJob job{f.tmp.file("s.vfsnap"), {}, 1 << 30, TransferDeadline::stalling(500ms), manifest()};
      auto [info, err] = f.ask<SnapshotInfo>(a, 30s, save_atom_v, job);
      REQUIRE_MESSAGE(info, err);
      CHECK(info->state_bytes == 20 * 4096);
    }
    SUBCASE("stalled: the error says no byte moved for the window") {
      auto a = f.start([&](uint32_t, UniqueFd fd) {
        f.peers.threads.emplace_back([&f, fd = std::make_shared<UniqueFd>(std::move(fd))] {
          auto d = state_bytes(4096);
          write_all(fd->get(), d.data(), d.size());
          f.peers.hold();
        });
        return SharedFd{};
      });
      SaveJob job{f.tmp.file("s.vfsnap"), {}, 1 << 30, TransferDeadline::stalling(300ms), manifest()};
      auto [info, err] = f.ask<SnapshotInfo>(a, 30s, save_atom_v, job);
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("SET_DEVICE_STATE_FD(save): timeout: the back-end's state stream: "
                             "no byte moved for 0.3 s (4096 bytes moved in all)") == 0,
                    err);
      CHECK(test::dir_entries(f.tmp.path()) == 0);
    }
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: the back-end's own fd is used, and checked first") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(2 << 20);
    SUBCASE("its own pipe") {
      auto a = f.start([&](uint32_t, UniqueFd ours) {
        ours.reset();  // as a back-end that prefers its own pipe
        Pipe p = make_pipe();
        f.peers.threads.emplace_back([w = std::make_shared<UniqueFd>(std::move(p.write_end)),
                                      n = data.size()] {
          auto bytes = state_bytes(n);
          write_all(w->get(), bytes.data(), bytes.size());
        });
        return share(std::move(p.read_end));
      });
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
      REQUIRE_MESSAGE(info, err);
      CHECK(info->checksum == snapshot::StateHasher::of(data.data(), data.size()));
    }
    SUBCASE("a memfd instead of a pipe") {
      auto a = f.start([](uint32_t, UniqueFd) { return share(make_memfd("state", 4096)); });
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("bad_fds: the back-end's fd is not a pipe or socket") != std::string::npos,
                    err);
    }
    SUBCASE("a write end where a read end is needed") {
      auto a = f.start([&](uint32_t, UniqueFd) {
        Pipe p = make_pipe();
        return share(std::move(p.write_end));
      });
      auto [info, err] = f.save(a, f.tmp.file("s.vfsnap"));
      CHECK_FALSE(info);
      CHECK_MESSAGE(err.find("not open for reading") != std::string::npos, err);
    }
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a verified file is loaded whole, a reader that quits early fails it") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(3 << 20);
    {
      auto w = snapshot::SnapshotWriter::create(f.tmp.file("s.vfsnap"), 1 << 30);
      REQUIRE(w.ok());
      REQUIRE(w->write_state(data.data(), data.size()).ok());
      REQUIRE(w->commit(*manifest()).ok());
    }
    auto got = std::make_shared<std::vector<uint8_t>>();
    bool quit_early = false;
    SUBCASE("whole") {}
    SUBCASE("early") { quit_early = true; }
    auto a = f.start([&, got](uint32_t direction, UniqueFd fd) {
      CHECK(direction == wire::device_state_load);
      f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), got, quit_early] {
        if (!quit_early) {
          *got = read_all(fd->get());
          return;
        }
        uint8_t buf[4096];
        (void)!::read(fd->get(), buf, sizeof buf);
      });
      return SharedFd{};
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(
        a, 10s, open_atom_v, restore_of(f.tmp.file("s.vfsnap")), TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    CHECK((*m)->state_length == data.size());
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    if (quit_early) {
      CHECK_FALSE(info);
      CHECK_MESSAGE(lerr.find("SET_DEVICE_STATE_FD(load): disconnected: the back-end closed the "
                              "state pipe") == 0,
                    lerr);
    } else {
      REQUIRE_MESSAGE(info, lerr);
      CHECK(*got == data);
    }
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

/// A committed snapshot of `data` at `path`, its times set an hour back (a
/// snapshot saved earlier: any later change moves its modification time,
/// whatever the file system's timestamp granularity).
void committed(const std::string& path, const std::vector<uint8_t>& data) {
  auto w = snapshot::SnapshotWriter::create(path, 1 << 30);
  REQUIRE(w.ok());
  REQUIRE(w->write_state(data.data(), data.size()).ok());
  REQUIRE(w->commit(*manifest()).ok());
  timespec past[2];
  REQUIRE(::clock_gettime(CLOCK_REALTIME, &past[0]) == 0);
  past[0].tv_sec -= 3600;
  past[1] = past[0];
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), past, 0) == 0);
}

TEST_CASE("snapshot actor: a file changed after its check fails the load and resets the back-end") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(3 << 20);
    const std::string path = f.tmp.file("s.vfsnap");
    committed(path, data);
    // A file the VMM passed (an fd): its bytes are checked as they are sent.
    // A path (vufront's own, mapped): the change is seen before the load.
    bool by_fd = false;
    SUBCASE("path") {}
    SUBCASE("fd") { by_fd = true; }
    RestoreOptions o = restore_of(path, by_fd);
    auto got = std::make_shared<std::vector<uint8_t>>();
    auto handed = std::make_shared<std::atomic<int>>(0);
    auto a = f.start([&, got, handed](uint32_t, UniqueFd fd) {
      ++*handed;
      f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), got] {
        *got = read_all(fd->get());
      });
      return SharedFd{};
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(a, 10s, open_atom_v, o,
                                                                   TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    // Checked whole; now a byte of its state changes before the load.
    {
      UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      REQUIRE(rw.valid());
      uint8_t b = 0;
      const off_t at = static_cast<off_t>(snapshot::kHeadSize + 1000);
      REQUIRE(::pread(rw.get(), &b, 1, at) == 1);
      b ^= 0xff;
      REQUIRE(::pwrite(rw.get(), &b, 1, at) == 1);
    }
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    CHECK_FALSE(info);
    if (!by_fd) {
      // refused before SET_DEVICE_STATE_FD: the back-end saw nothing
      CHECK_MESSAGE(lerr.find("SET_DEVICE_STATE_FD(load): invalid_payload: snapshot file changed "
                              "during restore (modified)") == 0,
                    lerr);
      CHECK(handed->load() == 0);
      CHECK(f.resets->load() == 0);
    } else {
      CHECK_MESSAGE(lerr.find("checksum mismatch") != std::string::npos, lerr);
      CHECK_MESSAGE(lerr.find("the back-end's device was reset") != std::string::npos, lerr);
      CHECK(f.resets->load() == 1);
      // the back-end got the changed bytes (which is why it was reset), never
      // the whole state: the last slice, whose check failed, was held back
      CHECK(got->size() < data.size());
      REQUIRE(got->size() > 1000);
      CHECK((*got)[1000] == static_cast<uint8_t>(data[1000] ^ 0xff));
    }
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a file truncated between its check and the load is refused untouched") {
  FdCount fds;
  {
    SnapFixture f;
    const std::string path = f.tmp.file("s.vfsnap");
    committed(path, state_bytes(3 << 20));
    auto handed = std::make_shared<std::atomic<int>>(0);
    auto a = f.start([handed](uint32_t, UniqueFd) {
      ++*handed;
      return SharedFd{};
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(
        a, 10s, open_atom_v, restore_of(path), TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    REQUIRE(::truncate(path.c_str(), snapshot::kHeadSize + 4096) == 0);
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    CHECK_FALSE(info);
    CHECK_MESSAGE(lerr.find("SET_DEVICE_STATE_FD(load): bad_size: snapshot file changed during "
                            "restore (truncated)") == 0,
                  lerr);
    CHECK(handed->load() == 0);
    CHECK(f.resets->load() == 0);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a file truncated during the load fails it and resets the back-end") {
  FdCount fds;
  {
    SnapFixture f;
    // 8 MiB: when the back-end has read 1 MiB, the front-end has written at
    // most that plus one pipe (1 MiB): most of the state is still to be sent
    // when the file is cut.
    auto data = state_bytes(8 << 20);
    const std::string path = f.tmp.file("s.vfsnap");
    committed(path, data);
    bool by_fd = false;
    SUBCASE("path (mapped: write(2) fails with EFAULT)") {}
    SUBCASE("fd (read: the file shrank)") { by_fd = true; }
    RestoreOptions o = restore_of(path, by_fd);
    auto got = std::make_shared<std::vector<uint8_t>>();
    auto a = f.start([&, got](uint32_t, UniqueFd fd) {
      f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), got, path] {
        std::vector<uint8_t> buf(1 << 20);
        size_t have = 0;
        while (have < buf.size()) {
          ssize_t n = ::read(fd->get(), buf.data() + have, buf.size() - have);
          if (n <= 0)
            return;
          have += static_cast<size_t>(n);
        }
        (void)::truncate(path.c_str(), snapshot::kHeadSize + 4096);  // another process's cut
        *got = read_all(fd->get());
        got->insert(got->begin(), buf.begin(), buf.end());
      });
      return SharedFd{};
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(a, 10s, open_atom_v, o,
                                                                   TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    CHECK_FALSE(info);
    const char* expect = by_fd ? "file shrank" : "snapshot file changed during restore (truncated)";
    CHECK_MESSAGE(lerr.find(expect) != std::string::npos, lerr);
    CHECK_MESSAGE(lerr.find("the back-end's device was reset") != std::string::npos, lerr);
    CHECK(f.resets->load() == 1);
    CHECK(got->size() >= (size_t{1} << 20));
    CHECK(got->size() < data.size());
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a mapped load into the back-end's own socket is written, whole") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(3 << 20);
    const std::string path = f.tmp.file("s.vfsnap");
    committed(path, data);
    auto got = std::make_shared<std::vector<uint8_t>>();
    auto a = f.start([&, got](uint32_t, UniqueFd ours) {
      ours.reset();  // a back-end that reads its own socket (vmsplice refuses a socket)
      int sv[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
      auto mine = std::make_shared<UniqueFd>(UniqueFd::adopt(sv[0]));
      f.peers.threads.emplace_back([mine, got] { *got = read_all(mine->get()); });
      return share(UniqueFd::adopt(sv[1]));
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(
        a, 10s, open_atom_v, restore_of(path), TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    REQUIRE_MESSAGE(info, lerr);
    CHECK(*got == data);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}

TEST_CASE("snapshot actor: a mapped file changed before CHECK_DEVICE_STATE's answer resets the back-end") {
  FdCount fds;
  {
    SnapFixture f;
    auto data = state_bytes(2 << 20);
    const std::string path = f.tmp.file("s.vfsnap");
    committed(path, data);
    // The back-end has read the whole stream (EOF came before CHECK_DEVICE_STATE);
    // then the file changes in place, before the answer.
    *f.on_check = [path] {
      UniqueFd rw = UniqueFd::adopt(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      uint8_t b = 0;
      (void)!::pwrite(rw.get(), &b, 1, static_cast<off_t>(snapshot::kHeadSize + 10));
    };
    auto got = std::make_shared<std::vector<uint8_t>>();
    auto a = f.start([&, got](uint32_t, UniqueFd fd) {
      f.peers.threads.emplace_back([fd = std::make_shared<UniqueFd>(std::move(fd)), got] {
        *got = read_all(fd->get());
      });
      return SharedFd{};
    });
    auto [m, err] = f.ask<std::shared_ptr<const snapshot::Manifest>>(
        a, 10s, open_atom_v, restore_of(path), TransferDeadline::in(10s));
    REQUIRE_MESSAGE(m, err);
    auto [info, lerr] = f.ask<SnapshotInfo>(a, 15s, load_atom_v, TransferDeadline::in(10s));
    for (auto& t : f.peers.threads)
      t.join();
    f.peers.threads.clear();
    CHECK_FALSE(info);
    CHECK_MESSAGE(lerr.find("snapshot file changed during restore (modified)") != std::string::npos,
                  lerr);
    CHECK_MESSAGE(lerr.find("the back-end's device was reset") != std::string::npos, lerr);
    CHECK(f.resets->load() == 1);
  }
  CHECK_MESSAGE(fds.leaked() == 0, FdCount::listing());
}
