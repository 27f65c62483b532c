#include "loop/event_loop.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <poll.h>
#include <sys/resource.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#include "base/error.hpp"
#include "base/wait.hpp"
#include "loop/fiber_switch.hpp"
#include "loop/wait_set.hpp"

namespace vufront::loop {

namespace asio = boost::asio;
namespace ctx = boost::context;

namespace {

std::atomic<int> live{0};

/// A task's stack: 256 KiB of which only what is touched costs memory, and
/// a guard page below. Stacks are kept for reuse (their touched pages too:
/// a first touch costs about 12 µs a page here).
constexpr size_t stack_size = 256 * 1024;
constexpr size_t stacks_kept = 64;

class StackPool {
public:
  ctx::stack_context take() {
    if (!free_.empty()) {
      auto sc = free_.back();
      free_.pop_back();
      return sc;
    }
    return ctx::protected_fixedsize_stack(stack_size).allocate();
  }
  void give(ctx::stack_context& sc) noexcept {
    if (free_.size() < stacks_kept) {
      try {
        free_.push_back(sc);
        return;
      } catch (...) {
      }
    }
    ctx::protected_fixedsize_stack(stack_size).deallocate(sc);
  }

private:
  std::vector<ctx::stack_context> free_;
};

/// The allocator a fiber copies: the loop's pool, and where to note the stack
/// (the sanitizers need its bounds).
struct PooledStack {
  StackPool* pool;
  FiberSwitch* note;
  ctx::stack_context allocate() {
    auto sc = pool->take();
    note->set_stack(static_cast<char*>(sc.sp) - sc.size, sc.size);
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept { pool->give(sc); }
};

}  // namespace

struct EventLoop::Impl {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  /// Makes Asio open its reactor (epoll fd, wake-up eventfd, timerfd) with
  /// the loop rather than at the first wait, so they are the loop's fds.
  asio::steady_timer opens_reactor{io};
  StackPool stacks;
  std::unordered_map<Task*, std::shared_ptr<Task>> tasks;  // started, not ended
  std::thread thread;
};

/// One task: its fiber, the fds it waits on and the timer of its current wait.
class Task final : public WaitHook, public std::enable_shared_from_this<Task> {
public:
  Task(EventLoop::Impl& loop, std::function<void()> body, const char* what)
      : loop_(loop), body_(std::move(body)), what_(what), waits_(loop.io), timer_(loop.io) {}

  std::shared_future<void> ended() { return ended_.get_future().share(); }

  /// Loop thread: makes the fiber and runs it until it first waits.
  void start() {
    try {
      fiber_ = ctx::fiber(std::allocator_arg, PooledStack{&loop_.stacks, &switch_},
                          [this](ctx::fiber&& back) { return run(std::move(back)); });
    } catch (...) {
      std::fprintf(stderr, "vufront: cannot start task %s (no memory for its stack)\n", what_);
      end();
      return;
    }
    resume();
  }

  /// Loop thread: cuts the current wait short (TaskHandle::interrupt).
  void interrupt() {
    if (waiting_)
      release_waits();  // the cancelled waits' handlers resume the task
  }

  int wait(pollfd* fds, nfds_t n, int timeout_ms) override;
  void closing(int fd) noexcept override { waits_.forget(fd); }

private:
  ctx::fiber run(ctx::fiber&& back) {
    back_ = std::move(back);
    switch_.entered_task();
    try {
      body_();
    } catch (...) {
      std::fprintf(stderr, "vufront: task %s ended by an exception\n", what_);
    }
    body_ = nullptr;  // its captures go here, on the loop thread, while the task still exists
    finished_ = true;
    switch_.leaving_task(/*for_good=*/true);
    return std::move(back_);
  }

  /// Loop thread: runs the task until it waits again or ends.
  void resume() {
    auto keep = shared_from_this();
    WaitHook* outer = set_wait_hook(this);
    switch_.entering_task();
    fiber_ = std::move(fiber_).resume();
    switch_.left_task();
    set_wait_hook(outer);
    if (finished_)
      end();
  }

  /// The task: back to the loop until a handler resumes it.
  void suspend() {
    switch_.leaving_task(/*for_good=*/false);
    back_ = std::move(back_).resume();
    switch_.entered_task();
  }

  void wake(uint64_t generation) {
    if (!waiting_ || generation != generation_)
      return;  // a wait that is over already
    waiting_ = false;
    resume();
  }

  void release_waits() noexcept {
    waits_.clear();
    timer_.cancel();
  }

  void end() {
    release_waits();
    finished_ = true;
    --live;
    ended_.set_value();
    loop_.tasks.erase(this);  // may drop the last reference: nothing after this
  }

