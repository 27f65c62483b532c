#pragma once
// The snapshot actor: one back-end state transfer (the vhost-user spec's
// "Migrating back-end state", docs/snapshot-format.md) between a
// pipe and a snapshot file (snapshot/), never holding the state in memory
// (snapshot_actor in actors/messages.hpp). The device spawns one per
// snapshot or restore, linked and detached, and drops it afterwards.
//
//   save   pipe -> SET_DEVICE_STATE_FD(save, our write end) -> drop the end we
//          gave (or switch to the back-end's own fd) -> read to EOF into the
//          writer (size cap) -> CHECK_DEVICE_STATE -> commit (atomic rename)
//   open   open the file, check the head, then read the state once to check
//          its checksum: a bad file is refused before the back-end sees a byte
//          (a file vufront opened itself is mapped read-only under a SIGBUS
//          guard and checked on the mapping; a file the VMM passed as an fd
//          is read, since the VMM may change it)
//   load   pipe -> SET_DEVICE_STATE_FD(load, our read end) -> drop it (or
//          switch) -> write the file's state into the pipe (a mapped file:
//          straight from the mapping, after checking it did not change since
//          open; a passed fd: read into a buffer, its checksum checked on
//          the bytes sent) -> close -> CHECK_DEVICE_STATE
//
// The bytes move in slices of at most ~20 ms (poll with a timeout, 1 MiB
// reads and writes). A save reads the pipe into one of a few buffers while
// a writer thread (snapshot/writer_thread.hpp) hashes and writes the one
// before into the file; the thread is joined on every end. After each
// slice the actor sends itself pump_atom and so reads its mailbox: cancel
// takes effect within a slice, and the whole transfer's deadline is checked
// before every read or write. A cancel between steps is kept: the next step fails "cancelled". Every failure
// (deadline, cap, a back-end that closes the pipe early or dies, a failed
// CHECK_DEVICE_STATE, cancel) ends the transfer with an error naming the
// request, removes the temporary file and closes every fd; the connection
// itself is left as it is (the connection actor reports a lost back-end).
// Except one: when the file fails during the load (the checksum of the bytes
// sent does not match at the end, or it shrank; a mapped file: write(2)
// failed with EFAULT on a page cut by a truncation, or its size or times
// changed by the end), the back-end has been sent bytes that are not the
// snapshot's, so its device is reset (RESET_DEVICE, SET_STATUS 0) before the
// restore fails, and the error says so ("snapshot file changed during
// restore (truncated)"). A mapped file changed between the check and the
// load is refused before SET_DEVICE_STATE_FD: the back-end sees nothing.
//
// An fd the back-end returns instead of ours is checked before use: it must
// be a pipe or socket open for the direction needed.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/messages.hpp"
#include "base/unique_fd.hpp"
#include "snapshot/reader.hpp"
#include "snapshot/writer.hpp"
#include "snapshot/writer_thread.hpp"

namespace vufront::actors {

struct SnapshotData {
  static inline const char* name = "vufront.snapshot";

  enum class Phase : uint8_t {
    idle,
    verifying,  ///< open: reading the file once for its checksum
    handing,    ///< SET_DEVICE_STATE_FD sent, waiting for its reply
    saving,     ///< pipe -> file
    loading,    ///< file -> pipe
    checking,   ///< CHECK_DEVICE_STATE sent
    resetting,  ///< the file changed during the load: the back-end's device is being reset
  };

  connection_actor conn;
  caf::actor progress;                 ///< optional listener

  Phase phase = Phase::idle;
  bool pump_scheduled = false;
  /// A cancel came between steps (restore: after the file check, before
  /// the load): the next step fails instead of starting. The actor lives
  /// for one snapshot or restore, so it cannot outlast that operation.
  bool cancelled = false;
  uint64_t generation = 0;             ///< tells replies of an ended transfer apart
  TransferDeadline deadline;
  std::string request;                 ///< "SET_DEVICE_STATE_FD(save)" etc., for errors
  std::string path;                    ///< the snapshot file

  /// save: the writer, on its thread while the state streams in
  /// (`writing`), back here for commit once the pipe reached its end.
  std::optional<snapshot::SnapshotWriter> writer;
  std::unique_ptr<snapshot::WriterThread> writing;
  snapshot::WriterThread::Slot chunk;  ///< save: the buffer being filled from the pipe
  size_t chunk_len = 0;
  std::optional<snapshot::SnapshotReader> reader;
  std::shared_ptr<const snapshot::Manifest> manifest;
  UniqueFd pipe;                       ///< the end we read or write
  std::vector<uint8_t> buf;            ///< a restore read with read_state (not mapped): one chunk
  size_t buf_off = 0;
  size_t buf_len = 0;
  bool vmsplice_ok = true;             ///< a mapped load: false once our end refused vmsplice
  uint64_t done = 0;                   ///< state bytes moved
  uint64_t total = 0;                  ///< known size (load, verify), else 0
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point last_progress;

  std::optional<caf::typed_response_promise<SnapshotInfo>> info_rp;
  std::optional<caf::typed_response_promise<std::shared_ptr<const snapshot::Manifest>>> open_rp;
};

/// `progress` may be null. The transfer's own deadline bounds the stream and
/// the file; the connection actor bounds the requests it sends for it.
[[nodiscard]] snapshot_actor::behavior_type snapshot_impl(
    snapshot_actor::stateful_pointer<SnapshotData> self, connection_actor conn,
    caf::actor progress);

}  // namespace vufront::actors
