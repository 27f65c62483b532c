#pragma once
// The back-end channel (BACKEND_REQ): channel_actor in actors/messages.hpp.
//
// Reader. A task on the event loop (loop/event_loop.hpp) owned by the state
// (last member, joined on exit, stopped through an eventfd) waits for the channel to become readable, receives ONE
// message (the rest of it must arrive within channel_message_timeout),
// decodes it with the acked protocol features and sends it to the actor as
// (backend_req_atom, shared_ptr<BackendRequest>) through a weak handle.
//
// Flood bound. Before each receive the reader takes a credit from an
// EFD_SEMAPHORE eventfd holding channel_credits; the actor gives it back
// after handling the request. So at most channel_credits requests are ever
// queued in the actor (ChannelCounters::high_water proves it) and a back-end
// that floods the channel only fills its own socket buffer.
//
// Failures.
//  * Broken framing (oversized, bad flags, truncated, EOF, timeout, fds that
//    do not fit): the reader stops and sends (channel_eof_atom, reason), the
//    reason naming the request when its header was read ("BACKEND_CONFIG_CHANGE_MSG
//    (flags 0x9, 65536 bytes): oversized: ..."); the actor sends (lost_atom,
//    its address, "back-end channel: " + reason) to the device, once, and
//    closes the channel at once: shutdown() (the back-end sees EOF now,
//    whoever else holds a copy), the writer closed, the reader stopped and
//    joined. A reply that cannot be written is a loss as well.
//  * A message that framed fine but that decode refused (unknown request,
//    not negotiated, bad size, payload or fds; its fds are closed by decode):
//    counted in `refused`; if NEED_REPLY was set the reader answers it with a
//    failure status itself, but only while it holds every credit, i.e. when
//    the actor has nothing queued and has finished writing its replies. The
//    socket therefore has one writer at a time and replies keep the order
//    of the requests. Then the channel keeps going.
//
// Serving (a u64 reply, 0 ok / -errno as u64, only when need_reply):
//  * CONFIG_CHANGE_MSG -> (cfg_change_atom) to the device;
//  * VRING_CALL / VRING_ERR -> (vring_call_atom / vring_err_atom, index);
//  * SHMEM_MAP: needs a mapper; shmid known with a non-zero size, offsets and
//    len page-aligned, the range inside the region, no overlap with the
//    mappings made so far; then mapper->map() and (event_atom, shmem_mapped);
//  * SHMEM_UNMAP: needs a mapper; the range page-aligned and inside the
//    region; mapper->unmap(), the tracked mappings are dropped or trimmed,
//    (event_atom, shmem_unmapped);
//  * everything else (IOTLB, HOST_NOTIFIER, SHARED_OBJECT_*): refused.
//
// The actor never waits: it writes a reply only when the socket has room
// (a back-end waits for each reply it asks for, so a full socket means it
// stopped reading: the channel is lost), and mappers do not block (an mmap,
// or a message to the VMM). So it runs on CAF's scheduler like any actor.
// The reader's own refusals wait up to channel_reply_timeout, in its task.
// The device is held only weakly (caf::actor_addr). Handlers never throw.
//
// Trace. With `--trace` (log::tracing()) the reader's and the writer's
// Connections share one MessageTrace labelled "back-end channel": each
// request the back-end sends and each reply, timed from its request
// (protocol/message_trace.hpp).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/messages.hpp"
#include "memory/shmem_mapper.hpp"
#include "protocol/connection.hpp"

namespace vufront::actors {

/// Most requests queued in the channel actor at any time (the reader's credits).
inline constexpr uint32_t channel_credits = 16;
/// Time for the rest of a message once its first byte arrived.
inline constexpr std::chrono::milliseconds channel_message_timeout{1000};
/// Deadline for writing one reply.
inline constexpr std::chrono::milliseconds channel_reply_timeout{1000};

/// Shared by the actor and its reader task; readable from any thread.
struct ChannelCounters {
  std::atomic<uint64_t> received{0};    ///< messages the reader framed
  std::atomic<uint64_t> refused{0};     ///< answered with (or deserving) a failure
  std::atomic<uint64_t> queued{0};      ///< sent to the actor, not handled yet
  std::atomic<uint64_t> high_water{0};  ///< the most `queued` ever was
};

class ChannelReader;  // the task and what it shares (backend_channel.cpp)

struct ChannelState {
  static inline const char* name = "vufront.channel";

  ChannelState();
  ~ChannelState();
  ChannelState(const ChannelState&) = delete;
  ChannelState& operator=(const ChannelState&) = delete;

  caf::actor_addr device;  ///< weak
  uint64_t acked_protocol_features = 0;
  /// Writes the replies (a dup of the channel; the reader has its own).
  std::optional<Connection> writer;
  bool lost = false;  ///< (lost_atom) was sent; further requests are dropped
  uint64_t served = 0;

  std::shared_ptr<SharedMemoryMapper> mapper;
  std::vector<uint64_t> shmem_sizes;  ///< index = shmid
  /// shmid -> (shm_offset -> len) of the mappings made and not yet unmapped.
  std::map<uint8_t, std::map<uint64_t, uint64_t>> mappings;

  /// Never reassigned after construction (channel_counters() relies on it).
  const std::shared_ptr<ChannelCounters> counters;
  /// LAST: destroyed first, so the task is joined before anything it uses goes.
  std::unique_ptr<ChannelReader> reader;
};

/// Spawn function. `channel` is the front-end's end of the back-end channel
/// (dup'ed: the caller may drop its copy); `device` receives lost,
/// cfg_change, vring_call/err and event messages. start_reader=false: no
/// reader task (deterministic tests inject (backend_req_atom, ...) themselves).
[[nodiscard]] channel_actor::behavior_type channel_impl(
    channel_actor::stateful_pointer<ChannelState> self, SharedFd channel,
    uint64_t acked_protocol_features, caf::actor_addr device, bool start_reader);

/// The counters of a channel actor (null if `h` is not one). Call only while
/// the actor is known to be alive, e.g. holding a handle nobody exits.
[[nodiscard]] std::shared_ptr<const ChannelCounters> channel_counters(const channel_actor& h);

/// Reader tasks alive in this process (for tests and leak checks).
[[nodiscard]] int live_channel_readers() noexcept;

}  // namespace vufront::actors
