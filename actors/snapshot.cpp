#include "actors/snapshot.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string>
#include <utility>

#include <caf/send.hpp>

#include "actors/error.hpp"
#include "actors/state_pipe.hpp"
#include "protocol/wire.hpp"

namespace vufront::actors {

namespace {

using Self = snapshot_actor::stateful_pointer<SnapshotData>;
using Phase = SnapshotData::Phase;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr size_t chunk_bytes = size_t{1} << 20;
constexpr size_t mapped_write_bytes = size_t{16} << 20;  // a write takes what fits in the pipe
/// A save's buffers: one filled from the pipe, one written, one spare so
/// the reader rarely waits for the writer (or the writer for the reader).
constexpr size_t save_buffers = 3;
constexpr milliseconds slice{20};
constexpr milliseconds progress_every{100};

uint64_t elapsed_us(const SnapshotData& st) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - st.started).count());
}

void report_progress(Self self, bool force) {
  auto& st = self->state;
  if (!st.progress)
    return;
  auto now = Clock::now();
  if (!force && now - st.last_progress < progress_every)
    return;
  st.last_progress = now;
  caf::anon_send(st.progress, progress_atom_v, st.done, st.total);
}

/// Ends the transfer: every fd closed, the temporary file removed, the
/// waiting request answered with `e`.
void fail(Self self, const Error& e) {
  auto& st = self->state;
  st.phase = Phase::idle;
  ++st.generation;
  st.pipe.reset();
  st.chunk = {};
  st.chunk_len = 0;
  st.writing.reset();  // stops and joins the writer thread, removes the temporary
  st.writer.reset();   // (or, after the stream, removes it here)
  st.reader.reset();
  st.buf_off = st.buf_len = 0;
  if (st.info_rp) {
    st.info_rp->deliver(to_caf(e));
    st.info_rp.reset();
  }
  if (st.open_rp) {
    st.open_rp->deliver(to_caf(e));
    st.open_rp.reset();
  }
}

void schedule(Self self) {
  auto& st = self->state;
  if (st.pump_scheduled)
    return;
  st.pump_scheduled = true;
  self->send(self, pump_atom_v);
}

/// Waits up to the slice's or the deadline's end for `events` on the pipe.
/// Returns false when the time ran out (nothing ready).
bool wait_pipe(SnapshotData& st, short events, Clock::time_point slice_end) {
  auto until = std::min(slice_end, st.deadline.next());
  auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now()).count();
  pollfd p{st.pipe.get(), events, 0};
  int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0)));
  return n > 0;
}

// ---- the end of each transfer ------------------------------------------------------

SnapshotInfo info_of(const SnapshotData& st, const snapshot::Manifest& m, const std::string& path) {
  SnapshotInfo info;
  info.path = path;
  info.state_bytes = m.state_length;
  info.checksum = m.state_checksum;
  info.features = m.features;
  for (const auto& q : m.queues)
    info.queues.push_back({q.index, q.size, q.base, 0});
  info.elapsed_us = elapsed_us(st);
  return info;
}

void fail_and_reset(Self self, Error e);

/// After the stream: CHECK_DEVICE_STATE, then `next`.
template <class Next>
void check_state(Self self, Next next) {
  auto& st = self->state;
  st.phase = Phase::checking;
  st.pipe.reset();  // EOF for a back-end reading; nothing more for one writing
  auto gen = st.generation;
  // bounded by the connection actor (the request's own deadline)
  self->request(st.conn, caf::infinite, check_state_atom_v)
      .then(
          [self, gen, next](caf::ok_atom) mutable {
            if (self->state.generation == gen)
              next();
          },
          [self, gen](caf::error& e) {
            auto& now = self->state;
            if (now.generation != gen)
              return;
            // A mapped file that changed under the load is the error to
            // report (and the device is reset), whatever the back-end made
            // of the bytes it was sent.
            if (now.reader && now.reader->mapped())
              if (auto r = now.reader->check_unchanged(); !r)
                return fail_and_reset(self, r.error());
            fail(self, from_caf(e, "CHECK_DEVICE_STATE"));
          });
}

