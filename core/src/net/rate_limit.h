// net::RequestRate: how many requests each client address may make (the HTTP port's rate
// limit, docs/backend.md "Limits"). A token bucket per key: a key holds at most `burst`
// requests' worth and earns `per_second` back each second; a request that finds less than one
// is refused, told when the next one would pass. Nothing is kept of a key whose bucket is full
// again, so what it holds is bounded by the keys that made requests in the last
// burst / per_second seconds (the connection limits bound those).
//
// Single-threaded; the caller gives the time (a steady clock's milliseconds), so tests need
// no sleeping.
#ifndef CAIRN_NET_RATE_LIMIT_H_
#define CAIRN_NET_RATE_LIMIT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace cairn::net {

class RequestRate {
 public:
  // per_second 0: no limit (every Take passes). burst 0: per_second (one second's worth).
  RequestRate(uint32_t per_second, uint32_t burst);

  // Whether `key` may make one request at `now_ms` (and counts it). When not, the milliseconds
  // until it may (at least 1) into `*retry_after_ms`.
  bool Take(const std::string& key, int64_t now_ms, int64_t* retry_after_ms);

  size_t keys() const { return buckets_.size(); }  // keys whose bucket is not full (tests)

 private:
  // In thousandths of a request (a request costs kCost, a millisecond earns per_second of
  // them): whole numbers, so no rounding lets a request through early or late.
  static constexpr int64_t kCost = 1000;
  struct Bucket {
    int64_t tokens = 0;
    int64_t at_ms = 0;  // when `tokens` was right
  };
  // What `b` holds at `now_ms`.
  int64_t Held(const Bucket& b, int64_t now_ms) const;
  // Forgets the keys whose buckets are full again at `now_ms`.
  void Prune(int64_t now_ms);

  int64_t per_second_;
  int64_t capacity_;  // the burst, in thousandths
  std::unordered_map<std::string, Bucket> buckets_;
  size_t prune_at_ = 1024;  // Prune once this many keys are held
};

}  // namespace cairn::net

#endif  // CAIRN_NET_RATE_LIMIT_H_
