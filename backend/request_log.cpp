#include "backend/request_log.hpp"

#include "base/error.hpp"
#include "protocol/wire.hpp"

namespace vufront::backend {

namespace {

std::string region(const wire::MemoryRegion& r) {
  return " gpa " + hex(r.guest_phys_addr) + " size " + hex(r.memory_size) + " offset " +
         hex(r.mmap_offset);
}

template <class T>
std::optional<T> as(const Message& m) {
  return wire::decode_exact<T>(m.body.data(), m.body.size());
}

std::string payload(FrontendReq req, const Message& m) {
  using R = FrontendReq;
  switch (req) {
    case R::set_features:
    case R::set_protocol_features:
    case R::set_status:
    case R::set_vring_kick:
    case R::set_vring_call:
    case R::set_vring_err:
      if (auto v = as<wire::U64>(m))
        return " " + hex(v->value);
      return "";
    case R::set_vring_num:
    case R::set_vring_base:
    case R::get_vring_base:
    case R::set_vring_enable:
      if (auto v = as<wire::VringState>(m))
        return " index " + std::to_string(v->index) + " num " + std::to_string(v->num);
      return "";
    case R::set_vring_addr:
      if (auto v = as<wire::VringAddr>(m))
        return " index " + std::to_string(v->index) + " flags " + hex(v->flags) + " log " +
               hex(v->log);
      return "";
    case R::set_mem_table: {
      auto h = wire::decode_prefix<wire::MemoryTableHeader>(m.body.data(), m.body.size());
      if (!h)
        return "";
      std::string out = " nregions " + std::to_string(h->nregions);
      const size_t at = sizeof(wire::MemoryTableHeader);
      for (uint32_t i = 0; i < h->nregions && i < wire::max_mem_table_regions; ++i) {
        const size_t off = at + i * sizeof(wire::MemoryRegion);
        if (off + sizeof(wire::MemoryRegion) > m.body.size())
          break;
        // BOUNDS: off + sizeof(MemoryRegion) <= body.size(), checked above.
        if (auto r = wire::decode_prefix<wire::MemoryRegion>(m.body.data() + off, m.body.size() - off))
          out += region(*r);
      }
      return out;
    }
    case R::add_mem_reg:
    case R::rem_mem_reg:
      if (auto v = as<wire::SingleMemoryRegion>(m))
        return region(v->region);
      return "";
    case R::get_config:
    case R::set_config:
      if (auto v = wire::decode_prefix<wire::ConfigHeader>(m.body.data(), m.body.size()))
        return " offset " + std::to_string(v->offset) + " size " + std::to_string(v->size) +
               " flags " + std::to_string(v->flags);
      return "";
    case R::get_inflight_fd:
    case R::set_inflight_fd:
      if (auto v = as<wire::InflightDesc>(m))
        return " queues " + std::to_string(v->num_queues) + " size " + std::to_string(v->queue_size);
      return "";
    case R::set_log_base:
      if (auto v = as<wire::Log>(m))
        return " size " + hex(v->mmap_size) + " offset " + hex(v->mmap_offset);
      return "";
    case R::set_device_state_fd:
      if (auto v = as<wire::DeviceStateTransfer>(m))
        return std::string(v->direction == wire::device_state_load ? " load" : " save") +
               " phase " + std::to_string(v->phase);
      return "";
    default:
      return "";
  }
}

}  // namespace

std::string request_summary(FrontendReq req, const Message& m) {
  std::string out = payload(req, m);
  if (!m.fds.empty())
    out += " fds " + std::to_string(m.fds.size());
  if (m.header.flags & flag_need_reply)
    out += " [reply]";
  return out;
}

}  // namespace vufront::backend
