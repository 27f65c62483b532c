#include "snapshot/format.hpp"

#include <new>

#include <xxhash.h>

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
    (void)XXH3_64bits_update(state_->xxh, data, len);
}

uint64_t StateHasher::digest() const { return XXH3_64bits_digest(state_->xxh); }

uint64_t StateHasher::of(const uint8_t* data, size_t len) { return XXH3_64bits(data, len); }

}  // namespace vufront::snapshot
