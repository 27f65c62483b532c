// The kind check (protocol/device_kind_check.hpp) on what real back-ends
// offer: qemu-storage-daemon 7.2 (blk), virtiofsd 7.2 (fs) and
// vufront-backend --device net, each as itself and as the other kinds
// (the feature words are what `vufront probe` shows for them).

#include <doctest/doctest.h>

#include <string>

#include "protocol/device_kind_check.hpp"

using namespace vufront;

namespace {

constexpr uint64_t qsd_features = 0x175007e46;       // SIZE_MAX SEG_MAX BLK_SIZE FLUSH ...
constexpr uint64_t virtiofsd_features = 0x175000000; // no device bit
constexpr uint64_t ref_net_features = 0x550010020;   // MAC STATUS (blk: RO SECURE_ERASE)

KindEvidence evidence(uint64_t features, std::optional<uint64_t> queues,
                      KindEvidence::Config config = KindEvidence::Config::not_asked,
                      uint32_t config_size = 0) {
  KindEvidence e;
  e.features = features;
  e.queue_num = queues;
  e.config = config;
  e.config_size = config_size;
  return e;
}

bool has(const std::string& text, const std::string& piece) {
  return text.find(piece) != std::string::npos;
}

}  // namespace

TEST_CASE("device kind: qsd fits blk and is refused as net and fs, naming the evidence") {
  const auto read60 = evidence(qsd_features, 1, KindEvidence::Config::read, 60);
  CHECK(check_device_kind(DeviceKind::blk, read60).fit == KindVerdict::Fit::fits);
  auto net = check_device_kind(DeviceKind::net, evidence(qsd_features, 1));
  CHECK(net.fit == KindVerdict::Fit::mismatch);
  CHECK(has(net.reason, "does not look like a net device"));
  CHECK(has(net.reason, "bit 6 (blk BLK_SIZE)"));
  CHECK(has(net.reason, "GET_QUEUE_NUM says 1 queue, a net device needs at least 2"));
  auto fs = check_device_kind(DeviceKind::fs, evidence(qsd_features, 1));
  CHECK(fs.fit == KindVerdict::Fit::mismatch);
  CHECK(has(fs.reason, "bit 1 (blk SIZE_MAX)"));
  CHECK(has(fs.reason, "a fs device needs at least 2"));
}

TEST_CASE("device kind: the reference net back-end as blk is refused by its config size") {
  CHECK(check_device_kind(DeviceKind::net, evidence(ref_net_features, 2)).fit ==
        KindVerdict::Fit::fits);
  // MAC and STATUS are blk's RO and SECURE_ERASE: the bits alone fit blk
  CHECK(check_device_kind(DeviceKind::blk, evidence(ref_net_features, 2)).fit ==
        KindVerdict::Fit::fits);
  auto v = check_device_kind(DeviceKind::blk,
                             evidence(ref_net_features, 2, KindEvidence::Config::refused, 60));
  CHECK(v.fit == KindVerdict::Fit::mismatch);
  CHECK(has(v.reason, "it refused GET_CONFIG of 60 bytes, the size of a blk config space"));
  // more than a blk config space refused (probe --config-size 96): no evidence
  CHECK(check_device_kind(DeviceKind::blk,
                          evidence(qsd_features, 1, KindEvidence::Config::refused, 96))
            .fit == KindVerdict::Fit::fits);
  auto fs = check_device_kind(DeviceKind::fs, evidence(ref_net_features, 2));
  CHECK(fs.fit == KindVerdict::Fit::mismatch);
  CHECK(has(fs.reason, "bit 5 (blk RO, net MAC)"));
}

TEST_CASE("device kind: virtiofsd offers nothing that decides: could not tell, for every kind") {
  for (DeviceKind k : {DeviceKind::blk, DeviceKind::net, DeviceKind::fs}) {
    CAPTURE(name(k));
    auto v = check_device_kind(k, evidence(virtiofsd_features, 2));
    CHECK(v.fit == KindVerdict::Fit::could_not_tell);
    CHECK(has(v.reason, std::string("could not tell whether the back-end is a ") + name(k)));
    CHECK(has(v.reason, "its 2 queues fit it"));
  }
  // one queue is too few for fs even when nothing else is known
  CHECK(check_device_kind(DeviceKind::fs, evidence(virtiofsd_features, 1)).fit ==
        KindVerdict::Fit::mismatch);
}

TEST_CASE("device kind: which features name the kind by themselves, and config only counts for blk") {
  CHECK(features_identify(DeviceKind::blk, qsd_features));        // BLK_SIZE (bit 6): blk only
  CHECK_FALSE(features_identify(DeviceKind::blk, ref_net_features));  // RO, SECURE_ERASE: net too
  CHECK_FALSE(features_identify(DeviceKind::net, ref_net_features));  // MAC, STATUS: blk too
  CHECK_FALSE(features_identify(DeviceKind::fs, virtiofsd_features));
  CHECK(features_identify(DeviceKind::net, bit(22) | bit(18)));     // net MQ, CTRL_RX
  // a net or fs front-end reads no config from its back-end: a refusal is no evidence
  CHECK(check_device_kind(DeviceKind::net,
                          evidence(ref_net_features, 2, KindEvidence::Config::refused, 12))
            .fit == KindVerdict::Fit::fits);
}

TEST_CASE("device kind: bits no kind defines are no mismatch, and generic always fits") {
  // bit 20 is defined for none of blk, net, fs (a newer spec's): no verdict against blk
  const uint64_t unknown = bit(20) | bit(feature::version_1);
  CHECK(check_device_kind(DeviceKind::blk, evidence(unknown, 1)).fit == KindVerdict::Fit::fits);
  CHECK(check_device_kind(DeviceKind::generic, evidence(qsd_features, 1)).fit ==
        KindVerdict::Fit::fits);
  CHECK(check_device_kind(DeviceKind::generic, evidence(0, std::nullopt)).fit ==
        KindVerdict::Fit::fits);
}
