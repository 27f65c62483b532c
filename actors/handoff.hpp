#pragma once
// Hand-offs of heap data from a plain thread (a reader) to an actor, marked
// for ThreadSanitizer.
//
// A reader thread builds an object (a control packet, a back-end request with
// its fds) and sends it in a CAF message; the actor reads and destroys it on
// another thread. CAF's mailbox orders the two, but Debian's libcaf_core is not
// built with -fsanitize=thread, so TSan cannot see that order and would report
// the actor's access as a race. handed_over() before the send and taken_over()
// in the handler tell it. Without TSan both are empty.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace vufront::actors {

/// The sending thread is done with `object`: call just before the send.
inline void handed_over([[maybe_unused]] const void* object) {
#if defined(__SANITIZE_THREAD__)
  if (object != nullptr)
    __tsan_release(const_cast<void*>(object));
#endif
}

/// The receiving actor takes `object` over: call first in the handler.
inline void taken_over([[maybe_unused]] const void* object) {
#if defined(__SANITIZE_THREAD__)
  if (object != nullptr)
    __tsan_acquire(const_cast<void*>(object));
#endif
}

}  // namespace vufront::actors

namespace vufront::actors {

/// A value an event-loop task made, about to leave its actor in a CAF
/// message. Under TSan it is copied here, on the actor's thread: TSan cannot
/// follow it through CAF's mailboxes (see above) and would take the loop
/// thread's writes for a race with whoever reads it at the end of the chain;
/// the actor's own copy is what CAF hands on before the loop existed too.
/// Without TSan it is the value itself.
template <class T>
T pass_on(T&& value) {
#if defined(__SANITIZE_THREAD__)
  T copy(value);
  return copy;
#else
  return std::forward<T>(value);
#endif
}

}  // namespace vufront::actors
