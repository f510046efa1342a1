// The platform seam: wall-clock time and secure randomness. Tests replace the clock through
// cairn::Clock (see clock/hlc.h); everything else in the core reaches the OS only through here.
#ifndef CAIRN_PORT_PORT_H_
#define CAIRN_PORT_PORT_H_

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace cairn::port {

// Milliseconds since the Unix epoch from the system's real-time clock.
int64_t WallClockMs();
// Fills `buf` with `len` bytes from the OS's secure random source (getrandom(2)).
Status SecureRandom(void* buf, size_t len);

}  // namespace cairn::port

#endif  // CAIRN_PORT_PORT_H_
