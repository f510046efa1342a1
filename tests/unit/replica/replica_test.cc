#include "replica/replica.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "base/sha256.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/sync_access.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;
using testing::TempDir;

class ReplicaTest : public ::testing::Test {
 protected:
  std::unique_ptr<Replica> Open(const std::string& name, Clock* clock = nullptr) {
    ReplicaOptions o;
    o.clock = clock ? clock : &clock_;
    auto r = Replica::Open(dir_.File(name), o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  std::string Get(Replica* r, const std::string& coll, const std::string& key) {
    auto d = r->Get(coll, key);
    EXPECT_TRUE(d.ok());
    if (!d.ok() || !d.value()) return "<none>";
    return CanonicalJson(FieldsToJson(*d.value()));
  }
  std::string Dump(Replica* r) { return r->DumpString().value(); }
  // Applies `enc`'s ops (and leaves) to `r` as a batch of `server` at `cursor`.
  Status ApplyServerBatch(Replica* r, protocol::BatchEncoder* enc, uint64_t cursor,
                          const ReplicaId& server) {
    flatbuffers::FlatBufferBuilder fbb;
    enc->Finish(&fbb, cursor);
    auto frame = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer());
    return SyncAccess(*r).ApplyServerBatch(*frame->body_as_OpBatch(), cursor, server).status();
  }
  std::vector<std::string> Query(Replica* r, const std::string& sql) {
    std::vector<std::string> rows;
    Status st = r->Query(sql, [&](const std::string& row) {
      rows.push_back(row);
      return Status::OK();
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return rows;
  }
  // Exports `from` and imports into `to`.
  ImportStats Sync(Replica* from, Replica* to) {
    std::string path = dir_.File("x" + std::to_string(n_++) + ".cex");
    EXPECT_TRUE(from->Export(path).ok());
    auto r = to->Import(path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value() : ImportStats();
  }

  TempDir dir_;
  FakeClock clock_;
  int n_ = 0;
};

TEST_F(ReplicaTest, PutGetAndPersistAcrossReopen) {
  auto r = Open("a.db");
  ASSERT_TRUE(r->Put("notes", "n1", {{"title", Value::String("hi")}, {"n", Value::Int(2)}}).ok());
  EXPECT_EQ(Get(r.get(), "notes", "n1"), R"({"n":2,"title":"hi"})");
  ReplicaId id = r->id();
  ASSERT_TRUE(r->Close().ok());
  auto again = Open("a.db");
  EXPECT_EQ(again->id(), id);
  EXPECT_EQ(Get(again.get(), "notes", "n1"), R"({"n":2,"title":"hi"})");
  EXPECT_EQ(Get(again.get(), "notes", "missing"), "<none>");
}

// Write receipts (docs/c-api.md "Write receipts"): a write returns the seq of its
// transaction's last op; a refused write uses no seq; receipts go on after a reopen.
TEST_F(ReplicaTest, WritesReturnTheSeqOfTheirLastOp) {
  auto r = Open("a.db");
  auto put = r->Put("notes", "n1", {{"title", Value::String("hi")}, {"n", Value::Int(2)}});
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put.value(), 2u);
  EXPECT_EQ(r->Increment("notes", "n1", "views", 1).value(), 3u);
  EXPECT_FALSE(r->Put("bad name", "k", {{"a", Value::Int(1)}}).ok());
  EXPECT_EQ(r->Delete("notes", "n1").value(), 4u);
  WriteBatch b;
  b.Set("notes", "n2", "a", Value::Int(1)).Increment("notes", "n2", "c", 1).Delete("notes", "n3");
  EXPECT_EQ(r->Write(b).value(), 7u);
  EXPECT_FALSE(r->Write(WriteBatch()).ok());  // (empty)
  ASSERT_TRUE(r->Close().ok());
  auto again = Open("a.db");
  EXPECT_EQ(again->Put("notes", "n4", {{"a", Value::Int(1)}}).value(), 8u);
  auto status = again->GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->last_seq, 8u);
  EXPECT_EQ(status->pending_ops, 8);
}

TEST_F(ReplicaTest, BatchIsAtomicAndInvalidBatchWritesNothing) {
  auto r = Open("a.db");
  WriteBatch bad;
  bad.Set("notes", "a", "x", Value::Int(1)).Set("notes", "b", "bad-name", Value::Int(2));
  EXPECT_EQ(r->Write(bad).status().code(), Code::kEINVAL);
  EXPECT_EQ(Dump(r.get()), "{}");
  EXPECT_EQ(r->GetStatus().value().last_seq, 0u);
  WriteBatch good;
  good.Set("notes", "a", "x", Value::Int(1)).Increment("notes", "a", "n", 4).Delete("notes", "b");
  ASSERT_TRUE(r->Write(good).ok());
  EXPECT_EQ(Get(r.get(), "notes", "a"), R"({"n":4,"x":1})");
  EXPECT_EQ(r->GetStatus().value().last_seq, 3u);
  EXPECT_EQ(r->GetStatus().value().pending_ops, 3);
}

TEST_F(ReplicaTest, RejectsBadInputWithNothingChanged) {
  auto r = Open("a.db");
  ASSERT_TRUE(r->Put("notes", "a", {{"x", Value::Int(1)}}).ok());
  std::string before = r->Digest().value();
  EXPECT_EQ(r->Put("cairn_meta", "a", {{"x", Value::Int(1)}}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Put("notes", std::string(1025, 'k'), {{"x", Value::Int(1)}}).status().code(),
            Code::kEINVAL);
  EXPECT_EQ(r->Put("notes", "a", {{"key", Value::Int(1)}}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Put("notes", "a", {{"x", Value::Double(NAN)}}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Put("notes", "a", {{"x", Value::String("\xff")}}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Put("NOTES", "a", {{"x", Value::Int(1)}}).status().code(),
            Code::kEINVAL);  // case clash
  EXPECT_EQ(r->Put("notes", "a", {{"X", Value::Int(1)}}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Put("notes", "a", {}).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->Digest().value(), before);
}

TEST_F(ReplicaTest, MaterializedTableFollowsVisibleState) {
  auto r = Open("a.db");
  ASSERT_TRUE(r->Put("items", "k1", {{"a", Value::Int(1)}, {"b", Value::String("x")}}).ok());
  ASSERT_TRUE(r->Put("items", "k2", {{"a", Value::Bool(true)}}).ok());
  ASSERT_TRUE(r->Increment("items", "k2", "n", 5).ok());
  EXPECT_EQ(Query(r.get(), "SELECT key, a, b, n FROM items ORDER BY key"),
            (std::vector<std::string>{R"({"a":1,"b":"x","key":"k1","n":null})",
                                      R"({"a":1,"b":null,"key":"k2","n":5})"}));
  ASSERT_TRUE(r->Delete("items", "k1").ok());
  ASSERT_TRUE(r->Put("items", "k2", {{"b", Value::Bytes("\x01")}}).ok());
  EXPECT_EQ(Query(r.get(), "SELECT key, b FROM items"),
            (std::vector<std::string>{R"({"b":{"$bytes":"AQ=="},"key":"k2"})"}));
  ASSERT_TRUE(r->Put("items", "k1", {{"b", Value::Int(9)}}).ok());  // revived: only b
  EXPECT_EQ(Query(r.get(), "SELECT key, a, b FROM items WHERE key = 'k1'"),
            (std::vector<std::string>{R"({"a":null,"b":9,"key":"k1"})"}));
}

TEST_F(ReplicaTest, QueryIsReadOnly) {
  auto r = Open("a.db");
  ASSERT_TRUE(r->Put("items", "k1", {{"a", Value::Int(1)}}).ok());
  auto fails = [&](const std::string& sql) {
    return r->Query(sql, [](const std::string&) { return Status::OK(); }).code();
  };
  EXPECT_EQ(fails("DELETE FROM items"), Code::kEREADONLY);
  EXPECT_EQ(fails("DROP TABLE items"), Code::kEREADONLY);
  EXPECT_EQ(fails("PRAGMA journal_mode=DELETE"), Code::kEREADONLY);
  EXPECT_EQ(fails("SELECT 1; DELETE FROM items"), Code::kEINVAL);
  EXPECT_NE(fails("SELEC nonsense"), Code::kOK);
  EXPECT_EQ(Query(r.get(), "SELECT count(*) AS c FROM items").at(0), R"({"c":1})");
  EXPECT_EQ(Query(r.get(), "SELECT 1e999 AS big, 0.5 AS half").at(0), R"({"big":null,"half":0.5})");
}

TEST_F(ReplicaTest, ExchangeConvergesWithConflicts) {
  FakeClock ca(1000), cb(1000);
  auto a = Open("a.db", &ca);
  auto b = Open("b.db", &cb);
  ASSERT_TRUE(a->Put("c", "k", {{"f", Value::String("a")}, {"g", Value::Int(1)}}).ok());
  cb.Set(2000);
  ASSERT_TRUE(b->Put("c", "k", {{"f", Value::String("b")}}).ok());
  ASSERT_TRUE(b->Increment("c", "k", "n", 2).ok());
  ca.Set(3000);
  ASSERT_TRUE(a->Delete("c", "k").ok());
  cb.Set(4000);
  ASSERT_TRUE(b->Increment("c", "k", "n", 5).ok());
  Sync(a.get(), b.get());
  Sync(b.get(), a.get());
  EXPECT_EQ(Dump(a.get()), Dump(b.get()));
  EXPECT_EQ(a->Digest().value(), b->Digest().value());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"n":5})");  // only the increment after the delete
}

// History horizon (docs/crdt-semantics.md "History horizon"): folding changes nothing a
// replica shows, shrinks what it keeps, and later ops merge on the folded state as on the full
// one; a new op stamped below the horizon is not merged.
TEST_F(ReplicaTest, FoldingHistoryKeepsTheStateAndLaterOpsMergeAlike) {
  FakeClock cw(1000), cz(1000);
  auto w = Open("w.db", &cw);
  auto folded = Open("a.db");
  auto full = Open("b.db");
  for (int i = 1; i <= 50; i++) {
    cw.Advance(1);
    ASSERT_TRUE(w->Increment("c", "k1", "n", i).ok());
  }
  ASSERT_TRUE(w->Put("c", "k2", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(w->Delete("c", "k2").ok());
  ASSERT_TRUE(w->Put("c", "k3", {{"f", Value::Int(1)}}).ok());
  ASSERT_TRUE(w->Delete("c", "k3").ok());
  cw.Advance(1);
  ASSERT_TRUE(w->Put("c", "k3", {{"g", Value::Int(2)}}).ok());  // revived
  ASSERT_TRUE(w->Increment("c", "k4", "n", 5).ok());
  ASSERT_TRUE(w->Delete("c", "k4").ok());
  cw.Advance(1);
  ASSERT_TRUE(w->Increment("c", "k4", "n", 7).ok());
  ASSERT_TRUE(w->Increment("c", "k4", "n", 8).ok());
  Sync(w.get(), folded.get());
  Sync(w.get(), full.get());
  auto count = [&](Replica* r, const char* sql) { return Query(r, sql).at(0); };
  EXPECT_EQ(count(folded.get(), "SELECT count(*) AS c FROM cairn_incs"), R"({"c":52})");
  cw.Advance(1000);
  const Hlc horizon = MakeHlc(static_cast<uint64_t>(cw.NowMs()), 0);
  auto stats = SyncAccess(*folded).FoldHistory(horizon);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->docs, 2);             // k1 and k4
  EXPECT_EQ(stats->increments, 50);      // 50 -> 1 of k1, 2 -> 1 of k4
  EXPECT_EQ(stats->tombstones, 1);       // k2
  EXPECT_EQ(stats->deletes_cleared, 2);  // k3, k4
  EXPECT_EQ(count(folded.get(), "SELECT count(*) AS c FROM cairn_incs"), R"({"c":2})");
  EXPECT_EQ(count(folded.get(), "SELECT count(*) AS c FROM cairn_docs"), R"({"c":3})");
  EXPECT_EQ(Dump(folded.get()), Dump(full.get()));
  EXPECT_EQ(Get(folded.get(), "c", "k1"), R"({"n":1275})");
  // Later ops, above the horizon: a delete that lands between increments, revivals, more.
  cw.Advance(1);
  ASSERT_TRUE(w->Increment("c", "k1", "n", 1).ok());
  ASSERT_TRUE(w->Put("c", "k2", {{"h", Value::Int(3)}}).ok());
  ASSERT_TRUE(w->Increment("c", "k4", "n", 100).ok());
  ASSERT_TRUE(w->Put("c", "k3", {{"f", Value::Int(9)}}).ok());
  Sync(w.get(), folded.get());
  Sync(w.get(), full.get());
  EXPECT_EQ(Dump(folded.get()), Dump(full.get()));
  EXPECT_EQ(Get(folded.get(), "c", "k1"), R"({"n":1276})");
  cw.Advance(1);
  ASSERT_TRUE(w->Delete("c", "k1").ok());
  Sync(w.get(), folded.get());
  Sync(w.get(), full.get());
  EXPECT_EQ(Dump(folded.get()), Dump(full.get()));
  EXPECT_EQ(folded->Digest().value(), full->Digest().value());
  // A new op stamped below the horizon (a replica whose clock is far behind) is not merged.
  auto z = Open("z.db", &cz);
  ASSERT_TRUE(z->Increment("c", "k4", "n", 1000).ok());
  Sync(z.get(), folded.get());
  EXPECT_EQ(Get(folded.get(), "c", "k4"), R"({"n":115})");
  // The horizon stays with the file: folding again at it does nothing.
  ASSERT_TRUE(folded->Close().ok());
  auto again = Open("a.db");
  auto twice = SyncAccess(*again).FoldHistory(horizon);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(twice->docs + twice->tombstones + twice->deletes_cleared, 0);
}

// Its own ops a server has not acknowledged are not folded: a refusal may still undo them.
TEST_F(ReplicaTest, FoldingStopsBelowOwnUnacknowledgedOps) {
  FakeClock c(1000);
  auto r = Open("a.db", &c);
  for (int i = 0; i < 3; i++) ASSERT_TRUE(r->Increment("c", "k", "n", 1).ok());
  c.Advance(1000);
  auto stats = SyncAccess(*r).FoldHistory(MakeHlc(static_cast<uint64_t>(c.NowMs()), 0));
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->increments, 0);
  EXPECT_EQ(Query(r.get(), "SELECT count(*) AS c FROM cairn_incs").at(0), R"({"c":3})");
}

TEST_F(ReplicaTest, ImportIsIdempotent) {
  auto a = Open("a.db");
  auto b = Open("b.db");
  ASSERT_TRUE(a->Increment("c", "k", "n", 3).ok());
  std::string path = dir_.File("a.cex");
  ASSERT_TRUE(a->Export(path).ok());
  EXPECT_EQ(b->Import(path).value().applied, 1u);
  auto again = b->Import(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value().applied, 0u);
  EXPECT_EQ(again.value().duplicates, 1u);
  EXPECT_EQ(Get(b.get(), "c", "k"), R"({"n":3})");
}

TEST_F(ReplicaTest, GapIsHeldBackUntilFilled) {
  auto a = Open("a.db");
  auto b = Open("b.db");
  ASSERT_TRUE(a->Increment("c", "k", "n", 1).ok());
  std::string first = dir_.File("first.cex");
  ASSERT_TRUE(a->Export(first).ok());
  VersionVector after_first = a->Known();
  ASSERT_TRUE(a->Increment("c", "k", "n", 10).ok());
  std::string second = dir_.File("second.cex");
  ASSERT_TRUE(a->Export(second, &after_first).ok());
  // b never saw the first export: the second one leaves a gap and must wait.
  auto held = b->Import(second);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held.value().held_back, 1u);
  EXPECT_EQ(Get(b.get(), "c", "k"), "<none>");
  EXPECT_EQ(b->GetStatus().value().held_back_ops, 1);
  ASSERT_TRUE(b->Import(first).ok());
  EXPECT_EQ(Get(b.get(), "c", "k"), R"({"n":11})");
  EXPECT_EQ(b->GetStatus().value().held_back_ops, 0);
  EXPECT_EQ(b->Digest().value(), a->Digest().value());
}

TEST_F(ReplicaTest, DamagedImportLeavesReplicaUnchanged) {
  auto a = Open("a.db");
  auto b = Open("b.db");
  for (int i = 0; i < 50; i++) {
    ASSERT_TRUE(a->Put("c", "k" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
  }
  ASSERT_TRUE(b->Put("c", "mine", {{"v", Value::Int(1)}}).ok());
  std::string path = dir_.File("a.cex");
  ASSERT_TRUE(a->Export(path).ok());
  std::string bytes = testing::ReadFile(path);
  std::string before = b->Digest().value();
  auto try_import = [&](const std::string& content) {
    std::string p = dir_.File("bad.cex");
    std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
    return b->Import(p).status().code();
  };
  EXPECT_EQ(try_import(bytes.substr(0, bytes.size() - 10)), Code::kECORRUPT);
  EXPECT_EQ(try_import(bytes.substr(0, bytes.size() / 2)), Code::kECORRUPT);
  EXPECT_EQ(try_import(""), Code::kECORRUPT);
  EXPECT_EQ(try_import(bytes + "x"), Code::kECORRUPT);
  // Every byte before the end frame is under its SHA-256 (the end frame is ~90 bytes).
  for (size_t pos : {size_t{10}, size_t{60}, bytes.size() / 3, bytes.size() / 2,
                     bytes.size() - 120}) {
    std::string flipped = bytes;
    flipped[pos] = static_cast<char>(flipped[pos] ^ 0x04);
    EXPECT_EQ(try_import(flipped), Code::kECORRUPT) << pos;
  }
  EXPECT_EQ(b->Digest().value(), before);
  EXPECT_EQ(b->GetStatus().value().known.size(), 1u);
  EXPECT_EQ(try_import(bytes), Code::kOK);  // the intact file still works afterwards
}

// A hand-made export: valid frames, counts and checksum, with the given range for `origin` and
// one batch per entry of `batches`.
std::string CraftExport(const ReplicaId& origin, uint64_t from, uint64_t through,
                        const std::vector<std::vector<Op>>& batches) {
  std::string file;
  flatbuffers::FlatBufferBuilder hdr_fbb;
  std::vector<wire::ReplicaId> ids = {protocol::ToWire(origin)};
  std::vector<wire::SeqRange> ranges = {wire::SeqRange(0, from, through)};
  wire::ReplicaId src = protocol::ToWire(origin);
  auto hdr = wire::CreateExportHeader(hdr_fbb, 1, &src, 0, hdr_fbb.CreateVectorOfStructs(ids),
                                      hdr_fbb.CreateVectorOfStructs(ranges), 0);
  hdr_fbb.Finish(wire::CreateFrame(hdr_fbb, wire::Body::ExportHeader, hdr.Union()),
                 wire::FrameIdentifier());
  protocol::AppendFrame(hdr_fbb, &file);
  uint64_t ops = 0;
  for (const auto& batch : batches) {
    protocol::BatchEncoder enc;
    for (const Op& op : batch) enc.Add(op);
    ops += batch.size();
    enc.FinishFrame(&file);
  }
  Sha256 sha;
  sha.Update(file);
  std::string digest = sha.Finish();
  flatbuffers::FlatBufferBuilder fbb;
  auto end = wire::CreateExportEnd(
      fbb, static_cast<uint32_t>(batches.size()), ops,
      fbb.CreateVector(reinterpret_cast<const uint8_t*>(digest.data()), 32));
  fbb.Finish(wire::CreateFrame(fbb, wire::Body::ExportEnd, end.Union()), wire::FrameIdentifier());
  protocol::AppendFrame(fbb, &file);
  return file;
}

Op IncOp(const ReplicaId& origin, uint64_t seq) {
  Op inc;
  inc.id = OpId{MakeHlc(1700000000000, 0), origin, seq};
  inc.kind = OpKind::kIncrement;
  inc.collection = "c";
  inc.key = "k";
  inc.field = "n";
  inc.delta = 5;
  return inc;
}

// Two batches of one file carrying the same increment: applying both would count it twice.
TEST_F(ReplicaTest, ImportRefusesAnOpRepeatedAcrossBatches) {
  ReplicaId origin;
  origin.bytes.fill(7);
  std::string path = dir_.File("twice.cex");
  std::ofstream(path, std::ios::binary) << CraftExport(origin, 0, 1, {{IncOp(origin, 1)},
                                                                      {IncOp(origin, 1)}});
  auto b = Open("b.db");
  EXPECT_EQ(b->Import(path).status().code(), Code::kECORRUPT);
  EXPECT_EQ(Dump(b.get()), "{}");
}

// A server batch's coverage (ops skipped for a partial client): the client advances over the
// declared range, refuses a range that starts past what it has, and ops outside the range.
TEST_F(ReplicaTest, ServerBatchCoverage) {
  ReplicaId origin, server;
  origin.bytes.fill(7);
  server.bytes.fill(9);
  auto b = Open("b.db");
  auto apply = [&](std::vector<uint64_t> seqs, uint64_t from, uint64_t through) {
    protocol::BatchEncoder enc;
    for (uint64_t s : seqs) enc.Add(IncOp(origin, s));
    enc.Cover(origin, from, through);
    flatbuffers::FlatBufferBuilder fbb;
    enc.Finish(&fbb, /*cursor=*/through);
    auto frame = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer());
    return SyncAccess(*b).ApplyServerBatch(*frame->body_as_OpBatch(), through, server).status();
  };
  // Seqs 1-2 skipped (another collection), 3 sent, 4-5 skipped.
  ASSERT_TRUE(apply({3}, 0, 5).ok());
  EXPECT_EQ(Get(b.get(), "c", "k"), R"({"n":5})");
  // A range that assumes seqs 6-7 arrived: a gap, nothing applied.
  EXPECT_EQ(apply({9}, 7, 9).code(), Code::kECORRUPT);
  // An op outside its range, or repeated within it.
  EXPECT_EQ(apply({8}, 5, 7).code(), Code::kECORRUPT);
  EXPECT_EQ(apply({6, 6}, 5, 7).code(), Code::kECORRUPT);
  EXPECT_EQ(Get(b.get(), "c", "k"), R"({"n":5})");
  // A range overlapping what the replica has: the ops it has are duplicates.
  Status overlap = apply({3, 6}, 2, 6);
  ASSERT_TRUE(overlap.ok()) << overlap.ToString();
  EXPECT_EQ(Get(b.get(), "c", "k"), R"({"n":10})");
  EXPECT_EQ(SyncAccess(*b).GetSyncPosition().value().cursor, 6u);
}

// A server refuses some of A's transactions (docs/protocol.md "Refused ops"): A undoes them.
// Oracle: a twin of A that makes the same writes at the same times except the refused ones, and
// receives the same ops from B at the same moments. Random sets, deletes, increments and
// multi-op transactions over few documents (so writes supersede and outrank each other), B's ops
// arriving while A's are unacknowledged, acknowledgements (with refusals) at random moments.
// After each acknowledgement A equals its twin: the state and the SQL tables.
TEST_F(ReplicaTest, RefusedTransactionsAreUndoneExactly) {
  for (uint32_t seed = 1; seed <= 25; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const std::string tag = std::to_string(seed);
    FakeClock clock_a(1000), clock_b(1000);
    auto a = Open("a" + tag + ".db", &clock_a);
    auto twin = Open("t" + tag + ".db", &clock_a);  // same clock: same timestamps
    auto b = Open("b" + tag + ".db", &clock_b);
    std::mt19937 rng(seed);
    const char* colls[] = {"c0", "c1"};
    auto random_batch = [&]() {
      WriteBatch wb;
      const int n = 1 + static_cast<int>(rng() % 3);
      for (int i = 0; i < n; i++) {
        const std::string coll = colls[rng() % 2];
        const std::string key = "k" + std::to_string(rng() % 3);
        const std::string field = "f" + std::to_string(rng() % 3);
        switch (rng() % 4) {
          case 0:
            wb.Delete(coll, key);
            break;
          case 1:
            wb.Increment(coll, key, field, static_cast<int64_t>(rng() % 21) - 10);
            break;
          default:
            wb.Set(coll, key, field, Value::Int(static_cast<int64_t>(rng() % 1000)));
        }
      }
      return wb;
    };
    auto same = [&]() {
      EXPECT_EQ(Dump(a.get()), Dump(twin.get()));
      for (const char* c : colls) {
        // A refused write may have created a table the twin never had: compare the rows.
        auto has = [&](Replica* r) {
          return !Query(r, std::string("SELECT 1 FROM sqlite_schema WHERE name = '") + c + "'")
                      .empty();
        };
        // Columns come into being on first write: a refused one may have left an empty column
        // the twin does not have. Rows are compared without their NULL fields.
        auto rows = [&](Replica* r) {
          std::vector<std::string> out;
          if (!has(r)) return out;
          static const std::regex null_field("\"[a-z0-9]+\":null,?");
          for (const std::string& row :
               Query(r, std::string("SELECT * FROM ") + c + " ORDER BY key")) {
            out.push_back(std::regex_replace(row, null_field, ""));
          }
          return out;
        };
        EXPECT_EQ(rows(a.get()), rows(twin.get()));
      }
    };
    // A's transactions not acknowledged yet, oldest first; an Ack takes a random prefix.
    struct Txn {
      uint64_t first, last;
      bool refuse;
    };
    std::vector<Txn> pending;
    auto ack = [&](size_t n) {
      std::vector<RefusedTxn> refused;
      for (size_t i = 0; i < n; i++) {
        if (pending[i].refuse) {
          refused.push_back(RefusedTxn{pending[i].first, pending[i].last, Code::kEPERM, "test"});
        }
      }
      const uint64_t through = n > 0 ? pending[n - 1].last : 0;
      if (n > 0) {
        ASSERT_TRUE(SyncAccess(*a).AckOutbox(through, refused).ok());
      }
      pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(n));
    };
    for (int step = 0; step < 60; step++) {
      const int64_t t = 1000 + 10 * step;  // A writes at t + 1, B at t + 2: no ties
      switch (rng() % 10) {
        case 0: case 1: case 2: case 3: case 4: case 5: {
          WriteBatch wb = random_batch();
          clock_a.Set(t + 1);
          const uint64_t first = a->GetStatus().value().last_seq + 1;
          ASSERT_TRUE(a->Write(wb).ok());
          const bool refuse = rng() % 3 == 0;
          pending.push_back(Txn{first, a->GetStatus().value().last_seq, refuse});
          if (!refuse) {
            ASSERT_TRUE(twin->Write(wb).ok());
          }
          break;
        }
        case 6: case 7:
          clock_b.Set(t + 2);
          ASSERT_TRUE(b->Write(random_batch()).ok());
          break;
        case 8: {
          std::string path = dir_.File("b" + tag + "-" + std::to_string(step) + ".cex");
          ASSERT_TRUE(b->Export(path).ok());
          ASSERT_TRUE(a->Import(path).ok());
          ASSERT_TRUE(twin->Import(path).ok());
          break;
        }
        default:
          if (pending.empty()) break;
          ack(1 + rng() % pending.size());
          // Only once nothing refusable is left does A have to equal its twin.
          if (pending.empty()) same();
      }
    }
    ack(pending.size());
    same();
    EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
    // Acknowledged again (a repeated Ack): nothing changes, nothing is recorded twice.
    const int64_t rejected = a->GetStatus().value().rejected_ops;
    ASSERT_TRUE(SyncAccess(*a).AckOutbox(a->GetStatus().value().last_seq, {}).ok());
    EXPECT_EQ(a->GetStatus().value().rejected_ops, rejected);
    same();
  }
}

// docs/crdt-semantics.md "Clock safety": a replica whose clock ran a year ahead is wound back at
// the server's Welcome; a write made before the refusal of its earlier (future) write arrives ranks
// below that write at first, and must not be lost when the future write is undone.
TEST_F(ReplicaTest, WriteAfterTheClockIsWoundBackSurvivesTheRefusal) {
  const int64_t now = clock_.NowMs(), year_ms = int64_t{365} * 24 * 3600 * 1000;
  FakeClock ahead(now + year_ms);
  auto a = Open("a.db", &ahead);
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Delete("c", "gone").ok());
  ASSERT_TRUE(SyncAccess(*a).CorrectClock(now, 60000).ok());
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(2)}}).ok());
  ASSERT_TRUE(a->Increment("c", "gone", "n", 3).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"v":1})");  // the future write still ranks first
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(4, {RefusedTxn{1, 2, Code::kECLOCK, "ahead"}}).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"v":2})");
  EXPECT_EQ(Get(a.get(), "c", "gone"), R"({"n":3})");
}

