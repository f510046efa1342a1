// net::RequestRate, the HTTP port's per-address rate limit (docs/backend.md "Limits").
#include "net/rate_limit.h"

#include <gtest/gtest.h>

#include <string>

namespace cairn::net {
namespace {

// How many of `n` requests of `key` at `now_ms` pass.
int Passed(RequestRate* rate, const std::string& key, int64_t now_ms, int n) {
  int passed = 0;
  int64_t retry = 0;
  for (int i = 0; i < n; i++) passed += rate->Take(key, now_ms, &retry) ? 1 : 0;
  return passed;
}

TEST(RequestRate, ABurstPassesThenTheRateAndEachKeyHasItsOwn) {
  RequestRate rate(10, 0);  // 10 a second, a burst of 10
  EXPECT_EQ(Passed(&rate, "10.0.0.1", 1000, 25), 10);
  int64_t retry = 0;
  EXPECT_FALSE(rate.Take("10.0.0.1", 1000, &retry));
  EXPECT_EQ(retry, 100);  // one request's worth is earned in 100 ms
  EXPECT_FALSE(rate.Take("10.0.0.1", 1099, &retry));
  EXPECT_EQ(retry, 1);
  EXPECT_TRUE(rate.Take("10.0.0.1", 1100, &retry));
  EXPECT_FALSE(rate.Take("10.0.0.1", 1100, &retry));
  // Another address is not held back by the first.
  EXPECT_EQ(Passed(&rate, "10.0.0.2", 1100, 25), 10);
  // Half a second earns five; a long pause earns no more than the burst.
  EXPECT_EQ(Passed(&rate, "10.0.0.1", 1600, 25), 5);
  EXPECT_EQ(Passed(&rate, "10.0.0.1", 100000, 25), 10);
}

TEST(RequestRate, TheBurstCanBeLargerThanASecondsWorth) {
  RequestRate rate(2, 50);
  EXPECT_EQ(Passed(&rate, "a", 0, 100), 50);
  int64_t retry = 0;
  EXPECT_FALSE(rate.Take("a", 0, &retry));
  EXPECT_EQ(retry, 500);
  EXPECT_EQ(Passed(&rate, "a", 2000, 100), 4);
}

TEST(RequestRate, ZeroMeansNoLimit) {
  RequestRate rate(0, 0);
  EXPECT_EQ(Passed(&rate, "a", 0, 100000), 100000);
  EXPECT_EQ(rate.keys(), 0u);
}

TEST(RequestRate, AClockThatGoesBackEarnsNothing) {
  RequestRate rate(10, 0);
  EXPECT_EQ(Passed(&rate, "a", 5000, 10), 10);
  EXPECT_EQ(Passed(&rate, "a", 1000, 10), 0);
  EXPECT_EQ(Passed(&rate, "a", 5100, 10), 1);
}

TEST(RequestRate, KeysWhoseBucketsRefilledAreForgotten) {
  RequestRate rate(100, 0);
  // 5,000 addresses make a request each, at once: held while their buckets refill.
  for (int i = 0; i < 5000; i++) ASSERT_EQ(Passed(&rate, "k" + std::to_string(i), 0, 1), 1);
  EXPECT_EQ(rate.keys(), 5000u);
  // A second later all are full again: new keys prune them (once as many more came).
  for (int i = 0; i < 4000; i++) ASSERT_EQ(Passed(&rate, "n" + std::to_string(i), 1000, 1), 1);
  EXPECT_EQ(rate.keys(), 4000u);
  // A pruned key starts again with a full bucket.
  EXPECT_EQ(Passed(&rate, "k0", 1000, 200), 100);
}

}  // namespace
}  // namespace cairn::net
