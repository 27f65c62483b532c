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

// ---- forward_and_answer(): the VMM's answer sent from where the back-end's reply is read

namespace {

/// A back-end negotiated without REPLY_ACK (its requests are not acked).
void negotiate_plain(BackendClient& c) {
  REQUIRE(c.get_features().value() == bit(feature::protocol_features));
  REQUIRE(c.get_protocol_features().value() == 0);
  REQUIRE(c.set_protocol_features(0).ok());
}

void script_plain(FakeBackend& f) {
  f.answer_u64(FrontendReq::get_features, bit(feature::protocol_features));
  f.answer_u64(FrontendReq::get_protocol_features, 0);
  f.expect(FrontendReq::set_protocol_features);
}

/// The VMM's end of its socket and the end forward_and_answer() sends on.
struct VmmSocket {
  std::shared_ptr<Connection> ours;
  Connection vmm;
};

VmmSocket vmm_socket() {
  auto sp = make_socketpair();
  REQUIRE(sp.first);
  return VmmSocket{std::make_shared<Connection>(std::move(sp.first)), Connection(std::move(sp.second))};
}

Message vmm_receives(Connection& vmm) {
  auto m = vmm.receive(64, 1, deadline_in(std::chrono::milliseconds(5000)), "the VMM's answer");
  REQUIRE(m);
  return std::move(m).value();
}

}  // namespace

TEST_CASE("proxy forward_and_answer: GET_VRING_BASE's reply reaches the VMM before the caller records it") {
  FakeBackend f;
  script_plain(f);
  f.expect(FrontendReq::get_vring_base);
  f.send(reply_bytes(FrontendReq::get_vring_base, wire::bytes_of(wire::VringState{0, 42})));
  auto c = f.client();
  negotiate_plain(c);
  auto s = vmm_socket();
  proxy::Forward fw{FrontendReq::get_vring_base, wire::VringState{0, 0}, {}, false};
  proxy::Answer a;
  a.to = s.ours;
  bool sent = false;
  a.sent = [&sent] { sent = true; };
  auto r = proxy::forward_and_answer(c, fw, a);
  REQUIRE(r);
  CHECK(r->answered);
  CHECK(r->answer_error.empty());
  CHECK(r->vring_base == 42);  // what the shadow records afterwards
  CHECK(sent);                 // the VMM's next request may be read
  // The VMM already has its reply, exactly as the caller would have sent it.
  auto m = vmm_receives(s.vmm);
  CHECK(m.header.request == static_cast<uint32_t>(FrontendReq::get_vring_base));
  CHECK(m.header.flags == FrontendReply::flags());
  CHECK(m.body == encode_vring_base_reply(0, 42).body);
  CHECK(f.finish() == "");
}

TEST_CASE("proxy forward_and_answer: the ack a VMM asked for, and nothing when it asked for none") {
  FakeBackend f;
  script_plain(f);
  f.expect(FrontendReq::set_vring_num);
  f.expect(FrontendReq::set_vring_base);
  auto c = f.client();
  negotiate_plain(c);
  auto s = vmm_socket();
  proxy::Forward acked{FrontendReq::set_vring_num, wire::VringState{0, 256}, {}, false};
  proxy::Answer a;
  a.to = s.ours;
  a.need_reply = true;
  auto r = proxy::forward_and_answer(c, acked, a);
  REQUIRE(r);
  CHECK(r->answered);
  auto m = vmm_receives(s.vmm);
  CHECK(m.header.request == static_cast<uint32_t>(FrontendReq::set_vring_num));
  CHECK(m.body == encode_ack(FrontendReq::set_vring_num, 0).body);

  proxy::Forward silent{FrontendReq::set_vring_base, wire::VringState{0, 0}, {}, false};
  a.need_reply = false;
  int sent = 0;
  a.sent = [&sent] { ++sent; };
  auto r2 = proxy::forward_and_answer(c, silent, a);
  REQUIRE(r2);
  CHECK(r2->answered);  // nothing was owed
  CHECK(r2->answer_error.empty());
  CHECK(sent == 1);
  CHECK(f.finish() == "");
  a.to.reset();
  s.ours.reset();  // the VMM sees EOF, not a message
  auto none = s.vmm.receive(64, 1, deadline_in(std::chrono::milliseconds(5000)), "nothing");
  REQUIRE_FALSE(none);
  CHECK(none.error().code == errc::disconnected);
}

TEST_CASE("proxy forward_and_answer: a refusal or a lost back-end sends the VMM nothing") {
  FakeBackend f;
  f.answer_u64(FrontendReq::get_features, bit(feature::protocol_features));
  f.answer_u64(FrontendReq::get_protocol_features, bit(pf::reply_ack));
  f.expect(FrontendReq::set_protocol_features);
  f.expect(FrontendReq::set_vring_num);
  f.send(reply_u64(FrontendReq::set_vring_num, 1));  // REPLY_ACK: refused
  f.expect(FrontendReq::get_vring_base);
  f.close();
  auto c = f.client();
  REQUIRE(c.get_features().value() == bit(feature::protocol_features));
  REQUIRE(c.get_protocol_features().value() == bit(pf::reply_ack));
  REQUIRE(c.set_protocol_features(bit(pf::reply_ack)).ok());
  auto s = vmm_socket();
  proxy::Forward num{FrontendReq::set_vring_num, wire::VringState{0, 256}, {}, false};
  proxy::Answer a;
  a.to = s.ours;
  a.need_reply = true;
  bool sent = false;
  a.sent = [&sent] { sent = true; };
  auto r = proxy::forward_and_answer(c, num, a);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::backend_failure);  // the port answers the refusal itself
  proxy::Forward base{FrontendReq::get_vring_base, wire::VringState{0, 0}, {}, false};
  auto lost = proxy::forward_and_answer(c, base, a);
  REQUIRE_FALSE(lost);
  CHECK(c.broken());  // the port answers for it from the shadow, or ends the session
  CHECK_FALSE(sent);  // the VMM's next request waits for the port
  CHECK(f.finish() == "");
  a.to.reset();
  s.ours.reset();
  auto none = s.vmm.receive(64, 1, deadline_in(std::chrono::milliseconds(5000)), "nothing");
  REQUIRE_FALSE(none);
  CHECK(none.error().code == errc::disconnected);
}

TEST_CASE("proxy forward_and_answer: a VMM that is gone does not undo what the back-end accepted") {
  FakeBackend f;
  script_plain(f);
  f.expect(FrontendReq::get_vring_base);
  f.send(reply_bytes(FrontendReq::get_vring_base, wire::bytes_of(wire::VringState{0, 7})));
  auto c = f.client();
  negotiate_plain(c);
  auto sp = make_socketpair();
  REQUIRE(sp.first);
  sp.second.reset();  // the VMM's end closed
  proxy::Forward fw{FrontendReq::get_vring_base, wire::VringState{0, 0}, {}, false};
  proxy::Answer a;
  a.to = std::make_shared<Connection>(std::move(sp.first));
  bool sent = false;
  a.sent = [&sent] { sent = true; };
  auto r = proxy::forward_and_answer(c, fw, a);
  REQUIRE(r);  // the back-end stopped the ring: the shadow must record it
  CHECK(r->vring_base == 7);
  CHECK(r->answered);
  CHECK_FALSE(r->answer_error.empty());  // the port ends the session with this
  CHECK_FALSE(sent);
  CHECK_FALSE(c.broken());
  CHECK(f.finish() == "");
}