// A snapshot brings an increment below a delete of this replica that the server then refuses:
// the increment was kept (it counted for nothing while the delete stood) and comes back.
TEST_F(ReplicaTest, SnapshotOpHiddenByARefusedDeleteComesBack) {
  FakeClock later(1700000001000);  // after IncOp's timestamp
  auto a = Open("a.db", &later);
  ASSERT_TRUE(a->Delete("c", "k").ok());
  ReplicaId b, server;
  b.bytes.fill(7);
  server.bytes.fill(9);
  store::SnapshotState snap;
  snap.server_id = server;
  snap.cursor = 5;
  snap.rebase = true;
  snap.watermarks[b] = 1;
  ASSERT_TRUE(SyncAccess(*a).BeginSnapshot(snap).ok());
  protocol::BatchEncoder enc;
  enc.Add(IncOp(b, 1));
  flatbuffers::FlatBufferBuilder fbb;
  enc.Finish(&fbb);
  const auto* batch = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  ASSERT_TRUE(SyncAccess(*a).StageSnapshotChunk(*batch, "c", "k").ok());
  ASSERT_TRUE(SyncAccess(*a).FinishSnapshot(std::nullopt).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), "<none>");
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(1, {RefusedTxn{1, 1, Code::kEPERM, "test"}}).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"n":5})");
}

