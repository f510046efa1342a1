// The server's side of a push (server::SortPush through ServerStore::ApplyPush,
// docs/protocol.md "Pushes", "Refused ops"): what is taken, refused, counted as a duplicate or
// refused as damage, on either backend (the ".pg" variants run against PostgreSQL).
#include <gtest/gtest.h>

#include <cmath>

#include "base/strings.h"
#include "protocol/batch_codec.h"
#if defined(CAIRN_HAVE_POSTGRESQL)
#include "server/pg/pg.h"
#endif
#include "rules/rules.h"
#include "server/server_store.h"
#include "server/write_judge.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

class PushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_.bytes.fill(0x42);
    auto s = server::ServerStore::Open(dir_.File("server.db"), Options());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }

  server::ServerStoreOptions Options() {
    server::ServerStoreOptions o;
    o.url = testing::TestStoreUrl(dir_.File("server.db"));
    o.clock = &clock_;
    return o;
  }

  // A set of `value` at notes/k.<field> as op `seq` of the origin; `txn`: continues the previous
  // op's transaction.
  Op Set(uint64_t seq, const std::string& field, Value value, bool txn = false) const {
    Op op;
    op.id = OpId{MakeHlc(1700000000000 + seq, 0), origin_, seq};
    op.kind = OpKind::kSet;
    op.collection = "notes";
    op.key = "k";
    op.field = field;
    op.value = std::move(value);
    op.continues_txn = txn;
    return op;
  }

  Result<server::PushResult> Push(const std::vector<Op>& ops, const server::PushLimits& limits = {},
                                  server::TxnJudge* judge = nullptr,
                                  const server::WriteKey* key = nullptr) {
    protocol::BatchEncoder enc;
    for (const Op& op : ops) enc.Add(op);
    flatbuffers::FlatBufferBuilder fbb;
    enc.Finish(&fbb);
    const auto* batch =
        flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
    return store_->ApplyPush(
        origin_, *batch, limits, [](const Op&) { return Status::OK(); }, judge,
        key != nullptr ? &(extras_ = server::PushExtras{*key, {}, {}}) : nullptr);
  }

  // A batch of `ops`, kept until the next call.
  const wire::OpBatch* Batch(const std::vector<Op>& ops) {
    protocol::BatchEncoder enc;
    for (const Op& op : ops) enc.Add(op);
    batch_ = flatbuffers::FlatBufferBuilder();
    enc.Finish(&batch_);
    return flatbuffers::GetRoot<wire::Frame>(batch_.GetBufferPointer())->body_as_OpBatch();
  }

  // The fields of notes/k in the server's state.
  std::map<std::string, Value> Fields() {
    std::map<std::string, Value> out;
    EXPECT_TRUE(store_->state()
                    ->ForEachDocSurvivors("notes", "", 10,
                                          [&](const std::string&, std::vector<Op>* ops) {
                                            for (const Op& op : *ops) out[op.field] = op.value;
                                            return Status::OK();
                                          })
                    .ok());
    return out;
  }

  testing::TempDir dir_;
  testing::FakeClock clock_;
  server::PushExtras extras_;
  flatbuffers::FlatBufferBuilder batch_;
  ReplicaId origin_;
  std::unique_ptr<server::ServerStore> store_;
};

// A bad value refuses its own transaction, reported, and no other: the ops before and after it
// are taken and the receipt covers the whole push.
TEST_F(PushTest, ABadValueRefusesItsTransactionOnly) {
  auto r = Push({Set(1, "a", Value::Int(1)),                                            // txn 1
                 Set(2, "b", Value::Int(2)), Set(3, "c", Value::Double(NAN), true),     // txn 2
                 Set(4, "d", Value::Int(4)), Set(5, "e", Value::String("\xff"), true),  // txn 3
                 Set(6, "f", Value::Int(6))});                                          // txn 4
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->through, 6u);
  EXPECT_EQ(r->applied, 2u);
  ASSERT_EQ(r->refused.size(), 2u);
  EXPECT_EQ(r->refused[0].first_seq, 2u);
  EXPECT_EQ(r->refused[0].last_seq, 3u);
  EXPECT_EQ(r->refused[0].code, Code::kEINVAL);
  EXPECT_EQ(r->refused[1].first_seq, 4u);
  EXPECT_EQ(r->refused[1].last_seq, 5u);
  EXPECT_EQ(r->refused[1].code, Code::kEINVAL);
  auto fields = Fields();
  EXPECT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields["a"], Value::Int(1));
  EXPECT_EQ(fields["f"], Value::Int(6));

  // Pushed again (a lost Ack): duplicates, the refusals reported again, nothing applied twice.
  auto again = Push({Set(1, "a", Value::Int(1)), Set(2, "b", Value::Int(2)),
                     Set(3, "c", Value::Double(NAN), true), Set(4, "d", Value::Int(4)),
                     Set(5, "e", Value::String("\xff"), true), Set(6, "f", Value::Int(6)),
                     Set(7, "g", Value::Int(7))});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->duplicates, 6u);
  EXPECT_EQ(again->applied, 1u);
  EXPECT_EQ(again->through, 7u);
  ASSERT_EQ(again->refused.size(), 2u);
  EXPECT_EQ(again->refused[0].first_seq, 2u);
  EXPECT_EQ(again->refused[1].first_seq, 4u);
  EXPECT_EQ(Fields().size(), 3u);
}