void finish_save(Self self) {
  check_state(self, [self] {
    auto& st = self->state;
    st.total = st.done;  // the state's size is known now, at its end
    report_progress(self, true);
    auto path = st.writer->path();
    auto committed = st.writer->commit(*st.manifest);
    if (!committed)
      return fail(self, committed.error());
    auto info = info_of(st, *committed, path);
    st.writer.reset();
    st.phase = Phase::idle;
    ++st.generation;
    st.info_rp->deliver(std::move(info));
    st.info_rp.reset();
  });
}

void finish_load(Self self) {
  check_state(self, [self] {
    auto& st = self->state;
    // A mapped file's pages were read by the back-end from the pipe, up to
    // its answer to CHECK_DEVICE_STATE: the file must not have changed
    // until then (size, times, no page cut).
    if (st.reader->mapped())
      if (auto r = st.reader->check_unchanged(); !r)
        return fail_and_reset(self, r.error());
    report_progress(self, true);
    auto info = info_of(st, *st.manifest, st.path);
    st.reader.reset();
    st.phase = Phase::idle;
    ++st.generation;
    st.info_rp->deliver(std::move(info));
    st.info_rp.reset();
  });
}

/// The file failed while it was being sent (its checksum no longer matches
/// at the end, it shrank, a read failed): the back-end has been given bytes
/// that are not the snapshot's. Our end of the pipe is closed, the back-end's
/// device is reset (RESET_DEVICE, then SET_STATUS 0: what the device's reset
/// sends), and only then does the transfer fail, saying so.
void fail_and_reset(Self self, Error e) {
  auto& st = self->state;
  st.phase = Phase::resetting;
  st.pipe.reset();
  st.reader.reset();
  auto gen = st.generation;
  // bounded by the connection actor (the requests' own deadlines)
  self->request(st.conn, caf::infinite, reset_device_atom_v)
      .then(
          [self, gen, e](caf::ok_atom) mutable {
            if (self->state.generation != gen)
              return;
            e.detail += "; the file changed while it was sent: the back-end's device was reset "
                        "(RESET_DEVICE, SET_STATUS 0)";
            fail(self, e);
          },
          [self, gen, e](caf::error& r) mutable {
            if (self->state.generation != gen)
              return;
            e.detail += "; the file changed while it was sent, and resetting the back-end's device failed: " +
                        from_caf(r, "RESET_DEVICE").message();
            fail(self, e);
          });
}

// ---- one slice of each streaming phase ---------------------------------------------
// Each returns true while there is more to do.

