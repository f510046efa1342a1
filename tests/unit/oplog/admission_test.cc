// The admission rules (oplog/admission.h, docs/crdt-semantics.md "Admission"): every case the
// paths that receive ops rely on.
#include "oplog/admission.h"

#include <gtest/gtest.h>

#include "oplog/validate.h"

namespace cairn::admission {
namespace {

ReplicaId Origin() {
  ReplicaId id;
  id.bytes.fill(0xab);
  return id;
}

// The classes a run of seqs gets, or the first error's code.
std::string Classes(OriginSeq* s, std::initializer_list<uint64_t> seqs) {
  std::string out;
  for (uint64_t seq : seqs) {
    auto r = s->Next(seq);
    if (!r.ok()) return out + std::string(CodeName(r.status().code()));
    out += *r == Seq::kNew ? "n" : "d";
  }
  return out;
}

TEST(AdmissionTest, ContiguousOpsAreNewFromTheWatermarkOn) {
  OriginSeq s(Origin(), 4);
  EXPECT_EQ(Classes(&s, {5, 6, 7}), "nnn");
  EXPECT_EQ(s.through(), 4u);
  EXPECT_EQ(s.through_after(), 7u);
  EXPECT_EQ(s.last(), 7u);
}

TEST(AdmissionTest, OpsAtOrBelowTheWatermarkAreDuplicates) {
  // A retry after a lost Ack resends what the receiver has, then goes on.
  OriginSeq s(Origin(), 4);
  EXPECT_EQ(Classes(&s, {2, 3, 4, 5}), "dddn");
  EXPECT_EQ(s.through_after(), 5u);
}

TEST(AdmissionTest, AnOpTheUnitBroughtAlreadyIsDamage) {
  // Above the watermark and seen in this unit: no sender repeats an op within one batch.
  OriginSeq s(Origin(), 4);
  EXPECT_EQ(Classes(&s, {5, 6, 4, 5}), "nndECORRUPT");
  EXPECT_EQ(s.through_after(), 6u);
  OriginSeq t(Origin(), 4);
  EXPECT_EQ(Classes(&t, {5, 6, 6}), "nnECORRUPT");
}

TEST(AdmissionTest, ADuplicateThenAGapIsDamage) {
  OriginSeq s(Origin(), 4);
  EXPECT_EQ(Classes(&s, {3, 6}), "dECORRUPT");
}

TEST(AdmissionTest, AUnitWithoutOpsLeavesTheWatermark) {
  EXPECT_EQ(OriginSeq(Origin(), 7).through_after(), 7u);
  OriginSeq below(Origin(), 7);
  ASSERT_TRUE(below.Declare(2, 5).ok());
  EXPECT_EQ(below.through_after(), 7u);
  OriginSeq above(Origin(), 7);
  ASSERT_TRUE(above.Declare(6, 9).ok());
  EXPECT_EQ(above.through_after(), 9u);  // the range accounts for 8 and 9 though none came
}

TEST(AdmissionTest, AGapIsDamage) {
  OriginSeq fresh(Origin(), 0);
  EXPECT_EQ(Classes(&fresh, {2}), "ECORRUPT");
  OriginSeq s(Origin(), 4);
  EXPECT_EQ(Classes(&s, {5, 7}), "nECORRUPT");
  EXPECT_EQ(s.through_after(), 5u);  // what was taken before the gap
  auto r = OriginSeq(Origin(), 4).Next(9);
  EXPECT_NE(r.status().message().find("follows seq 4 (a gap)"), std::string::npos)
      << r.status().ToString();
}

TEST(AdmissionTest, ADeclaredRangeTakesIncreasingOpsWithHoles) {
  OriginSeq s(Origin(), 5);
  ASSERT_TRUE(s.Declare(3, 10).ok());
  EXPECT_TRUE(s.declared());
  EXPECT_EQ(s.declared_from(), 3u);
  EXPECT_EQ(s.declared_to(), 10u);
  EXPECT_TRUE(s.assumption_met());
  EXPECT_EQ(Classes(&s, {4, 5, 8, 10}), "ddnn");
  // The whole range is accounted for, the ops left out (6, 7, 9) included.
  EXPECT_EQ(s.through_after(), 10u);
}

TEST(AdmissionTest, ADeclaredRangeRefusesOpsOutsideItOrOutOfOrder) {
  for (auto seqs : {std::initializer_list<uint64_t>{3}, {11}, {6, 6}, {7, 6}}) {
    OriginSeq s(Origin(), 5);
    ASSERT_TRUE(s.Declare(3, 10).ok());
    std::string got = Classes(&s, seqs);
    EXPECT_EQ(got.substr(got.size() - 8), "ECORRUPT") << got;
  }
}

TEST(AdmissionTest, ARangeBelowTheWatermarkLeavesItWhereItIs) {
  OriginSeq s(Origin(), 9);
  ASSERT_TRUE(s.Declare(0, 4).ok());
  EXPECT_EQ(Classes(&s, {1, 4}), "dd");
  EXPECT_EQ(s.through_after(), 9u);
}

TEST(AdmissionTest, ARangeThatAssumesMissingOpsIsNotMet) {
  OriginSeq s(Origin(), 2);
  ASSERT_TRUE(s.Declare(5, 8).ok());
  EXPECT_FALSE(s.assumption_met());
  // Its ops are still checked for order: a unit held back is held back whole and valid.
  EXPECT_EQ(Classes(&s, {6, 8}), "nn");
  EXPECT_EQ(Classes(&s, {7}), "ECORRUPT");
  OriginSeq exact(Origin(), 5);
  ASSERT_TRUE(exact.Declare(5, 8).ok());
  EXPECT_TRUE(exact.assumption_met());
  EXPECT_TRUE(OriginSeq(Origin(), 0).assumption_met());  // nothing declared, nothing assumed
}

TEST(AdmissionTest, BadOrRepeatedDeclarationsAreDamage) {
  OriginSeq s(Origin(), 0);
  EXPECT_EQ(s.Declare(5, 4).code(), Code::kECORRUPT);
  EXPECT_EQ(s.Declare(0, kMaxSeq + 1).code(), Code::kECORRUPT);
  EXPECT_FALSE(s.declared());
  EXPECT_TRUE(s.Declare(0, kMaxSeq).ok());
  EXPECT_EQ(s.Declare(0, 1).code(), Code::kECORRUPT);
  EXPECT_EQ(s.declared_to(), kMaxSeq);
  EXPECT_EQ(Classes(&s, {1, kMaxSeq}), "nn");
  EXPECT_EQ(s.through_after(), kMaxSeq);
  OriginSeq empty(Origin(), 3);
  EXPECT_TRUE(empty.Declare(3, 3).ok());  // an empty range: every op of it is outside
  EXPECT_EQ(Classes(&empty, {4}), "ECORRUPT");
}

TEST(AdmissionTest, ARangeDeclaredAfterOpsIsDamage) {
  // Declaring after ops were counted would reset the order and count them again.
  OriginSeq s(Origin(), 0);
  EXPECT_EQ(Classes(&s, {1, 2}), "nn");
  EXPECT_EQ(s.Declare(0, 5).code(), Code::kECORRUPT);
  EXPECT_FALSE(s.declared());
  EXPECT_EQ(Classes(&s, {1}), "ECORRUPT");  // still in sequence: 1 came already
}

TEST(AdmissionTest, ADeclaredRangeBelowTheWatermarkStillWantsOrder) {
  OriginSeq s(Origin(), 9);
  ASSERT_TRUE(s.Declare(3, 12).ok());
  EXPECT_EQ(Classes(&s, {4, 4}), "dECORRUPT");  // no repeats in a range either
}

TEST(AdmissionTest, HeldBackUnitsWaitForTheirAssumptions) {
  EXPECT_TRUE(AssumptionMet(0, 0));
  EXPECT_TRUE(AssumptionMet(4, 4));
  EXPECT_TRUE(AssumptionMet(3, 4));
  EXPECT_FALSE(AssumptionMet(5, 4));
  EXPECT_TRUE(Has(4, 4));
  EXPECT_TRUE(Has(4, 1));
  EXPECT_FALSE(Has(4, 5));
  EXPECT_FALSE(Has(0, 1));
}

TEST(AdmissionTest, ARepeatedOpWithAnotherStampIsAFork) {
  const Hlc a = MakeHlc(1000, 0), b = MakeHlc(2000, 0);
  EXPECT_TRUE(CheckFork(Origin(), 7, a, a).ok());
  EXPECT_TRUE(CheckFork(Origin(), 7, a, std::nullopt).ok());  // no longer held: not decidable
  Status st = CheckFork(Origin(), 7, b, a);
  EXPECT_EQ(st.code(), Code::kEFORKED);
  EXPECT_NE(st.message().find("op 7 of replica " + Origin().Hex()), std::string::npos);
}

}  // namespace
}  // namespace cairn::admission
