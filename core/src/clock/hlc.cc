#include "clock/hlc.h"

#include <algorithm>

#include "port/port.h"

namespace cairn {

namespace {
class SystemClock final : public Clock {
 public:
  int64_t NowMs() override { return port::WallClockMs(); }
};
}  // namespace

Clock* Clock::System() {
  static SystemClock* clock = new SystemClock();
  return clock;
}

uint64_t HybridClock::PhysicalNow() {
  int64_t ms = source_->NowMs() + offset_ms_;
  if (ms < 0) return 0;
  return std::min(static_cast<uint64_t>(ms), kHlcMaxPhysical);
}

// Advances `last` to a timestamp above it with physical part at least `physical`.
static Hlc Advance(Hlc last, uint64_t physical) {
  uint64_t last_phys = HlcPhysical(last);
  if (physical > last_phys) return MakeHlc(physical, 0);
  uint64_t counter = HlcCounter(last);
  if (counter < kHlcCounterMask) return MakeHlc(last_phys, counter + 1);
  if (last_phys < kHlcMaxPhysical) return MakeHlc(last_phys + 1, 0);  // carry the overflow
  // The largest timestamp (year 10889): stay there rather than wrap to 0. This replica's ops still
  // order among themselves by seq; a clock this far ahead is what the drift rule stops
  // (docs/crdt-semantics.md "Clock safety").
  return last;
}

Hlc HybridClock::Now() {
  last_ = Advance(last_, PhysicalNow());
  return last_;
}

void HybridClock::Observe(Hlc remote) {
  if (remote > last_) last_ = remote;
}

}  // namespace cairn
