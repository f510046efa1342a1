#include "clock/hlc.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;

TEST(HlcTest, FollowsTheWallClock) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  Hlc a = hlc.Now();
  EXPECT_EQ(HlcPhysical(a), 1000u);
  EXPECT_EQ(HlcCounter(a), 0u);
  wall.Advance(5);
  Hlc b = hlc.Now();
  EXPECT_EQ(HlcPhysical(b), 1005u);
  EXPECT_EQ(HlcCounter(b), 0u);
}

TEST(HlcTest, SameMillisecondBumpsTheCounter) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  Hlc a = hlc.Now(), b = hlc.Now();
  EXPECT_EQ(HlcPhysical(b), 1000u);
  EXPECT_EQ(HlcCounter(b), HlcCounter(a) + 1);
}

TEST(HlcTest, WallClockGoingBackwardsStaysMonotonic) {
  FakeClock wall(5000);
  HybridClock hlc(&wall);
  Hlc a = hlc.Now();
  wall.Set(1000);  // an NTP step backwards
  Hlc b = hlc.Now();
  EXPECT_GT(b, a);
  EXPECT_EQ(HlcPhysical(b), 5000u);
  wall.Set(6000);
  EXPECT_EQ(HlcPhysical(hlc.Now()), 6000u);
}

TEST(HlcTest, CounterOverflowCarriesIntoPhysical) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  hlc.Restore(MakeHlc(1000, kHlcCounterMask - 1));
  Hlc a = hlc.Now();
  EXPECT_EQ(HlcCounter(a), kHlcCounterMask);
  Hlc b = hlc.Now();
  EXPECT_GT(b, a);
  EXPECT_EQ(HlcPhysical(b), 1001u);
  EXPECT_EQ(HlcCounter(b), 0u);
}

TEST(HlcTest, SaturatesAtTheLargestTimestampInsteadOfWrapping) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  hlc.Observe(MakeHlc(kHlcMaxPhysical, kHlcCounterMask - 1));  // e.g. an op from a broken clock
  Hlc a = hlc.Now();
  Hlc b = hlc.Now();
  EXPECT_EQ(a, MakeHlc(kHlcMaxPhysical, kHlcCounterMask));
  EXPECT_EQ(b, a);  // saturated, not wrapped to 0
}

TEST(HlcTest, ObservedRemoteTimestampOrdersLaterEventsAfterIt) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  Hlc remote = MakeHlc(9000, 7);
  hlc.Observe(remote);
  EXPECT_GT(hlc.Now(), remote);
  hlc.Observe(MakeHlc(10, 0));  // an older remote changes nothing
  EXPECT_GT(hlc.Now(), remote);
}

TEST(HlcTest, OffsetCorrectsThePhysicalSource) {
  FakeClock wall(1000);
  HybridClock hlc(&wall);
  hlc.set_offset_ms(500);
  EXPECT_EQ(HlcPhysical(hlc.Now()), 1500u);
}

TEST(HlcTest, NegativeOrHugeWallClockIsClamped) {
  FakeClock wall(-5);
  HybridClock hlc(&wall);
  EXPECT_EQ(HlcPhysical(hlc.Now()), 0u);
  wall.Set(INT64_MAX);
  EXPECT_EQ(HlcPhysical(hlc.Now()), kHlcMaxPhysical);
}

}  // namespace
}  // namespace cairn
