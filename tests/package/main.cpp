// Connects to the control socket given as argv[1] with the installed client
// library. With "--hello" it prints the greeting's devices; otherwise it
// expects nobody to listen and prints the error.
#include <cstdio>
#include <cstring>

#include "control/client.hpp"

int main(int argc, char** argv) {
  if (argc < 2)
    return 2;
  vufront::control::Client::Options o;
  o.connect_timeout = std::chrono::milliseconds(200);
  auto c = vufront::control::Client::connect(argv[1], o);
  if (!c) {
    std::printf("error: %s\n", c.error().message().c_str());
    return 3;
  }
  for (const auto& id : c->devices())
    std::printf("device %s\n", id.c_str());
  return 0;
}