// docs/sync-rules.md "Rules that change": an evicting rebase snapshot removes, of the documents
// it did not bring, what the server knew when it planned it, keeps this replica's writes it had
// not seen, and forgets the removed ops as what those writes superseded (kept in the outbox) or
// outranked (received later): refused, the writes bring none of them back.
TEST_F(ReplicaTest, EvictedOpsStayGoneWhenWritesAreRefused) {
  FakeClock later(1700000001000);  // after IncOp's timestamp
  auto a = Open("a.db", &later);
  ReplicaId b, server;
  b.bytes.fill(7);
  server.bytes.fill(9);
  auto receive = [&](const Op& op, uint64_t cursor) {
    protocol::BatchEncoder enc;
    enc.Add(op);
    return ApplyServerBatch(a.get(), &enc, cursor, server);
  };
  ASSERT_TRUE(receive(IncOp(b, 1), 1).ok());  // c/k: {"n":5}
  ASSERT_TRUE(a->Delete("c", "k").ok());      // seq 1: supersedes b's increment
  ASSERT_TRUE(a->Delete("c", "k2").ok());     // seq 2
  Op outranked = IncOp(b, 2);
  outranked.key = "k2";  // received after the delete, which outranks it
  ASSERT_TRUE(receive(outranked, 2).ok());
  ASSERT_TRUE(a->Put("c", "mine", {{"v", Value::Int(1)}}).ok());  // seq 3
  // The server had all of b's ops and none of this replica's, and brings nothing.
  store::SnapshotState snap;
  snap.server_id = server;
  snap.cursor = 5;
  snap.rebase = true;
  snap.watermarks[b] = 2;
  ASSERT_TRUE(SyncAccess(*a).BeginSnapshot(snap).ok());
  const std::vector<std::string> every_collection;
  ASSERT_TRUE(SyncAccess(*a).FinishSnapshot(std::nullopt, &every_collection, "d1gest").ok());
  EXPECT_EQ(Get(a.get(), "c", "mine"), R"({"v":1})");
  EXPECT_EQ(a->GetStatus().value().pending_ops, 3);
  // Both deletes refused (undone): b's increments stay out.
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(3, {RefusedTxn{1, 2, Code::kEPERM, "test"}}).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), "<none>");
  EXPECT_EQ(Get(a.get(), "c", "k2"), "<none>");
  EXPECT_EQ(Get(a.get(), "c", "mine"), R"({"v":1})");
  EXPECT_EQ(a->GetStatus().value().rejected_ops, 2);
}