// A retry after a lost Ack, in smaller batches than the first push (the client's batch size
// or window differs): the receipt acknowledged to the first of them covers seqs it did not
// carry, and the client takes every seq up to the receipt as taken but those reported refused,
// so every refusal up to the receipt comes with it. (Found by the simulation with sync rules:
// the refusals of the later seqs were lost, their writes kept on the device and never logged.)
TEST_F(PushTest, ARetryInSmallerBatchesReportsEveryRefusalUpToItsReceipt) {
  ASSERT_TRUE(Push({Set(1, "a", Value::Int(1)), Set(2, "b", Value::Int(2)),
                    Set(3, "c", Value::Double(NAN), true), Set(4, "d", Value::Int(4)),
                    Set(5, "e", Value::String("\xff"), true), Set(6, "f", Value::Int(6))})
                  .ok());
  auto first = Push({Set(1, "a", Value::Int(1))});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->duplicates, 1u);
  EXPECT_EQ(first->through, 6u);
  ASSERT_EQ(first->refused.size(), 2u);
  EXPECT_EQ(first->refused[0].first_seq, 2u);
  EXPECT_EQ(first->refused[0].last_seq, 3u);
  EXPECT_EQ(first->refused[1].first_seq, 4u);
  EXPECT_EQ(first->refused[1].last_seq, 5u);
  EXPECT_EQ(first->refused[1].code, Code::kEINVAL);
  // The next batch starts past them: duplicates then a new seq, refused, reported once.
  auto next = Push({Set(6, "f", Value::Int(6)), Set(7, "g", Value::Double(NAN))});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->through, 7u);
  ASSERT_EQ(next->refused.size(), 1u);
  EXPECT_EQ(next->refused[0].first_seq, 7u);
}

// docs/protocol.md "Refused ops": a refusal's reason is cut to kMaxReasonBytes at a character
// boundary (it names a document's key and channels, of any length), and many refusals go in
// several Acks, each acknowledging up to the seq before the next one's first refusal, so that
// none over a frame and no refused seq is taken for accepted.
TEST_F(PushTest, RefusalsStayWithinTheBoundsOfTheirAcks) {
  class RefuseEven : public server::TxnJudge {
   public:
    Status Judge(const std::vector<Op>& txn, size_t, Status* verdict) override {
      std::string why;
      for (int i = 0; i < 2000; i++) why += "\xc3\xa9";  // "é": two bytes
      *verdict = txn[0].id.seq % 2 == 0 ? Status(Code::kEPERM, why) : Status::OK();
      return Status::OK();
    }
    std::vector<protocol::ChannelMove> Moves() const override { return {}; }
  } judge;
  std::vector<Op> ops;
  for (uint64_t seq = 1; seq <= 20; seq++) ops.push_back(Set(seq, "f", Value::Int(1)));
  auto r = Push(ops, {}, &judge);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->through, 20u);
  ASSERT_EQ(r->refused.size(), 10u);
  for (const server::Refused& refused : r->refused) {
    EXPECT_LE(refused.reason.size(), server::kMaxReasonBytes);
    EXPECT_GE(refused.reason.size(), server::kMaxReasonBytes - 1);
    EXPECT_TRUE(IsValidUtf8(refused.reason));
  }
  // Three refusals an Ack: seqs 2, 4, 6 acknowledged up to 7; ...; the last up to 20.
  const std::vector<server::AckPart> parts =
      server::SplitAck(r->refused, r->through, 3 * (server::kMaxReasonBytes + 48));
  ASSERT_EQ(parts.size(), 4u);
  const uint64_t throughs[] = {7, 13, 19, 20};
  size_t next = 0;
  for (size_t i = 0; i < parts.size(); i++) {
    EXPECT_EQ(parts[i].through, throughs[i]) << i;
    EXPECT_EQ(parts[i].begin, next) << i;
    next = parts[i].end;
    for (size_t j = parts[i].begin; j < parts[i].end; j++) {
      EXPECT_LE(r->refused[j].last_seq, parts[i].through);
    }
  }
  EXPECT_EQ(next, r->refused.size());
  // A budget below one refusal still lists one an Ack; no refusal: one Ack, the receipt.
  EXPECT_EQ(server::SplitAck(r->refused, r->through, 1).size(), 10u);
  const std::vector<server::AckPart> none = server::SplitAck({}, 20, 1);
  ASSERT_EQ(none.size(), 1u);
  EXPECT_EQ(none[0].through, 20u);
  EXPECT_EQ(none[0].begin, none[0].end);
}

