// vufront-bench-snapshot: snapshot and restore throughput of a back-end's
// state through the device and snapshot actors, as a ratio to floors
// measured in the same run against the same vufront-backend process:
//
//   * raw pipe: the state's size in bytes, from a memfd mapping (as a
//     back-end's disk), written by one thread into a pipe and read and
//     discarded by another (same pipe size and chunk size as the snapshot
//     actor), nothing else: the bandwidth no pipe-based transfer can beat. The issue-6 target
//     is >= 0.8x of it, with the snapshot file on tmpfs (so the disk does not
//     set the pace).
//   * raw stream: SET_DEVICE_STATE_FD(save) by plain blocking BackendClient
//     calls, the back-end's stream read and discarded: what this back-end
//     can produce at all.
//   * raw file -> pipe -> back-end: that stream's file read in chunks and
//     written into the load pipe by plain blocking calls: a restore's floor.
//   * raw to file (only for a directory on a disk): the back-end's stream
//     written with write() into a file and fsync'ed: the floor for a durable
//     snapshot on that disk.
//   * the seed's method (crosvm's): the whole state read into memory and
//     stored as a JSON array of numbers, restored by parsing it back, on a
//     smaller back-end (--json-size), also as memory growth.
//
// Rounds alternate between the paths; the table shows medians, and each
// ratio's median with the interquartile range of the rounds.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "actors/session.hpp"
#include "actors/system.hpp"
#include "bench/stats.hpp"
#include "ops/child_process.hpp"
#include "ops/transfer_report.hpp"
#include "protocol/backend_client.hpp"

using namespace vufront;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t chunk = size_t{1} << 20;  // the snapshot actor's read/write size
constexpr int pipe_size = 1 << 20;         // and its F_SETPIPE_SZ

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vufront-bench-snapshot: %s\n", what.c_str());
  std::exit(1);
}

template <class T>
T must(Result<T> r, const char* what) {
  if (!r)
    die(std::string(what) + ": " + r.error().message());
  return std::move(r).value();
}
void must(Result<void> r, const char* what) {
  if (!r)
    die(std::string(what) + ": " + r.error().message());
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

using bench::median;

double mib_per_s(uint64_t bytes, double s) { return s > 0 ? double(bytes) / s / (1 << 20) : 0; }

uint64_t status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0)
      return std::stoull(line.substr(std::strlen(key)));
  return 0;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct Pipe2 { UniqueFd r, w; };
Pipe2 big_pipe() {
  Pipe p = make_pipe();
  if (!p.read_end || !p.write_end)
    die("pipe2 failed");
  (void)::fcntl(p.write_end.get(), F_SETPIPE_SZ, pipe_size);
  return {std::move(p.read_end), std::move(p.write_end)};
}

