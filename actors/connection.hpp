#pragma once
// The connection actor: owns the vhost-user socket and its BackendClient.
// Spawned detached (it blocks in one request sequence at a time, each request
// bounded by its deadline from Timeouts), linked to the device. One message
// is one lifecycle step (negotiate, start these queues, stop those), not one
// request, so a step costs one actor round trip plus its socket round trips.
//
// When an error leaves the connection broken (EOF, timeout, protocol
// violation) it tells the device once with (lost_atom, reason), besides
// answering the request with the error.

#include <optional>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/messages.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

struct ConnectionState {
  static inline const char* name = "vufront.connection";
  std::optional<BackendClient> client;
  Timeouts timeouts;
  caf::actor_addr device;  ///< weak: the device owns us, not the reverse
  bool lost_reported = false;
};

[[nodiscard]] connection_actor::behavior_type connection_impl(
    connection_actor::stateful_pointer<ConnectionState> self, caf::actor_addr device,
    Timeouts timeouts);

}  // namespace vufront::actors