// An op the push brought already, or a gap, is damage: nothing of the push is taken.
TEST_F(PushTest, ARepeatOrAGapRefusesThePush) {
  ASSERT_TRUE(Push({Set(1, "a", Value::Int(1))}).ok());
  const uint64_t head = store_->head();
  auto repeat =
      Push({Set(2, "b", Value::Int(2)), Set(3, "c", Value::Int(3)), Set(2, "b", Value::Int(2))});
  EXPECT_EQ(repeat.status().code(), Code::kECORRUPT) << repeat.status().ToString();
  auto gap = Push({Set(2, "b", Value::Int(2)), Set(4, "d", Value::Int(4))});
  EXPECT_EQ(gap.status().code(), Code::kECORRUPT) << gap.status().ToString();
  EXPECT_EQ(store_->head(), head);
  EXPECT_EQ(Fields().size(), 1u);
  auto next = Push({Set(2, "b", Value::Int(2))});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->through, 2u);
}

// What the Welcome advertises holds (docs/protocol.md "Limits"): more ops than max_ops only as
// one transaction, and no more bytes than max_bytes; a push beyond either is refused whole.
TEST_F(PushTest, APushBeyondTheAdvertisedLimitsIsRefusedWhole) {
  server::PushLimits limits;
  limits.max_ops = 3;
  // Four ops in two transactions: refused, nothing taken.
  auto two = Push({Set(1, "a", Value::Int(1)), Set(2, "b", Value::Int(2), true),
                   Set(3, "c", Value::Int(3)), Set(4, "d", Value::Int(4), true)},
                  limits);
  EXPECT_EQ(two.status().code(), Code::kEINVAL) << two.status().ToString();
  EXPECT_EQ(store_->head(), 0u);
  EXPECT_TRUE(Fields().empty());
  // Four ops of one transaction: a transaction is never split, so it goes alone.
  auto one = Push({Set(1, "a", Value::Int(1)), Set(2, "b", Value::Int(2), true),
                   Set(3, "c", Value::Int(3), true), Set(4, "d", Value::Int(4), true)},
                  limits);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->applied, 4u);
  // Bytes: a value that takes the push past max_bytes.
  limits.max_bytes = 4096;
  auto big = Push({Set(5, "e", Value::String(std::string(5000, 'x')))}, limits);
  EXPECT_EQ(big.status().code(), Code::kEINVAL) << big.status().ToString();
  EXPECT_EQ(Fields().count("e"), 0u);
  auto small = Push({Set(5, "e", Value::String(std::string(3000, 'x')))}, limits);
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  EXPECT_EQ(Fields().count("e"), 1u);
}

// The batch of a log entry.
const wire::OpBatch* EntryBatch(const server::LogEntry& e) {
  const wire::Frame* frame = flatbuffers::GetRoot<wire::Frame>(e.batch.data());
  return frame != nullptr ? frame->body_as_OpBatch() : nullptr;
}

