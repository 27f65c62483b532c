#pragma once
// virtio-fs requests (FUSE over a virtqueue, virtio 1.2 §5.11.6): each request
// is one readable buffer {fuse_in_header, argument} and one writable buffer
// for {fuse_out_header, reply}. Only what vufront's tools need: INIT (7.31,
// the short 16-byte fuse_init_in), LOOKUP, OPEN, READ. Layouts follow
// linux/fuse.h (protocol 7.31+).

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "protocol/wire.hpp"
#include "virtio/ring_layout.hpp"
#include "virtio/requests.hpp"

namespace vufront::virtio::fuse {

inline constexpr uint32_t op_lookup = 1;
inline constexpr uint32_t op_open = 14;
inline constexpr uint32_t op_read = 15;
inline constexpr uint32_t op_init = 26;
inline constexpr uint32_t kernel_version = 7;
inline constexpr uint32_t kernel_minor_version = 31;
inline constexpr uint64_t root_nodeid = 1;

struct InHeader {
  uint32_t len;  ///< whole request: header + argument
  uint32_t opcode;
  uint64_t unique;
  uint64_t nodeid;
  uint32_t uid;
  uint32_t gid;
  uint32_t pid;
  uint16_t total_extlen;
  uint16_t padding;
};
struct OutHeader {
  uint32_t len;   ///< whole reply: header + body
  int32_t error;  ///< 0 or a negative errno
  uint64_t unique;
};
struct InitIn {  ///< pre-7.36 form (no flags2)
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
};
struct InitOut {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint16_t max_background;
  uint16_t congestion_threshold;
  uint32_t max_write;
  uint32_t time_gran;
  uint16_t max_pages;
  uint16_t map_alignment;
  uint32_t flags2;
  uint32_t unused[7];
};
struct Attr {
  uint64_t ino;
  uint64_t size;
  uint64_t blocks;
  uint64_t atime;
  uint64_t mtime;
  uint64_t ctime;
  uint32_t atimensec;
  uint32_t mtimensec;
  uint32_t ctimensec;
  uint32_t mode;
  uint32_t nlink;
  uint32_t uid;
  uint32_t gid;
  uint32_t rdev;
  uint32_t blksize;
  uint32_t flags;
};
struct EntryOut {
  uint64_t nodeid;
  uint64_t generation;
  uint64_t entry_valid;
  uint64_t attr_valid;
  uint32_t entry_valid_nsec;
  uint32_t attr_valid_nsec;
  Attr attr;
};
struct OpenIn {
  uint32_t flags;
  uint32_t open_flags;
};
struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;  ///< padding before 7.40
};
struct ReadIn {
  uint64_t fh;
  uint64_t offset;
  uint32_t size;
  uint32_t read_flags;
  uint64_t lock_owner;
  uint32_t flags;
  uint32_t padding;
};

