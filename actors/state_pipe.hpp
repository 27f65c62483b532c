#pragma once
// The pipe of one back-end state transfer (SET_DEVICE_STATE_FD) on the
// snapshot actor's side (actors/snapshot.hpp): a fresh pipe, or the fd the
// back-end returned instead, checked; a mapped file's bytes moved into it;
// and SIGPIPE, which a write into a pipe whose reader went away would raise.

#include <cstddef>
#include <cstdint>
#include <string>

#include <sys/types.h>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront::actors {

/// A fresh pipe for a transfer, enlarged to 1 MiB (best effort); our end
/// (the read end when `we_read`) non-blocking, the back-end's end blocking,
/// as back-ends expect. io_error naming `request`.
[[nodiscard]] Result<Pipe> transfer_pipe(const std::string& request, bool we_read);

/// The back-end's own fd, checked: a pipe or socket, open for what we do
/// with it (read when saving, write when loading), dup'ed and made
/// non-blocking. bad_fds when it is not usable, io_error when a call failed.
[[nodiscard]] Result<UniqueFd> adopt_backend_fd(const std::string& request, const SharedFd& theirs,
                                                bool we_read);

/// Moves `len` bytes of a mapping into `fd`: vmsplice while `vmsplice_ok`
/// (the pipe takes references to the file's pages, no copy; the back-end
/// copies once when it reads); write(2) once vmsplice found `fd` is not a
/// pipe (a back-end's own socket; `vmsplice_ok` is then cleared). Returns
/// what the call returned, errno set; EFAULT on a page a truncation cut.
[[nodiscard]] ssize_t splice_or_write(int fd, bool& vmsplice_ok, const uint8_t* at, size_t len);

/// SIGPIPE would kill the process when the back-end closes its read end
/// while we write: blocked in the calling (detached, dedicated) thread, and
/// in the threads it starts later (a save's writer thread)...
void block_sigpipe();
/// ... and a pending one is consumed after EPIPE.
void consume_sigpipe();

}  // namespace vufront::actors