// docs/sync-rules.md "Reading": a document that leaves the view loses what the server knew of
// it, but this replica's writes to it not yet acknowledged stay, to be judged as usual (found by
// the simulation with sync rules: such a write, accepted and bringing the document back into
// the view, was gone from its own device for good).
TEST_F(ReplicaTest, ALeavingDocumentKeepsWritesNotYetAcknowledged) {
  auto a = Open("a.db");
  ReplicaId b, server;
  b.bytes.fill(7);
  server.bytes.fill(9);
  protocol::BatchEncoder first;
  first.Add(IncOp(b, 1));
  ASSERT_TRUE(ApplyServerBatch(a.get(), &first, 1, server).ok());  // c/k: b's 5
  ASSERT_TRUE(a->Increment("c", "k", "n", 1).ok());  // seq 1, acknowledged below
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(1, {}).ok());
  ASSERT_TRUE(a->Increment("c", "k", "n", 2).ok());  // seq 2, not yet
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"n":8})");
  protocol::BatchEncoder leave;
  leave.AddLeave("c", "k");
  ASSERT_TRUE(ApplyServerBatch(a.get(), &leave, 2, server).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"n":2})");
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(2, {}).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"n":2})");
}

// A document that left the view lost this replica's acknowledged writes with it; an evicting
// rebase snapshot that brings it back brings them too (the client keeps them: the server takes
// the document for held).
TEST_F(ReplicaTest, AnEvictingSnapshotBringsBackOwnWritesOfADocumentThatLeft) {
  auto a = Open("a.db");
  ReplicaId server;
  server.bytes.fill(9);
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  std::vector<Op> own;
  ASSERT_TRUE(a->Log([&](const Op& op) {
                 own.push_back(op);
                 return Status::OK();
               }).ok());
  ASSERT_EQ(own.size(), 1u);
  ASSERT_TRUE(SyncAccess(*a).AckOutbox(1, {}).ok());
  protocol::BatchEncoder leave;
  leave.AddLeave("c", "k");
  ASSERT_TRUE(ApplyServerBatch(a.get(), &leave, 1, server).ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), "<none>");
  store::SnapshotState snap;
  snap.server_id = server;
  snap.cursor = 5;
  snap.rebase = true;
  snap.watermarks[a->id()] = 1;
  ASSERT_TRUE(SyncAccess(*a).BeginSnapshot(snap).ok());
  protocol::BatchEncoder chunk;
  chunk.Add(own[0]);
  flatbuffers::FlatBufferBuilder fbb;
  chunk.Finish(&fbb);
  const auto* batch = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  ASSERT_TRUE(SyncAccess(*a).StageSnapshotChunk(*batch, "c", "k").ok());
  const std::vector<std::string> every_collection;
  ASSERT_TRUE(SyncAccess(*a).FinishSnapshot(std::nullopt, &every_collection, "d1gest").ok());
  EXPECT_EQ(Get(a.get(), "c", "k"), R"({"v":1})");
}

