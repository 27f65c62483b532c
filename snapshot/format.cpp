#include "snapshot/format.hpp"

#include <new>

#include <xxhash.h>
#if VUFRONT_XXH3_DISPATCH
// The same XXH3-64, its vector code (SSE2, AVX2, AVX-512) chosen at run time
// by the library: 24 GB/s against 12 on the reference box.
#include <xxh_x86dispatch.h>
#define VUFRONT_XXH3_UPDATE XXH3_64bits_update_dispatch
#define VUFRONT_XXH3_ONESHOT XXH3_64bits_dispatch
#else
#define VUFRONT_XXH3_UPDATE XXH3_64bits_update
#define VUFRONT_XXH3_ONESHOT XXH3_64bits
#endif

namespace vufront::snapshot {

struct StateHasher::State {
  XXH3_state_t* xxh = nullptr;
  State() : xxh(XXH3_createState()) {
    if (xxh == nullptr)
      throw std::bad_alloc();
  }
  ~State() { XXH3_freeState(xxh); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

StateHasher::StateHasher() : state_(std::make_unique<State>()) { reset(); }
StateHasher::~StateHasher() = default;
StateHasher::StateHasher(StateHasher&&) noexcept = default;
StateHasher& StateHasher::operator=(StateHasher&&) noexcept = default;

void StateHasher::reset() { (void)XXH3_64bits_reset(state_->xxh); }

void StateHasher::update(const uint8_t* data, size_t len) {
  if (len != 0)
    (void)VUFRONT_XXH3_UPDATE(state_->xxh, data, len);
}

uint64_t StateHasher::digest() const { return XXH3_64bits_digest(state_->xxh); }

uint64_t StateHasher::of(const uint8_t* data, size_t len) { return VUFRONT_XXH3_ONESHOT(data, len); }

}  // namespace vufront::snapshot