VUFRONT_LAYOUT_SIZE(InHeader, 40);
VUFRONT_LAYOUT_AT(InHeader, len, 0);
VUFRONT_LAYOUT_AT(InHeader, opcode, 4);
VUFRONT_LAYOUT_AT(InHeader, unique, 8);
VUFRONT_LAYOUT_AT(InHeader, nodeid, 16);
VUFRONT_LAYOUT_AT(InHeader, uid, 24);
VUFRONT_LAYOUT_AT(InHeader, gid, 28);
VUFRONT_LAYOUT_AT(InHeader, pid, 32);
VUFRONT_LAYOUT_AT(InHeader, total_extlen, 36);
VUFRONT_LAYOUT_SIZE(OutHeader, 16);
VUFRONT_LAYOUT_AT(OutHeader, len, 0);
VUFRONT_LAYOUT_AT(OutHeader, error, 4);
VUFRONT_LAYOUT_AT(OutHeader, unique, 8);
VUFRONT_LAYOUT_SIZE(InitIn, 16);
VUFRONT_LAYOUT_AT(InitIn, max_readahead, 8);
VUFRONT_LAYOUT_AT(InitIn, flags, 12);
VUFRONT_LAYOUT_SIZE(InitOut, 64);
VUFRONT_LAYOUT_AT(InitOut, max_background, 16);
VUFRONT_LAYOUT_AT(InitOut, max_write, 20);
VUFRONT_LAYOUT_AT(InitOut, max_pages, 28);
VUFRONT_LAYOUT_AT(InitOut, flags2, 32);
VUFRONT_LAYOUT_SIZE(Attr, 88);
VUFRONT_LAYOUT_AT(Attr, size, 8);
VUFRONT_LAYOUT_AT(Attr, atimensec, 48);
VUFRONT_LAYOUT_AT(Attr, mode, 60);
VUFRONT_LAYOUT_AT(Attr, flags, 84);
VUFRONT_LAYOUT_SIZE(EntryOut, 128);
VUFRONT_LAYOUT_AT(EntryOut, entry_valid_nsec, 32);
VUFRONT_LAYOUT_AT(EntryOut, attr, 40);
VUFRONT_LAYOUT_SIZE(OpenIn, 8);
VUFRONT_LAYOUT_SIZE(OpenOut, 16);
VUFRONT_LAYOUT_AT(OpenOut, open_flags, 8);
VUFRONT_LAYOUT_SIZE(ReadIn, 40);
VUFRONT_LAYOUT_AT(ReadIn, size, 16);
VUFRONT_LAYOUT_AT(ReadIn, lock_owner, 24);
VUFRONT_LAYOUT_AT(ReadIn, flags, 32);

/// A FUSE request laid out in scratch memory.
struct Request {
  std::vector<Buffer> chain;  ///< {in readable, out writable}
  uint32_t opcode = 0;
  uint64_t unique = 0;
  uint64_t out_gpa = 0;
  uint32_t out_len = 0;
};

/// Builds any request: header (uid/gid/pid of this process) + `arg`, and a
/// zeroed reply buffer of `reply_max` bytes (header included). Errors: as
/// GuestScratch::alloc; invalid_argument (reply_max < 16, sizes overflow).
[[nodiscard]] Result<Request> request(GuestScratch& s, uint32_t opcode, uint64_t unique,
                                      uint64_t nodeid, const std::vector<uint8_t>& arg,
                                      uint32_t reply_max);
[[nodiscard]] Result<Request> init(GuestScratch& s, uint64_t unique);
[[nodiscard]] Result<Request> lookup(GuestScratch& s, uint64_t unique, uint64_t parent,
                                     const std::string& name);
[[nodiscard]] Result<Request> open(GuestScratch& s, uint64_t unique, uint64_t nodeid,
                                   uint32_t flags);
[[nodiscard]] Result<Request> read(GuestScratch& s, uint64_t unique, uint64_t nodeid,
                                   uint64_t fh, uint64_t offset, uint32_t size);

struct Reply {
  int32_t error = 0;          ///< 0 or negative errno (a FUSE error is not a Result error)
  std::vector<uint8_t> body;  ///< bytes after the out header
};

/// Decodes the reply of `r`. Errors: invalid_payload (used_len < 16 or beyond
/// the buffer, out.len < 16 or beyond used_len, unique mismatch, a positive
/// or out-of-range error, an error reply with a body).
[[nodiscard]] Result<Reply> reply(const GuestScratch& s, const Request& r, uint32_t used_len);

/// Body decoders. Errors: invalid_payload if the body is too short
/// (InitOut: at least major/minor; shorter fields read as 0).
[[nodiscard]] Result<InitOut> decode_init(const std::vector<uint8_t>& body);
[[nodiscard]] Result<EntryOut> decode_entry(const std::vector<uint8_t>& body);
[[nodiscard]] Result<OpenOut> decode_open(const std::vector<uint8_t>& body);

}  // namespace vufront::virtio::fuse
