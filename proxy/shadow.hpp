#pragma once
// Shadow: what one VMM connection has set up on a device, as the back-end
// has it (docs/vmm-proxy.md). Every VMM request is validated by the
// front-end request codec against context(), turned into what the back-end
// gets by prepare() (fds shared, the VMM's user addresses replaced by
// vufront's synthetic ones) and, once the back-end accepted it, recorded by
// commit(). What it records is what a VMM that leaves must have undone
// (teardown()) and what `status` shows. No I/O except used_index(), no CAF.
//
// Addresses: the back-end never learns the VMM's layout. A region's user
// address becomes synthetic_user_base + its guest physical address (regions
// never overlap in guest physical space, so neither do these); a ring's
// user addresses are translated through the region that holds them. Guest
// physical addresses, mmap_offset and log_guest_addr pass unchanged (the
// log is indexed by guest-physical page: docs/vmm-proxy.md, "Live migration").

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "protocol/frontend_request.hpp"
#include "proxy/forward.hpp"

namespace vufront::proxy {

/// The first synthetic user address a back-end is told (as memory/guest_memory's).
inline constexpr uint64_t proxy_user_base = 0x1000'0000'0000;

class Shadow {
public:
  /// `offer`: what the VMM is offered (vmm_offer()).
  explicit Shadow(Negotiated offer);

  /// The context the next request is decoded in.
  [[nodiscard]] const Negotiated& context() const noexcept { return ctx_; }

  /// A request together with what prepare() made of it.
  struct Prepared {
    Forward forward;           ///< what the back-end gets
    FrontendPayload original;  ///< the payload as the VMM sent it
    bool need_reply = false;   ///< the VMM waits for a REPLY_ACK ack
    /// Not for the back-end yet: a SET_VRING_ADDR whose addresses lie in no
    /// region the VMM has shared so far. QEMU 7.2 sends its rings before
    /// its memory when it reconnects to a stopped VM; the ring goes to the
    /// back-end, translated, once the memory that holds it does
    /// (take_ready()), and a ring kicked before that is refused.
    bool deferred = false;
  };
  /// Takes a decoded request apart for forwarding. Errors (the VMM's fault;
  /// nothing is forwarded): invalid_payload for a ring address in no
  /// region, a region overlapping one already set (guest physical or the
  /// VMM's user range), REM_MEM_REG of a region that is not there, more
  /// regions than the back-end has slots; bad_state for SET_VRING_ADDR
  /// before any memory.
  [[nodiscard]] Result<Prepared> prepare(FrontendRequest&& r) const;

  /// Records a request the back-end accepted, and its answer; keeps the
  /// fds the state needs (regions, kick/call/err, in-flight region).
  void commit(const Prepared& p, const ForwardResult& answer);

  /// The deferred ring addresses the memory shared since covers, translated
  /// and ready to forward (each once).
  [[nodiscard]] std::vector<Prepared> take_ready();

  /// SET_PROTOCOL_FEATURES, which vufront answers itself (the back-end's
  /// protocol features were settled when vufront negotiated it).
  void set_protocol_features(uint64_t acked) { ctx_.acked_protocol_features = acked; }

  /// What vufront answers for a back-end that is away (lost, and not yet
  /// back; docs/vmm-proxy.md, "Back-end loss"). Computed from the shadow
  /// alone; `fence`: the answer tells the VMM something the back-end could
  /// still make untrue while it lives (a ring stopped, memory let go of), so
  /// it may be sent only once that back-end is fenced.
  struct StandIn {
    enum class Kind {
      answer,  ///< `result` (a reply of the request's own, or only the ack when asked)
      hold,    ///< only a back-end can answer: wait for the next one (GET_INFLIGHT_FD, SET_CONFIG)
      refuse,  ///< cannot be answered correctly: the VMM connection must close (`why`)
    } kind = Kind::answer;
    bool fence = false;
    ForwardResult result;
    std::string why;
  };
  [[nodiscard]] StandIn stand_in(const Prepared& p) const;

  /// Whether the VMM waits for an answer to `p` (a reply of its own, or
  /// an ack it asked for).
  [[nodiscard]] bool answer_due(const Prepared& p) const noexcept;

  /// The back-end said its config space changed: cached GET_CONFIG replies go.
  void config_changed() { config_cache_.clear(); }

  /// Whether the VMM negotiated REPLY_ACK (and so may ask for acks).
  [[nodiscard]] bool reply_ack() const noexcept;
  /// Whether the VMM acked RING_PACKED.
  [[nodiscard]] bool packed() const noexcept;

