#include "memory/sigbus_guard.hpp"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

namespace vufront {
namespace {

constexpr const char* kGuard = "SIGBUS guard";

enum SlotState : int { kFree = 0, kClaimed = 1, kActive = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  std::atomic<uintptr_t> start{0};
  std::atomic<size_t> len{0};
  std::atomic<unsigned> faults{0};
};
static_assert(std::atomic<int>::is_always_lock_free);
static_assert(std::atomic<uintptr_t>::is_always_lock_free);
static_assert(std::atomic<size_t>::is_always_lock_free);
static_assert(std::atomic<unsigned>::is_always_lock_free);

Slot g_slots[SigbusGuard::kSlots];
std::atomic<uintptr_t> g_page_mask{0};
struct sigaction g_previous {};  // written under g_install, while ours is not installed
std::mutex g_install;

/// The handler that was there before ours. SIG_DFL: back to the default
/// action and the signal raised again (pending until we return, since
/// SIGBUS is blocked in its handler; a fault would also recur): the process
/// dies by SIGBUS as it would have without us.
void chain(int sig, siginfo_t* info, void* ctx) {
  const struct sigaction& p = g_previous;
  if (p.sa_flags & SA_SIGINFO) {
    if (p.sa_sigaction != nullptr)
      p.sa_sigaction(sig, info, ctx);
    return;
  }
  if (p.sa_handler == SIG_IGN && info->si_code <= 0)
    return;  // an ignored SIGBUS sent by kill stays ignored
  if (p.sa_handler == SIG_DFL || p.sa_handler == SIG_IGN) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
    ::raise(sig);
    return;
  }
  p.sa_handler(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
  const int saved = errno;
  if (info != nullptr && info->si_code == BUS_ADRERR) {
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    const uintptr_t mask = g_page_mask.load(std::memory_order_relaxed);
    for (Slot& s : g_slots) {
      if (s.state.load(std::memory_order_acquire) != kActive)
        continue;
      const uintptr_t start = s.start.load(std::memory_order_relaxed);
      if (addr - start >= s.len.load(std::memory_order_relaxed))
        continue;
      // A zero page over the one past the file's end; the access is retried.
      void* page = reinterpret_cast<void*>(addr & mask);
      void* p = ::mmap(page, ~mask + 1, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (p == MAP_FAILED)
        break;  // cannot repair: as if unguarded
      s.faults.fetch_add(1, std::memory_order_relaxed);
      errno = saved;
      return;
    }
  }
  errno = saved;
  chain(sig, info, ctx);
}

/// Ours installed, unless it is already: the handler found there becomes
/// the one to chain to. Checked on every guard(), not once: a library (or a
/// test framework between test cases) that put its own handler back has
/// also dropped ours. Returns 0 or errno.
int install() {
  std::lock_guard<std::mutex> lock(g_install);
  g_page_mask.store(~(static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE)) - 1));
  struct sigaction now {};
  if (::sigaction(SIGBUS, nullptr, &now) != 0)
    return errno;
  if ((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigbus)
    return 0;
  g_previous = now;
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGBUS, &sa, nullptr) != 0)
    return errno;
  return 0;
}

}  // namespace

Result<SigbusGuard> SigbusGuard::guard(const void* start, size_t len) {
  if (start == nullptr || len == 0)
    return make_error(errc::invalid_argument, kGuard, "empty range");
  if (int err = install(); err != 0)
    return make_error(errc::io_error, kGuard, "sigaction(SIGBUS)", err);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    int expected = kFree;
    if (!s.state.compare_exchange_strong(expected, kClaimed, std::memory_order_acquire))
      continue;
    s.start.store(reinterpret_cast<uintptr_t>(start), std::memory_order_relaxed);
    s.len.store(len, std::memory_order_relaxed);
    s.faults.store(0, std::memory_order_relaxed);
    s.state.store(kActive, std::memory_order_release);
    return SigbusGuard(i);
  }
  return make_error(errc::busy, kGuard,
                    "all " + std::to_string(kSlots) + " guarded ranges are in use");
}

SigbusGuard::~SigbusGuard() { release(); }

SigbusGuard::SigbusGuard(SigbusGuard&& other) noexcept : slot_(other.slot_) { other.slot_ = -1; }

SigbusGuard& SigbusGuard::operator=(SigbusGuard&& other) noexcept {
  if (this != &other) {
    release();
    slot_ = other.slot_;
    other.slot_ = -1;
  }
  return *this;
}

unsigned SigbusGuard::faults() const noexcept {
  if (slot_ < 0)
    return 0;
  return g_slots[slot_].faults.load(std::memory_order_relaxed);
}

void SigbusGuard::release() noexcept {
  if (slot_ < 0)
    return;
  g_slots[slot_].state.store(kFree, std::memory_order_release);
  slot_ = -1;
}

int SigbusGuard::slots_in_use() noexcept {
  int n = 0;
  for (const Slot& s : g_slots)
    n += s.state.load(std::memory_order_acquire) != kFree ? 1 : 0;
  return n;
}

}  // namespace vufront
