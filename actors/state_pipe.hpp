#pragma once
// The pipe of one back-end state transfer (SET_DEVICE_STATE_FD) on the
// snapshot actor's side (actors/snapshot.hpp): a fresh pipe, or the fd the
// back-end returned instead, checked; and SIGPIPE, which a write into a pipe
// whose reader went away would raise.

#include <string>

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

/// SIGPIPE would kill the process when the back-end closes its read end
/// while we write: blocked in the calling (detached, dedicated) thread, and
/// in the threads it starts later (a save's writer thread)...
void block_sigpipe();
/// ... and a pending one is consumed after EPIPE.
void consume_sigpipe();

}  // namespace vufront::actors
