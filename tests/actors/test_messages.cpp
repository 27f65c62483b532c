// The actor layer's error conversion: vufront::Error survives the trip
// through caf::error unchanged, and CAF's own errors get a step name.
#include <doctest/doctest.h>

#include <caf/sec.hpp>

#include "actors/error.hpp"
#include "actors/messages.hpp"

using namespace vufront;

TEST_CASE("an Error round-trips through caf::error") {
  Error e = make_error(errc::timeout, "GET_VRING_BASE", "no reply within 30000 ms", 0);
  auto c = actors::to_caf(e);
  auto back = actors::from_caf(c, "ignored");
  CHECK(back.code == errc::timeout);
  CHECK(back.request == "GET_VRING_BASE");
  CHECK(back.detail == "no reply within 30000 ms");
  CHECK(actors::render_error(c.code(), c.category(), c.context()) == e.message());
}

TEST_CASE("CAF's request timeout becomes a timeout of the named step") {
  auto back = actors::from_caf(caf::make_error(caf::sec::request_timeout), "sleep");
  CHECK(back.code == errc::timeout);
  CHECK(back.request == "sleep");
  auto down = actors::from_caf(caf::make_error(caf::sec::request_receiver_down), "wake");
  CHECK(down.code == errc::broken);
}

TEST_CASE("an Error's operation round-trips through caf::error and names it in the message") {
  Error e = in_operation(make_error(errc::timeout, "GET_VRING_BASE", "no reply within 2000 ms"), "sleep");
  CHECK(e.op == "sleep");
  CHECK(e.message() == "sleep: GET_VRING_BASE: timeout: no reply within 2000 ms");
  auto back = actors::from_caf(actors::to_caf(e), "ignored");
  CHECK(back.op == "sleep");
  CHECK(back.request == "GET_VRING_BASE");
  CHECK(back.message() == e.message());
  // an error that only repeated the operation's name keeps it once
  Error own = in_operation(make_error(errc::bad_state, "wake", "busy"), "wake");
  CHECK(own.request.empty());
  CHECK(own.message() == "wake: bad_state: busy");
}