  EventLoop::Impl& loop_;
  std::function<void()> body_;
  const char* what_;
  FiberSwitch switch_;
  ctx::fiber fiber_;  ///< the task, while suspended
  ctx::fiber back_;   ///< the loop, while the task runs
  bool finished_ = false;
  std::promise<void> ended_;

  bool waiting_ = false;
  uint64_t generation_ = 0;
  WaitSet waits_;  ///< the fds of the last wait, registered (wait_set.hpp)
  asio::steady_timer timer_;
};

int Task::wait(pollfd* fds, nfds_t n, int timeout_ms) {
  if (timeout_ms == 0)
    return ::poll(fds, n, 0);
  // No poll() first: a caller waits after its own try found nothing (a
  // recvmsg or sendmsg that said EAGAIN), so that poll() would find nothing
  // too, one syscall per wait of a connection step. An fd that is ready
  // already is not missed: Asio re-arms the task's epoll fd with
  // EPOLL_CTL_MOD when the wait starts (epoll_reactor::start_op), which
  // reports what is ready then; the task resumes on the loop's next turn.
  const uint64_t generation = ++generation_;
  bool any_fd = false;
  for (nfds_t i = 0; i < n && !any_fd; ++i)
    any_fd = fds[i].fd >= 0;
  if (!any_fd && timeout_ms < 0) {
    errno = EINVAL;  // would wait for ever: no fd and no timeout
    return -1;
  }
  // The registrations stay after the wait, for the next one (wait_set.hpp).
  if (auto r = waits_.update(fds, n); !r) {
    waits_.clear();
    // an fd the loop cannot watch still gets poll()'s verdict: POLLNVAL
    // for a closed one, ready for a regular file
    if (int now = ::poll(fds, n, 0); now != 0)
      return now;
    errno = r.error().sys_errno != 0 ? r.error().sys_errno : EIO;
    return -1;
  }
  if (any_fd)
    waits_.async_wait([self = shared_from_this(), generation](const boost::system::error_code&) {
      self->wake(generation);
    });
  if (timeout_ms > 0) {
    timer_.expires_after(std::chrono::milliseconds(timeout_ms));
    timer_.async_wait([self = shared_from_this(), generation](const boost::system::error_code&) {
      self->wake(generation);
    });
  }
  waiting_ = true;
  suspend();
  if (any_fd)
    waits_.cancel();  // when the timer ended it (nothing to do otherwise)
  if (timeout_ms > 0)
    timer_.cancel();
  return ::poll(fds, n, 0);
}

// ---- TaskHandle ------------------------------------------------------------------

bool TaskHandle::done() const {
  return !ended_.valid() ||
         ended_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

void TaskHandle::join() {
  if (done())
    return;
  if (EventLoop::instance().on_loop_thread()) {
    if (auto t = task_.lock())
      t->interrupt();
    return;
  }
  ended_.wait();
}

void TaskHandle::interrupt() {
  if (done())
    return;
  auto& loop = EventLoop::instance();
  if (loop.on_loop_thread()) {
    if (auto t = task_.lock())
      t->interrupt();
  } else {
    loop.post([w = task_] {
      if (auto t = w.lock())
        t->interrupt();
    });
  }
}

// ---- EventLoop -------------------------------------------------------------------

EventLoop& EventLoop::instance() {
  // Never destroyed: tasks still waiting at exit keep their stacks, and the
  // thread is stopped and joined by the atexit handler below.
  static EventLoop* loop = [] {
    auto* l = new EventLoop;
    std::atexit([] {
      auto& impl = *instance().impl_;
      impl.io.stop();
      if (impl.thread.joinable())
        impl.thread.join();
    });
    return l;
  }();
  return *loop;
}

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()) {
  // Each task that waits keeps an epoll fd of its own (wait_set.hpp), on
  // top of the fds it waits on: take the fds the hard limit allows (the
  // soft limit of 1024 is for select(), which vufront does not use).
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &r);
  }
  impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

EventLoop::~EventLoop() = default;

TaskHandle EventLoop::spawn(std::function<void()> body, const char* what) {
  auto task = std::make_shared<Task>(*impl_, std::move(body), what);
  TaskHandle h;
  h.task_ = task;
  h.ended_ = task->ended();
  ++live;
  // The loop holds the only strong references from here on, so the task
  // is destroyed on the loop thread.
  asio::post(impl_->io, [impl = impl_.get(), task = std::move(task)] {
    impl->tasks.emplace(task.get(), task);
    task->start();
  });
  return h;
}

void EventLoop::post(std::function<void()> fn) {
  asio::post(impl_->io, std::move(fn));
}

bool EventLoop::on_loop_thread() const noexcept {
  // impl_->thread is set before the loop is shared (a static's initialiser)
  return std::this_thread::get_id() == impl_->thread.get_id();
}

int EventLoop::live_tasks() noexcept {
  return live.load();
}

}  // namespace vufront::loop
