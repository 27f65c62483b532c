#pragma once
// InstantPeer: a raw C++ vhost-user back-end for benchmarks. It listens on
// a unix socket, serves all connections on one thread that busy-polls
// (no wake-up latency) and answers every request at once (features, queue count, vring bases, acks),
// so what a benchmark measures is the front-end, not the back-end. It
// records the messages of the current connection so the same round trips
// can be replayed with plain blocking socket calls: the floor.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "protocol/connection.hpp"

namespace vufront::bench {

/// One request as the front-end sent it, and whether the peer answered.
struct Recorded {
  uint32_t request = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> body;
  size_t nfds = 0;
  size_t reply_size = 0;  ///< body bytes of the answer; 0 with `answered` false = none
  bool answered = false;
};

class InstantPeer {
public:
  explicit InstantPeer(std::string socket_path);
  ~InstantPeer();
  InstantPeer(const InstantPeer&) = delete;
  InstantPeer& operator=(const InstantPeer&) = delete;

  [[nodiscard]] const std::string& socket() const { return path_; }
  /// Starts recording afresh (the next messages, on any connection).
  void record();
  /// What was recorded since record().
  [[nodiscard]] std::vector<Recorded> recorded();
  /// Forgets the recording and records nothing until the next record()
  /// (a long run must not grow the log: benchmarks that read RSS).
  void stop_recording();

private:
  void run();
  /// Answers one request; false when the connection is done.
  bool serve_one(Connection& conn);

  std::string path_;
  UniqueFd listener_;
  UniqueFd stop_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Recorded> log_;
  bool recording_ = true;
};

/// Replays `msgs` on a fresh connection to `socket` with blocking
/// send/recv (connect included): each request is sent (with dummy eventfds where it carried
/// fds) and, when the peer answered it, its reply is read. Returns false on
/// any socket error.
[[nodiscard]] bool replay(const std::string& socket, const std::vector<Recorded>& msgs);

/// A connected raw socket for replay() without connect (sleep/wake cycles).
class RawClient {
public:
  explicit RawClient(const std::string& socket);
  [[nodiscard]] bool ok() const { return static_cast<bool>(fd_); }
  [[nodiscard]] bool replay(const std::vector<Recorded>& msgs);

private:
  UniqueFd fd_;
  UniqueFd dummy_;
};

}  // namespace vufront::bench
