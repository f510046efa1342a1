// Test support: a TCP proxy between sync clients and the server that injects faults, on its own
// libuv loop and thread. Per connection it can cut both sides after a number of bytes in either
// direction, deliver data in small chunks with a delay (a slow link), and stall once.
#ifndef CAIRN_TESTS_SUPPORT_FAULT_PROXY_H_
#define CAIRN_TESTS_SUPPORT_FAULT_PROXY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace cairn::testing {

struct Faults {
  uint64_t cut_up_after = UINT64_MAX;    // client -> server bytes forwarded before the cut
  uint64_t cut_down_after = UINT64_MAX;  // server -> client bytes forwarded before the cut
  uint32_t cut_down_before_frame = UINT32_MAX;  // server -> client: cut before frame n (0-based)
  size_t chunk_bytes = 0;                // > 0: forward at most this much per tick
  uint32_t chunk_delay_ms = 0;           // the tick of a slow link
  uint64_t stall_down_at = UINT64_MAX;   // server -> client: pause once at this offset...
  uint32_t stall_down_before_frame = UINT32_MAX;  // ...or before frame n (0-based)...
  uint32_t stall_ms = 0;                 // ...for this long
  // TCP_NODELAY on both of the proxy's sockets (small frames go at once, as the engine's own
  // do). Off by default: tests written against the proxy's coalescing keep it.
  bool nodelay = false;
  // Called on the proxy's thread with each whole frame the server sends (its payload, without
  // the length prefix), as the proxy receives it: a test's eyes on what a client is sent.
  std::function<void(std::string_view)> on_down_frame;
};

class FaultProxy {
 public:
  // Forwards 127.0.0.1:<port()> to 127.0.0.1:target_port; `faults` chooses the faults of the
  // n-th accepted connection (0-based).
  FaultProxy(uint16_t target_port, std::function<Faults(int)> faults);
  ~FaultProxy();
  uint16_t port() const;
  // Where new connections go from now on (a load balancer moving off a dead node).
  void set_target(uint16_t target_port);
  int connections() const;
  int cuts() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_FAULT_PROXY_H_