void write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      die(std::string("write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

/// Reads `fd` to EOF in `chunk` pieces, handing each to `sink`; returns the bytes.
uint64_t drain(int fd, const std::function<void(const uint8_t*, size_t)>& sink) {
  std::vector<uint8_t> buf(chunk);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      die(std::string("read: ") + std::strerror(errno));
    if (n == 0)
      return total;
    sink(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
}

// ---- the floors -----------------------------------------------------------------------

/// The source of the raw pipe floor: `bytes` of a memfd mapping, every page
/// touched, as a back-end's disk is (a 1 MiB buffer written again and again
/// would stay in the CPU cache and measure the cache, not the transfer).
class MemorySource {
public:
  explicit MemorySource(uint64_t bytes) : bytes_(bytes), fd_(make_memfd("bench-src", bytes)) {
    if (!fd_)
      die("memfd_create");
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (p == MAP_FAILED)
      die(std::string("mmap: ") + std::strerror(errno));
    data_ = static_cast<uint8_t*>(p);
    for (uint64_t off = 0; off < bytes; off += 4096)
      data_[off] = static_cast<uint8_t>(off >> 12);
  }
  ~MemorySource() { ::munmap(data_, bytes_); }
  MemorySource(const MemorySource&) = delete;
  MemorySource& operator=(const MemorySource&) = delete;
  [[nodiscard]] const uint8_t* data() const { return data_; }
  [[nodiscard]] uint64_t size() const { return bytes_; }

private:
  uint64_t bytes_;
  UniqueFd fd_;
  uint8_t* data_ = nullptr;
};

/// All of `src` through a pipe between two threads, written in `chunk`
/// pieces and read in `chunk` pieces and discarded; seconds.
double raw_pipe(const MemorySource& src) {
  auto p = big_pipe();
  auto t0 = Clock::now();
  std::thread writer([&p, &src] {
    for (uint64_t off = 0; off < src.size(); off += chunk)
      write_all(p.w.get(), src.data() + off,
                static_cast<size_t>(std::min<uint64_t>(chunk, src.size() - off)));
    p.w.reset();
  });
  uint64_t got = drain(p.r.get(), [](const uint8_t*, size_t) {});
  writer.join();
  double s = seconds_since(t0);
  if (got != src.size())
    die("raw pipe moved " + std::to_string(got) + " of " + std::to_string(src.size()) + " bytes");
  return s;
}

BackendClient raw_client(const std::string& socket) {
  // the back-end was just started: its socket appears once it listens
  auto c = must(BackendClient::connect(socket, std::chrono::seconds(5), {}, nullptr,
                                       ConnectWait::backend),
                "connect");
  must(c.set_owner(), "SET_OWNER");
  auto f = must(c.get_features(), "GET_FEATURES");
  auto pf = must(c.get_protocol_features(), "GET_PROTOCOL_FEATURES");
  if (!has_bit(pf, protocol_feature::device_state))
    die("the back-end does not offer DEVICE_STATE");
  must(c.set_protocol_features(pf & (bit(protocol_feature::device_state) |
                                     bit(protocol_feature::reply_ack))),
       "SET_PROTOCOL_FEATURES");
  must(c.set_features(f & (bit(feature::version_1) | bit(feature::protocol_features))),
       "SET_FEATURES");
  return c;
}

/// The back-end's state saved with plain blocking calls, each chunk handed
/// to `sink`; returns (seconds, bytes).
std::pair<double, uint64_t> raw_save(const std::string& socket,
                                     const std::function<void(const uint8_t*, size_t)>& sink,
                                     const std::function<void()>& finish = {}) {
  auto c = raw_client(socket);
  auto t0 = Clock::now();
  auto p = big_pipe();
  auto rep = must(c.set_device_state_fd(wire::device_state_save, wire::device_state_phase_stopped,
                                        p.w.get()),
                  "SET_DEVICE_STATE_FD(save)");
  if (rep.backend_fd)
    die("the back-end answered with its own fd (not expected from vufront-backend here)");
  p.w.reset();
  uint64_t n = drain(p.r.get(), sink);
  must(c.check_device_state(), "CHECK_DEVICE_STATE");
  if (finish)
    finish();
  return {seconds_since(t0), n};
}

/// The back-end loads what `feed` writes into the load pipe, by plain blocking calls; seconds.
double raw_load(const std::string& socket, const std::function<void(int)>& feed) {
  auto c = raw_client(socket);
  auto t0 = Clock::now();
  auto p = big_pipe();
  auto rep = must(c.set_device_state_fd(wire::device_state_load, wire::device_state_phase_stopped,
                                        p.r.get()),
                  "SET_DEVICE_STATE_FD(load)");
  if (rep.backend_fd)
    die("the back-end answered with its own fd (not expected from vufront-backend here)");
  p.r.reset();
  feed(p.w.get());
  p.w.reset();
  must(c.check_device_state(), "CHECK_DEVICE_STATE");
  return seconds_since(t0);
}

/// The floor of a restore (issue 26): `file`, a state stream as the
/// back-end wrote it, read in chunks and written into the load pipe.
double raw_file_load(const std::string& socket, const std::string& file) {
  UniqueFd in = UniqueFd::adopt(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in)
    die("open " + file + ": " + std::strerror(errno));
  return raw_load(socket, [&in](int w) {
    drain(in.get(), [w](const uint8_t* p, size_t n) { write_all(w, p, n); });
  });
}

// ---- vufront ------------------------------------------------------------------------

actors::NegotiateOptions blk() {
  actors::NegotiateOptions n;
  n.kind = DeviceKind::blk;
  n.queues = 1;
  return n;
}

actors::DeviceConfig config_for(const std::string& socket) {
  actors::DeviceConfig c;
  c.socket = socket;
  c.wait_for_backend = true;  // the back-end was just started
  return c;
}

/// vufront snapshot's path: negotiate (not timed), snapshot into `file`.
std::pair<double, uint64_t> vufront_snapshot(caf::actor_system& sys, const std::string& socket,
                                             const std::string& file) {
  actors::DeviceSession s(sys, config_for(socket));
  must(s.negotiate(blk()), "negotiate");
  actors::SnapshotOptions o;
  o.path = file;
  o.timeout_ms = 600000;
  auto t0 = Clock::now();
  auto info = must(s.snapshot(o), "snapshot");
  return {seconds_since(t0), info.state_bytes};
}

/// vufront restore's path: negotiate (not timed), restore `file` (which
/// includes checking the file whole before the load).
double vufront_restore(caf::actor_system& sys, const std::string& socket, const std::string& file) {
  actors::DeviceSession s(sys, config_for(socket));
  must(s.negotiate(blk()), "negotiate");
  actors::RestoreOptions o;
  o.path = file;
  o.timeout_ms = 600000;
  auto t0 = Clock::now();
  (void)must(s.restore(o), "restore");
  return seconds_since(t0);
}

// ---- the seed's method ------------------------------------------------------------------

struct SeedRun {
  double save_s = 0, restore_s = 0;
  uint64_t bytes = 0, file_bytes = 0, peak_growth_kib = 0;
};

/// The state read whole into memory, stored as a JSON array of numbers;
/// restored by parsing the file and writing the bytes back.
SeedRun seed_method(const std::string& socket, const std::string& file) {
  SeedRun r;
  reset_peak_rss();
  uint64_t before = status_kib("VmRSS:");
  {
    auto t0 = Clock::now();
    std::vector<uint8_t> state;
    r.bytes = raw_save(socket, [&state](const uint8_t* p, size_t len) {
                state.insert(state.end(), p, p + len);
              }).second;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << nlohmann::json(state).dump();
    out.close();
    if (!out)
      die("writing " + file);
    r.save_s = seconds_since(t0);
  }
  {
    auto t0 = Clock::now();
    std::ifstream in(file, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    r.file_bytes = text.size();
    auto state = nlohmann::json::parse(text).get<std::vector<uint8_t>>();
    text = {};
    (void)raw_load(socket, [&state](int w) { write_all(w, state.data(), state.size()); });
    r.restore_s = seconds_since(t0);
  }
  uint64_t peak = status_kib("VmHWM:");
  r.peak_growth_kib = peak > before ? peak - before : 0;
  ::unlink(file.c_str());
  return r;
}

// ---- set-up -------------------------------------------------------------------------

bool on_tmpfs(const std::string& dir) {
  struct statfs fs {};
  return ::statfs(dir.c_str(), &fs) == 0 && fs.f_type == 0x01021994;  // TMPFS_MAGIC
}

struct Backend {
  Backend(const std::string& dir, const std::string& name, const std::string& size)
      : socket(dir + "/" + name + ".sock"),
        proc(must(ops::ChildProcess::spawn({ops::executable_dir() + "/vufront-backend", "--socket",
                                            socket, "--size", size, "--queues", "1"},
                                           dir + "/" + name + ".log"),
                  "start vufront-backend")) {}
  std::string socket;
  ops::ChildProcess proc;
};

struct TempDir {
  explicit TempDir(const std::string& parent) : path(parent + "/vufront-bench-snap.XXXXXX") {
    if (::mkdtemp(path.data()) == nullptr)
      die("mkdtemp in " + parent + ": " + std::strerror(errno));
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  std::string path;
};

/// One path against its floor: medians of the rounds' speeds, and the median
/// [interquartile range] of the rounds' ratios (round i against floor round i).
void row(const char* name, uint64_t bytes, const std::vector<double>& s,
         const std::vector<double>& floor_s, const char* target) {
  std::vector<double> ratios;
  for (size_t i = 0; i < s.size() && i < floor_s.size(); ++i)
    ratios.push_back(floor_s[i] / s[i]);
  const auto r = bench::spread(ratios);
  std::printf("%-34s %10.1f %10.1f %7.2fx [%4.2f-%4.2f]  %s\n", name, mib_per_s(bytes, median(s)),
              mib_per_s(bytes, median(floor_s)), r.med, r.q1, r.q3, target);
}

// ---- the command line --------------------------------------------------------------

/// What the command line asks for.
struct BenchOptions {
  std::string size_text = "1G", json_size_text = "64M", dir = "/dev/shm", disk_dir;
  int rounds = 3;
  int seed_rounds = 3;
  bool quick = false;
};

/// Declares the options on `cli`, parsed into `o`.
void add_options(CLI::App& cli, BenchOptions& o) {
  cli.add_option("--size", o.size_text, "State (disk) size of the main back-end")->default_val("1G");
  cli.add_option("--json-size", o.json_size_text, "State size for the seed's JSON method")
      ->default_val("64M");
  cli.add_option("--rounds", o.rounds, "Rounds of each path (medians are shown)")
      ->default_val(3)
      ->check(CLI::Range(1, 100));
  cli.add_option("--seed-rounds", o.seed_rounds, "Rounds of the smaller state (seed's method)")
      ->default_val(3)
      ->check(CLI::Range(1, 100));
  cli.add_option("--dir", o.dir, "Where the snapshot files go (tmpfs: the disk does not set the pace)")
      ->default_val("/dev/shm");
  cli.add_option("--disk-dir", o.disk_dir,
                 "Also measure a durable snapshot (fsync) into this directory on a disk, "
                 "against raw write+fsync of the same stream");
  cli.add_flag("--quick", o.quick, "Smoke run: 64M state, 4M JSON state, one round");
}

// ---- the rounds ---------------------------------------------------------------------

/// Seconds of each round of each path on the main back-end.
struct MainTimes {
  std::vector<double> pipe_s, stream_s, tofile_s, fileload_s, snap_s, restore_s, file_s, durable_s;
};

/// The back-end's stream into a new file in `dir` beside the snapshot (as
/// the snapshot writes a new temporary file and renames it over the old
/// one); seconds.
double raw_save_to_new_file(const std::string& socket, const std::string& dir) {
  const std::string raw_file = dir + "/raw.tmp";
  UniqueFd out = UniqueFd::adopt(
      ::open(raw_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out)
    die("open " + raw_file + ": " + std::strerror(errno));
  const double s =
      raw_save(socket, [&out](const uint8_t* p, size_t n) { write_all(out.get(), p, n); }).first;
  ::rename(raw_file.c_str(), (dir + "/raw.bin").c_str());
  return s;
}

/// On the disk in `disk_dir`: the back-end's stream written and fsync'ed
/// (the floor), then vufront's durable snapshot; both files removed.
void durable_round(caf::actor_system& sys, const std::string& socket, const std::string& disk_dir,
                   MainTimes& t) {
  const std::string raw_file = disk_dir + "/raw.bin";
  UniqueFd out = UniqueFd::adopt(::open(raw_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out)
    die("open " + raw_file + ": " + std::strerror(errno));
  t.file_s.push_back(raw_save(
                         socket, [&out](const uint8_t* p, size_t n) { write_all(out.get(), p, n); },
                         [&out] {
                           if (::fsync(out.get()) != 0)
                             die("fsync");
                         })
                         .first);
  ::unlink(raw_file.c_str());
  t.durable_s.push_back(vufront_snapshot(sys, socket, disk_dir + "/state.vfsnap").first);
  ::unlink((disk_dir + "/state.vfsnap").c_str());
}

/// One round of every path on the main back-end: the raw pipe, the raw
/// stream (discarded, then into a new file, which is then loaded back by
/// plain calls: the restore's floor), vufront's snapshot into `file`
/// and restore from it, and (with a `disk`) the durable round.
void main_round(caf::actor_system& sys, const std::string& socket, const std::string& dir,
                const std::string& file, const MemorySource& src, const TempDir* disk, MainTimes& t) {
  t.pipe_s.push_back(raw_pipe(src));
  t.stream_s.push_back(raw_save(socket, [](const uint8_t*, size_t) {}).first);
  t.tofile_s.push_back(raw_save_to_new_file(socket, dir));
  t.fileload_s.push_back(raw_file_load(socket, dir + "/raw.bin"));
  t.snap_s.push_back(vufront_snapshot(sys, socket, file).first);
  t.restore_s.push_back(vufront_restore(sys, socket, file));
  if (disk)
    durable_round(sys, socket, disk->path, t);
}

/// The seed's method and vufront's on the smaller back-end: seconds of each
/// round, and the last round's sizes and memory growth.
struct SmallTimes {
  std::vector<double> seed_save, seed_restore, small_snap, small_restore, small_pipe;
  SeedRun seed;
  uint64_t small_bytes = 0, ours_growth_kib = 0;
};

/// `rounds` rounds of the seed's method and of vufront's snapshot and
/// restore (with its memory growth) on the back-end at `socket`, files in
/// `dir`, after a warm-up.
SmallTimes measure_small(caf::actor_system& sys, const std::string& socket, const std::string& dir,
                         int rounds) {
  const std::string small = dir + "/small.vfsnap";
  (void)vufront_snapshot(sys, socket, small);  // warm-up
  SmallTimes t;
  std::unique_ptr<MemorySource> small_src;
  for (int i = 0; i < rounds; ++i) {
    t.seed = seed_method(socket, dir + "/seed.json");
    t.seed_save.push_back(t.seed.save_s);
    t.seed_restore.push_back(t.seed.restore_s);
    reset_peak_rss();
    uint64_t before = status_kib("VmRSS:");
    auto [s, n] = vufront_snapshot(sys, socket, small);
    t.small_snap.push_back(s);
    t.small_bytes = n;
    t.small_restore.push_back(vufront_restore(sys, socket, small));
    uint64_t peak = status_kib("VmHWM:");
    t.ours_growth_kib = peak > before ? peak - before : 0;
    if (!small_src)
      small_src = std::make_unique<MemorySource>(n);
    t.small_pipe.push_back(raw_pipe(*small_src));
  }
  return t;
}

// ---- the report ---------------------------------------------------------------------

/// The main back-end's table: each path's median against its floor.
void print_main_table(uint64_t state_bytes, int rounds, const MainTimes& t, bool disk) {
  std::printf("\nstate %s (%llu bytes), %d round(s), medians; ratio: median [q1-q3] of rounds\n", ops::format_bytes(state_bytes).c_str(),
              static_cast<unsigned long long>(state_bytes), rounds);
  std::printf("%-34s %10s %10s %20s  %s\n", "path", "MiB/s", "floor", "ratio", "target");
  row("raw stream (back-end -> discard)", state_bytes, t.stream_s, t.pipe_s, "(floor: raw pipe)");
  row("raw stream -> new file", state_bytes, t.tofile_s, t.pipe_s, "(floor: raw pipe)");
  row("vufront snapshot", state_bytes, t.snap_s, t.pipe_s, ">= 0.80x raw pipe");
  row("vufront snapshot vs raw -> file", state_bytes, t.snap_s, t.tofile_s,
      "(floor: raw stream -> new file)");
  row("vufront restore", state_bytes, t.restore_s, t.pipe_s, ">= 0.80x raw pipe");
  row("vufront restore vs raw file -> pipe", state_bytes, t.restore_s, t.fileload_s,
      "(floor: raw file -> pipe -> back-end)");
  if (disk) {
    row("vufront snapshot to disk (fsync)", state_bytes, t.durable_s, t.file_s,
        "(floor: raw write+fsync)");
  }
}

/// The seed's method against vufront on the smaller state, with memory growth.
void print_seed_table(const SmallTimes& t) {
  const SeedRun& seed = t.seed;
  const uint64_t small_bytes = t.small_bytes;
  const double spipe = median(t.small_pipe);
  std::printf("\nstate %s: the seed's method (JSON array of numbers) vs vufront\n",
              ops::format_bytes(small_bytes).c_str());
  std::printf("%-34s %10s %10s %8s  %s\n", "path", "MiB/s", "floor", "ratio", "memory growth");
  std::printf("%-34s %10.1f %10.1f %7.2fx  %s (file %s)\n", "seed: save as JSON array",
              mib_per_s(seed.bytes, median(t.seed_save)), mib_per_s(seed.bytes, spipe),
              spipe / median(t.seed_save), ops::format_bytes(seed.peak_growth_kib * 1024).c_str(),
              ops::format_bytes(seed.file_bytes).c_str());
  std::printf("%-34s %10.1f %10.1f %7.2fx\n", "seed: restore from JSON array",
              mib_per_s(seed.bytes, median(t.seed_restore)), mib_per_s(seed.bytes, spipe),
              spipe / median(t.seed_restore));
  std::printf("%-34s %10.1f %10.1f %7.2fx  %s\n", "vufront snapshot", mib_per_s(small_bytes, median(t.small_snap)),
              mib_per_s(small_bytes, spipe), spipe / median(t.small_snap),
              ops::format_bytes(t.ours_growth_kib * 1024).c_str());
  std::printf("%-34s %10.1f %10.1f %7.2fx\n", "vufront restore", mib_per_s(small_bytes, median(t.small_restore)),
              mib_per_s(small_bytes, spipe), spipe / median(t.small_restore));
  std::printf("vufront vs the seed: snapshot %.1fx faster, restore %.1fx faster\n",
              median(t.seed_save) / median(t.small_snap), median(t.seed_restore) / median(t.small_restore));
}

/// Whether vufront's snapshot and restore reach 0.8x of the raw pipe.
bool targets_met(const MainTimes& t) {
  const double pipe = median(t.pipe_s);
  return pipe / median(t.snap_s) >= 0.8 && pipe / median(t.restore_s) >= 0.8;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{
      "Snapshot and restore throughput of a back-end's state through vufront's actors, as a\n"
      "ratio to raw pipe bandwidth (and other floors) measured in the same run, plus the\n"
      "seed's JSON-array method for comparison. Starts its own vufront-backend processes."};
  BenchOptions o;
  add_options(cli, o);
  CLI11_PARSE(cli, argc, argv);
  if (o.quick) {
    o.size_text = "64M";
    o.json_size_text = "4M";
    o.rounds = 1;
    o.seed_rounds = 1;
  }
  must(ops::parse_size(o.size_text), "--size");
  must(ops::parse_size(o.json_size_text), "--json-size");

  TempDir tmp(o.dir);
  const std::string file = tmp.path + "/state.vfsnap";
  std::printf("snapshot files in %s (%s)\n", tmp.path.c_str(),
              on_tmpfs(tmp.path) ? "tmpfs" : "not tmpfs: the file system may set the pace");

  actors::SystemConfig cfg;
  caf::actor_system sys{cfg};
  Backend main_be(tmp.path, "main", o.size_text);

  // Warm-up: every page of the back-end's disk and of the file touched once.
  const uint64_t state_bytes = vufront_snapshot(sys, main_be.socket, file).second;
  (void)vufront_restore(sys, main_be.socket, file);

  MainTimes times;
  std::unique_ptr<TempDir> disk;
  if (!o.disk_dir.empty())
    disk = std::make_unique<TempDir>(o.disk_dir);
  MemorySource src(state_bytes);
  for (int i = 0; i < o.rounds; ++i)
    main_round(sys, main_be.socket, tmp.path, file, src, disk.get(), times);
  ::unlink(file.c_str());

  // The seed's method, and ours on the same (smaller) state.
  Backend json_be(tmp.path, "json", o.json_size_text);
  const SmallTimes small = measure_small(sys, json_be.socket, tmp.path, o.seed_rounds);

  print_main_table(state_bytes, o.rounds, times, disk != nullptr);
  print_seed_table(small);
  std::printf("%s\n", targets_met(times) ? "targets met" : "some targets missed");
  return 0;
}
