// The attach control protocol's messages (control/protocol.hpp): the command
// envelope, the strict argument readers, replies and errors on the wire.
#include <doctest/doctest.h>

#include "control/protocol.hpp"

using namespace vufront;
using namespace vufront::control;

TEST_CASE("control: a command envelope parses, with and without device and args") {
  json id;
  auto c = parse_command(R"({"id": 7, "cmd": "read_config", "device": "disk0", "args": {"offset": 0}})", id);
  REQUIRE(c);
  CHECK(c->id == 7);
  CHECK(c->cmd == "read_config");
  REQUIRE(c->device);
  CHECK(*c->device == "disk0");
  CHECK(c->args["offset"] == 0);
  auto d = parse_command(R"({"id": "abc", "cmd": "status"})", id);
  REQUIRE(d);
  CHECK(d->id == "abc");
  CHECK_FALSE(d->device);
  CHECK(d->args.is_object());
  CHECK(d->args.empty());
}

TEST_CASE("control: bad envelopes are bad_message, with the id when it could be read") {
  struct Case {
    const char* text;
    json id;
    const char* says;
  };
  const Case cases[] = {
      {"", nullptr, "not valid JSON"},
      {"{", nullptr, "not valid JSON"},
      {"[1]", nullptr, "must be a JSON object"},
      {R"({"cmd": "status"})", nullptr, "no \"id\""},
      {R"({"id": 1.5, "cmd": "status"})", nullptr, "\"id\" must be"},
      {R"({"id": {"a": 1}, "cmd": "status"})", nullptr, "\"id\" must be"},
      {R"({"id": 3})", 3, "\"cmd\""},
      {R"({"id": 4, "cmd": ""})", 4, "\"cmd\""},
      {R"({"id": 5, "cmd": 9})", 5, "\"cmd\""},
      {R"({"id": 6, "cmd": "status", "device": "has space"})", 6, "device id"},
      {R"({"id": 7, "cmd": "status", "device": 1})", 7, "device id"},
      {R"({"id": 8, "cmd": "status", "args": "x"})", 8, "\"args\" must be an object"},
      {R"({"id": 9, "cmd": "status", "typo": 1})", 9, "unknown key \"typo\""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    json id;
    auto r = parse_command(c.text, id);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::bad_message);
    CHECK(r.error().message().find(c.says) != std::string::npos);
    CHECK(id == c.id);
  }
  std::string long_id(max_id_bytes + 1, 'x');
  json id;
  CHECK_FALSE(parse_command(R"({"id": ")" + long_id + R"(", "cmd": "status"})", id));
  CHECK(id.is_null());
}

TEST_CASE("control: Args reads numbers as integers or hex or decimal strings, in range") {
  json v = {{"a", 5}, {"b", "0x10"}, {"c", "42"}, {"d", -1}, {"e", "0xzz"}, {"f", 1.5}, {"g", "18446744073709551615"},
            {"h", 100}};
  Args a(v, "args");
  CHECK(*a.u64("a", 0, 10) == 5);
  CHECK(*a.u64("b", 0, 100) == 16);
  CHECK(*a.u64("c", 0, 100) == 42);
  auto d = a.u64("d", 0, 10);
  REQUIRE_FALSE(d);
  CHECK(d.error().detail == "args.d: expected an integer 0..10, got -1");
  CHECK_FALSE(a.u64("e", 0, 10));
  CHECK_FALSE(a.u64("f", 0, 10));
  CHECK(*a.u64("g", 0, UINT64_MAX) == UINT64_MAX);
  auto h = a.u64("h", 0, 10);
  REQUIRE_FALSE(h);
  CHECK(h.error().detail.find("got 100") != std::string::npos);
  CHECK(*a.u64("missing", 0, 10, 3) == 3);
  auto m = a.u64("required", 0, 10);
  REQUIRE_FALSE(m);
  CHECK(m.error().detail.find("args.required: missing") == 0);
  CHECK(a.done());
}

