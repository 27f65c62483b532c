#include "actors/replay_memory.hpp"

#include <string>

#include "protocol/messages.hpp"

namespace vufront::actors {

Result<void> send_memory(BackendClient& c, const std::vector<wire::MemoryRegion>& table,
                         const std::vector<SharedFd>& fds) {
  std::vector<int> raw;
  raw.reserve(fds.size());
  for (const auto& f : fds)
    raw.push_back(f ? f->get() : -1);
  if (table.size() <= wire::max_mem_table_regions)
    return c.set_mem_table(table, raw);
  const std::string n = std::to_string(table.size());
  if (!c.protocol_feature(protocol_feature::configure_mem_slots))
    return make_error(errc::backend_failure, "SET_MEM_TABLE",
                      "the memory has " + n + " regions; SET_MEM_TABLE carries at most " +
                          std::to_string(wire::max_mem_table_regions) +
                          " and the back-end did not ack CONFIGURE_MEM_SLOTS (ADD_MEM_REG)");
  if (raw.size() != table.size())
    return make_error(errc::invalid_argument, "ADD_MEM_REG",
                      n + " regions but " + std::to_string(raw.size()) + " fds");
  auto slots = c.get_max_mem_slots();
  if (!slots)
    return std::move(slots).error();
  if (table.size() > *slots)
    return make_error(errc::backend_failure, "ADD_MEM_REG",
                      "the memory has " + n + " regions, the back-end has " + std::to_string(*slots) +
                          " slots (GET_MAX_MEM_SLOTS)");
  for (size_t i = 0; i < table.size(); ++i)
    if (auto r = c.add_mem_reg(table[i], raw[i]); !r)
      return r;
  return ok();
}

}  // namespace vufront::actors
