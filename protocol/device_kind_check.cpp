#include "protocol/device_kind_check.hpp"

#include <vector>

#include "protocol/virtio_config.hpp"

namespace vufront {

namespace {

constexpr DeviceKind known_kinds[] = {DeviceKind::blk, DeviceKind::net, DeviceKind::fs};

/// The device-specific feature bits (virtio 1.2 §6: 0-23 and 50-127).
constexpr uint64_t device_bit_mask = ((uint64_t{1} << 24) - 1) | (~uint64_t{0} << 50);

/// Whether `kind` defines feature bit `b` (messages.cpp names every bit the
/// virtio spec defines for it).
bool defines(DeviceKind kind, unsigned b) {
  return feature_name(b, kind) != "bit" + std::to_string(b);
}

/// The offered device bits `kind` does not define.
std::vector<unsigned> foreign_bits(DeviceKind kind, uint64_t device_bits) {
  std::vector<unsigned> out;
  for (unsigned b = 0; b < 64; ++b)
    if (has_bit(device_bits, b) && !defines(kind, b))
      out.push_back(b);
  return out;
}

/// The other kinds that define every offered device bit.
std::vector<DeviceKind> kinds_defining_all(DeviceKind not_this, uint64_t device_bits) {
  std::vector<DeviceKind> out;
  for (DeviceKind k : known_kinds)
    if (k != not_this && foreign_bits(k, device_bits).empty())
      out.push_back(k);
  return out;
}

/// "bit 5 (blk RO, net MAC), bit 16 (...)".
std::string bits_text(const std::vector<unsigned>& bits, const std::vector<DeviceKind>& others) {
  std::string out;
  for (unsigned b : bits) {
    if (!out.empty())
      out += ", ";
    std::string names;
    for (DeviceKind k : others)
      names += std::string(names.empty() ? "" : ", ") + name(k) + " " + feature_name(b, k);
    out += "bit " + std::to_string(b) + " (" + names + ")";
  }
  return out;
}

void add(std::string& reasons, const std::string& r) {
  if (!reasons.empty())
    reasons += "; ";
  reasons += r;
}

}  // namespace

bool features_identify(DeviceKind kind, uint64_t features) {
  const uint64_t device_bits = features & device_bit_mask;
  for (unsigned b = 0; b < 64; ++b) {
    if (!has_bit(device_bits, b) || !defines(kind, b))
      continue;
    bool others = false;
    for (DeviceKind k : known_kinds)
      others = others || (k != kind && defines(k, b));
    if (!others)
      return true;
  }
  return false;
}

uint64_t min_queue_count(DeviceKind kind) noexcept {
  return kind == DeviceKind::net || kind == DeviceKind::fs ? 2 : 1;
}

KindVerdict check_device_kind(DeviceKind kind, const KindEvidence& e) {
  if (kind == DeviceKind::generic)
    return {};
  const uint64_t device_bits = e.features & device_bit_mask;
  std::string misfits;
  if (auto foreign = foreign_bits(kind, device_bits); !foreign.empty())
    if (auto others = kinds_defining_all(kind, device_bits); !others.empty())
      add(misfits, std::string("it offers feature bits that are no ") + name(kind) +
                       " feature: " + bits_text(foreign, others));
  if (e.queue_num && *e.queue_num < min_queue_count(kind))
    add(misfits, "GET_QUEUE_NUM says " + std::to_string(*e.queue_num) + " queue" +
                     (*e.queue_num == 1 ? "" : "s") + ", a " + name(kind) + " device needs at least " +
                     std::to_string(min_queue_count(kind)));
  // Only a blk front-end needs the back-end's config space (its capacity;
  // QEMU's vhost-user-blk refuses a back-end without CONFIG); net and fs
  // front-ends take theirs from the VMM. A refusal of more than a blk
  // config space (probe --config-size) says nothing.
  if (kind == DeviceKind::blk && e.config == KindEvidence::Config::refused &&
      e.config_size <= virtio::config_size(kind))
    add(misfits, "it refused GET_CONFIG of " + std::to_string(e.config_size) + " bytes, the size of a " +
                     name(kind) + " config space");
  if (!misfits.empty())
    return {KindVerdict::Fit::mismatch,
            std::string("the back-end does not look like a ") + name(kind) + " device: " + misfits};
  if (device_bits == 0 && e.config != KindEvidence::Config::read)
    return {KindVerdict::Fit::could_not_tell,
            std::string("could not tell whether the back-end is a ") + name(kind) +
                " device: it offers no device feature bit and no config space was read" +
                (e.queue_num ? ", and its " + std::to_string(*e.queue_num) + " queues fit it" : "")};
  return {};
}

}  // namespace vufront
