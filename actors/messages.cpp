#include "actors/messages.hpp"

namespace vufront::actors {

const char* to_string(DeviceState s) noexcept {
  switch (s) {
    case DeviceState::disconnected: return "disconnected";
    case DeviceState::negotiated: return "negotiated";
    case DeviceState::active: return "active";
    case DeviceState::sleeping: return "sleeping";
    case DeviceState::broken: return "broken";
    case DeviceState::reconnecting: return "reconnecting";
  }
  return "unknown";
}

const char* to_string(DeviceEvent::Kind k) noexcept {
  switch (k) {
    case DeviceEvent::Kind::state_changed: return "state_changed";
    case DeviceEvent::Kind::config_changed: return "config_changed";
    case DeviceEvent::Kind::backend_lost: return "backend_lost";
    case DeviceEvent::Kind::vring_error: return "vring_error";
    case DeviceEvent::Kind::shmem_mapped: return "shmem_mapped";
    case DeviceEvent::Kind::shmem_unmapped: return "shmem_unmapped";
    case DeviceEvent::Kind::reconnecting: return "reconnecting";
    case DeviceEvent::Kind::resumed: return "resumed";
    case DeviceEvent::Kind::resume_failed: return "resume_failed";
    case DeviceEvent::Kind::backend_notice: return "backend_notice";
    case DeviceEvent::Kind::vmm_connected: return "vmm_connected";
    case DeviceEvent::Kind::vmm_disconnected: return "vmm_disconnected";
    case DeviceEvent::Kind::fenced: return "fenced";
    case DeviceEvent::Kind::vmm_backend_away: return "vmm_backend_away";
    case DeviceEvent::Kind::vmm_resumed: return "vmm_resumed";
    case DeviceEvent::Kind::dirty_log_resized: return "dirty_log_resized";
  }
  return "unknown";
}

}  // namespace vufront::actors