/// "60 s", "0.5 s": a stall window as the user gave it.
std::string format_seconds(milliseconds ms) {
  if (ms.count() % 1000 == 0)
    return std::to_string(ms.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

Error deadline_error(const SnapshotData& st, const char* what) {
  if (st.deadline.stalled(Clock::now()))
    return make_error(errc::timeout, st.request,
                      std::string(what) + ": no byte moved for " +
                          format_seconds(st.deadline.stall) + " (" + std::to_string(st.done) +
                          " bytes moved in all)");
  return make_error(errc::timeout, st.request,
                    std::string(what) + " did not end before the deadline (" +
                        std::to_string(st.done) + " bytes moved)");
}

/// Ends a save's stream with the transfer's error: `e` as the request's.
bool save_failed(Self self, Error e) {
  e.request = self->state.request;
  fail(self, e);
  return false;
}

/// Hands the buffer being filled to the writer thread (none when empty).
Result<void> submit_chunk(SnapshotData& st) {
  auto slot = std::exchange(st.chunk, snapshot::WriterThread::Slot{});
  return st.writing->submit(slot, std::exchange(st.chunk_len, 0));
}

/// The pipe's end: the last buffer written, the writer thread joined and
/// the writer back here; then CHECK_DEVICE_STATE and commit.
bool end_of_stream(Self self) {
  auto& st = self->state;
  if (st.chunk.data != nullptr)
    if (auto r = submit_chunk(st); !r)
      return save_failed(self, r.error());
  auto w = st.writing->finish();
  st.writing.reset();
  if (!w)
    return save_failed(self, w.error());
  st.writer.emplace(std::move(w).value());
  finish_save(self);
  return false;
}

/// Reads the pipe into a buffer of the writer thread; a full buffer goes to
/// the thread, and so does a partly filled one when the pipe is empty and
/// the thread idle (it is not kept waiting for a full MiB).
bool save_slice(Self self) {
  auto& st = self->state;
  auto slice_end = Clock::now() + slice;
  while (Clock::now() < slice_end) {
    if (Clock::now() >= st.deadline.next()) {
      fail(self, deadline_error(st, "the back-end's state stream"));
      return false;
    }
    if (auto r = st.writing->status(); !r)
      return save_failed(self, r.error());  // the file failed: stop reading
    if (st.chunk.data == nullptr) {
      auto slot = st.writing->acquire(std::min(slice_end, st.deadline.next()));
      if (!slot)
        return save_failed(self, slot.error());
      st.chunk = *slot;  // none free in time: the checks above run again
      continue;
    }
    ssize_t n = ::read(st.pipe.get(), st.chunk.data + st.chunk_len, st.chunk.size - st.chunk_len);
    if (n > 0) {
      st.chunk_len += static_cast<size_t>(n);
      st.done += static_cast<uint64_t>(n);
      st.deadline.progressed();
      report_progress(self, false);
      if (st.chunk_len == st.chunk.size)
        if (auto r = submit_chunk(st); !r)
          return save_failed(self, r.error());
      continue;
    }
    if (n == 0)
      return end_of_stream(self);
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN) {
      fail(self, make_error(errc::io_error, st.request, "read from the state pipe", errno));
      return false;
    }
    if (st.chunk_len > 0 && st.writing->idle())
      if (auto r = submit_chunk(st); !r)
        return save_failed(self, r.error());
    (void)wait_pipe(st, POLLIN, slice_end);
  }
  return true;
}

/// After a write to the pipe that wrote nothing (errno set): waits for room
/// (EAGAIN) or goes on (EINTR) and returns true, or fails the transfer (the
/// back-end closed the pipe, another error) and returns false.
bool after_failed_write(Self self, Clock::time_point slice_end) {
  auto& st = self->state;
  if (errno == EINTR)
    return true;
  if (errno == EPIPE) {
    consume_sigpipe();
    fail(self, make_error(errc::disconnected, st.request,
                          "the back-end closed the state pipe after " + std::to_string(st.done) +
                              " of " + std::to_string(st.total) + " bytes"));
    return false;
  }
  if (errno != EAGAIN) {
    fail(self, make_error(errc::io_error, st.request, "write to the state pipe", errno));
    return false;
  }
  (void)wait_pipe(st, POLLOUT, slice_end);
  return true;
}

bool load_slice(Self self) {
  auto& st = self->state;
  auto slice_end = Clock::now() + slice;
  while (Clock::now() < slice_end) {
    if (Clock::now() >= st.deadline.next()) {
      fail(self, deadline_error(st, "the back-end's reading of the state"));
      return false;
    }
    if (st.buf_off == st.buf_len) {
      // The bytes hashed are the bytes in buf, which go to the pipe as they
      // are: the checksum at the end is about what the back-end was sent.
      auto n = st.reader->read_state(st.buf.data(), st.buf.size());
      if (!n) {
        fail_and_reset(self, n.error());
        return false;
      }
      if (*n == 0) {
        finish_load(self);
        return false;
      }
      st.buf_off = 0;
      st.buf_len = *n;
    }
    ssize_t w = ::write(st.pipe.get(), st.buf.data() + st.buf_off, st.buf_len - st.buf_off);
    if (w > 0) {
      st.buf_off += static_cast<size_t>(w);
      st.done += static_cast<uint64_t>(w);
      st.deadline.progressed();
      report_progress(self, false);
      continue;
    }
    if (!after_failed_write(self, slice_end))
      return false;
  }
  return true;
}

/// The load of a mapped file (a file vufront opened itself): spliced into
/// the pipe straight from the mapping, its checksum checked on the mapping
/// before the hand-over. A page cut by a truncation makes vmsplice/write
/// fail with EFAULT; after CHECK_DEVICE_STATE the file must be as it was at
/// open (finish_load). Either failure resets the back-end's device, as a
/// changed file does on the read path.
bool load_mapped_slice(Self self) {
  auto& st = self->state;
  const uint8_t* state = st.reader->mapped_state();
  auto slice_end = Clock::now() + slice;
  while (Clock::now() < slice_end) {
    if (Clock::now() >= st.deadline.next()) {
      fail(self, deadline_error(st, "the back-end's reading of the state"));
      return false;
    }
    if (st.done == st.total) {
      finish_load(self);
      return false;
    }
    const size_t want = static_cast<size_t>(std::min<uint64_t>(st.total - st.done, mapped_write_bytes));
    // BOUNDS: done + want <= total = the mapped state's length.
    ssize_t w = splice_or_write(st.pipe.get(), st.vmsplice_ok, state + st.done, want);
    if (w > 0) {
      st.done += static_cast<uint64_t>(w);
      st.reader->drop_mapped_before(st.done);
      st.deadline.progressed();
      report_progress(self, false);
      continue;
    }
    if (errno == EFAULT) {
      fail_and_reset(self, make_error(errc::bad_size, st.request,
                                      "snapshot file changed during restore (truncated): " +
                                          st.path + " ends before byte " +
                                          std::to_string(st.done) + " of its state"));
      return false;
    }
    if (!after_failed_write(self, slice_end))
      return false;
  }
  return true;
}

bool verify_slice(Self self) {
  auto& st = self->state;
  auto slice_end = Clock::now() + slice;
  while (Clock::now() < slice_end) {
    if (Clock::now() >= st.deadline.next()) {
      fail(self, deadline_error(st, "checking the file"));
      return false;
    }
    auto n = st.reader->mapped() ? st.reader->verify_mapped(chunk_bytes)
                                 : st.reader->read_state(st.buf.data(), st.buf.size());
    if (!n) {
      fail(self, n.error());
      return false;
    }
    st.done += *n;
    if (*n > 0)
      st.deadline.progressed();
    if (*n == 0) {
      st.reader->rewind();
      st.phase = Phase::idle;
      st.done = 0;
      st.open_rp->deliver(st.manifest);
      st.open_rp.reset();
      return false;
    }
  }
  return true;
}

// ---- the hand-over: SET_DEVICE_STATE_FD ----------------------------------------------

/// Sends SET_DEVICE_STATE_FD(direction) with one end of a fresh pipe and
/// switches to `streaming` with our end (or the back-end's own fd).
void hand_over(Self self, uint32_t direction, Phase streaming) {
  auto& st = self->state;
  const bool we_read = direction == wire::device_state_save;
  auto p = transfer_pipe(st.request, we_read);
  if (!p)
    return fail(self, p.error());
  SharedFd given = share(std::move(we_read ? p->write_end : p->read_end));
  st.pipe = std::move(we_read ? p->read_end : p->write_end);
  st.phase = Phase::handing;
  auto gen = st.generation;
  // bounded by the connection actor (the request's own deadline)
  self->request(st.conn, caf::infinite, state_fd_atom_v, direction, given)
      .then(
          [self, gen, we_read, streaming](const SharedFd& theirs) {
            auto& now = self->state;
            if (now.generation != gen)
              return;
            // The end we gave away is dropped with this handler's message
            // (the connection actor dropped its copy when it replied), so
            // EOF / EPIPE will come from the back-end alone.
            if (theirs) {
              auto own = adopt_backend_fd(now.request, theirs, we_read);
              if (!own)
                return fail(self, own.error());
              now.pipe = std::move(own).value();
            }
            now.phase = streaming;
            schedule(self);
          },
          [self, gen](caf::error& e) {
            if (self->state.generation == gen)
              fail(self, from_caf(e, self->state.request));
          });
}

/// A new transfer: refused while another is in progress.
std::optional<Error> begin(Self self, const char* request, TransferDeadline deadline) {
  auto& st = self->state;
  if (st.phase != Phase::idle)
    return make_error(errc::bad_state, request, "a transfer is in progress");
  if (st.cancelled)
    return make_error(errc::cancelled, request, "cancelled before it began");
  ++st.generation;
  st.request = request;
  st.deadline = deadline;
  st.deadline.progressed();  // the phase before ended: this one starts its window afresh
  st.done = st.total = 0;
  st.buf_off = st.buf_len = 0;
  st.started = st.last_progress = Clock::now();
  st.vmsplice_ok = true;
  return std::nullopt;
}

}  // namespace

