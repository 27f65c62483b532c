#include "base/error.hpp"

#include <cstdio>
#include <cstring>

namespace vufront {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::io_error: return "io_error";
    case errc::disconnected: return "disconnected";
    case errc::timeout: return "timeout";
    case errc::broken: return "broken";
    case errc::oversized: return "oversized";
    case errc::bad_size: return "bad_size";
    case errc::bad_flags: return "bad_flags";
    case errc::unexpected_reply: return "unexpected_reply";
    case errc::bad_fds: return "bad_fds";
    case errc::invalid_payload: return "invalid_payload";
    case errc::unknown_request: return "unknown_request";
    case errc::backend_failure: return "backend_failure";
    case errc::not_negotiated: return "not_negotiated";
    case errc::invalid_argument: return "invalid_argument";
    case errc::bad_state: return "bad_state";
    case errc::cancelled: return "cancelled";
    case errc::bad_message: return "bad_message";
    case errc::not_found: return "not_found";
    case errc::busy: return "busy";
    case errc::permission_denied: return "permission_denied";
  }
  return "unknown_error";
}

bool Error::reconnect_may_help() const noexcept {
  switch (code) {
    // transport trouble and a misbehaving (possibly restarted) back-end:
    // a fresh connection with the state replayed may well work
    case errc::io_error:
    case errc::disconnected:
    case errc::timeout:
    case errc::broken:
    case errc::oversized:
    case errc::bad_size:
    case errc::bad_flags:
    case errc::unexpected_reply:
    case errc::bad_fds:
    case errc::invalid_payload:
    case errc::unknown_request:
      return true;
    // a deliberate answer or a caller mistake repeats on a new connection
    case errc::backend_failure:
    case errc::not_negotiated:
    case errc::invalid_argument:
    case errc::bad_state:
    case errc::cancelled:
    case errc::bad_message:
    case errc::not_found:
    case errc::busy:
    case errc::permission_denied:
      return false;
  }
  return false;
}

Error in_operation(Error e, const std::string& op) {
  if (e.op.empty())
    e.op = op;
  if (e.request == e.op)
    e.request.clear();
  return e;
}

std::string Error::message() const {
  std::string out;
  if (!op.empty())
    out = request.empty() ? op : op + ": " + request;
  else
    out = request.empty() ? std::string("error") : request;
  out += ": ";
  out += to_string(code);
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  if (sys_errno != 0) {
    out += " (";
    out += std::strerror(sys_errno);
    out += ")";
  }
  return out;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Error make_error(errc code, std::string request, std::string detail, int sys_errno) {
  Error e;
  e.code = code;
  e.request = std::move(request);
  e.detail = std::move(detail);
  e.sys_errno = sys_errno;
  return e;
}

} // namespace vufront

namespace vufront {

bool errc_from_string(const std::string& name, errc& out) noexcept {
  for (int c = static_cast<int>(errc::io_error); c <= static_cast<int>(errc::permission_denied); ++c) {
    auto code = static_cast<errc>(c);
    if (name == to_string(code)) {
      out = code;
      return true;
    }
  }
  return false;
}

}  // namespace vufront
