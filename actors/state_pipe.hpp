#pragma once
// The pipe of one back-end state transfer (SET_DEVICE_STATE_FD), for the
// snapshot actor (actors/snapshot.hpp): made, or the back-end's own fd
// checked and adopted; and SIGPIPE kept from killing the process. No actor.

#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace vufront::actors {

/// A fresh pipe, enlarged to 1 MiB (best effort), our end non-blocking; the
/// other end (the back-end's) stays blocking, as back-ends expect. Errors
/// (request `request`): io_error (pipe, fcntl).
[[nodiscard]] Result<Pipe> transfer_pipe(const std::string& request, bool we_read);

/// The back-end's own fd, checked: a pipe or socket, open for what we do
/// with it (read when saving, write when loading), duplicated and made
/// non-blocking. Errors: bad_fds (another kind of file, the wrong access
/// mode), io_error (dup, fstat, fcntl).
[[nodiscard]] Result<UniqueFd> adopt_backend_fd(const std::string& request, const SharedFd& theirs,
                                                bool we_read);

/// SIGPIPE would kill the process when the back-end closes its read end
/// while we write: blocked in the calling (detached, dedicated) thread, and
/// a pending one is consumed after EPIPE (consume_sigpipe).
void block_sigpipe();
void consume_sigpipe();

}  // namespace vufront::actors
