// ReplicaStore paths the Replica API does not reach yet: the rejected-ops table (the sync issue's
// server refusals land there).
#include "store/replica_store.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace cairn::store {
namespace {

TEST(ReplicaStoreTest, RejectedOpsAreKeptWithTheirReasonAcrossReopen) {
  testing::TempDir dir;
  ReplicaId id;
  id.bytes.fill(3);
  Op op;
  op.id = OpId{MakeHlc(1700000000000, 2), id, 7};
  op.kind = OpKind::kSet;
  op.collection = "notes";
  op.key = "n1";
  op.field = "title";
  op.value = Value::String("hi");
  {
    auto s = ReplicaStore::Open(dir.File("r.db"), StoreOptions(), id, 1).value();
    EXPECT_EQ(s->RejectedCount().value(), 0);
    ASSERT_TRUE(s->Begin().ok());
    ASSERT_TRUE(s->RecordRejected(op, static_cast<int>(Code::kEINVAL), "no write permission", 42)
                    .ok());
    ASSERT_TRUE(s->Commit(0).ok());
  }
  auto s = ReplicaStore::Open(dir.File("r.db"), StoreOptions(), id, 1).value();
  EXPECT_EQ(s->RejectedCount().value(), 1);
  std::vector<RejectedOp> got;
  ASSERT_TRUE(s->ForEachRejected([&](const RejectedOp& r) {
                 got.push_back(r);
                 return Status::OK();
               }).ok());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].op.id, op.id);
  EXPECT_EQ(got[0].op.key, "n1");
  EXPECT_EQ(got[0].op.field, "title");
  EXPECT_EQ(got[0].op.value, Value::String("hi"));
  EXPECT_EQ(got[0].reason, "no write permission");
  EXPECT_EQ(got[0].code, static_cast<int>(Code::kEINVAL));
  EXPECT_EQ(got[0].at_ms, 42);
}

// A stored cell that says it has increments but counts none was never written by a store: it is
// damage, refused, not read as a field without increments.
TEST(ReplicaStoreTest, ACellWithIncrementsCountingNoneIsCorrupt) {
  testing::TempDir dir;
  ReplicaId id;
  id.bytes.fill(3);
  Op op;
  op.id = OpId{MakeHlc(1700000000000, 0), id, 1};
  op.kind = OpKind::kIncrement;
  op.collection = "notes";
  op.key = "n1";
  op.field = "views";
  op.delta = 5;
  auto read = [&](ReplicaStore* s) {
    int64_t views = 0;
    Status st = s->ForEachDocSurvivors("notes", "", 10, [&](const std::string&, std::vector<Op>* ops) {
      for (const Op& o : *ops) views += o.delta;
      return Status::OK();
    });
    return st.ok() ? Result<int64_t>(views) : Result<int64_t>(st);
  };
  {
    auto s = ReplicaStore::Open(dir.File("r.db"), StoreOptions(), id, 1).value();
    ASSERT_TRUE(s->Begin().ok());
    ASSERT_TRUE(s->Apply(op, /*local=*/true).ok());
    ASSERT_TRUE(s->Commit(op.id.hlc).ok());
    auto views = read(s.get());
    ASSERT_TRUE(views.ok()) << views.status().ToString();
    EXPECT_EQ(*views, 5);
    // The cell ends with its increment count (1): make it 0.
    ASSERT_TRUE(s->db()
                    ->Exec("UPDATE cairn_docs SET cells = CAST(substr(cells, 1, length(cells) - 1) "
                           "|| x'00' AS BLOB)")
                    .ok());
  }
  auto s = ReplicaStore::Open(dir.File("r.db"), StoreOptions(), id, 1).value();
  EXPECT_EQ(read(s.get()).status().code(), Code::kECORRUPT);
}

}  // namespace
}  // namespace cairn::store
