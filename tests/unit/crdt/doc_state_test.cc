#include "crdt/doc_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace cairn::crdt {
namespace {

ReplicaId Rid(uint8_t b) {
  ReplicaId id;
  id.bytes.fill(b);
  return id;
}

Op Set(uint64_t t, uint8_t origin, uint64_t seq, const std::string& field, Value v) {
  Op op;
  op.id = OpId{MakeHlc(t, 0), Rid(origin), seq};
  op.kind = OpKind::kSet;
  op.collection = "c";
  op.key = "k";
  op.field = field;
  op.value = std::move(v);
  return op;
}
Op Inc(uint64_t t, uint8_t origin, uint64_t seq, const std::string& field, int64_t d) {
  Op op = Set(t, origin, seq, field, Value());
  op.kind = OpKind::kIncrement;
  op.value = Value();
  op.delta = d;
  return op;
}
Op Del(uint64_t t, uint8_t origin, uint64_t seq) {
  Op op = Set(t, origin, seq, "", Value());
  op.kind = OpKind::kDelete;
  op.field.clear();
  return op;
}

// Applies ops in order, loading increments when asked (as the store does: incs_loaded means
// "every stored increment is in doc.incs", true here since nothing is stored elsewhere).
DocState ApplyAll(const std::vector<Op>& ops) {
  DocState doc;
  doc.incs_loaded = true;
  for (const Op& op : ops) ApplyOp(&doc, op);
  return doc;
}

std::map<std::string, Value> Visible(const DocState& doc) {
  std::map<std::string, Value> out;
  for (const auto& [f, cell] : doc.cells) out[f] = cell.Visible();
  return out;
}

TEST(DocStateTest, LaterSetWins) {
  DocState d = ApplyAll({Set(10, 1, 1, "a", Value::Int(1)), Set(20, 2, 1, "a", Value::Int(2))});
  EXPECT_EQ(Visible(d).at("a"), Value::Int(2));
  DocState e = ApplyAll({Set(20, 2, 1, "a", Value::Int(2)), Set(10, 1, 1, "a", Value::Int(1))});
  EXPECT_EQ(Visible(e).at("a"), Value::Int(2));
}

TEST(DocStateTest, TiesBrokenByReplicaIdThenSeq) {
  // Same HLC: the larger origin id wins, whatever the order of arrival.
  for (bool swap : {false, true}) {
    std::vector<Op> ops = {Set(10, 1, 5, "a", Value::String("low")),
                           Set(10, 9, 1, "a", Value::String("high"))};
    if (swap) std::swap(ops[0], ops[1]);
    EXPECT_EQ(Visible(ApplyAll(ops)).at("a"), Value::String("high"));
  }
}

TEST(DocStateTest, DeleteThenReviveShowsOnlyLaterFields) {
  DocState d = ApplyAll({Set(10, 1, 1, "a", Value::Int(1)), Set(11, 1, 2, "b", Value::Int(2)),
                         Del(20, 1, 3), Set(30, 1, 4, "b", Value::Int(3))});
  auto v = Visible(d);
  EXPECT_EQ(v.size(), 1u);
  EXPECT_EQ(v.at("b"), Value::Int(3));
}

TEST(DocStateTest, SmallerWriteDoesNotReviveDeletedDocument) {
  DocState d = ApplyAll({Del(20, 2, 1), Set(10, 1, 1, "a", Value::Int(1))});
  EXPECT_FALSE(d.Visible());
  DocState e = ApplyAll({Set(10, 1, 1, "a", Value::Int(1)), Del(20, 2, 1)});
  EXPECT_FALSE(e.Visible());
}

TEST(DocStateTest, ConcurrentDeleteAndSetLargerWins) {
  // The set is larger than the delete: the document stays visible with that field only.
  DocState d = ApplyAll({Set(5, 1, 1, "x", Value::Int(0)), Set(21, 1, 2, "a", Value::Int(1)),
                         Del(20, 2, 1)});
  auto v = Visible(d);
  EXPECT_EQ(v.size(), 1u);
  EXPECT_EQ(v.at("a"), Value::Int(1));
}

TEST(DocStateTest, IncrementsSumAndWrap) {
  DocState d = ApplyAll({Inc(1, 1, 1, "n", INT64_MAX), Inc(2, 2, 1, "n", 2)});
  EXPECT_EQ(Visible(d).at("n"), Value::Int(INT64_MIN + 1));
}

TEST(DocStateTest, DeleteDropsOnlyIncrementsBelowIt) {
  std::vector<Op> ops = {Inc(10, 1, 1, "n", 5), Inc(30, 2, 1, "n", 7), Del(20, 3, 1)};
  std::sort(ops.begin(), ops.end(), [](const Op& a, const Op& b) { return a.id < b.id; });
  do {
    EXPECT_EQ(Visible(ApplyAll(ops)).at("n"), Value::Int(7));
  } while (std::next_permutation(ops.begin(), ops.end(),
                                 [](const Op& a, const Op& b) { return a.id < b.id; }));
}

TEST(DocStateTest, SetAndIncrementOnOneFieldLargestDecides) {
  // set (t10), inc (t20): the counter shows, summing every delta larger than D (none here).
  DocState d = ApplyAll({Inc(5, 1, 1, "f", 3), Set(10, 2, 1, "f", Value::String("s")),
                         Inc(20, 1, 2, "f", 4)});
  EXPECT_EQ(Visible(d).at("f"), Value::Int(7));
  // a later set wins over the counter.
  ApplyOp(&d, Set(30, 2, 2, "f", Value::String("t")));
  EXPECT_EQ(Visible(d).at("f"), Value::String("t"));
}

// A cell keeps its increments out of line (most fields are only set): a copy owns its own, a
// field that was only set has none, and a delete that covers them all frees them.
TEST(DocStateTest, IncrementStateIsOwnedPerCellAndFreedWhenCovered) {
  DocState d = ApplyAll({Set(1, 1, 1, "s", Value::Int(1)), Inc(2, 1, 2, "n", 5)});
  EXPECT_EQ(d.cells.find("s")->second.inc_count(), 0);
  EXPECT_TRUE(d.cells.find("s")->second.inc_max().none());
  DocState copy = d;
  ApplyOp(&copy, Inc(3, 2, 1, "n", 4));
  EXPECT_EQ(Visible(copy).at("n"), Value::Int(9));
  EXPECT_EQ(Visible(d).at("n"), Value::Int(5));  // the original's counter is its own
  EXPECT_EQ(d.cells.find("n")->second.inc_count(), 1);
  Cell assigned;
  assigned = copy.cells.find("n")->second;
  EXPECT_EQ(assigned.counter(), 9);
  EXPECT_EQ(assigned.inc_count(), 2);
  EXPECT_EQ(assigned.inc_max(), (OpId{MakeHlc(3, 0), Rid(2), 1}));
  // A delete between the increments: only the later one counts, its id the largest.
  ApplyOp(&copy, Del(2, 3, 1));
  ApplyOp(&copy, Del(3, 3, 2));  // above both: the field is gone
  EXPECT_TRUE(copy.cells.find("n") == copy.cells.end());
  DocState between = ApplyAll({Inc(1, 1, 1, "n", 5), Inc(3, 1, 2, "n", 4), Del(2, 2, 1),
                               Set(4, 2, 2, "n", Value::Int(0)), Del(5, 2, 3)});
  EXPECT_TRUE(between.cells.empty());
  DocState partly = ApplyAll({Inc(1, 1, 1, "n", 5), Inc(3, 1, 2, "n", 4), Del(2, 2, 1)});
  ASSERT_TRUE(partly.cells.find("n") != partly.cells.end());
  const Cell* n = &partly.cells.find("n")->second;
  EXPECT_EQ(n->counter(), 4);
  EXPECT_EQ(n->inc_count(), 1);
  EXPECT_EQ(n->inc_max(), (OpId{MakeHlc(3, 0), Rid(1), 2}));
}

TEST(DocStateTest, ApplyingASetOrDeleteTwiceChangesNothing) {
  DocState d = ApplyAll({Set(10, 1, 1, "a", Value::Int(1)), Del(5, 2, 1)});
  EXPECT_FALSE(ApplyOp(&d, Set(10, 1, 1, "a", Value::Int(1))));
  EXPECT_FALSE(ApplyOp(&d, Del(5, 2, 1)));
}

TEST(DocStateTest, DeleteAboveEverythingDoesNotNeedIncrements) {
  DocState d;
  ApplyOp(&d, Inc(10, 1, 1, "n", 1));
  EXPECT_FALSE(NeedsIncrements(d, Del(20, 1, 2)));
  EXPECT_TRUE(NeedsIncrements(d, Del(5, 2, 1)));
  ApplyOp(&d, Del(20, 1, 2));
  EXPECT_FALSE(d.Visible());
  EXPECT_TRUE(d.changes.all_incs_removed);
}

TEST(DocStateTest, EveryOrderGivesTheSameState) {
  std::vector<Op> ops = {Set(10, 1, 1, "a", Value::Int(1)), Inc(12, 2, 1, "a", 2),
                         Del(15, 3, 1), Set(16, 1, 2, "b", Value::Bool(true)),
                         Inc(17, 3, 2, "a", 5), Set(14, 2, 2, "a", Value::Double(0.5))};
  auto less = [](const Op& a, const Op& b) { return a.id < b.id; };
  std::sort(ops.begin(), ops.end(), less);
  auto expected = Visible(ApplyAll(ops));
  EXPECT_EQ(expected.at("a"), Value::Int(5));
  EXPECT_EQ(expected.at("b"), Value::Bool(true));
  do {
    EXPECT_EQ(Visible(ApplyAll(ops)), expected);
  } while (std::next_permutation(ops.begin(), ops.end(), less));
}

// What an op outranks and what outranks it, decided here for the store (the undo of refusals).
std::vector<OpId> Ids(const std::vector<Op>& ops) {
  std::vector<OpId> ids;
  for (const Op& o : ops) ids.push_back(o.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(OutrankTest, ASetSupersedesTheFieldsSmallerSetOnly) {
  DocState d = ApplyAll({Set(10, 1, 1, "a", Value::Int(1)), Set(10, 1, 2, "b", Value::Int(2))});
  std::vector<Op> out;
  SupersededBy(d, Set(20, 2, 1, "a", Value::Int(3)), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].id, Set(10, 1, 1, "a", Value()).id);
  EXPECT_EQ(out[0].value, Value::Int(1));  // the value it had, to restore on an undo
  EXPECT_EQ(out[0].field, "a");
  out.clear();
  SupersededBy(d, Set(5, 2, 2, "a", Value::Int(4)), &out);  // smaller: removes nothing
  EXPECT_TRUE(out.empty());
  SupersededBy(d, Inc(30, 2, 3, "a", 1), &out);  // an increment removes nothing
  EXPECT_TRUE(out.empty());
}

TEST(OutrankTest, ADeleteSupersedesEverythingBelowIt) {
  const Op low_set = Set(10, 1, 1, "a", Value::Int(1)), low_inc = Inc(11, 1, 2, "n", 5);
  const Op old_del = Del(5, 3, 1), high_inc = Inc(30, 2, 1, "n", 7);
  DocState d = ApplyAll({old_del, low_set, low_inc, high_inc});
  std::vector<Op> out;
  SupersededBy(d, Del(20, 3, 2), &out);
  EXPECT_EQ(Ids(out), Ids({old_del, low_set, low_inc}));
  for (const Op& o : out) EXPECT_EQ(o.key, "k");
  out.clear();
  SupersededBy(d, Del(4, 3, 3), &out);  // below the delete it has: removes nothing
  EXPECT_TRUE(out.empty());
}

TEST(OutrankTest, WhatMakesAnOpChangeNothing) {
  const Op del = Del(20, 3, 1), set = Set(30, 1, 1, "a", Value::Int(1));
  DocState d = ApplyAll({del, set});
  EXPECT_EQ(OutrankedBy(d, Set(10, 2, 1, "b", Value::Int(2))), del.id);  // below the delete
  EXPECT_EQ(OutrankedBy(d, Inc(10, 2, 2, "n", 1)), del.id);
  EXPECT_EQ(OutrankedBy(d, Set(25, 2, 3, "a", Value::Int(3))), set.id);  // the larger set
  EXPECT_TRUE(OutrankedBy(d, Set(35, 2, 4, "a", Value::Int(4))).none());
  EXPECT_TRUE(OutrankedBy(d, Inc(25, 2, 5, "a", 1)).none());  // increments above D count
  // Whatever it says outranks an op, applying that op indeed changes nothing.
  for (const Op& op : {Set(10, 2, 1, "b", Value::Int(2)), Set(25, 2, 3, "a", Value::Int(3))}) {
    DocState copy = d;
    EXPECT_FALSE(ApplyOp(&copy, op));
  }
}

TEST(OutrankTest, StateOpsListWhatTheStateKeeps) {
  const Op del = Del(5, 3, 1), set = Set(10, 1, 1, "a", Value::Int(1));
  const Op inc = Inc(11, 1, 2, "n", 5);
  DocState d = ApplyAll({del, set, inc});
  std::vector<Op> out;
  StateOps("c", "k", d, &out);
  EXPECT_EQ(Ids(out), Ids({del, set, inc}));
  // Rebuilt from those ops alone, the state is the same.
  EXPECT_EQ(Visible(ApplyAll(out)), Visible(d));
}

// History horizon (docs/crdt-semantics.md "History horizon").
TEST(FoldTest, FoldingChangesNothingShownAndKeepsOneEntryPerField) {
  DocState d =
      ApplyAll({Del(5, 3, 1), Inc(10, 1, 1, "n", 5), Inc(11, 2, 1, "n", 7), Inc(12, 1, 2, "n", -2),
                Inc(40, 2, 2, "n", 100), Set(13, 1, 3, "a", Value::Int(1)), Inc(14, 3, 2, "m", 1)});
  const auto shown = Visible(d);
  const OpId largest = Inc(12, 1, 2, "n", 0).id;
  d.ClearChanges();
  EXPECT_TRUE(FoldHistory(&d, MakeHlc(20, 0)));
  EXPECT_EQ(Visible(d), shown);
  EXPECT_TRUE(d.del.none());  // the delete below the horizon is forgotten
  EXPECT_TRUE(d.changes.del_changed);
  ASSERT_EQ(d.incs.at("n").size(), 2u);  // the entry above the horizon, and the base
  EXPECT_EQ(d.incs.at("n")[1].id, largest);
  EXPECT_EQ(d.incs.at("n")[1].delta, 10);
  EXPECT_EQ(d.cells.find("n")->second.inc_count(), 2);
  EXPECT_EQ(d.cells.find("n")->second.counter(), 110);
  EXPECT_EQ(d.incs.at("m").size(), 1u);  // one alone: nothing to fold
  EXPECT_EQ(d.changes.removed_incs.size(), 3u);
  ASSERT_EQ(d.changes.added_incs.size(), 1u);
  EXPECT_EQ(d.changes.added_incs[0].second.id, largest);
  d.ClearChanges();
  EXPECT_FALSE(FoldHistory(&d, MakeHlc(20, 0)));  // folding again: nothing left to fold
  // A later delete that lands between ops takes the base with what it covers.
  ApplyOp(&d, Del(30, 3, 3));
  EXPECT_EQ(Visible(d).at("n"), Value::Int(100));
  EXPECT_EQ(d.cells.find("n")->second.inc_count(), 1);
  EXPECT_EQ(d.cells.count("a"), 0u);
}

TEST(FoldTest, IncrementsOfTheSameBatchAreWrittenBackOnce) {
  DocState d = ApplyAll({Inc(10, 1, 1, "n", 5)});
  d.ClearChanges();
  ApplyOp(&d, Inc(11, 2, 1, "n", 7));  // not written back yet
  FoldHistory(&d, MakeHlc(20, 0));
  ASSERT_EQ(d.changes.added_incs.size(), 1u);  // the base only
  EXPECT_EQ(d.changes.added_incs[0].second.delta, 12);
}

// Folding at any horizon and then applying only ops at or above it shows what applying
// everything without folding shows: the rule every replica and the server apply the same way.
TEST(FoldTest, FoldThenLaterOpsEqualsNoFold) {
  std::mt19937 rng(23);
  for (int round = 0; round < 2000; round++) {
    std::vector<Op> before, after;
    uint64_t seq = 0;
    const uint64_t horizon = 50;
    auto random_op = [&](uint64_t lo, uint64_t hi) {
      const uint64_t t = lo + rng() % (hi - lo);
      const auto origin = static_cast<uint8_t>(1 + rng() % 3);
      const std::string field = rng() % 2 ? "a" : "b";
      switch (rng() % 5) {
        case 0:
          return Del(t, origin, ++seq);
        case 1:
          return Set(t, origin, ++seq, field, Value::Int(static_cast<int64_t>(rng() % 9)));
        default:
          return Inc(t, origin, ++seq, field, static_cast<int64_t>(rng() % 21) - 10);
      }
    };
    for (int i = 0, n = static_cast<int>(rng() % 12); i < n; i++)
      before.push_back(random_op(1, horizon + 20));  // some above the horizon too
    for (int i = 0, n = static_cast<int>(rng() % 8); i < n; i++)
      after.push_back(random_op(horizon, horizon + 40));
    DocState plain = ApplyAll(before), folded = ApplyAll(before);
    FoldHistory(&folded, MakeHlc(horizon, 0));
    ASSERT_EQ(Visible(folded), Visible(plain)) << "round " << round;
    for (const Op& op : after) {
      ApplyOp(&plain, op);
      ApplyOp(&folded, op);
    }
    ASSERT_EQ(Visible(folded), Visible(plain)) << "round " << round;
    for (const auto& [field, cell] : plain.cells) {
      EXPECT_EQ(cell.Deciding(), folded.cells.find(field)->second.Deciding()) << "round " << round;
    }
  }
}

}  // namespace
}  // namespace cairn::crdt
