#include "virtio/fuse.hpp"

#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace vufront::virtio::fuse {

namespace {

constexpr const char* op_reply = "FUSE reply";

template <class T>
std::vector<uint8_t> bytes_of(const T& v) {
  std::vector<uint8_t> out(sizeof v);
  std::memcpy(out.data(), &v, sizeof v);
  return out;
}

template <class T>
Result<T> decode_exact(const std::vector<uint8_t>& body, size_t min, const char* what) {
  if (body.size() < min)
    return make_error(errc::invalid_payload, op_reply,
                      std::string(what) + " body is " + std::to_string(body.size()) +
                          " bytes, expected at least " + std::to_string(min));
  T v{};
  std::memcpy(&v, body.data(), std::min(body.size(), sizeof v));  // BOUNDS: <= sizeof v
  return v;
}

}  // namespace

Result<Request> request(GuestScratch& s, uint32_t opcode, uint64_t unique, uint64_t nodeid,
                        const std::vector<uint8_t>& arg, uint32_t reply_max) {
  if (reply_max < sizeof(OutHeader) || arg.size() > UINT32_MAX - sizeof(InHeader))
    return make_error(errc::invalid_argument, "FUSE request", "buffer sizes out of range");
  const auto in_len = static_cast<uint32_t>(sizeof(InHeader) + arg.size());
  auto in = s.alloc(in_len);
  if (!in)
    return std::move(in).error();
  auto out = s.alloc(reply_max);
  if (!out)
    return std::move(out).error();
  InHeader h{};
  h.len = in_len;
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = nodeid;
  h.uid = static_cast<uint32_t>(::getuid());
  h.gid = static_cast<uint32_t>(::getgid());
  h.pid = static_cast<uint32_t>(::getpid());
  uint8_t* p = s.ptr(*in, in_len);
  std::memcpy(p, &h, sizeof h);
  if (!arg.empty())
    std::memcpy(p + sizeof h, arg.data(), arg.size());
  Request r;
  r.chain = {{*in, in_len, false}, {*out, reply_max, true}};
  r.opcode = opcode;
  r.unique = unique;
  r.out_gpa = *out;
  r.out_len = reply_max;
  return r;
}

Result<Request> init(GuestScratch& s, uint64_t unique) {
  const InitIn in{kernel_version, kernel_minor_version, 0x20000, 0};
  return request(s, op_init, unique, 0, bytes_of(in), sizeof(OutHeader) + sizeof(InitOut));
}

Result<Request> lookup(GuestScratch& s, uint64_t unique, uint64_t parent,
                       const std::string& name) {
  std::vector<uint8_t> arg(name.begin(), name.end());
  arg.push_back(0);
  return request(s, op_lookup, unique, parent, arg, sizeof(OutHeader) + sizeof(EntryOut));
}

Result<Request> open(GuestScratch& s, uint64_t unique, uint64_t nodeid, uint32_t flags) {
  const OpenIn in{flags, 0};
  return request(s, op_open, unique, nodeid, bytes_of(in), sizeof(OutHeader) + sizeof(OpenOut));
}

Result<Request> read(GuestScratch& s, uint64_t unique, uint64_t nodeid, uint64_t fh,
                     uint64_t offset, uint32_t size) {
  if (size > UINT32_MAX - sizeof(OutHeader))
    return make_error(errc::invalid_argument, "FUSE READ", "size out of range");
  ReadIn in{};
  in.fh = fh;
  in.offset = offset;
  in.size = size;
  return request(s, op_read, unique, nodeid, bytes_of(in),
                 static_cast<uint32_t>(sizeof(OutHeader) + size));
}

Result<Reply> reply(const GuestScratch& s, const Request& r, uint32_t used_len) {
  if (used_len < sizeof(OutHeader) || used_len > r.out_len)
    return make_error(errc::invalid_payload, op_reply,
                      "used length " + std::to_string(used_len) + " outside [16, " +
                          std::to_string(r.out_len) + "]");
  const uint8_t* p = s.ptr(r.out_gpa, used_len);
  OutHeader h{};
  std::memcpy(&h, p, sizeof h);  // BOUNDS: used_len >= 16
  if (h.len < sizeof h || h.len > used_len)
    return make_error(errc::invalid_payload, op_reply,
                      "out.len " + std::to_string(h.len) + " outside [16, used length " +
                          std::to_string(used_len) + "]");
  if (h.unique != r.unique)
    return make_error(errc::invalid_payload, op_reply,
                      "unique " + std::to_string(h.unique) + " answers no request (expected " +
                          std::to_string(r.unique) + ")");
  if (h.error > 0 || h.error < -4095)
    return make_error(errc::invalid_payload, op_reply,
                      "error " + std::to_string(h.error) + " is not a negative errno");
  if (h.error != 0 && h.len != sizeof h)
    return make_error(errc::invalid_payload, op_reply, "error reply carries a body");
  Reply out;
  out.error = h.error;
  out.body.assign(p + sizeof h, p + h.len);
  return out;
}

Result<InitOut> decode_init(const std::vector<uint8_t>& body) {
  return decode_exact<InitOut>(body, 8, "INIT");
}
Result<EntryOut> decode_entry(const std::vector<uint8_t>& body) {
  return decode_exact<EntryOut>(body, sizeof(EntryOut), "LOOKUP");
}
Result<OpenOut> decode_open(const std::vector<uint8_t>& body) {
  return decode_exact<OpenOut>(body, sizeof(OpenOut), "OPEN");
}

}  // namespace vufront::virtio::fuse
