#include "actors/control_commands.hpp"

#include <fcntl.h>
#include <cstdio>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "base/beneath.hpp"
#include "protocol/virtio_config.hpp"

namespace vufront::actors {

namespace {

constexpr const char* kFds = "fds";

/// A number for the wire: JSON numbers are exact up to 2^53; beyond that
/// (features are fine, but addresses may not be) a hex string.
json number(uint64_t v) {
  if (v <= (uint64_t{1} << 53))
    return v;
  return hex(v);
}

bool is_eventfd(int fd) {
  char target[64] = {};
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  return n > 0 && std::string(target, static_cast<size_t>(n)) == "anon_inode:[eventfd]";
}

/// A snapshot file the VMM opened: regular, and open for what we do with it.
bool is_snapshot_file(int fd, bool writing) {
  struct stat sb {};
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    return false;
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0)
    return false;
  int mode = fl & O_ACCMODE;
  if (writing)
    return (mode == O_WRONLY || mode == O_RDWR) && (fl & O_APPEND) == 0;
  return mode == O_RDONLY || mode == O_RDWR;
}

bool is_memory(int fd) {
  struct stat sb {};
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
    return false;
  int fl = ::fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_ACCMODE) == O_RDWR;
}

Result<QueueSpec> queue_from(control::Args& q, FdPool& fds) {
  QueueSpec out;
  auto index = q.u64("index", 0, 0x7fff);
  if (!index)
    return std::move(index).error();
  auto size = q.u64("size", 1, 32768);
  if (!size)
    return std::move(size).error();
  auto desc = q.u64("desc", 0, UINT64_MAX);
  if (!desc)
    return std::move(desc).error();
  auto driver = q.u64("driver", 0, UINT64_MAX);
  if (!driver)
    return std::move(driver).error();
  auto device = q.u64("device", 0, UINT64_MAX);
  if (!device)
    return std::move(device).error();
  auto kick = fds.take(q, "kick", FdPool::Kind::eventfd);
  if (!kick)
    return std::move(kick).error();
  auto call = fds.take_optional(q, "call", FdPool::Kind::eventfd);
  if (!call)
    return std::move(call).error();
  if (auto d = q.done(); !d)
    return std::move(d).error();
  out.index = static_cast<uint16_t>(*index);
  out.size = static_cast<uint16_t>(*size);
  out.desc = *desc;
  out.driver = *driver;
  out.device = *device;
  out.kick = std::move(kick).value();
  out.call = std::move(call).value();
  return out;
}

}  // namespace

// ---- FdPool -----------------------------------------------------------------------

FdPool::FdPool(std::vector<UniqueFd> fds) : fds_(std::move(fds)), used_(fds_.size(), false) {}

Result<SharedFd> FdPool::take(control::Args& a, const char* key, Kind kind) {
  auto index = a.u64(key, 0, control::max_packet_fds - 1);
  if (!index)
    return std::move(index).error();
  const std::string field = a.path() + "." + key;
  if (*index >= fds_.size())
    return make_error(errc::bad_fds, kFds,
                      field + " refers to fd " + std::to_string(*index) + ", the message has " +
                          std::to_string(fds_.size()));
  if (used_[*index])
    return make_error(errc::bad_fds, kFds, field + ": fd " + std::to_string(*index) + " is used twice");
  int fd = fds_[*index].get();
  if (kind == Kind::eventfd && !is_eventfd(fd))
    return make_error(errc::bad_fds, kFds, field + ": fd " + std::to_string(*index) + " is not an eventfd");
  if (kind == Kind::memory && !is_memory(fd))
    return make_error(errc::bad_fds, kFds,
                      field + ": fd " + std::to_string(*index) +
                          " is not a memory file open for reading and writing (memfd or shm)");
  if ((kind == Kind::file_read || kind == Kind::file_write) && !is_snapshot_file(fd, kind == Kind::file_write))
    return make_error(errc::bad_fds, kFds,
                      field + ": fd " + std::to_string(*index) + " is not a regular file open for " +
                          (kind == Kind::file_write ? "writing (without O_APPEND)" : "reading"));
  used_[*index] = true;
  return share(std::move(fds_[*index]));
}

