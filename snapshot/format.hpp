#pragma once
// The byte layout of a snapshot file (docs/snapshot-format.md) and the
// streaming state checksum. Shared by the writer, the reader and the tests.
//
//   [0, 24)            header: magic "VUFSNAP\0", u32 version, u32 manifest
//                      length M, u32 head size H, u32 reserved (0); little-endian
//   [24, 24+M)         the manifest, UTF-8 JSON
//   [24+M, H)          zero bytes
//   [H, H+state_length) the raw back-end state, to the end of the file

#include <cstddef>
#include <cstdint>
#include <memory>

namespace vufront::snapshot {

inline constexpr char kMagic[8] = {'V', 'U', 'F', 'S', 'N', 'A', 'P', '\0'};
inline constexpr size_t kHeaderSize = 24;
/// Head size the writer uses: header + manifest + padding. The state starts
/// at this (page-aligned) offset. Big enough for a manifest at every bound of
/// manifest.hpp (proved by a test).
inline constexpr uint32_t kHeadSize = 128 * 1024;
/// Largest head size a reader accepts (a future writer may choose another).
inline constexpr uint32_t kMaxHeadSize = 1024 * 1024;

/// Streaming XXH3-64 (seed 0) of the state bytes.
class StateHasher {
public:
  StateHasher();
  ~StateHasher();
  StateHasher(StateHasher&&) noexcept;
  StateHasher& operator=(StateHasher&&) noexcept;

  void reset();
  void update(const uint8_t* data, size_t len);
  [[nodiscard]] uint64_t digest() const;

  /// One-shot hash (tests and small buffers).
  [[nodiscard]] static uint64_t of(const uint8_t* data, size_t len);

private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace vufront::snapshot