// Snapshot staging out of order (a chunk or an end without a begin) is refused, nothing staged.
TEST_F(ReplicaTest, SnapshotStepsOutOfOrderAreRefused) {
  auto b = Open("b.db");
  ReplicaId origin;
  origin.bytes.fill(7);
  protocol::BatchEncoder enc;
  enc.Add(IncOp(origin, 1));
  flatbuffers::FlatBufferBuilder fbb;
  enc.Finish(&fbb);
  const auto* batch = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  EXPECT_EQ(SyncAccess(*b).StageSnapshotChunk(*batch, "c", "k").code(), Code::kEINVAL);
  EXPECT_EQ(SyncAccess(*b).FinishSnapshot(std::nullopt).status().code(), Code::kEINVAL);
  EXPECT_FALSE(SyncAccess(*b).GetSnapshot().value().has_value());
  EXPECT_EQ(b->GetStatus().value().pending_ops, 0);
  EXPECT_EQ(Dump(b.get()), "{}");
}

// A file claiming seqs near 2^64 of this replica's own origin would wrap its seq counter.
TEST_F(ReplicaTest, ImportRefusesAbsurdSeqs) {
  auto b = Open("b.db");
  std::string path = dir_.File("huge.cex");
  std::ofstream(path, std::ios::binary) << CraftExport(b->id(), 0, UINT64_MAX - 1, {});
  EXPECT_EQ(b->Import(path).status().code(), Code::kECORRUPT);
  ASSERT_TRUE(b->Put("c", "k", {{"a", Value::Int(1)}}).ok());
  EXPECT_EQ(b->GetStatus().value().last_seq, 1u);
}