Result<SharedFd> FdPool::take_optional(control::Args& a, const char* key, Kind kind) {
  if (!a.has(key)) {
    (void)a.u64(key, 0, 0, 0);  // marks the key as known
    return SharedFd{};
  }
  return take(a, key, kind);
}

Result<void> FdPool::all_used() const {
  size_t unused = 0;
  for (bool u : used_)
    unused += u ? 0 : 1;
  if (unused != 0)
    return make_error(errc::bad_fds, kFds,
                      std::to_string(fds_.size()) + " fd(s) sent, " + std::to_string(unused) +
                          " not referred to by the command");
  return ok();
}

// ---- commands -> payloads -----------------------------------------------------------

Result<TransferFile> file_from(control::Args& a, FdPool& fds, const FilePolicy& policy, bool writing) {
  const std::string cmd = writing ? "snapshot" : "restore";
  const bool by_fd = a.has("fd");
  if (by_fd == a.has("path"))
    return make_error(errc::bad_message, cmd,
                      a.path() + ": give the file as \"fd\" (an fd the VMM opened) or as \"path\", one of them");
  TransferFile out;
  if (by_fd) {
    (void)a.u64("path", 0, 0, 0);  // known, absent
    auto fd = fds.take(a, "fd", writing ? FdPool::Kind::file_write : FdPool::Kind::file_read);
    if (!fd)
      return std::move(fd).error();
    out.target.file = std::move(fd).value();
    return out;
  }
  (void)a.u64("fd", 0, 0, 0);  // known, absent
  auto path = a.string("path", 4096);
  if (!path)
    return std::move(path).error();
  out.path = *path;
  const std::string field = a.path() + ".path";
  if (!policy.snapshot_dir) {
    if (policy.peer_uid != policy.own_uid)
      return make_error(errc::permission_denied, cmd,
                        field + ": uid " + std::to_string(policy.peer_uid) +
                            " may not name files by path: vufront attach (uid " + std::to_string(policy.own_uid) +
                            ") has no --snapshot-dir; pass the file as an fd (\"fd\")");
    return out;
  }
  std::string relative = *path;
  const std::string prefix = policy.snapshot_dir_path + "/";
  if (!relative.empty() && relative.front() == '/') {
    if (relative.compare(0, prefix.size(), prefix) != 0)
      return make_error(errc::permission_denied, cmd,
                        field + ": \"" + relative + "\" is outside --snapshot-dir " + policy.snapshot_dir_path);
    relative = relative.substr(prefix.size());
  }
  auto at = open_parent_beneath(policy.snapshot_dir->get(), relative, cmd);
  if (!at) {
    Error e = std::move(at).error();
    e.detail = field + ": " + e.detail + " (--snapshot-dir " + policy.snapshot_dir_path + ")";
    return e;
  }
  struct stat sb {};
  if (::fstatat(at->dir.get(), at->leaf.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
    return make_error(errc::permission_denied, cmd,
                      field + ": \"" + *path + "\" is a symbolic link (--snapshot-dir " +
                          policy.snapshot_dir_path + ")");
  out.target.dir = share(std::move(at->dir));
  out.target.leaf = at->leaf;
  return out;
}

Result<MemoryRegionSpec> region_from(control::Args& r, FdPool& fds) {
  MemoryRegionSpec out;
  auto gpa = r.u64("gpa", 0, UINT64_MAX);
  if (!gpa)
    return std::move(gpa).error();
  auto size = r.u64("size", 1, UINT64_MAX);
  if (!size)
    return std::move(size).error();
  auto offset = r.u64("offset", 0, UINT64_MAX, 0);
  if (!offset)
    return std::move(offset).error();
  auto fd = fds.take(r, "fd", FdPool::Kind::memory);
  if (!fd)
    return std::move(fd).error();
  if (auto d = r.done(); !d)
    return std::move(d).error();
  out.gpa = *gpa;
  out.size = *size;
  out.fd_offset = *offset;
  out.fd = std::move(fd).value();
  return out;
}

Result<MemorySpec> memory_from(control::Args& args, FdPool& fds) {
  auto regions = args.objects("regions", 1, 8);
  if (!regions)
    return std::move(regions).error();
  MemorySpec out;
  for (auto& r : *regions) {
    auto one = region_from(r, fds);
    if (!one)
      return std::move(one).error();
    out.push_back(std::move(one).value());
  }
  if (auto d = args.done(); !d)
    return std::move(d).error();
  return out;
}

Result<ActivateSpec> activation_from(control::Args& args, FdPool& fds) {
  ActivateSpec out;
  auto features = args.u64("features", 0, UINT64_MAX);
  if (!features)
    return std::move(features).error();
  auto queues = args.objects("queues", 1, 0x8000);
  if (!queues)
    return std::move(queues).error();
  for (auto& q : *queues) {
    auto one = queue_from(q, fds);
    if (!one)
      return std::move(one).error();
    out.queues.push_back(std::move(one).value());
  }
  auto sink = fds.take_optional(args, "interrupt_fd", FdPool::Kind::eventfd);
  if (!sink)
    return std::move(sink).error();
  if (auto d = args.done(); !d)
    return std::move(d).error();
  out.driver_features = *features;
  out.sink.eventfd = std::move(sink).value();
  return out;
}

Result<NegotiateOptions> negotiate_from(control::Args& args, NegotiateOptions defaults) {
  auto queues = args.u64("queues", 1, 0x8000, defaults.queues);
  if (!queues)
    return std::move(queues).error();
  auto size = args.u64("max_queue_size", 1, 32768, defaults.max_queue_size);
  if (!size)
    return std::move(size).error();
  if (auto d = args.done(); !d)
    return std::move(d).error();
  defaults.queues = static_cast<uint16_t>(*queues);
  defaults.max_queue_size = static_cast<uint16_t>(*size);
  return defaults;
}

Result<DeviceSetup> device_setup_from(control::Args& args) {
  DeviceSetup out;
  auto id = args.string("id", 32);
  if (!id)
    return std::move(id).error();
  if (!control::valid_device_id(*id))
    return make_error(errc::bad_message, "command",
                      "args.id: a device id is 1..32 letters, digits, '-', '_', '.'");
  auto backend = args.string("backend", 107);
  if (!backend)
    return std::move(backend).error();
  auto kind = args.one_of("kind", {"blk", "net", "fs"}, std::string("blk"));
  if (!kind)
    return std::move(kind).error();
  NegotiateOptions n;
  n.kind = *device_kind_from_string(*kind);
  n.inflight = true;  // as for the devices on the command line (attach)
  auto opts = negotiate_from(args, n);
  if (!opts)
    return std::move(opts).error();
  out.id = *id;
  out.backend = *backend;
  out.negotiate = *opts;
  return out;
}

// ---- results -> JSON ------------------------------------------------------------------

json info_json(const DeviceInfo& info) {
  json shmem = json::array();
  for (size_t i = 0; i < info.shmem_sizes.size(); ++i)
    if (info.shmem_sizes[i] != 0)
      shmem.push_back({{"shmid", i}, {"size", number(info.shmem_sizes[i])}});
  json out = {{"kind", name(info.kind)},
              {"features", number(info.backend_features)},
              {"protocol_features", number(info.protocol_features)},
              {"queue_num", info.queue_num},
              {"max_queue_size", info.max_queue_size},
              {"max_mem_slots", info.max_mem_slots},
              {"config_size", info.config_size},
              {"backend_channel", info.backend_channel},
              {"shmem", shmem}};
  if (!info.kind_doubt.empty())
    out["kind_doubt"] = info.kind_doubt;
  return out;
}

json status_json(const DeviceStatus& s, bool vmm_owns_shmem) {
  json out = info_json(s.info);
  out["state"] = to_string(s.state);
  out["backend"] = s.socket;
  out["acked_features"] = number(s.acked_features);
  out["virtio_status"] = s.virtio_status;
  out["last_error"] = s.last_error;
  out["notices"] = s.notices;
  out["reconnects"] = s.reconnects;
  out["fenced"] = s.fenced;
  out["reconnect_attempts"] = s.reconnect_attempts;
  if (!s.vmm.is_null())
    out["vmm"] = s.vmm;
  out["inflight"] = s.inflight;
  out["dirty_log"] = s.dirty_log_size != 0 ? json(number(s.dirty_log_size)) : json(nullptr);
  out["shmem_owner"] = vmm_owns_shmem ? "vmm" : "vufront";
  json memory = json::array();
  for (const auto& r : s.memory)
    memory.push_back({{"gpa", number(r.gpa)}, {"size", number(r.size)}, {"offset", number(r.fd_offset)}});
  out["memory"] = memory;
  json queues = json::array();
  for (const auto& q : s.queues)
    queues.push_back({{"index", q.index}, {"size", q.size}, {"base", q.base}, {"interrupts", q.interrupts}});
  out["queues"] = queues;
  return out;
}

json transfer_json(const SnapshotInfo& info) {
  json queues = json::array();
  for (const auto& q : info.queues)
    queues.push_back({{"index", q.index}, {"size", q.size}, {"base", q.base}});
  char sum[17];
  std::snprintf(sum, sizeof sum, "%016llx", static_cast<unsigned long long>(info.checksum));
  return {{"path", info.path},
          {"state_bytes", number(info.state_bytes)},
          {"checksum", sum},
          {"features", number(info.features)},
          {"queues", queues},
          {"elapsed_ms", static_cast<double>(info.elapsed_us) / 1000.0}};
}

json event_json(const std::string& device, const DeviceEvent& ev) {
  switch (ev.kind) {
    case DeviceEvent::Kind::state_changed:
      return control::make_event("state_changed", device, {{"state", to_string(ev.state)}});
    case DeviceEvent::Kind::config_changed:
      return control::make_event("config_changed", device);
    case DeviceEvent::Kind::backend_lost:
      return control::make_event("backend_lost", device, {{"reason", ev.detail}});
    case DeviceEvent::Kind::reconnecting:
      return control::make_event("reconnecting", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::resumed:
      return control::make_event("resumed", device, {{"state", to_string(ev.state)}, {"detail", ev.detail}});
    case DeviceEvent::Kind::resume_failed:
      return control::make_event("resume_failed", device, {{"reason", ev.detail}});
    case DeviceEvent::Kind::backend_notice:
      return control::make_event("backend_notice", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::vring_error:
      return control::make_event("vring_error", device, {{"queue", ev.queue}});
    case DeviceEvent::Kind::vmm_connected:
      return control::make_event("vmm_connected", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::vmm_disconnected:
      return control::make_event("vmm_disconnected", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::fenced:
      return control::make_event("fenced", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::vmm_backend_away:
      return control::make_event("vmm_backend_away", device, {{"detail", ev.detail}});
    case DeviceEvent::Kind::vmm_resumed:
      // the detail starts with how: "exact: ..." or "best effort: ..." (vmm_port)
      return control::make_event(
          "vmm_resumed", device,
          {{"resume", ev.detail.rfind("best effort", 0) == 0 ? "best_effort" : "exact"}, {"detail", ev.detail}});
    case DeviceEvent::Kind::dirty_log_resized:
      // the new log goes with it as fd 0 (control_server)
      return control::make_event("dirty_log_resized", device,
                                 {{"fd", 0}, {"size", number(ev.size)}, {"detail", ev.detail}});
    case DeviceEvent::Kind::shmem_mapped:
    case DeviceEvent::Kind::shmem_unmapped:
      return nullptr;  // the VMM's mapper sends shmem_map / shmem_unmap itself
  }
  return nullptr;
}

}  // namespace vufront::actors
