#include "actors/error.hpp"

#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace vufront::actors {

caf::error to_caf(const Error& e) {
  return caf::error{static_cast<uint8_t>(e.code), error_category,
                    caf::make_message(e.op, e.request, e.detail, static_cast<int32_t>(e.sys_errno))};
}

Error from_caf(const caf::error& e, const std::string& step) {
  if (e.category() == error_category) {
    Error out;
    out.code = static_cast<errc>(e.code());
    out.request = step;
    if (e.context().match_elements<std::string, std::string, std::string, int32_t>()) {
      out.op = e.context().get_as<std::string>(0);
      out.request = e.context().get_as<std::string>(1);
      out.detail = e.context().get_as<std::string>(2);
      out.sys_errno = e.context().get_as<int32_t>(3);
    }
    return out;
  }
  if (e == caf::sec::request_timeout)
    return make_error(errc::timeout, step, "no answer from the actor before the deadline");
  if (e == caf::sec::request_receiver_down)
    return make_error(errc::broken, step, "the actor serving this step is gone");
  return make_error(errc::io_error, step, "actor error: " + caf::to_string(e));
}

std::string render_error(uint8_t code, caf::atom_value, const caf::message& ctx) {
  Error e;
  e.code = static_cast<errc>(code);
  if (ctx.match_elements<std::string, std::string, std::string, int32_t>()) {
    e.op = ctx.get_as<std::string>(0);
    e.request = ctx.get_as<std::string>(1);
    e.detail = ctx.get_as<std::string>(2);
    e.sys_errno = ctx.get_as<int32_t>(3);
  }
  return e.message();
}

}  // namespace vufront::actors