TEST_F(ReplicaTest, RefusesNonReplicaAndNewerFormat) {
  std::string junk = dir_.File("junk.db");
  std::ofstream(junk) << "this is not a database at all, not even close, just text here\n";
  EXPECT_EQ(Replica::Open(junk).status().code(), Code::kENOTREPLICA);
  // A plain SQLite database of some other application.
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(dir_.File("other.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(Replica::Open(dir_.File("other.db")).status().code(), Code::kENOTREPLICA);
  // A replica written by a newer Cairn.
  { auto r = Open("new.db"); }
  ASSERT_EQ(sqlite3_open(dir_.File("new.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto r = Replica::Open(dir_.File("new.db"));
  EXPECT_EQ(r.status().code(), Code::kEVERSION);
  EXPECT_NE(r.status().message().find("upgrade"), std::string::npos);
}

// A file of storage format 1 (before the sync position existed) is migrated on open: its data
// stays, it gains the cairn_sync table, and a read-only open of an unmigrated one still works.
// Files of formats 1 (no sync tables), 2 (no snapshot table), 3 (no refusal tables), 4 (no
// streams), 5 (no one-way collections), 6 (no sync rules' digest) and 7 (no history horizon)
// open and migrate.
TEST_F(ReplicaTest, MigratesOlderFormats) {
  const std::string to7 =
      "ALTER TABLE cairn_state DROP COLUMN horizon; ALTER TABLE cairn_rejected DROP COLUMN "
      "reapply; ";
  const std::string to6 = to7 + "ALTER TABLE cairn_sync DROP COLUMN rules_digest; ";
  const std::string to5 = to6 + "ALTER TABLE cairn_sync DROP COLUMN read_only; ";
  const std::string to4 = to5 + "DROP TABLE cairn_stream_records; DROP TABLE cairn_streams; ";
  const std::string to3 = to4 +
      "DROP TABLE cairn_superseded; ALTER TABLE cairn_outbox DROP COLUMN superseded; "
      "ALTER TABLE cairn_sync DROP COLUMN clock_offset_ms; ";
  const std::string downgrade[] = {
      to3 + "DROP TABLE cairn_sync; DROP TABLE cairn_snapshot; PRAGMA user_version=1",
      to3 + "DROP TABLE cairn_snapshot; PRAGMA user_version=2",
      to3 + "PRAGMA user_version=3",
      to4 + "PRAGMA user_version=4",
      to5 + "PRAGMA user_version=5",
      to6 + "PRAGMA user_version=6",
      to7 + "PRAGMA user_version=7"};
  for (int version = 1; version <= 7; version++) {
    const std::string name = "old" + std::to_string(version) + ".db";
    {
      auto r = Open(name);
      ASSERT_TRUE(r->Put("c", "k", {{"v", Value::Int(7)}}).ok());
    }
    sqlite3* db;
    ASSERT_EQ(sqlite3_open(dir_.File(name).c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, downgrade[version - 1].c_str(), nullptr, nullptr, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
    {
      ReplicaOptions ro;
      ro.read_only = true;
      auto r = Replica::Open(dir_.File(name), ro);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r.value()->GetStatus().value().cursor, 0u);
      EXPECT_FALSE(SyncAccess(*r.value()).GetSnapshot().value().has_value());
      EXPECT_TRUE(r.value()->Streams().value().empty());
    }
    auto r = Open(name);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->Get("c", "k").value()->at("v").as_int(), 7);
    EXPECT_EQ(r->GetStatus().value().cursor, 0u);
    ASSERT_TRUE(SyncAccess(*r).SetSyncPosition(5, r->id(), 1234).ok());
    EXPECT_EQ(r->GetStatus().value().cursor, 5u);
    store::SnapshotState snap;
    snap.server_id = r->id();
    snap.cursor = 9;
    ASSERT_TRUE(SyncAccess(*r).BeginSnapshot(snap).ok());
    EXPECT_EQ(SyncAccess(*r).GetSnapshot().value()->cursor, 9u);
    // Format 4: the clock correction is kept; the old outbox row (nothing superseded recorded)
    // is still pushed and acknowledged.
    ASSERT_TRUE(SyncAccess(*r).CorrectClock(5000, 60000).ok());
    EXPECT_TRUE(SyncAccess(*r).GetSyncPosition().value().clock_offset_ms.has_value());
    EXPECT_EQ(r->GetStatus().value().pending_ops, 1);
    ASSERT_TRUE(SyncAccess(*r).AckOutbox(1, {RefusedTxn{1, 1, Code::kEPERM, "test"}}).ok());
    EXPECT_FALSE(r->Get("c", "k").value().has_value());
    EXPECT_EQ(r->GetStatus().value().rejected_ops, 1);
    // Format 5: streams.
    ASSERT_TRUE(r->Append("temps", {{"t", Value::Double(1.5)}}).ok());
    EXPECT_EQ(SyncAccess(*r).QueuedRecords().value(), 1u);
    // Format 6: the collections the server keeps one-way.
    ASSERT_TRUE(SyncAccess(*r).SetReadOnlyCollections({"News"}).ok());
    EXPECT_EQ(r->Put("news", "n", {{"v", Value::Int(1)}}).status().code(), Code::kEPERM);
    // Format 7: the sync rules' digest, kept with the position.
    EXPECT_EQ(SyncAccess(*r).GetSyncPosition().value().rules_digest, "");
    store::SnapshotState rebase;
    rebase.server_id = r->id();
    rebase.cursor = 11;
    rebase.rebase = true;
    ASSERT_TRUE(SyncAccess(*r).BeginSnapshot(rebase).ok());
    ASSERT_TRUE(SyncAccess(*r).FinishSnapshot(std::nullopt, nullptr, "d1gest").ok());
    EXPECT_EQ(SyncAccess(*r).GetSyncPosition().value().rules_digest, "d1gest");
    EXPECT_EQ(SyncAccess(*r).GetSyncPosition().value().cursor, 11u);
    // Format 8: the history horizon, kept in the file.
    ASSERT_TRUE(SyncAccess(*r).FoldHistory(MakeHlc(5000, 0)).ok());
    ASSERT_TRUE(r->Close().ok());
    r = Open(name);
    EXPECT_EQ(Query(r.get(), "SELECT horizon >> 16 AS h FROM cairn_state").at(0), R"({"h":5000})");
    ASSERT_EQ(sqlite3_open(dir_.File(name).c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st;
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(st, 0), store::kFormatVersion);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
}

// docs/sync-rules.md: a collection the server keeps one-way refuses local writes at once
// (EPERM, nothing written, nothing queued), whatever the case of its name, in every
// connection to the file, until a server says otherwise.
TEST_F(ReplicaTest, OneWayCollectionsRefuseLocalWrites) {
  auto r = Open("r.db");
  ASSERT_TRUE(r->Put("tasks", "t", {{"v", Value::Int(1)}}).ok());
  auto other = Open("r.db");  // another connection (another process would be the same)
  ASSERT_TRUE(other->Get("tasks", "t").ok());
  ASSERT_TRUE(SyncAccess(*r).SetReadOnlyCollections({"news", "Alerts"}).ok());
  WriteBatch batch;
  batch.Set("tasks", "t", "v", Value::Int(2));
  batch.Set("NEWS", "n", "v", Value::Int(2));
  Status refused = r->Write(batch).status();
  EXPECT_EQ(refused.code(), Code::kEPERM);
  EXPECT_NE(refused.message().find("NEWS"), std::string::npos) << refused.ToString();
  EXPECT_EQ(r->Get("tasks", "t").value()->at("v").as_int(), 1);
  EXPECT_EQ(r->PendingOps().value(), 1);
  EXPECT_EQ(other->Increment("alerts", "a", "n", 1).status().code(), Code::kEPERM);
  EXPECT_EQ(other->Delete("news", "n").status().code(), Code::kEPERM);
  ASSERT_TRUE(other->Put("tasks", "t", {{"v", Value::Int(3)}}).ok());
  ASSERT_TRUE(SyncAccess(*other).SetReadOnlyCollections({}).ok());
  EXPECT_TRUE(r->Put("news", "n", {{"v", Value::Int(4)}}).ok());
  EXPECT_EQ(r->PendingOps().value(), 3);
}

TEST_F(ReplicaTest, RestoredBackupNeverReusesSeqs) {
  auto a = Open("a.db");
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Close().ok());
  std::filesystem::copy_file(dir_.File("a.db"), dir_.File("backup.db"));
  a = Open("a.db");
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(2)}}).ok());
  std::string path = dir_.File("a.cex");
  ASSERT_TRUE(a->Export(path).ok());
  auto restored = Open("backup.db");
  ASSERT_TRUE(restored->Import(path).ok());  // its own newer op comes back from elsewhere
  EXPECT_EQ(restored->GetStatus().value().last_seq, 2u);
  ASSERT_TRUE(restored->Put("c", "k", {{"v", Value::Int(3)}}).ok());
  EXPECT_EQ(restored->GetStatus().value().last_seq, 3u);
}

// The `cairn` tool (another connection) writes to a file an app has open: the app must see the new
// collection, field and origin, and keep writing, instead of using its stale registry.
TEST_F(ReplicaTest, SeesWhatAnotherConnectionCommitted) {
  auto app = Open("shared.db");
  ASSERT_TRUE(app->Put("notes", "n1", {{"a", Value::Int(1)}}).ok());
  auto other = Open("b.db");
  ASSERT_TRUE(other->Put("tasks", "t1", {{"title", Value::String("x")}}).ok());
  ASSERT_TRUE(other->Increment("tasks", "t1", "n", 2).ok());
  std::string file = dir_.File("b.cex");
  ASSERT_TRUE(other->Export(file).ok());
  {
    auto tool = Open("shared.db");  // a second connection to the app's file
    ASSERT_TRUE(tool->Import(file).ok());
    ASSERT_TRUE(tool->Put("notes", "n1", {{"z", Value::Bool(true)}}).ok());
  }
  EXPECT_EQ(Get(app.get(), "tasks", "t1"), R"({"n":2,"title":"x"})");
  EXPECT_EQ(Get(app.get(), "notes", "n1"), R"({"a":1,"z":true})");
  ASSERT_TRUE(app->Increment("tasks", "t1", "n", 3).ok());
  ASSERT_TRUE(app->Put("notes", "n1", {{"z", Value::Bool(false)}}).ok());
  EXPECT_EQ(Get(app.get(), "tasks", "t1"), R"({"n":5,"title":"x"})");
  EXPECT_EQ(app->GetStatus().value().last_seq, 4u);  // 1 + 1 by the tool + 2: no seq reused
  auto fresh = Open("shared.db");
  EXPECT_EQ(fresh->Digest().value(), app->Digest().value());
}

TEST_F(ReplicaTest, ValueAndBatchLimits) {
  auto r = Open("a.db");
  EXPECT_EQ(r->Put("c", "k", {{"big", Value::Bytes(std::string(kMaxValueBytes + 1, 'x'))}})
                .status()
                .code(),
            Code::kEINVAL);
  WriteBatch clash;
  clash.Set("Notes", "k", "a", Value::Int(1)).Set("notes", "k", "a", Value::Int(2));
  EXPECT_EQ(r->Write(clash).status().code(), Code::kEINVAL);
  WriteBatch field_clash;
  field_clash.Set("c", "k", "Title", Value::Int(1)).Set("c", "k", "title", Value::Int(2));
  EXPECT_EQ(r->Write(field_clash).status().code(), Code::kEINVAL);
  EXPECT_EQ(Dump(r.get()), "{}");
  EXPECT_EQ(r->Put("sqlite_stat1", "k", {{"a", Value::Int(1)}}).status().code(), Code::kEINVAL);
  ASSERT_TRUE(r->Put("c", "k", {{"a", Value::Int(1)}}).ok());  // still writable afterwards
}

// A transaction travels in one frame (docs/protocol.md "Limits"): one over kMaxTransactionBytes
// encoded is refused whole, nothing written and nothing queued, even when each value is legal.
TEST_F(ReplicaTest, ATransactionLargerThanItsLimitIsRefusedWhole) {
  auto r = Open("a.db");
  const std::string three_mb(3u << 20, 'x');
  WriteBatch big;
  big.Set("c", "k", "a", Value::Bytes(three_mb)).Set("c", "k", "b", Value::Bytes(three_mb));
  big.Set("c", "k2", "a", Value::Bytes(three_mb));
  Status st = r->Write(big).status();
  EXPECT_EQ(st.code(), Code::kEINVAL) << st.ToString();
  EXPECT_NE(st.message().find("exceeds the limit of " + std::to_string(kMaxTransactionBytes)),
            std::string::npos)
      << st.ToString();
  EXPECT_EQ(Dump(r.get()), "{}");
  auto pending = r->PendingOps();
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, 0);
  // Two such values fit.
  WriteBatch two;
  two.Set("c", "k", "a", Value::Bytes(three_mb)).Set("c", "k", "b", Value::Bytes(three_mb));
  ASSERT_TRUE(r->Write(two).ok());
  pending = r->PendingOps();
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, 2);
}