TEST_CASE("control: Args refuses unknown keys, wrong types and names nested paths") {
  json v = {{"queues", json::array({json{{"size", 64}}, json{{"size", "big"}}})},
            {"name", "x"},
            {"flag", true},
            {"kind", "gpu"},
            {"typo", 1}};
  Args a(v, "args");
  auto qs = a.objects("queues", 1, 4);
  REQUIRE(qs);
  REQUIRE(qs->size() == 2);
  CHECK(*(*qs)[0].u64("size", 1, 1024) == 64);
  auto bad = (*qs)[1].u64("size", 1, 1024);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().detail.find("args.queues[1].size:") == 0);
  CHECK(*a.string("name", 8) == "x");
  CHECK(*a.boolean("flag") == true);
  auto k = a.one_of("kind", {"blk", "net"});
  REQUIRE_FALSE(k);
  CHECK(k.error().detail.find("expected one of blk, net") != std::string::npos);
  auto done = a.done();
  REQUIRE_FALSE(done);
  CHECK(done.error().detail == "args: unknown argument \"typo\"");
  CHECK_FALSE(a.objects("name", 0, 1));  // not an array
  json few = {{"list", json::array()}};
  Args b(few, "args");
  CHECK_FALSE(b.objects("list", 1, 4));  // too few
}

TEST_CASE("control: hex bytes both ways, and errors") {
  CHECK(to_hex({0x00, 0xab, 0x10}) == "00ab10");
  CHECK(*from_hex("00AB10", "x") == std::vector<uint8_t>{0x00, 0xab, 0x10});
  CHECK(from_hex("", "x")->empty());
  CHECK_FALSE(from_hex("abc", "x"));
  CHECK_FALSE(from_hex("zz", "x"));
}

TEST_CASE("control: replies, errors and events on the wire, and back") {
  auto e = make_error(errc::timeout, "GET_VRING_BASE", "no reply within 5000 ms");
  json r = error_reply(7, e);
  CHECK(r["id"] == 7);
  CHECK(r["ok"] == false);
  CHECK(r["error"]["code"] == "timeout");
  CHECK(r["error"]["request"] == "GET_VRING_BASE");
  auto back = error_from_json(r["error"], "sleep");
  CHECK(back.code == errc::timeout);
  CHECK(back.request == "GET_VRING_BASE");
  CHECK(back.detail == "no reply within 5000 ms");
  // the operation travels as its own field
  Error in_sleep = e;
  in_sleep.op = "sleep";
  json r2 = error_reply(8, in_sleep);
  CHECK(r2["error"]["op"] == "sleep");
  CHECK(r2["error"]["request"] == "GET_VRING_BASE");
  CHECK(r2["error"]["message"] == "sleep: GET_VRING_BASE: timeout: no reply within 5000 ms");
  auto back2 = error_from_json(r2["error"], "sleep");
  CHECK(back2.op == "sleep");
  CHECK(back2.request == "GET_VRING_BASE");
  CHECK(back2.detail == "no reply within 5000 ms");
  CHECK(back2.message() == in_sleep.message());
  auto unknown = error_from_json(json{{"code", "weird"}, {"message", "m"}}, "sleep");
  CHECK(unknown.code == errc::backend_failure);
  CHECK(unknown.detail.find("weird") != std::string::npos);
  json ok = ok_reply("a", nullptr);
  CHECK(ok["result"].is_object());
  json ev = make_event("state_changed", std::string("disk0"), {{"state", "active"}});
  CHECK(ev == json{{"event", "state_changed"}, {"device", "disk0"}, {"state", "active"}});
  std::string wire = to_wire(ev);
  CHECK(wire.back() == '\n');
  CHECK(wire.find('\n') == wire.size() - 1);
  // invalid UTF-8 does not throw
  CHECK_NOTHROW((void)to_wire(json{{"path", std::string("\xff\xfe")}}));
  CHECK(make_command(1, "status", std::nullopt, json::object()) == json{{"id", 1}, {"cmd", "status"}});
}

TEST_CASE("control: device ids") {
  CHECK(valid_device_id("disk0"));
  CHECK(valid_device_id("a.b-c_d"));
  CHECK_FALSE(valid_device_id(""));
  CHECK_FALSE(valid_device_id("has space"));
  CHECK_FALSE(valid_device_id(std::string(33, 'a')));
}
