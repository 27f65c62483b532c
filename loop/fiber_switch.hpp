#pragma once
// FiberSwitch: what AddressSanitizer and ThreadSanitizer must be told when the
// loop thread switches between its own stack and a task's (Boost 1.74's
// Context does not tell them). Without it ASan takes the other stack for an
// overflow and TSan mixes the two shadow stacks. Compiles to nothing in
// builds without a sanitizer. Used only by loop/event_loop.cpp.

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define VUFRONT_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VUFRONT_FIBER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define VUFRONT_FIBER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VUFRONT_FIBER_TSAN 1
#endif
#endif

#ifdef VUFRONT_FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef VUFRONT_FIBER_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace vufront::loop {

class FiberSwitch {
public:
  FiberSwitch() {
#ifdef VUFRONT_FIBER_TSAN
    task_ = __tsan_create_fiber(0);
#endif
  }
  ~FiberSwitch() {
#ifdef VUFRONT_FIBER_TSAN
    __tsan_destroy_fiber(task_);
#endif
  }
  FiberSwitch(const FiberSwitch&) = delete;
  FiberSwitch& operator=(const FiberSwitch&) = delete;

  /// The task's stack, once allocated.
  void set_stack(const void* bottom, size_t size) noexcept {
    task_bottom_ = bottom;
    task_size_ = size;
  }

  /// Loop stack, right before switching into the task.
  void entering_task() noexcept {
#ifdef VUFRONT_FIBER_TSAN
    loop_ = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(task_, 0);
#endif
#ifdef VUFRONT_FIBER_ASAN
    __sanitizer_start_switch_fiber(&loop_fake_, task_bottom_, task_size_);
#endif
  }
  /// Loop stack, right after the task switched back.
  void left_task() noexcept {
#ifdef VUFRONT_FIBER_ASAN
    __sanitizer_finish_switch_fiber(loop_fake_, nullptr, nullptr);
#endif
  }
  /// Task stack, right after the switch into it.
  void entered_task() noexcept {
#ifdef VUFRONT_FIBER_ASAN
    __sanitizer_finish_switch_fiber(task_fake_, &loop_bottom_, &loop_size_);
#endif
  }
  /// Task stack, right before switching back to the loop; `for_good` when
  /// the task has ended and its stack will not be used again.
  void leaving_task(bool for_good) noexcept {
#ifdef VUFRONT_FIBER_ASAN
    __sanitizer_start_switch_fiber(for_good ? nullptr : &task_fake_, loop_bottom_, loop_size_);
#else
    (void)for_good;
#endif
#ifdef VUFRONT_FIBER_TSAN
    __tsan_switch_to_fiber(loop_, 0);
#endif
  }

private:
  const void* task_bottom_ = nullptr;
  size_t task_size_ = 0;
  [[maybe_unused]] const void* loop_bottom_ = nullptr;
  [[maybe_unused]] size_t loop_size_ = 0;
  [[maybe_unused]] void* loop_fake_ = nullptr;
  [[maybe_unused]] void* task_fake_ = nullptr;
  [[maybe_unused]] void* task_ = nullptr;
  [[maybe_unused]] void* loop_ = nullptr;
};

}  // namespace vufront::loop