// docs/sync-rules.md "Reading": with sync rules, a push's log entry names each document whose
// channels it changed, with its channels before and after the push (what a transaction did and
// a later one of the same push undid is no move); the entry's ops are as without rules.
TEST_F(PushTest, LogEntriesCarryTheirChannelMoves) {
  auto rules = rules::Rules::Parse(
      R"({"collections": {"notes": {"channels": ["user:{owner}", "key:{$key}"]}}})");
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  rules::Grants admin;
  admin.admin = true;
  uint64_t seq = 0;
  auto op = [&](OpKind kind, const std::string& key, const std::string& owner, bool txn) {
    Op o;
    seq++;
    o.id = OpId{MakeHlc(1700000000000 + seq, 0), origin_, seq};
    o.kind = kind;
    o.collection = "notes";
    o.key = key;
    if (kind == OpKind::kSet) {
      o.field = "owner";
      o.value = Value::String(owner);
    }
    o.continues_txn = txn;
    return o;
  };
  auto push = [&](const std::vector<Op>& ops) {
    server::WriteJudge judge(&rules.value(), &admin, store_->state());
    auto r = Push(ops, {}, &judge);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->refused.empty());
  };
  using Move = protocol::ChannelMove;
  push({op(OpKind::kSet, "k", "alice", false)});
  push({op(OpKind::kSet, "k", "alice", false)});  // the same channels: no move
  push({op(OpKind::kSet, "k", "bob", false), op(OpKind::kSet, "k", "alice", false),
        op(OpKind::kSet, "j", "carol", false)});  // k back where it was; j new
  push({op(OpKind::kDelete, "k", "", false), op(OpKind::kSet, "j", "dave", true)});
  std::vector<std::vector<Move>> logged;
  ASSERT_TRUE(store_
                  ->ReadLog(0, 100,
                            [&](const server::LogEntry& e) {
                              const wire::OpBatch* b = EntryBatch(e);
                              if (b == nullptr) return Status::Corrupt("not a batch");
                              auto moves = protocol::DecodeMoves(*b);
                              EXPECT_TRUE(moves.ok()) << moves.status().ToString();
                              logged.push_back(moves.ok() ? *moves : std::vector<Move>{});
                              return Status::OK();
                            })
                  .ok());
  const std::vector<std::vector<Move>> expected = {
      {Move{"notes", "k", {"key:k"}, {"key:k", "user:alice"}}},
      {},
      {Move{"notes", "j", {"key:j"}, {"key:j", "user:carol"}}},
      {Move{"notes", "j", {"key:j", "user:carol"}, {"key:j", "user:dave"}},
       Move{"notes", "k", {"key:k", "user:alice"}, {"key:k"}}}};
  EXPECT_EQ(logged, expected);
  // Without a judge (no rules), entries carry none.
  auto plain = Push({op(OpKind::kSet, "k", "erin", false)});
  ASSERT_TRUE(plain.ok());
  ASSERT_TRUE(store_
                  ->ReadLog(plain->cursor - 1, 1,
                            [&](const server::LogEntry& e) {
                              const wire::OpBatch* b = EntryBatch(e);
                              EXPECT_TRUE(b != nullptr && b->moves() == nullptr);
                              return Status::OK();
                            })
                  .ok());
}

// docs/backend.md "Idempotency": a keyed push keeps its key with its outcome, in its
// transaction; a second push with that key is refused whole (EBUSY: nothing applied, the
// receipt unmoved) and FindWrite tells what became of the first. Keys are per subject.
TEST_F(PushTest, AWriteKeyIsKeptWithItsPushAndTakenOnce) {
  const server::WriteKey key{"alice", "order-1", "digest-1"};
  auto r = Push({Set(1, "a", Value::Int(1))}, {}, nullptr, &key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto kept = store_->FindWrite("alice", "order-1");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->request, "digest-1");
  EXPECT_EQ((*kept)->cursor, r->cursor);
  EXPECT_EQ((*kept)->code, Code::kOK);
  EXPECT_FALSE(store_->FindWrite("bob", "order-1").value().has_value());
  EXPECT_FALSE(store_->FindWrite("alice", "order-2").value().has_value());

  auto again = Push({Set(2, "b", Value::Int(2))}, {}, nullptr, &key);
  EXPECT_EQ(again.status().code(), Code::kEBUSY) << again.status().ToString();
  EXPECT_EQ(Fields().size(), 1u);
  EXPECT_EQ(store_->state()->Through(origin_), 1u);
  EXPECT_EQ(store_->head(), r->cursor);

  // Another subject's key of the same name is its own.
  const server::WriteKey bobs{"bob", "order-1", "digest-2"};
  auto other = Push({Set(2, "b", Value::Int(2))}, {}, nullptr, &bobs);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ(Fields().size(), 2u);
  EXPECT_EQ(store_->FindWrite("bob", "order-1").value()->request, "digest-2");
}

