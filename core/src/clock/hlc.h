// Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014) as Cairn uses it
// (docs/crdt-semantics.md "Operations and their order"): a 64-bit timestamp whose upper 48 bits are
// the physical time in ms since the Unix epoch and whose lower 16 bits are a logical counter.
//
// Invariants: every timestamp a clock hands out is strictly larger than every timestamp it handed
// out or observed before, whatever the wall clock does (it may go backwards), except at the very
// largest timestamp, where it saturates instead of wrapping. When the counter
// would pass 0xFFFF the physical part is advanced by 1 ms and the counter restarts at 0, so the
// order stays strict; the physical part then runs ahead of the wall clock by at most that carry.
#ifndef CAIRN_CLOCK_HLC_H_
#define CAIRN_CLOCK_HLC_H_

#include <cstdint>

namespace cairn {

using Hlc = uint64_t;
constexpr int kHlcCounterBits = 16;
constexpr uint64_t kHlcCounterMask = 0xFFFF;
constexpr uint64_t kHlcMaxPhysical = (uint64_t{1} << 48) - 1;
inline uint64_t HlcPhysical(Hlc h) { return h >> kHlcCounterBits; }
inline uint64_t HlcCounter(Hlc h) { return h & kHlcCounterMask; }
inline Hlc MakeHlc(uint64_t physical_ms, uint64_t counter) {
  return (physical_ms << kHlcCounterBits) | (counter & kHlcCounterMask);
}

// The source of physical time. The default reads the system clock; tests and benchmarks install
// their own (a fake clock, or the trace's timestamps). Implementations must be callable from the
// thread that uses the replica.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() = 0;
  static Clock* System();  // process-wide, never freed
};

// Not thread-safe: owned by one replica, used under its lock.
class HybridClock {
 public:
  explicit HybridClock(Clock* source) : source_(source) {}
  // A timestamp for a local event: larger than anything seen so far.
  Hlc Now();
  // Merges a timestamp received from elsewhere, so later local events order after it.
  void Observe(Hlc remote);
  // The last timestamp handed out or observed (persisted by the store).
  Hlc last() const { return last_; }
  void Restore(Hlc last) {
    if (last > last_) last_ = last;
  }
  // Winds the clock back to `to` when it is beyond: a clock found too far ahead of the server's
  // (docs/crdt-semantics.md "Clock safety"); the ops stamped beyond are refused, later ones must
  // not be.
  void Rewind(Hlc to) {
    if (to < last_) last_ = to;
  }
  // Milliseconds added to the source's time (the server's correction, docs/crdt-semantics.md
  // "Clock safety").
  void set_offset_ms(int64_t offset) { offset_ms_ = offset; }
  int64_t offset_ms() const { return offset_ms_; }

 private:
  uint64_t PhysicalNow();
  Clock* source_;
  Hlc last_ = 0;
  int64_t offset_ms_ = 0;
};

}  // namespace cairn

#endif  // CAIRN_CLOCK_HLC_H_
