#pragma once
// The virtio-blk device model (virtio 1.2 §5.2): the disk (a memfd, or a
// file with --image), its config space and request execution on popped
// chains. No sockets: every request queue is served alike, each popped
// chain executed and pushed back with its `used.len`.

#include <cstdint>
#include <string>

#include "base/unique_fd.hpp"
#include "base/error.hpp"
#include "backend/device.hpp"
#include "protocol/virtio_config.hpp"
#include "virtio/device_queue.hpp"

namespace vufront::backend {

/// virtio-blk feature bits offered.
namespace blk_feature {
inline constexpr unsigned seg_max = 2;
inline constexpr unsigned blk_size = 6;
inline constexpr unsigned flush = 9;
inline constexpr unsigned mq = 12;
}  // namespace blk_feature

/// Request types and status values (virtio 1.2 §5.2.6).
inline constexpr uint32_t blk_t_in = 0, blk_t_out = 1, blk_t_flush = 4, blk_t_get_id = 8;
inline constexpr uint8_t blk_s_ok = 0, blk_s_ioerr = 1, blk_s_unsupp = 2;
inline constexpr const char* blk_serial = "vufront-backend";
inline constexpr uint32_t blk_seg_max = 126;

class BlkDevice final : public Device {
public:
  BlkDevice(const BlkDevice&) = delete;
  BlkDevice& operator=(const BlkDevice&) = delete;
  BlkDevice(BlkDevice&& other) noexcept;
  BlkDevice& operator=(BlkDevice&&) = delete;
  ~BlkDevice() override;

  /// A RAM disk of `size` bytes (memfd), or the file `image` (created with
  /// `size` bytes when missing or empty; otherwise its own size is used).
  /// Errors: io_error, invalid_argument (image size not a multiple of 512).
  [[nodiscard]] static Result<BlkDevice> open(uint64_t size, const std::string& image,
                                              uint16_t num_queues);

  /// Executes one request chain; returns used.len (bytes written into
  /// device-writable buffers including the status byte), 0 if the chain has
  /// no room for a status byte (malformed, nothing written).
  [[nodiscard]] uint32_t execute(const virtio::Chain& chain);

  [[nodiscard]] virtio::BlkConfig blk_config() const noexcept;
  [[nodiscard]] uint64_t size() const noexcept { return size_; }
  [[nodiscard]] uint8_t* data() noexcept { return data_; }
  /// The disk's fd (memfd or image), still owned here; shared by SHMEM_MAP.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  // Device
  [[nodiscard]] DeviceKind kind() const noexcept override { return DeviceKind::blk; }
  [[nodiscard]] uint32_t num_vrings() const noexcept override { return num_queues_; }
  /// FLUSH, BLK_SIZE, SEG_MAX, and MQ with more than one queue.
  [[nodiscard]] uint64_t device_features() const noexcept override;
  [[nodiscard]] std::vector<uint8_t> config() const override;
  /// Executes every available chain of request queue `index`.
  void process(uint32_t index, Rings& rings) override;
  [[nodiscard]] uint8_t* state_data() noexcept override { return data_; }
  [[nodiscard]] uint64_t state_bytes() const noexcept override { return size_; }
  /// The disk (SHMEM_MAP shares it).
  [[nodiscard]] SharedWindow shared_window() const noexcept override { return {fd_.get(), size_}; }
  /// Writes the disk back (msync) for FLUSH. Errors: io_error.
  [[nodiscard]] Result<void> flush();

private:
  BlkDevice() = default;
  UniqueFd fd_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint16_t num_queues_ = 1;
  bool file_backed_ = false;
};

}  // namespace vufront::backend