// A refused write keeps its key with the refusal (a retry learns it, not a second refusal).
TEST_F(PushTest, AWriteKeyKeepsARefusal) {
  const server::WriteKey key{"", "bad", "digest"};
  auto r = Push({Set(1, "a", Value::Double(NAN))}, {}, nullptr, &key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->refused.size(), 1u);
  auto kept = store_->FindWrite("", "bad");
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->code, Code::kEINVAL);
  EXPECT_EQ((*kept)->reason, r->refused[0].reason);
  EXPECT_EQ((*kept)->cursor, r->cursor);
}

// A key is kept for the window, then forgotten: found no more, and taken again by a new write.
TEST_F(PushTest, AWriteKeyIsForgottenAfterItsWindow) {
  const server::WriteKey key{"alice", "k", "first"};
  ASSERT_TRUE(Push({Set(1, "a", Value::Int(1))}, {}, nullptr, &key).ok());
  clock_.Advance(server::kWriteKeyWindowMs - 1000);
  EXPECT_TRUE(store_->FindWrite("alice", "k").value().has_value());
  clock_.Advance(2000);
  EXPECT_FALSE(store_->FindWrite("alice", "k").value().has_value());
  EXPECT_TRUE(store_->Maintain().ok());
  const server::WriteKey again{"alice", "k", "second"};
  ASSERT_TRUE(Push({Set(2, "b", Value::Int(2))}, {}, nullptr, &again).ok());
  EXPECT_EQ(store_->FindWrite("alice", "k").value()->request, "second");
  EXPECT_EQ(Fields().size(), 2u);
}

// Two nodes of one database (PostgreSQL): a key one node took is taken by no other, whether
// that node saw the first node's push or not.
TEST_F(PushTest, AWriteKeyIsTakenOnceAcrossNodes) {
  if (!testing::TestOnPostgres()) GTEST_SKIP() << "needs CAIRN_TEST_POSTGRES";
  auto second = server::ServerStore::Open(dir_.File("node2.db"), Options());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  const server::WriteKey key{"alice", "k", "digest"};
  auto r = Push({Set(1, "a", Value::Int(1))}, {}, nullptr, &key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ReplicaId other;
  other.bytes.fill(0x43);
  Op op = Set(1, "b", Value::Int(2));
  op.id.origin = other;
  protocol::BatchEncoder enc;
  enc.Add(op);
  flatbuffers::FlatBufferBuilder fbb;
  enc.Finish(&fbb);
  const auto* batch = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  auto pushed = (*second)->ApplyPush(
      other, *batch, {}, [](const Op&) { return Status::OK(); }, nullptr,
      &(extras_ = server::PushExtras{key, {}, {}}));
  EXPECT_EQ(pushed.status().code(), Code::kEBUSY) << pushed.status().ToString();
  auto kept = (*second)->FindWrite("alice", "k");
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->cursor, r->cursor);
  ASSERT_TRUE((*second)->CatchUp().ok());
  EXPECT_EQ((*second)->head(), r->cursor);
  EXPECT_EQ((*second)->state()->Through(other), 0u);
}

// GET /v1/refused's source (docs/backend.md "Refused ops"): each refusal with the cursor of
// the log entry that recorded it and the subject its origin is bound to, in order, within the
// cursors asked for.
TEST_F(PushTest, RefusalsAreReadWithTheirLogEntries) {
  ASSERT_TRUE(store_->BindReplica(origin_, "dev").ok());
  auto first = Push({Set(1, "a", Value::Int(1)), Set(2, "b", Value::Double(NAN))});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto clean = Push({Set(3, "c", Value::Int(3))});
  ASSERT_TRUE(clean.ok());
  auto second = Push({Set(4, "d", Value::String("\xff")), Set(5, "e", Value::Double(NAN)),
                      Set(6, "f", Value::Int(6))});
  ASSERT_TRUE(second.ok());
  std::vector<server::RefusalEntry> got;
  auto read = [&](uint64_t after, uint64_t upto, size_t max) {
    got.clear();
    return store_->ReadRefused(after, upto, max, [&](const server::RefusalEntry& e) {
      got.push_back(e);
      return Status::OK();
    });
  };
  ASSERT_TRUE(read(0, store_->head(), 100).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].cursor, first->cursor);
  EXPECT_EQ(got[0].refused.first_seq, 2u);
  EXPECT_EQ(got[0].refused.code, Code::kEINVAL);
  EXPECT_EQ(got[0].origin, origin_);
  EXPECT_EQ(got[0].subject, std::optional<std::string>("dev"));
  EXPECT_EQ(got[0].at_ms, clock_.NowMs());
  EXPECT_EQ(got[1].cursor, second->cursor);
  EXPECT_EQ(got[1].refused.first_seq, 4u);
  EXPECT_EQ(got[2].refused.first_seq, 5u);
  EXPECT_FALSE(got[2].refused.reason.empty());
  ASSERT_TRUE(read(first->cursor, store_->head(), 100).ok());
  EXPECT_EQ(got.size(), 2u);
  ASSERT_TRUE(read(0, clean->cursor, 100).ok());
  EXPECT_EQ(got.size(), 1u);
  ASSERT_TRUE(read(0, store_->head(), 2).ok());
  EXPECT_EQ(got.size(), 2u);
}

