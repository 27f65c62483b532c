#pragma once
// What a VMM connecting to `vufront attach --vmm-socket` is offered: the
// back-end's offer intersected with what vufront can proxy (docs/vmm-proxy.md,
// "What the VMM is offered"). Pure functions, no I/O.

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "protocol/frontend_request.hpp"
#include "protocol/messages.hpp"

namespace vufront::proxy {

/// What vufront negotiated with the back-end (the device's DeviceInfo).
struct BackendOffer {
  DeviceKind kind = DeviceKind::blk;
  uint64_t features = 0;           ///< the back-end's GET_FEATURES
  uint64_t protocol_features = 0;  ///< what vufront acked with SET_PROTOCOL_FEATURES
  uint32_t queue_num = 1;          ///< GET_QUEUE_NUM (or the kind's fixed count)
  uint32_t max_mem_slots = 8;      ///< GET_MAX_MEM_SLOTS
  bool backend_channel = false;    ///< the back-end took vufront's channel
};

/// Virtio feature bits never offered to a VMM: ACCESS_PLATFORM (IOTLB
/// messages are not proxied). LOG_ALL is offered only together with
/// LOG_SHMFD (vmm_offer()).
[[nodiscard]] uint64_t withheld_features() noexcept;

/// Protocol features passed through when the back-end has them: MQ,
/// REPLY_ACK, BACKEND_REQ, CONFIG, INFLIGHT_SHMFD, RESET_DEVICE,
/// CONFIGURE_MEM_SLOTS, STATUS, LOG_SHMFD (with LOG_ALL only). Never:
/// PAGEFAULT, HOST_NOTIFIER, INBAND_NOTIFICATIONS, SHMEM, DEVICE_STATE and
/// the rest.
[[nodiscard]] uint64_t proxied_protocol_features() noexcept;

/// The offer for the VMM, as the decoder's context (nothing acked yet).
/// LOG_ALL and LOG_SHMFD (live migration of the VMM, docs/vmm-proxy.md) are
/// offered both or neither: both when the back-end offers LOG_ALL and
/// vufront acked its LOG_SHMFD.
/// Errors: not_negotiated when the back-end cannot serve a VMM of this kind
/// through vufront (a blk back-end without CONFIG: QEMU refuses the device;
/// a back-end without PROTOCOL_FEATURES).
[[nodiscard]] Result<Negotiated> vmm_offer(const BackendOffer& backend);

/// "MQ|REPLY_ACK|..." for logs and status.
[[nodiscard]] std::string protocol_feature_list(uint64_t features);

}  // namespace vufront::proxy
