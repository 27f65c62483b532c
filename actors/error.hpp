#pragma once
// vufront::Error <-> caf::error. Actor replies carry errors as caf::error
// with category "vufront", the errc as code and the request/step, detail and
// errno as context, so a VMM sees the same one-line message as the
// non-actor code ("GET_VRING_BASE: timeout: no reply within 30000 ms").

#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include "base/error.hpp"

namespace vufront::actors {

inline constexpr caf::atom_value error_category = caf::atom("vufront");

[[nodiscard]] caf::error to_caf(const Error& e);
/// Any caf::error as a vufront::Error: ours round-trip exactly; CAF's own
/// (request timeout, receiver down) become timeout / broken with `step` as
/// the request name.
[[nodiscard]] Error from_caf(const caf::error& e, const std::string& step);
/// Registered with actor_system_config::add_error_category.
[[nodiscard]] std::string render_error(uint8_t code, caf::atom_value, const caf::message& ctx);

}  // namespace vufront::actors