#if defined(CAIRN_HAVE_POSTGRESQL)
// The SQL inbox (docs/backend.md "Writing through SQL", PostgreSQL): a claimed row is applied
// with the push that carries it, once; a claim that lapsed and was taken by another process
// makes the first one's push fail whole (EBUSY, nothing applied), so the row is applied by the
// process that holds it, once.
TEST_F(PushTest, AnInboxRowIsAppliedOnlyUnderItsClaim) {
  if (!testing::TestOnPostgres()) GTEST_SKIP() << "needs CAIRN_TEST_POSTGRES";
  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir_.File("server.db")));
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE(db.value()
                  ->Query("INSERT INTO cairn_inbox(op, collection, key, field, delta) VALUES "
                          "('inc', 'notes', 'k', 'n', 1), ('inc', 'notes', 'k', 'n', 2)")
                  .ok());
  auto mine = store_->ClaimInbox("A", 10);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  ASSERT_EQ(mine->size(), 2u);
  EXPECT_EQ((*mine)[0].op, "inc");
  EXPECT_EQ((*mine)[0].delta, std::optional<int64_t>(1));
  EXPECT_TRUE(store_->ClaimInbox("B", 10).value().empty());  // (held)
  clock_.Advance(server::kInboxClaimMs + 1);
  auto theirs = store_->ClaimInbox("B", 1);
  ASSERT_TRUE(theirs.ok());
  ASSERT_EQ(theirs->size(), 1u);  // the first row, its claim lapsed
  auto inc = [&](uint64_t seq, int64_t delta) {
    Op op = Set(seq, "n", Value::Null());
    op.kind = OpKind::kIncrement;
    op.delta = delta;
    return op;
  };
  server::PushExtras extras;
  extras.inbox_claimer = "A";
  extras.inbox = {{(*mine)[0].id, 1}, {(*mine)[1].id, 2}};
  auto lost = store_->ApplyPush(
      origin_, *Batch({inc(1, 1), inc(2, 2)}), {}, [](const Op&) { return Status::OK(); }, nullptr,
      &extras);
  EXPECT_EQ(lost.status().code(), Code::kEBUSY) << lost.status().ToString();
  EXPECT_EQ(store_->state()->Through(origin_), 0u);
  // The second row is still A's: pushed alone, it is applied and marked.
  extras.inbox = {{(*mine)[1].id, 1}};
  auto pushed = store_->ApplyPush(
      origin_, *Batch({inc(1, 2)}), {}, [](const Op&) { return Status::OK(); }, nullptr, &extras);
  ASSERT_TRUE(pushed.ok()) << "status: " << pushed.status().ToString();
  auto rows = db.value()->Query(
      "SELECT coalesce(applied_cursor::text, '-'), encode(claimed_by, 'escape') FROM cairn_inbox "
      "ORDER BY id");
  ASSERT_TRUE(rows.ok() && rows->size() == 2);
  EXPECT_EQ(rows->Bytes(0, 0), "-");
  EXPECT_EQ(rows->Bytes(0, 1), "B");
  EXPECT_EQ(rows->Bytes(1, 0), std::to_string(pushed->cursor));
  EXPECT_EQ(store_->state()->GetDoc("notes", "k").value()->at("n"), Value::Int(2));
}
#endif  // CAIRN_HAVE_POSTGRESQL

}  // namespace
}  // namespace cairn
