#pragma once
// The guest memory of a replay (actors/replay.hpp's ActivateRequest) as sent
// on a back-end connection (actors/connection.cpp, activate): the whole table
// as one SET_MEM_TABLE, which carries at most 8 regions (the vhost-user spec's
// "Memory region description"); a larger table, which only a back-end with
// CONFIGURE_MEM_SLOTS can hold (a VMM that added regions with ADD_MEM_REG, a
// device given more than 8), as one ADD_MEM_REG per region, within the
// back-end's GET_MAX_MEM_SLOTS (the spec's "Memory slots"). Runs on a fresh
// connection or one whose memory the table replaces (8 regions or fewer).

#include <vector>

#include "base/unique_fd.hpp"
#include "protocol/backend_client.hpp"

namespace vufront::actors {

/// Sends `table` (fds[i] is region i's) to `c`. A table the back-end cannot
/// hold fails before anything is sent, naming the counts, as a refusal
/// (errc::backend_failure: the stream stays in sync).
[[nodiscard]] Result<void> send_memory(BackendClient& c, const std::vector<wire::MemoryRegion>& table,
                                       const std::vector<SharedFd>& fds);

}  // namespace vufront::actors
