// Test support: raw TCP peers on 127.0.0.1 (plain sockets), for tests that must do what Cairn's
// own client never does: send partial or oversized frames, never read, flood.
#ifndef CAIRN_TESTS_SUPPORT_RAW_SOCKET_H_
#define CAIRN_TESTS_SUPPORT_RAW_SOCKET_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>

namespace cairn::testing {

// A TCP connection to 127.0.0.1:port (blocking), or -1.
inline int Dial(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Waits up to `ms` for the server to close `fd` (reading and dropping what it sends first).
inline bool ClosedByServer(int fd, int ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;  // EOF or reset
  }
}

// Whether the peer has closed `fd` already, without waiting; reads (and drops) a byte of what it
// sent first, so calls repeated reach its end.
inline bool PeerClosed(int fd) {
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// A frame length prefix (little endian) announcing `n` bytes.
inline std::string LengthPrefix(uint32_t n) {
  std::string p(4, '\0');
  for (int i = 0; i < 4; ++i) p[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return p;
}

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_RAW_SOCKET_H_
