// The history horizon (docs/crdt-semantics.md "History horizon") end to end: a server folds its
// history older than the horizon as its clock moves, serves new and stale replicas from the
// folded state with every counter exact and no deleted document back, its replicas fold theirs
// once they reach the horizon's cursor, and an op stamped below the horizon is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

#include "replica/replica.h"
#include "server/sync_server.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;
using testing::Options;
using testing::RejectedOps;
using testing::ServerThread;
using testing::SyncOnce;
using testing::TempDir;

constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;

std::unique_ptr<Replica> Open(const std::string& path, Clock* clock) {
  ReplicaOptions o;
  o.clock = clock;
  auto r = Replica::Open(path, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

// One value of an SQL query on a replica file (read while others have it open).
std::string QueryOne(const std::string& path, const std::string& sql) {
  ReplicaOptions o;
  o.read_only = true;
  auto r = Replica::Open(path, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return "";
  std::string out;
  EXPECT_TRUE(r.value()
                  ->Query(sql,
                          [&](const std::string& row) {
                            out = row;
                            return Status::OK();
                          })
                  .ok());
  return out;
}

int64_t Counter(Replica* r, const std::string& key) {
  auto doc = r->Get("c", key).value();
  return doc && doc->count("n") ? doc->at("n").as_int() : 0;
}

class HorizonTest : public ::testing::Test {
 protected:
  server::ServerOptions ServerOpts() {
    server::ServerOptions o = Options(dir_);
    o.store.clock = &clock_;
    o.store.history_horizon_ms = 30 * kDayMs;
    o.store.keep_log_ops = 40;  // short: a replica left behind gets a snapshot
    o.maintain_ms = 20;
    return o;
  }
  // Waits until the server folded its history at or past `at_ms`.
  void WaitFolded(int64_t at_ms) {
    const std::string want = "{\"h\":1}";
    for (int i = 0; i < 500; i++) {
      if (QueryOne(dir_.File("server.db"), "SELECT (horizon >> 16) >= " + std::to_string(at_ms) +
                                               " AS h FROM cairn_state") == want) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the server did not fold its history";
  }

  TempDir dir_;
  FakeClock clock_{1700000000000};
};

TEST_F(HorizonTest, FoldedHistoryServesEveryReplicaExactly) {
  ServerThread server(ServerOpts());
  auto a = Open(dir_.File("a.db"), &clock_);
  auto b = Open(dir_.File("b.db"), &clock_);
  auto stale = Open(dir_.File("stale.db"), &clock_);
  std::map<std::string, int64_t> sums;
  // Old history: counters from two replicas, documents deleted and one revived.
  ASSERT_TRUE(stale->Put("c", "seen", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(stale.get(), server.address()).ok());
  for (int round = 0; round < 10; round++) {
    for (Replica* r : {a.get(), b.get()}) {
      for (const char* k : {"k1", "k2", "k3"}) {
        clock_.Advance(1);
        ASSERT_TRUE(r->Increment("c", k, "n", round + 1).ok());
        sums[k] += round + 1;
      }
      ASSERT_TRUE(SyncOnce(r, server.address()).ok());
    }
  }
  ASSERT_TRUE(SyncOnce(stale.get(), server.address()).ok());  // it holds the counters too
  ASSERT_TRUE(a->Put("c", "gone", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Delete("c", "gone").ok());
  ASSERT_TRUE(a->Delete("c", "seen").ok());
  ASSERT_TRUE(a->Put("c", "back", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Delete("c", "back").ok());
  clock_.Advance(1);
  ASSERT_TRUE(a->Put("c", "back", {{"g", Value::Int(2)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  const std::string old_incs =
      QueryOne(dir_.File("server.db"), "SELECT count(*) AS n FROM cairn_incs");
  EXPECT_EQ(old_incs, "{\"n\":60}");

  // 31 days on: the server folds what is older than 30 days.
  clock_.Advance(31 * kDayMs);
  WaitFolded(clock_.NowMs() - 30 * kDayMs);
  EXPECT_EQ(QueryOne(dir_.File("server.db"), "SELECT count(*) AS n FROM cairn_incs"),
            "{\"n\":3}");  // one folded entry per counter
  EXPECT_EQ(
      QueryOne(dir_.File("server.db"), "SELECT count(*) AS n FROM cairn_docs WHERE cells IS NULL"),
      "{\"n\":0}");  // the deleted documents' rows are gone
  // New history above the horizon: increments, and a delete that lands between them.
  for (const char* k : {"k1", "k2"}) {
    clock_.Advance(1);
    ASSERT_TRUE(b->Increment("c", k, "n", 100).ok());
    sums[k] += 100;
  }
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  clock_.Advance(1);
  ASSERT_TRUE(a->Delete("c", "k2").ok());
  sums.erase("k2");
  for (int i = 0; i < 60; i++) {  // enough to trim the log past the stale replica's cursor
    clock_.Advance(1);
    ASSERT_TRUE(a->Increment("c", "k3", "n", 1).ok());
    sums["k3"] += 1;
  }
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  ASSERT_EQ(a->Digest().value(), b->Digest().value());

  // A new replica bootstraps from the folded state.
  auto fresh = Open(dir_.File("fresh.db"), &clock_);
  ASSERT_TRUE(SyncOnce(fresh.get(), server.address()).ok());
  EXPECT_EQ(fresh->Digest().value(), a->Digest().value());
  // The stale one (its cursor older than the log, its counters from before the fold) has its
  // copy replaced: nothing counted twice, nothing deleted back.
  auto stale_status = stale->GetStatus().value();
  ASSERT_TRUE(SyncOnce(stale.get(), server.address()).ok());
  EXPECT_GT(stale->GetStatus().value().cursor, stale_status.cursor);
  EXPECT_EQ(stale->Digest().value(), a->Digest().value());
  for (Replica* r : {fresh.get(), stale.get(), a.get()}) {
    for (const char* k : {"k1", "k2", "k3"}) EXPECT_EQ(Counter(r, k), sums[k]) << k;
    EXPECT_FALSE(r->Get("c", "gone").value().has_value());
    EXPECT_FALSE(r->Get("c", "seen").value().has_value());
  }
  // Replicas past the horizon's cursor fold theirs: one entry per counter of the old ones.
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(QueryOne(dir_.File("a.db"),
                     "SELECT count(*) AS n FROM cairn_incs WHERE hlc < "
                     "(SELECT horizon FROM cairn_state)"),
            "{\"n\":2}");  // k1's and k3's (k2 is deleted)
  EXPECT_EQ(QueryOne(dir_.File("a.db"), "SELECT count(*) AS n FROM cairn_docs WHERE cells IS NULL"),
            "{\"n\":1}");  // k2, deleted above the horizon
  // And everything goes on alike.
  clock_.Advance(1);
  ASSERT_TRUE(stale->Increment("c", "k1", "n", 5).ok());
  sums["k1"] += 5;
  ASSERT_TRUE(SyncOnce(stale.get(), server.address()).ok());
  for (Replica* r : {a.get(), b.get(), fresh.get()}) {
    ASSERT_TRUE(SyncOnce(r, server.address()).ok());
    EXPECT_EQ(r->Digest().value(), stale->Digest().value());
    EXPECT_EQ(Counter(r, "k1"), sums["k1"]);
  }
}

// A partial replica adding a collection while its cursor is behind the last fold gets the
// state at the head (a rebase), not the collection's state beside the log from its cursor: a
// folded entry sums increments that log brings again, under one identity.
TEST_F(HorizonTest, AddingACollectionBehindAFoldTakesTheWholeState) {
  ServerThread server(ServerOpts());
  auto w = Open(dir_.File("w.db"), &clock_);
  auto p = Open(dir_.File("p.db"), &clock_);
  sync::SyncOptions only_a;
  only_a.only = {"a"};
  for (int d = 1; d <= 3; d++) ASSERT_TRUE(w->Increment("b", "k", "n", d).ok());
  ASSERT_TRUE(w->Put("a", "x", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(w.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(p.get(), server.address(), only_a).ok());
  for (int d = 4; d <= 6; d++) ASSERT_TRUE(w->Increment("b", "k", "n", d).ok());
  ASSERT_TRUE(SyncOnce(w.get(), server.address()).ok());
  clock_.Advance(31 * kDayMs);
  WaitFolded(clock_.NowMs() - 30 * kDayMs);
  sync::SyncOptions both;
  both.only = {"a", "b"};
  ASSERT_TRUE(SyncOnce(p.get(), server.address(), both).ok());
  auto k = p->Get("b", "k").value();
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->at("n").as_int(), 21);
  ASSERT_TRUE(SyncOnce(w.get(), server.address()).ok());
  EXPECT_EQ(p->Digest().value(), w->Digest().value());
}

// A transaction stamped below the horizon cannot be merged by the rules any more: the server
// refuses it (EEXPIRED), its origin records and undoes it like any refusal, then writes it
// again stamped at the horizon.
TEST_F(HorizonTest, AnOpStampedBeforeTheHorizonIsRefused) {
  ServerThread server(ServerOpts());
  auto a = Open(dir_.File("a.db"), &clock_);
  ASSERT_TRUE(a->Put("c", "k", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  clock_.Advance(31 * kDayMs);
  WaitFolded(clock_.NowMs() - 30 * kDayMs);
  FakeClock behind(1700000000000);  // a device whose clock is a month late
  auto late = Open(dir_.File("late.db"), &behind);
  ASSERT_TRUE(late->Put("c", "late", {{"f", Value::Int(2)}}).ok());
  ASSERT_TRUE(SyncOnce(late.get(), server.address()).ok());
  auto rejected = RejectedOps(late.get());
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].code, static_cast<int>(Code::kEEXPIRED));
  EXPECT_NE(rejected[0].reason.find("history horizon"), std::string::npos);
  EXPECT_NE(rejected[0].reason.find("; written again as seqs 2..2"), std::string::npos);
  // Its later writes are stamped by the server's time: taken as they are.
  ASSERT_TRUE(late->Put("c", "later", {{"f", Value::Int(3)}}).ok());
  ASSERT_TRUE(SyncOnce(late.get(), server.address()).ok());
  EXPECT_EQ(RejectedOps(late.get()).size(), 1u);
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_TRUE(a->Get("c", "later").value().has_value());
  EXPECT_TRUE(a->Get("c", "late").value().has_value());
  EXPECT_EQ(a->Digest().value(), late->Digest().value());
}

// A device offline for longer than the horizon: its writes from before it are refused
// (EEXPIRED), then written again stamped at the horizon once it has every op below it, where
// they would still have won: not under a delete made after them, not over a field written after
// them, not a delete of a document written after it.
TEST_F(HorizonTest, WritesOlderThanTheHorizonAreWrittenAgain) {
  ServerThread server(ServerOpts());
  auto a = Open(dir_.File("a.db"), &clock_);
  auto away = Open(dir_.File("away.db"), &clock_);
  ASSERT_TRUE(a->Put("c", "d1", {{"f", Value::String("first")}}).ok());
  ASSERT_TRUE(a->Put("c", "d2", {{"f", Value::String("first")}}).ok());
  ASSERT_TRUE(a->Put("c", "d4", {{"f", Value::String("first")}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(away.get(), server.address()).ok());
  // Offline: three writes.
  clock_.Advance(1);
  ASSERT_TRUE(
      away->Put("c", "d1", {{"f", Value::String("offline")}, {"g", Value::String("offline")}})
          .ok());
  ASSERT_TRUE(away->Increment("c", "d3", "n", 5).ok());
  ASSERT_TRUE(away->Put("c", "d2", {{"f", Value::String("offline")}}).ok());
  ASSERT_TRUE(away->Delete("c", "d4").ok());
  clock_.Advance(1);
  ASSERT_TRUE(a->Delete("c", "d2").ok());  // after the offline write to it
  ASSERT_TRUE(a->Put("c", "d4", {{"h", Value::String("online")}}).ok());  // after the delete
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  clock_.Advance(31 * kDayMs);
  WaitFolded(clock_.NowMs() - 30 * kDayMs);
  ASSERT_TRUE(a->Put("c", "d1", {{"f", Value::String("recent")}}).ok());  // within the horizon
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  // Back online.
  ASSERT_TRUE(SyncOnce(away.get(), server.address()).ok());
  auto rejected = RejectedOps(away.get());
  ASSERT_EQ(rejected.size(), 5u);
  std::map<std::string, std::string> outcome;  // collection/key/field -> what became of it
  for (const auto& r : rejected) {
    EXPECT_EQ(r.code, static_cast<int>(Code::kEEXPIRED));
    const size_t note = r.reason.find("; ");
    ASSERT_NE(note, std::string::npos) << r.reason;
    outcome[r.op.key + "/" + r.op.field] = r.reason.substr(note + 2, 20);
  }
  EXPECT_EQ(outcome["d1/f"], "not written again: t");  // the field was written after it
  EXPECT_EQ(outcome["d1/g"], "written again as seq");
  EXPECT_EQ(outcome["d3/n"], "written again as seq");
  EXPECT_EQ(outcome["d2/f"], "not written again: t");  // the document was deleted after it
  EXPECT_EQ(outcome["d4/"], "not written again: t");   // the document was written after it
  EXPECT_EQ(away->GetStatus().value().pending_ops, 0);
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(a->Digest().value(), away->Digest().value());
  auto d1 = a->Get("c", "d1").value();
  ASSERT_TRUE(d1.has_value());
  EXPECT_EQ(d1->at("f").as_string(), "recent");         // made later: wins
  EXPECT_EQ(d1->at("g").as_string(), "offline");        // written again
  EXPECT_EQ(Counter(a.get(), "d3"), 5);                 // counted once
  EXPECT_FALSE(a->Get("c", "d2").value().has_value());  // no deleted document back
  // What was written after the delete stays; the delete, not written again (it would now wipe
  // that too), leaves the older field as well: reported, for the app to redo.
  auto d4 = a->Get("c", "d4").value();
  ASSERT_TRUE(d4.has_value());
  EXPECT_EQ(d4->at("h").as_string(), "online");
  EXPECT_EQ(d4->at("f").as_string(), "first");
  // Nothing is written again twice.
  ASSERT_TRUE(SyncOnce(away.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(Counter(a.get(), "d3"), 5);
}

}  // namespace
}  // namespace cairn