// A push is packed from whole outbox rows within the byte budget the server enforces
// (docs/protocol.md "Limits"): whatever the budget, the batch ReadOutbox builds is within it
// (unless it holds a single transaction). Rows whose names and documents take small indexes in
// their own frame and larger ones in the push grow when merged: here each transaction goes back
// and forth between two documents and seven fields of its own, which the push numbers after
// the 200 documents of the first one and the fields of all before (two bytes instead of one
// per op). An estimate from the rows' own sizes passes the budget.
TEST_F(ReplicaTest, OutboxBatchesStayWithinTheirByteBudget) {
  auto r = Open("a.db");
  WriteBatch first;
  for (int i = 0; i < 200; i++) first.Set("c", "d" + std::to_string(i), "f", Value::Int(i));
  ASSERT_TRUE(r->Write(first).ok());
  for (int t = 0; t < 40; t++) {
    WriteBatch b;
    for (int i = 0; i < 300; i++) {
      b.Set("c", "t" + std::to_string(t) + (i % 2 ? "a" : "b"),
            "f" + std::to_string(t) + "_" + std::to_string(i % 7), Value::Int(i));
    }
    ASSERT_TRUE(r->Write(b).ok());
  }
  for (size_t budget = 4000; budget < 200000; budget += 1531) {
    protocol::BatchEncoder enc;
    auto last = SyncAccess(*r).ReadOutbox(0, 1u << 20, budget, &enc);
    ASSERT_TRUE(last.ok()) << last.status().ToString();
    ASSERT_GT(*last, 0u);
    if (*last > 200) {  // more than the first transaction
      EXPECT_LE(enc.wire_bytes(), budget) << "budget " << budget << ", through seq " << *last;
    }
  }
}

