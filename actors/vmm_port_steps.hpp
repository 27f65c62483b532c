#pragma once
// The VMM port's steps, shared by its three files: vmm_port.cpp (the actor,
// accepting, listening, status), vmm_session.cpp (one VMM connection: its
// requests in order, forwarded to the device's connection, and its end) and
// vmm_away.cpp (the back-end lost under the session: fencing, answering
// from the shadow, replaying it into the next back-end). Internal to the port.

#include <memory>
#include <string>

#include "actors/error.hpp"
#include "actors/vmm_port.hpp"
#include "base/log.hpp"

namespace vufront::actors::vmm_port_steps {

using Self = vmm_port_full::stateful_pointer<VmmPortState>;
using Prepared = proxy::Shadow::Prepared;

/// The connection bounds every request it forwards, and the device every
/// step it runs for the port.
inline const caf::duration device_wait{caf::infinite};

/// Sends `f` straight to the device's connection actor (the one it last
/// told the port: vmm_conn_atom), the VMM's answer as `a` says; then
/// `ok(ForwardResult&)`, or `err(caf::error&)` with the connection's error.
/// When the device has no connection (lost, reconnecting, renewing's
/// failure, shutting down), `err` at once with what the device said.
template <class Ok, class Err>
void to_backend(Self self, const proxy::Forward& f, proxy::Answer a, Ok ok, Err err) {
  auto& st = self->state;
  if (auto conn = caf::actor_cast<connection_actor>(st.backend_conn)) {
    self->request(conn, device_wait, vmm_fwd_atom_v, f, std::move(a)).then(std::move(ok), std::move(err));
    return;
  }
  caf::error why = st.no_conn ? st.no_conn
                              : to_caf(make_error(errc::broken, "VMM request",
                                                  "the device's connection to the back-end is gone"));
  err(why);
}

void say(Self self, log::Level level, const std::string& line);
inline void log(Self self, const std::string& line) { say(self, log::Level::info, line); }
inline void warn(Self self, const std::string& line) { say(self, log::Level::warning, line); }
std::string req_name(FrontendReq r);
/// An event for the device's subscriber.
void event(Self self, DeviceEvent::Kind kind, std::string detail);

// ---- vmm_session.cpp
/// Whether `session` is still the VMM connection being served.
bool current(Self self, uint64_t session);
/// Ends the VMM connection; `undo`: take its set-up out of the back-end.
void end_session(Self self, const std::string& why, bool undo);
/// Takes the ended session's set-up out of the back-end (its rings stopped,
/// the connection renewed); while a snapshot is in progress this waits for
/// its end (pause_over()): the device is busy saving and cannot renew.
void teardown(Self self, std::string why);
/// Sends a reply to the VMM; a failure ends the session (false).
bool send(Self self, const FrontendReply& reply);
/// The request is answered and recorded: the reader may read the next (or
/// it did already: reader_ahead), and what it sent meanwhile is handled.
void done(Self self);
/// Sends the answer `r` to `p` the VMM waits for (a reply of its own, or the
/// ack it asked for), then done(); false when the session ended.
bool answer(Self self, const Prepared& p, const proxy::ForwardResult& r);
/// Forwards `p` to the back-end and answers the VMM after it.
void forward(Self self, Prepared p);
void on_request(Self self, std::shared_ptr<Message> m);
/// One request in the VMM's order: answered here, forwarded, held.
void handle_request(Self self, std::shared_ptr<Message> m);
/// The reader saw the VMM leave (after any request still in progress).
void on_eof(Self self, const std::string& why);

// ---- vmm_away.cpp
/// The back-end was lost under the session (the device said so, or a
/// forward failed): answer for it from now on, or end the session where a
/// resume would be wrong.
void backend_lost(Self self, const std::string& why);
/// A request while the back-end is away (or being replayed into).
void handle_away(Self self, Prepared p);
/// The device has a new connection: fence what is left of the lost
/// back-end, replay the shadow, then the held request.
void backend_back(Self self, const std::string& detail);
/// Held request `token` waited its hold_timeout.
void hold_expired(Self self, uint64_t token);
/// Drops the away bookkeeping (the session ended).
void forget_away(VmmPortState& st);

// ---- vmm_pause.cpp
/// A snapshot of the device under its VMM: the running rings stopped, the
/// state saved, the rings started again where they stopped.
caf::result<SnapshotInfo> snapshot_under_vmm(Self self, const SnapshotOptions& o);
/// A VMM request while a snapshot has the rings stopped.
void handle_pause(Self self, Prepared p);
/// The request in progress is answered: a snapshot waiting for it starts.
void request_over(Self self);
/// The snapshot is over (saved, failed or cancelled): a teardown that waited
/// for it runs now.
void pause_over(Self self);

}  // namespace vufront::actors::vmm_port_steps
