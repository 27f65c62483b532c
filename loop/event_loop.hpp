#pragma once
// EventLoop: one thread that waits for every device's sockets and eventfds.
//
// Code that waits on fds (a connection step waiting for a reply, the
// back-end channel's reader, the worker's hang-up and interrupt watch) runs
// here as a *task*: a function on a stack of its own (a Boost.Context fiber)
// that the loop thread runs until it waits. Its waits go through wait_fds()
// (base/wait.hpp), which inside a task registers the fds with the loop
// (Boost.Asio's io_context over epoll; the registrations stay for the task's
// next wait, loop/wait_set.hpp) and suspends the task until one is ready or
// the time is up, so one thread serves any number of tasks, and the
// synchronous code (BackendClient, the bring-up, the readers' loops) is the
// same that runs on an ordinary thread. docs/architecture.md ("How
// connections wait") says why.
//
// Rules for a task: it may block only through wait_fds() (a blocking
// syscall stalls every device); it must not throw (an exception ends it);
// it touches the data it shares with an actor only through what was handed
// over with it (values, shared_ptr) and messages.
//
// The loop and its thread live as long as the process (started on first
// use, stopped at exit). No mutex: tasks and their waits live on the loop
// thread; other threads reach it only by post().

#include <atomic>
#include <functional>
#include <future>
#include <memory>

namespace vufront::loop {

class Task;

/// The starter's view of a task: wait for its end, or cut its wait short.
class TaskHandle {
public:
  TaskHandle() = default;

  /// Whether the task has ended (or never started).
  [[nodiscard]] bool done() const;
  /// Blocks until the task has ended. On the loop thread, where that would
  /// never return, it does not wait: it interrupts the task instead, so the
  /// task touches none of the fds of its current wait again (see interrupt).
  void join();
  /// Ends the task's current wait at once: its fds are no longer watched
  /// (every registration of the task is dropped; its next wait makes them
  /// anew) and its wait_fds() returns what a zero-timeout poll() says now. The
  /// task is expected to look at its own stop flag then. On the loop thread
  /// this happens before interrupt() returns; elsewhere it is posted.
  void interrupt();

private:
  friend class EventLoop;
  /// Weak: a task is owned on the loop thread only, so it is destroyed there.
  std::weak_ptr<Task> task_;
  std::shared_future<void> ended_;
};

class EventLoop {
public:
  /// The process's loop; its thread starts on the first call.
  static EventLoop& instance();

  /// Starts `body` as a task on the loop thread and returns at once.
  /// `what` names it in the log of a task that threw.
  TaskHandle spawn(std::function<void()> body, const char* what);

  /// Runs `fn` on the loop thread, not as a task: it must not wait.
  void post(std::function<void()> fn);

  /// Whether the caller is the loop thread.
  [[nodiscard]] bool on_loop_thread() const noexcept;

  /// Tasks started and not ended, in this process (tests, leak checks).
  [[nodiscard]] static int live_tasks() noexcept;

  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  struct Impl;

private:
  EventLoop();
  ~EventLoop();
  std::unique_ptr<Impl> impl_;
};

}  // namespace vufront::loop
