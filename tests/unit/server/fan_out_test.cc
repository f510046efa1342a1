// FanOut (server/fan_out.h; docs/sync-rules.md "Fan-out"): the kept reach of recent log entries,
// the index of who views which channels, and the idle sessions that are due.
#include "server/fan_out.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace cairn::server {
namespace {

EntryReach At(uint64_t cursor, std::vector<std::string> channels = {}) {
  EntryReach r;
  r.cursor = cursor;
  r.first_seq = r.last_seq = cursor;
  r.channels = std::move(channels);
  return r;
}

uint64_t NextCursor(const FanOut& f, uint64_t after) {
  const EntryReach* r = f.Next(after);
  return r == nullptr ? 0 : r->cursor;
}

TEST(FanOutTest, TheKeptReachIsEveryEntryOfASpanOfTheLog) {
  FanOut f;
  EXPECT_EQ(NextCursor(f, 0), 0u);     // nothing kept: read the log
  f.Extend(0, {At(1), At(2), At(4)});  // (cursors need not be dense)
  EXPECT_EQ(NextCursor(f, 0), 1u);
  EXPECT_EQ(NextCursor(f, 2), 4u);
  EXPECT_EQ(NextCursor(f, 3), 4u);
  EXPECT_EQ(NextCursor(f, 4), 0u);
  f.Extend(4, {At(5)});
  EXPECT_EQ(NextCursor(f, 4), 5u);
  EXPECT_EQ(NextCursor(f, 0), 1u);
  // A gap (entries after 7 told, 6 and 7 never): what was kept goes, else a session at 5 would
  // skip 6 and 7 unread.
  f.Extend(7, {At(8)});
  EXPECT_EQ(NextCursor(f, 5), 0u);
  EXPECT_EQ(NextCursor(f, 0), 0u);
  EXPECT_EQ(NextCursor(f, 7), 8u);
  // The oldest go past kKeptEntries: they are read from the log again.
  std::vector<EntryReach> many;
  for (uint64_t c = 9; c < 9 + FanOut::kKeptEntries; c++) many.push_back(At(c));
  f.Extend(8, std::move(many));
  EXPECT_EQ(NextCursor(f, 7), 0u);
  EXPECT_EQ(NextCursor(f, 8), 9u);
  EXPECT_EQ(NextCursor(f, 9), 10u);
}

TEST(FanOutTest, EntriesConcernTheSessionsWhoseViewMeetsTheirChannels) {
  FanOut f;
  const rules::View red{false, {"team:red", "user:ann"}}, blue{false, {"team:blue"}};
  const rules::View all{true, {}};
  f.SetView(1, &red);
  f.SetView(2, &blue);
  f.SetView(3, &all);
  f.SetView(4, nullptr);  // no rules for it: everything concerns it
  using Set = std::set<uint64_t>;
  EXPECT_EQ(f.Concerned({At(1, {"team:red"})}), (Set{1, 3, 4}));
  EXPECT_EQ(f.Concerned({At(1, {"team:green"})}), (Set{3, 4}));
  EXPECT_EQ(f.Concerned({At(1, {})}), (Set{3, 4}));  // in no channel: admins only
  EXPECT_EQ(f.Concerned({At(1, {"team:green"}), At(2, {"team:blue", "user:ann"})}),
            (Set{1, 2, 3, 4}));
  // A view that changes is indexed anew; a closed session is forgotten.
  f.SetView(1, &blue);
  EXPECT_EQ(f.Concerned({At(1, {"user:ann"})}), (Set{3, 4}));
  EXPECT_EQ(f.Concerned({At(1, {"team:blue"})}), (Set{1, 2, 3, 4}));
  f.Forget(2);
  f.Forget(3);
  EXPECT_EQ(f.Concerned({At(1, {"team:blue"})}), (Set{1, 4}));
  f.SetView(4, &red);
  EXPECT_EQ(f.Concerned({At(1, {"team:blue"})}), (Set{1}));
}

TEST(FanOutTest, IdleSessionsFarBehindTheHeadOrTheFloorAreDue) {
  FanOut f;
  const uint64_t lag = FanOut::kMaxIdleLag;
  f.SetIdle(7, 10);
  f.SetIdle(3, 500);
  f.SetIdle(5, 2000);
  using List = std::vector<uint64_t>;
  EXPECT_EQ(f.FarBehind(10 + lag, 0), List{});
  EXPECT_EQ(f.FarBehind(11 + lag, 0), List{7});
  EXPECT_EQ(f.FarBehind(501 + lag, 0), (List{3, 7}));  // in serial order
  EXPECT_EQ(f.FarBehind(600, 11), List{7});            // the log trimmed past it
  EXPECT_EQ(f.FarBehind(2000, 2001), (List{3, 5, 7}));
  f.SetIdle(7, 600);  // pumped: idle again further on
  EXPECT_EQ(f.FarBehind(600, 11), List{});
  f.SetIdle(3, std::nullopt);  // busy
  f.Forget(5);
  EXPECT_EQ(f.FarBehind(2000, 2001), List{7});
}

}  // namespace
}  // namespace cairn::server