// What change listeners saw: "L|R collection:key,key" per call.
struct ChangeLog {
  std::mutex mu;
  std::vector<std::string> calls;
  void Add(const Replica::ChangeSet& c) {
    std::string line = std::string(c.local ? "L " : "R ") + c.collection + ":";
    for (size_t i = 0; i < c.keys.size(); i++) line += (i ? "," : "") + c.keys[i];
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back(line);
  }
  std::vector<std::string> Take() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(calls, {});
  }
};

TEST_F(ReplicaTest, ChangeListenersSeeCommittedChangesPerCollection) {
  auto a = Open("a.db");
  auto b = Open("b.db");
  ChangeLog log;
  const uint64_t id = a->AddChangeListener([&](const Replica::ChangeSet& c) { log.Add(c); });
  EXPECT_NE(id, 0u);
  WriteBatch w;
  w.Set("tasks", "t2", "x", Value::Int(1)).Set("notes", "n1", "x", Value::Int(1));
  w.Set("tasks", "t1", "x", Value::Int(1)).Increment("tasks", "t2", "n", 3);
  ASSERT_TRUE(a->Write(w).ok());
  // One call per collection of the transaction, keys sorted and unique.
  EXPECT_EQ(log.Take(), (std::vector<std::string>{"L notes:n1", "L tasks:t1,t2"}));
  ASSERT_TRUE(a->Delete("tasks", "t1").ok());
  EXPECT_EQ(log.Take(), std::vector<std::string>{"L tasks:t1"});
  // A failed write calls nothing; neither do reads.
  WriteBatch bad;
  bad.Set("tasks", "t3", "x", Value::Int(1)).Set("tasks", "t3", "bad-name", Value::Int(1));
  EXPECT_FALSE(a->Write(bad).ok());
  EXPECT_EQ(Dump(a.get()).empty(), false);
  EXPECT_TRUE(log.Take().empty());
  // Received ops: not local; an op that changes nothing visible (older than what a holds) is
  // not reported.
  ASSERT_TRUE(b->Put("tasks", "t9", {{"x", Value::Int(9)}}).ok());
  clock_.Advance(1000);
  ASSERT_TRUE(a->Put("tasks", "t9", {{"x", Value::Int(10)}}).ok());
  log.Take();
  ASSERT_TRUE(b->Put("notes", "n2", {{"x", Value::Int(2)}}).ok());
  Sync(b.get(), a.get());
  EXPECT_EQ(log.Take(), std::vector<std::string>{"R notes:n2"});
  EXPECT_EQ(Get(a.get(), "tasks", "t9"), R"({"x":10})");
  // Removed: never called again.
  EXPECT_TRUE(a->RemoveChangeListener(id));
  EXPECT_FALSE(a->RemoveChangeListener(id));
  ASSERT_TRUE(a->Put("tasks", "t4", {{"x", Value::Int(4)}}).ok());
  EXPECT_TRUE(log.Take().empty());
}

TEST_F(ReplicaTest, RemovedListenerIsNotCalledForTheRestOfTheTransaction) {
  auto r = Open("a.db");
  ChangeLog log;
  uint64_t id = 0;
  id = r->AddChangeListener([&](const Replica::ChangeSet& c) {
    log.Add(c);
    EXPECT_TRUE(r->RemoveChangeListener(id));  // removes itself at the first collection
  });
  WriteBatch w;
  w.Set("alpha", "k", "x", Value::Int(1)).Set("beta", "k", "x", Value::Int(1));
  ASSERT_TRUE(r->Write(w).ok());
  EXPECT_EQ(log.Take(), std::vector<std::string>{"L alpha:k"});
}

TEST_F(ReplicaTest, ChangeListenerMayWriteAndCallsAreSerialized) {
  auto r = Open("a.db");
  ChangeLog log;
  std::atomic<int> in_flight{0}, overlap{0};
  r->AddChangeListener([&](const Replica::ChangeSet& c) {
    if (in_flight++ != 0) overlap++;
    log.Add(c);
    // A listener that writes: its change comes after this call, not inside it.
    if (c.collection == "tasks" && c.keys.size() == 1 && c.keys[0] == "t0") {
      EXPECT_TRUE(r->Put("audit", "t0", {{"seen", Value::Bool(true)}}).ok());
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    in_flight--;
  });
  ASSERT_TRUE(r->Put("tasks", "t0", {{"x", Value::Int(0)}}).ok());
  EXPECT_EQ(log.Take(), (std::vector<std::string>{"L tasks:t0", "L audit:t0"}));
  // Four threads writing: every change delivered once, never two calls at once.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; i++) {
        EXPECT_TRUE(r->Put("tasks", "k" + std::to_string(t) + "-" + std::to_string(i),
                           {{"x", Value::Int(i)}}).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> seen;
  for (const std::string& call : log.Take()) {
    EXPECT_EQ(call.rfind("L tasks:k", 0), 0u) << call;
    EXPECT_TRUE(seen.insert(call).second) << "delivered twice: " << call;
  }
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_EQ(overlap.load(), 0);
}

TEST_F(ReplicaTest, ClosedReplicaFailsCleanly) {
  auto r = Open("a.db");
  ASSERT_TRUE(r->Close().ok());
  EXPECT_EQ(r->Put("c", "k", {{"v", Value::Int(1)}}).status().code(), Code::kECLOSED);
  EXPECT_EQ(r->Digest().status().code(), Code::kECLOSED);
}

}  // namespace
}  // namespace cairn
