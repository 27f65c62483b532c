#pragma once
// vufront-backend command line: options and fault-injection specs.
// parse_options() is CLI11-free in its interface so the rest of backend/
// never sees CLI11.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "protocol/messages.hpp"

namespace vufront::backend {

/// One fault switch: what to do when request `request` arrives for the
/// `nth` time (1-based, counted over the daemon's lifetime).
/// oversize: send the front-end one back-end request whose header announces
/// a body larger than any back-end request may have (--backend-req-oversize).
enum class FaultKind { close, crash, delay, oversize };

struct FaultSpec {
  FaultKind kind = FaultKind::close;
  uint32_t request = 0;  ///< front-end request code
  uint32_t nth = 1;      ///< occurrence that triggers (close/crash); delay: every one
  uint32_t delay_ms = 0; ///< delay only
};

/// Faults of the device-state transfer (SET_DEVICE_STATE_FD, vhost-user spec "Migrating back-end state");
/// what each does is decided in backend/faults.hpp (state_transfer_plan).
struct StateFaults {
  bool own_fd = false;   ///< --state-own-fd: reply with the back-end's own pipe end
  bool endless = false;  ///< --state-endless: a save never ends (until EPIPE)
  std::optional<uint64_t> crash_after;  ///< --state-crash-after BYTES: _exit mid-transfer
  std::optional<uint64_t> stall_after;  ///< --state-stall-after BYTES: stop moving data
};

/// A feature to withhold from the offer.
struct Refusal {
  bool protocol = false;  ///< protocol feature (else virtio feature)
  unsigned bit = 0;
};

struct Options {
  std::string socket_path;
  DeviceKind device = DeviceKind::blk;  ///< blk or net
  uint64_t size = 64ull << 20;          ///< blk only
  std::string image;                    ///< blk only
  uint32_t queues = 1;                  ///< blk: request queues; net: queue pairs
  std::array<uint8_t, 6> mac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};  ///< net only
  bool once = false;
  bool packed = true;
  uint64_t shmem_size = 0;
  std::vector<Refusal> refusals;
  std::vector<FaultSpec> faults;
  StateFaults state_faults;
  std::string pidfile;
  bool verbose = false;
  /// Client mode: connect to the front-end's socket (retrying while it does
  /// not listen) instead of listening; after a disconnect, connect again.
  bool connect = false;
  /// --crash-in-request N: _exit after taking the N-th request (counted over
  /// the daemon's life) off a ring, before completing it: a request left in
  /// flight, for front-ends to resume.
  uint32_t crash_in_request = 0;
  /// --crash-outstanding K: --crash-in-request waits, from its N-th request
  /// on, for one taken while the driver has at least K requests outstanding
  /// on the ring (0: the N-th, whatever the ring holds).
  uint32_t crash_outstanding = 0;
  /// --crash-in-completion N: _exit right after publishing the N-th used
  /// entry (counted over the daemon's life), before the in-flight region
  /// records the completion: the next back-end must finish the update, not
  /// complete the request a second time.
  uint32_t crash_in_completion = 0;
  /// --short-vring-base: answer a packed ring's GET_VRING_BASE with bits
  /// 0-15 only (avail index and wrap counter, 0 above), as DPDK's
  /// librte_vhost does; SET_VRING_BASE still takes both halves.
  bool short_vring_base = false;
  /// --forget-log: with LOG_ALL acked, never mark the dirty log (a back-end
  /// whose writes a migration would lose; the checks must catch it).
  bool forget_log = false;
};

/// "64M", "4096", "1G" -> bytes. Errors: invalid_argument.
[[nodiscard]] Result<uint64_t> parse_size(const std::string& text);
/// "SET_MEM_TABLE" / "5" -> 5. Errors: invalid_argument (unknown name or code).
[[nodiscard]] Result<uint32_t> parse_request(const std::string& text);
/// "REQ:MS" (delay) or "REQ[:N]" (close/crash). Errors: invalid_argument.
[[nodiscard]] Result<FaultSpec> parse_fault(FaultKind kind, const std::string& text);
/// A feature name or bit: "REPLY_ACK", "RING_PACKED", "FLUSH" (names of
/// `kind`'s bits), "12" (virtio bit), "virtio:MQ" / "proto:MQ" / "proto:3"
/// to pick a side. A bare name that exists on both sides (MQ) refuses both.
/// Errors: invalid_argument (unknown name, bit > 63).
[[nodiscard]] Result<std::vector<Refusal>> parse_refusal(const std::string& text,
                                                         DeviceKind kind = DeviceKind::blk);
/// "52:54:00:12:34:56" -> bytes. Errors: invalid_argument (not six hex
/// octets, or a multicast address).
[[nodiscard]] Result<std::array<uint8_t, 6>> parse_mac(const std::string& text);

/// Parses argv. Returns the options, or an exit code (0 for --help) after
/// CLI11 printed its message.
struct ParseOutcome {
  std::optional<Options> options;
  int exit_code = 0;
};
[[nodiscard]] ParseOutcome parse_options(int argc, char** argv);

}  // namespace vufront::backend