  /// What undoes this VMM's set-up in the back-end when it leaves (killed,
  /// or exited): SET_VRING_ENABLE 0 and GET_VRING_BASE for every started
  /// ring (the back-end finishes what is in flight and stops touching the
  /// rings), then, when the VMM set anything up, a new connection (`renew`):
  /// only that makes every back-end forget the dead VM's memory and ring
  /// addresses (libvhost-user keeps a ring's addresses across REM_MEM_REG and
  /// fails the next VMM's first ADD_MEM_REG trying to remap them).
  struct Teardown {
    std::vector<Forward> requests;
    bool renew = false;
  };
  [[nodiscard]] Teardown teardown() const;

  /// Drops every fd and all state (after teardown, or when the connection
  /// to the back-end was renewed).
  void clear();

  /// A split ring's used index, read from guest memory (the back-end's
  /// progress); nullopt for packed rings, rings not set up, or a read that
  /// fails.
  [[nodiscard]] std::optional<uint16_t> used_index(uint32_t ring) const;

  /// For `status`: features, regions, every ring's state.
  [[nodiscard]] nlohmann::json to_json() const;

  struct Region {
    wire::MemoryRegion vmm{};  ///< as the VMM sent it
    uint64_t synthetic = 0;    ///< the user address the back-end was told
    SharedFd fd;
  };
  struct Ring {
    uint32_t num = 0;
    uint32_t base = 0;           ///< the last SET_VRING_BASE or GET_VRING_BASE
    bool addr_set = false;
    wire::VringAddr vmm_addr{};  ///< as the VMM sent it
    bool addr_pending = false;   ///< vmm_addr waits for memory (Prepared::deferred)
    bool started = false;        ///< kicked and not stopped by GET_VRING_BASE
    bool enabled = false;
    SharedFd kick, call, err;
  };
  [[nodiscard]] const std::vector<Region>& regions() const noexcept { return regions_; }
  [[nodiscard]] const std::vector<Ring>& rings() const noexcept { return rings_; }
  [[nodiscard]] uint64_t acked_features() const noexcept { return ctx_.acked_features; }
  [[nodiscard]] uint8_t status() const noexcept { return status_; }
  [[nodiscard]] const wire::InflightDesc& inflight() const noexcept { return inflight_; }
  [[nodiscard]] const SharedFd& inflight_fd() const noexcept { return inflight_fd_; }
  /// The VMM's dirty log (its last SET_LOG_BASE, the fd kept for a replay);
  /// dropped when the VMM acks features without LOG_ALL (logging stopped),
  /// at RESET_DEVICE and by clear().
  [[nodiscard]] const wire::Log& log() const noexcept { return log_; }
  [[nodiscard]] const SharedFd& log_fd() const noexcept { return log_fd_; }
  /// Whether the VMM logs: it gave a log and acked LOG_ALL. A replay then
  /// sends SET_LOG_BASE with the same log before any ring starts.
  [[nodiscard]] bool logging() const noexcept;
  /// The end of the guest-physical memory the VMM shared (0: none).
  [[nodiscard]] uint64_t memory_end() const noexcept;
  /// A ring's addresses as the back-end is told them (synthetic); nullopt
  /// when not set or not (yet) in shared memory.
  [[nodiscard]] std::optional<wire::VringAddr> backend_addr(uint32_t ring) const;
  /// A packed ring's GET_VRING_BASE answer from the in-flight region the
  /// back-end keeps (INFLIGHT_SHMFD): its last committed used position.
  /// Errors (invalid_payload): no region, or none valid for this ring.
  [[nodiscard]] Result<uint32_t> packed_base_from_inflight(uint32_t ring) const;
  /// Whether a ring was started (kicked) and not stopped since.
  [[nodiscard]] bool any_started() const noexcept;

private:
  [[nodiscard]] std::optional<uint64_t> to_synthetic(uint64_t vmm_addr, uint64_t len) const;
  /// SET_VRING_ADDR's addresses translated; nullopt when not all lie in memory.
  [[nodiscard]] std::optional<wire::VringAddr> translate(const wire::VringAddr& a) const;
  [[nodiscard]] Result<void> check_new_region(const wire::MemoryRegion& r,
                                              const std::vector<Region>& others) const;
  void reset_rings();
  void drop_log();

  Negotiated ctx_;
  std::vector<Region> regions_;
  std::vector<Ring> rings_;
  uint8_t status_ = 0;
  bool touched_ = false;  ///< the back-end got something of this VMM's
  wire::InflightDesc inflight_{};
  SharedFd inflight_fd_;
  wire::Log log_{};
  SharedFd log_fd_;
  uint64_t log_bases_ = 0;  ///< SET_LOG_BASE the back-end accepted (or recorded while away)
  /// GET_CONFIG replies by (offset, size): what a VMM is answered while the
  /// back-end is away (SET_CONFIG and a config change clear it).
  std::map<std::pair<uint32_t, uint32_t>, std::vector<uint8_t>> config_cache_;
};

}  // namespace vufront::proxy
