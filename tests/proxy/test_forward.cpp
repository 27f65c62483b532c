// proxy::forward() against a scripted back-end (tests/fakes): a VMM's
// SET_LOG_BASE goes to the back-end with the VMM's own log fd, and the VMM's
// reply is made only from the back-end's (docs/vmm-proxy.md, "Live migration").
#include <doctest/doctest.h>

#include <sys/stat.h>

#include "tests/fakes/fake_backend.hpp"
#include "proxy/forward.hpp"

using namespace vufront;
using vufront::test::FakeBackend;
using vufront::test::reply_bytes;
using vufront::test::reply_u64;
namespace pf = protocol_feature;

namespace {

constexpr uint64_t features = bit(feature::protocol_features) | bit(feature::log_all);

/// The fake expects GET_FEATURES, GET/SET_PROTOCOL_FEATURES (LOG_SHMFD), then
/// a SET_LOG_BASE of {4096, 0} whose one fd is a file of 4096 bytes.
void script(FakeBackend& f) {
  f.answer_u64(FrontendReq::get_features, features);
  f.answer_u64(FrontendReq::get_protocol_features, bit(pf::log_shmfd));
  f.expect(FrontendReq::set_protocol_features);
  FakeBackend::Expect e;
  e.flags = flag_version;  // a reply of its own: never NEED_REPLY
  e.body = wire::bytes_of(wire::Log{4096, 0});
  e.nfds = 1;
  e.check = [](const Message& m) -> std::string {
    struct stat sb {};
    if (m.fds.size() != 1 || ::fstat(m.fds[0].get(), &sb) != 0 || sb.st_size != 4096)
      return "the back-end did not get the VMM's 4096-byte log";
    return "";
  };
  f.expect(FrontendReq::set_log_base, e);
}

void negotiate(BackendClient& c) {
  REQUIRE(c.get_features().value() == features);
  REQUIRE(c.get_protocol_features().value() == bit(pf::log_shmfd));
  REQUIRE(c.set_protocol_features(bit(pf::log_shmfd)).ok());
}

proxy::Forward log_base() {
  auto fd = make_memfd("vmm-log", 4096);
  REQUIRE(fd);
  return proxy::Forward{FrontendReq::set_log_base, wire::Log{4096, 0}, {share(std::move(fd))}, false};
}

}  // namespace

TEST_CASE("proxy forward: a VMM's SET_LOG_BASE goes with its fd, the VMM's reply after the back-end's") {
  CHECK(proxy::forwarded(FrontendReq::set_log_base));
  FakeBackend f;
  script(f);
  f.send(reply_u64(FrontendReq::set_log_base, 4096));  // libvhost-user echoes mmap_size
  auto c = f.client();
  negotiate(c);
  auto r = proxy::forward(c, log_base());
  REQUIRE(r);
  CHECK(r->has_reply);  // the VMM gets SET_LOG_BASE's own reply (LOG_SHMFD)
  CHECK(r->body == encode_u64_reply(FrontendReq::set_log_base, 0).body);
  CHECK(f.finish() == "");
}

TEST_CASE("proxy forward: rust-vmm's echoed 16-byte Log is SET_LOG_BASE's reply too") {
  FakeBackend f;
  script(f);
  f.send(reply_bytes(FrontendReq::set_log_base, wire::bytes_of(wire::Log{4096, 0})));
  auto c = f.client();
  negotiate(c);
  auto r = proxy::forward(c, log_base());
  REQUIRE(r);
  CHECK(r->has_reply);  // QEMU gets the u64 it reads from libvhost-user
  CHECK(r->body == encode_u64_reply(FrontendReq::set_log_base, 0).body);
  CHECK_FALSE(c.broken());
  CHECK(f.finish() == "");
}

TEST_CASE("proxy forward: a back-end that answers SET_LOG_BASE otherwise is lost, not a refusal") {
  // neither 8 nor 16 bytes: the connection breaks and the VMM port stands
  // in for the back-end
  FakeBackend f;
  script(f);
  f.send(reply_bytes(FrontendReq::set_log_base, std::vector<uint8_t>(12, 0)));
  auto c = f.client();
  negotiate(c);
  auto r = proxy::forward(c, log_base());
  REQUIRE_FALSE(r);
  CHECK(r.error().code != errc::backend_failure);
  CHECK(r.error().request == "SET_LOG_BASE");
  CHECK(c.broken());
  CHECK(f.finish() == "");
}
