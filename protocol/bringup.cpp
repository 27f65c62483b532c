#include "protocol/bringup.hpp"

#include <string>
#include <utility>

#include "protocol/virtio_config.hpp"

namespace vufront {

namespace {

/// The bytes GET_CONFIG asks for: the caller's size, else the kind's.
uint32_t config_asked(const BringupOptions& opts) {
  return opts.config_size.value_or(virtio::config_size(opts.kind));
}

/// Whether `step` sends its request, given what is known so far.
bool gate_open(BringupStep step, const BackendClient& c, const BringupOptions& opts,
               const BringupResult& out) {
  switch (step) {
    case BringupStep::set_owner:
    case BringupStep::get_features:
    case BringupStep::get_queue_num:  // without MQ: the fixed count (no request)
      return true;
    case BringupStep::get_protocol_features:
      return has_bit(c.backend_features(), feature::protocol_features);
    case BringupStep::set_protocol_features:
      return has_bit(c.backend_features(), feature::protocol_features) &&
             out.refusal(BringupStep::get_protocol_features) == nullptr;
    case BringupStep::set_backend_req_fd:
      return c.protocol_feature(protocol_feature::backend_req);
    case BringupStep::get_max_mem_slots:
      return c.protocol_feature(protocol_feature::configure_mem_slots);
    case BringupStep::get_config:
      return c.protocol_feature(protocol_feature::config) &&
             (opts.config_size.has_value() ||
              (opts.config_for_kind_check && opts.kind == DeviceKind::blk &&
               !features_identify(opts.kind, out.features)));
    case BringupStep::get_shmem_config:
      return c.protocol_feature(protocol_feature::shmem);
  }
  return false;
}

Result<void> queue_count(BackendClient& c, const BringupOptions& opts, BringupResult& out) {
  out.queue_num = virtio::fixed_queue_count(opts.kind);
  if (c.protocol_feature(protocol_feature::mq)) {
    auto n = c.get_queue_num();
    if (!n)
      return std::move(n).error();
    out.queue_num = static_cast<uint16_t>(*n > 0xffff ? 0xffff : *n);
    out.backend_queue_num = out.queue_num;
  }
  if (opts.queues_needed > out.queue_num) {
    // a back-end of another kind explains the shortfall better
    KindEvidence e;
    e.features = out.features;
    e.queue_num = out.backend_queue_num;
    if (auto v = check_device_kind(opts.kind, e); v.fit == KindVerdict::Fit::mismatch)
      return make_error(errc::invalid_argument, "device kind", v.reason);
    return make_error(errc::invalid_argument, "GET_QUEUE_NUM",
                      "the back-end has " + std::to_string(out.queue_num) +
                          " queues, the device needs " + std::to_string(opts.queues_needed));
  }
  return ok();
}

Result<void> shmem_config(BackendClient& c, BringupResult& out) {
  auto shm = c.get_shmem_config();
  if (!shm)
    return std::move(shm).error();
  size_t last = 0;
  for (size_t i = 0; i < wire::max_shmem_regions; ++i)
    if (shm->sizes[i] != 0)
      last = i + 1;
  out.shmem_sizes.emplace(shm->sizes, shm->sizes + last);
  return ok();
}

/// Sends `step`'s request and records its answer in `out`.
Result<void> run_step(BringupStep step, BackendClient& c, const BringupOptions& opts,
                      BringupResult& out) {
  switch (step) {
    case BringupStep::set_owner:
      return c.set_owner();
    case BringupStep::get_features: {
      auto f = c.get_features();
      if (!f)
        return std::move(f).error();
      out.features = *f;
      return ok();
    }
    case BringupStep::get_protocol_features: {
      auto p = c.get_protocol_features();
      if (!p)
        return std::move(p).error();
      out.protocol_features_offered = *p;
      return ok();
    }
    case BringupStep::set_protocol_features: {
      const uint64_t ack = acked_protocol_features(out.protocol_features_offered, opts);
      if (auto r = c.set_protocol_features(ack); !r)
        return r;
      out.protocol_features_acked = ack;
      return ok();
    }
    case BringupStep::set_backend_req_fd:
      if (auto r = c.set_backend_req_fd(opts.channel_fd); !r)
        return r;
      out.backend_channel = true;
      return ok();
    case BringupStep::get_queue_num:
      return queue_count(c, opts, out);
    case BringupStep::get_max_mem_slots: {
      auto n = c.get_max_mem_slots();
      if (!n)
        return std::move(n).error();
      out.max_mem_slots = static_cast<uint32_t>(*n);
      out.backend_max_mem_slots = out.max_mem_slots;
      return ok();
    }
    case BringupStep::get_config: {
      auto cfg = c.get_config(0, config_asked(opts));
      if (!cfg)
        return std::move(cfg).error();
      out.config = std::move(cfg).value();
      return ok();
    }
    case BringupStep::get_shmem_config:
      return shmem_config(c, out);
  }
  return make_error(errc::invalid_argument, "bring-up", "unknown step");
}

/// What the bring-up learnt that bears on the device kind.
KindEvidence kind_evidence(const BringupOptions& opts, const BringupResult& out) {
  KindEvidence e;
  e.features = out.features;
  e.queue_num = out.backend_queue_num;
  if (out.config)
    e.config = KindEvidence::Config::read;
  else if (out.refusal(BringupStep::get_config))
    e.config = KindEvidence::Config::refused;
  e.config_size = config_asked(opts);
  return e;
}

}  // namespace

const char* name(BringupStep step) noexcept {
  switch (step) {
    case BringupStep::set_owner: return "SET_OWNER";
    case BringupStep::get_features: return "GET_FEATURES";
    case BringupStep::get_protocol_features: return "GET_PROTOCOL_FEATURES";
    case BringupStep::set_protocol_features: return "SET_PROTOCOL_FEATURES";
    case BringupStep::set_backend_req_fd: return "SET_BACKEND_REQ_FD";
    case BringupStep::get_queue_num: return "GET_QUEUE_NUM";
    case BringupStep::get_max_mem_slots: return "GET_MAX_MEM_SLOTS";
    case BringupStep::get_config: return "GET_CONFIG";
    case BringupStep::get_shmem_config: return "GET_SHMEM_CONFIG";
  }
  return "?";
}

const StepRefusal* BringupResult::refusal(BringupStep step) const noexcept {
  for (const auto& r : refusals)
    if (r.step == step)
      return &r;
  return nullptr;
}

uint64_t acked_protocol_features(uint64_t offered, const BringupOptions& opts) noexcept {
  uint64_t want = supported_protocol_features;
  if (!opts.dirty_log)
    want &= ~bit(protocol_feature::log_shmfd);
  // BACKEND_SEND_FD and SHMEM requests arrive on the back-end channel.
  if (!opts.backend_channel || opts.channel_fd < 0)
    want &= ~(bit(protocol_feature::backend_req) | bit(protocol_feature::backend_send_fd) |
              bit(protocol_feature::shmem));
  if (!opts.inflight)
    want &= ~bit(protocol_feature::inflight_shmfd);
  return offered & want;
}

Result<BringupResult> bring_up(BackendClient& client, const BringupOptions& opts) {
  BringupResult out;
  out.queue_num = virtio::fixed_queue_count(opts.kind);
  for (BringupStep step : bringup_order) {
    if (!gate_open(step, client, opts, out))
      continue;
    auto r = run_step(step, client, opts, out);
    if (r)
      continue;
    // An in-band refusal leaves the stream in sync: probe mode notes it and
    // goes on; a refused GET_CONFIG is the kind check's evidence.
    const bool evidence = step == BringupStep::get_config && opts.kind != DeviceKind::generic;
    if ((opts.record_refusals || evidence) && r.error().code == errc::backend_failure &&
        !client.broken()) {
      out.refusals.push_back(StepRefusal{step, std::move(r).error()});
      continue;
    }
    return std::move(r).error();
  }
  out.kind = check_device_kind(opts.kind, kind_evidence(opts, out));
  if (out.kind.fit == KindVerdict::Fit::mismatch)
    return make_error(errc::invalid_argument, "device kind", out.kind.reason);
  return out;
}

}  // namespace vufront
