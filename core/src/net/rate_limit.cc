#include "net/rate_limit.h"

#include <algorithm>

namespace cairn::net {

RequestRate::RequestRate(uint32_t per_second, uint32_t burst)
    : per_second_(per_second), capacity_(kCost * (burst == 0 ? per_second : burst)) {}

int64_t RequestRate::Held(const Bucket& b, int64_t now_ms) const {
  // (A clock that went back earns nothing.)
  const int64_t elapsed = std::max<int64_t>(0, now_ms - b.at_ms);
  // (Past a full bucket's refill time the sum would only be capped: no overflow for long
  // pauses.)
  if (elapsed >= capacity_ / std::max<int64_t>(1, per_second_) + 1) return capacity_;
  return std::min(capacity_, b.tokens + elapsed * per_second_);
}

bool RequestRate::Take(const std::string& key, int64_t now_ms, int64_t* retry_after_ms) {
  if (per_second_ == 0) return true;
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= prune_at_) Prune(now_ms);
    it = buckets_.emplace(key, Bucket{capacity_, now_ms}).first;
  }
  Bucket& b = it->second;
  b.tokens = Held(b, now_ms);
  b.at_ms = std::max(b.at_ms, now_ms);
  if (b.tokens >= kCost) {
    b.tokens -= kCost;
    return true;
  }
  *retry_after_ms = (kCost - b.tokens + per_second_ - 1) / per_second_;
  return false;
}

void RequestRate::Prune(int64_t now_ms) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    it = Held(it->second, now_ms) >= capacity_ ? buckets_.erase(it) : std::next(it);
  }
  // Amortized: the next prune after as many new keys again as are held now.
  prune_at_ = std::max<size_t>(1024, 2 * buckets_.size());
}

}  // namespace cairn::net