snapshot_actor::behavior_type snapshot_impl(snapshot_actor::stateful_pointer<SnapshotData> self,
                                            connection_actor conn, caf::actor progress) {
  self->state.conn = std::move(conn);
  self->state.progress = std::move(progress);
  block_sigpipe();
  return {
      [self](save_atom, const SaveJob& job) -> caf::result<SnapshotInfo> {
        if (auto e = begin(self, "SET_DEVICE_STATE_FD(save)", job.deadline))
          return to_caf(*e);
        auto& st = self->state;
        if (!job.manifest)
          return to_caf(make_error(errc::invalid_argument, st.request, "no manifest"));
        auto w = snapshot::SnapshotWriter::create(
            job.path, job.target, job.max_bytes,
            job.replace ? snapshot::Existing::replace : snapshot::Existing::refuse);
        if (!w)
          return to_caf(w.error());
        auto writing = snapshot::WriterThread::start(std::move(w).value(), save_buffers, chunk_bytes);
        if (!writing)
          return to_caf(writing.error());
        st.writing = std::move(writing).value();
        st.manifest = job.manifest;
        st.info_rp = self->make_response_promise<SnapshotInfo>();
        auto rp = *st.info_rp;
        hand_over(self, wire::device_state_save, Phase::saving);
        return rp;
      },
      [self](open_atom, const RestoreOptions& o,
             TransferDeadline deadline) -> caf::result<std::shared_ptr<const snapshot::Manifest>> {
        if (auto e = begin(self, "restore: check the file", deadline))
          return to_caf(*e);
        auto& st = self->state;
        auto r = snapshot::SnapshotReader::open(o.path, o.target);
        if (!r)
          return to_caf(r.error());
        st.reader.emplace(std::move(r).value());
        // A file vufront opened itself is checked and loaded through a
        // mapping; if it cannot be mapped, it is read as a passed fd is.
        if (st.reader->mappable())
          (void)st.reader->map();
        if (!st.reader->mapped() && st.buf.empty())
          st.buf.resize(chunk_bytes);  // the read path's buffer (a save never needs one)
        st.path = o.path;
        st.manifest = std::make_shared<const snapshot::Manifest>(st.reader->manifest());
        st.total = st.manifest->state_length;
        st.phase = Phase::verifying;
        st.open_rp = self->make_response_promise<std::shared_ptr<const snapshot::Manifest>>();
        auto rp = *st.open_rp;
        schedule(self);
        return rp;
      },
      [self](load_atom, TransferDeadline deadline) -> caf::result<SnapshotInfo> {
        auto& st = self->state;
        if (!st.reader || st.phase != Phase::idle)
          return to_caf(make_error(errc::bad_state, "SET_DEVICE_STATE_FD(load)",
                                   "no checked snapshot file is open"));
        auto reader = std::move(st.reader);
        auto manifest = st.manifest;
        auto path = st.path;
        if (auto e = begin(self, "SET_DEVICE_STATE_FD(load)", deadline))
          return to_caf(*e);
        st.reader = std::move(reader);
        st.manifest = manifest;
        st.path = path;
        st.total = manifest->state_length;
        // Changed since its check (mapped files: their bytes are not
        // checked again as they are sent): refused before the back-end
        // sees a byte.
        if (st.reader->mapped())
          if (auto r = st.reader->check_unchanged(); !r) {
            Error e = r.error();
            e.request = st.request;
            st.reader.reset();
            return to_caf(e);
          }
        st.info_rp = self->make_response_promise<SnapshotInfo>();
        auto rp = *st.info_rp;
        hand_over(self, wire::device_state_load, Phase::loading);
        return rp;
      },
      [self](cancel_atom) {
        auto& st = self->state;
        st.cancelled = true;
        if (st.phase != Phase::idle && st.phase != Phase::resetting)  // a reset runs to its end
          fail(self, make_error(errc::cancelled, st.request,
                                "cancelled after " + std::to_string(st.done) + " bytes"));
      },
      [self](pump_atom) {
        auto& st = self->state;
        st.pump_scheduled = false;
        bool more = false;
        switch (st.phase) {
          case Phase::saving: more = save_slice(self); break;
          case Phase::loading:
            more = st.reader->mapped() ? load_mapped_slice(self) : load_slice(self);
            break;
          case Phase::verifying: more = verify_slice(self); break;
          default: break;
        }
        if (more)
          schedule(self);
      },
  };
}

}  // namespace vufront::actors
