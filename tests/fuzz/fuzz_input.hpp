#pragma once
// Shared input format of the libFuzzer targets:
//   [selector byte][12-byte header][body ...][n-fds byte]
// The header's size field is overwritten with the real body length (a
// Connection never hands over a Message whose body disagrees with it), and
// `n-fds % 9` fresh eventfds are attached, as Connection::receive would.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "base/unique_fd.hpp"
#include "protocol/connection.hpp"

namespace vufront::fuzz {

struct Input {
  uint8_t selector = 0;
  Message message;
};

inline std::optional<Input> split_input(const uint8_t* data, size_t size) {
  if (size < 1 + sizeof(wire::Header) + 1)
    return std::nullopt;
  Input in;
  in.selector = data[0];
  // BOUNDS: size >= 14, so bytes 1..12 exist.
  std::memcpy(&in.message.header, data + 1, sizeof(wire::Header));
  const size_t body_size = size - 1 - sizeof(wire::Header) - 1;
  in.message.body.assign(data + 1 + sizeof(wire::Header),
                         data + 1 + sizeof(wire::Header) + body_size);
  in.message.header.size = static_cast<uint32_t>(body_size);
  const size_t nfds = data[size - 1] % (max_fds_per_message + 1);
  for (size_t i = 0; i < nfds; ++i)
    in.message.fds.push_back(make_eventfd());
  return in;
}

}  // namespace vufront::fuzz
