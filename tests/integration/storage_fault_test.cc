// Storage faults: every write and every sync along the replica's write paths fails in turn (an
// I/O error from then on, a single transient one, or a disk that is full from then on), through
// a SQLite VFS that wraps the default
// one (support/fault_vfs.h). For the n-th write or sync of each path, for every n the path
// makes, the test checks: the caller gets EIO, nothing changed (no acknowledged write lost, no
// unsent op or queued record evicted, no counter or cache moved), the same call succeeds once
// the fault clears and leaves what a run without the fault leaves, the file reopens to the same
// state and SQLite's integrity_check passes. docs/RELIABILITY.md, "Storage faults".
#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "oplog/json_codec.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "server/server_store.h"
#include "support/fault_vfs.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;
using testing::FaultVfs;
using testing::StorageFault;
using testing::TempDir;

// One write path of a replica or of the server's store: how to open its file, the state the
// call starts from (made without faults), the call under test, and everything a fault must not
// change, read through the object (so its caches count too).
template <typename T>
struct FaultPath {
  std::function<std::unique_ptr<T>(const std::string& file)> open;
  std::function<void(T*)> prepare;
  std::function<Status(T*)> call;
  std::function<std::string(T*)> observe;
};

class StorageFaultTest : public ::testing::TestWithParam<StorageFault> {
 protected:
  void SetUp() override {
    vfs_ = &FaultVfs::Install();
    vfs_->Clear();
  }
  void TearDown() override { vfs_->Clear(); }

  std::unique_ptr<Replica> Open(const std::string& path, uint8_t id_byte = 0x21) {
    ReplicaOptions o;
    o.clock = &clock_;
    o.new_id = ReplicaId();
    o.new_id->bytes.fill(id_byte);
    auto r = Replica::Open(path, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  // What a fault must not change in a replica: the documents, its status (seq, outbox, held-back and refused ops, cursor, streams and
  // their counters), the log without timestamps (a retried call may take later ones), the
  // refused ops and every stream's queued records.
  std::string Observe(Replica* r) {
    std::string out = r->DumpString().value() + "\n";
    auto status = r->GetStatus();
    EXPECT_TRUE(status.ok()) << status.status().ToString();
    if (status.ok()) out += CanonicalJson(status.value().ToJson()) + "\n";
    EXPECT_TRUE(r->Log([&](const Op& op) {
                   Json j = OpToJson(op);
                   j.erase("hlc");
                   out += CanonicalJson(j) + "\n";
                   return Status::OK();
                 }).ok());
    EXPECT_TRUE(r->Rejected([&](const RejectedOp& rej) {
                   out += rej.reason + " " + std::to_string(rej.code) + " " +
                          std::to_string(rej.op.id.seq) + "\n";
                   return Status::OK();
                 }).ok());
    auto streams = r->Streams();
    EXPECT_TRUE(streams.ok());
    if (streams.ok()) {
      for (const auto& s : streams.value()) {
        protocol::StreamEncoder enc(s.name);
        EXPECT_TRUE(SyncAccess(*r).ReadStream(s.name, 0, 1u << 20, 1u << 30, &enc).ok());
        std::string frame;
        enc.FinishFrame(&frame);
        out += s.name + " " + std::to_string(frame.size()) + " " +
               std::to_string(std::hash<std::string>()(frame)) + "\n";
      }
    }
    return out;
  }

  FaultPath<Replica> ReplicaPath(std::function<void(Replica*)> prepare,
                                 std::function<Status(Replica*)> call) {
    return {[this](const std::string& file) { return Open(file); }, std::move(prepare),
            std::move(call), [this](Replica* r) { return Observe(r); }};
  }

  static std::string IntegrityCheck(const std::string& path) {
    sqlite3* db = nullptr;
    std::string result;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_exec(
          db, "PRAGMA integrity_check",
          [](void* p, int, char** v, char**) {
            *static_cast<std::string*>(p) += v[0] ? v[0] : "";
            return 0;
          },
          &result, nullptr);
    }
    sqlite3_close(db);
    return result;
  }

  // Runs `path` once without a fault (counting its writes and syncs), then once per write or
  // sync with that one failing, and every later one too until the call returns (kIoError,
  // kDiskFull) or that one alone (kIoErrorOnce).
  template <typename T>
  void RunMatrix(const std::string& name, const FaultPath<T>& path) {
    const StorageFault fault = GetParam();
    auto ref = path.open(dir_.File(name + "-ref.db"));
    ASSERT_NE(ref, nullptr);
    path.prepare(ref.get());
    const std::string before = path.observe(ref.get());
    vfs_->Clear();
    Status st = path.call(ref.get());
    const int64_t points = vfs_->operations();
    ASSERT_TRUE(st.ok()) << st.ToString();
    const std::string after = path.observe(ref.get());
    ASSERT_NE(before, after) << name << ": the call changed nothing";
    ASSERT_GT(points, 0);
    int failed_calls = 0;
    int unknown_outcomes = 0;
    for (int64_t n = 1; n <= points; ++n) {
      SCOPED_TRACE(name + ": write or sync " + std::to_string(n) + " of " +
                   std::to_string(points) + " fails");
      const std::string file = dir_.File(name + "-" + std::to_string(n) + ".db");
      auto r = path.open(file);
      ASSERT_NE(r, nullptr);
      path.prepare(r.get());
      ASSERT_EQ(path.observe(r.get()), before);
      vfs_->FailFrom(n, fault);
      st = path.call(r.get());
      const int64_t failures = vfs_->failures();
      vfs_->Clear();
      if (st.ok()) {
        // SQLite absorbed the failure (it came after the commit, e.g. in a checkpoint).
        EXPECT_EQ(path.observe(r.get()), after);
      } else {
        ++failed_calls;
        EXPECT_GT(failures, 0);
        EXPECT_EQ(st.code(), Code::kEIO) << st.ToString();
        EXPECT_EQ(path.observe(r.get()), before) << st.ToString();
        // The fault cleared: the same call now succeeds and does all it should.
        Status again = path.call(r.get());
        ASSERT_TRUE(again.ok()) << again.ToString();
        EXPECT_EQ(path.observe(r.get()), after);
      }
      r.reset();
      EXPECT_EQ(IntegrityCheck(file), "ok");
      auto reopened = path.open(file);
      ASSERT_NE(reopened, nullptr);
      EXPECT_EQ(path.observe(reopened.get()), after);
      reopened.reset();
      CrashAfterFault(name, path, n, before, after, &unknown_outcomes);
    }
    // Every path commits through at least one write and one sync that are not absorbed.
    EXPECT_GT(failed_calls, 0);
    RecordProperty(name + "_points", static_cast<int>(points));
    RecordProperty(name + "_unknown_outcomes", unknown_outcomes);
  }

  // The process dies right after the failed call, without closing the file (its last state is
  // what the OS holds). Reopened, the replica holds the state before the call or the state
  // after it, never a part. "After" although the call failed happens when only the sync
  // failed: the commit reached the file but its durability is unknown, as in every database
  // (docs/RELIABILITY.md); such calls are counted.
  template <typename T>
  void CrashAfterFault(const std::string& name, const FaultPath<T>& path, int64_t n,
                       const std::string& before, const std::string& after, int* unknown) {
    const std::string file = dir_.File(name + "-crash-" + std::to_string(n) + ".db");
    fflush(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = path.open(file);
      if (r == nullptr) _exit(3);
      path.prepare(r.get());
      vfs_->FailFrom(n, GetParam());
      Status st = path.call(r.get());
      _exit(st.ok() ? 0 : 1);  // no Close, no destructors: as if killed
    }
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    const int code = WEXITSTATUS(wstatus);
    ASSERT_LE(code, 1) << "the child could not run the call";
    EXPECT_EQ(IntegrityCheck(file), "ok");
    auto r = path.open(file);
    ASSERT_NE(r, nullptr);
    const std::string state = path.observe(r.get());
    if (code == 0) {
      EXPECT_EQ(state, after) << "a call that succeeded is lost";
    } else if (state != before) {
      EXPECT_EQ(state, after) << "a failed call left part of its work";
      ++*unknown;
    }
  }

  // Three local transactions (ops 1-2, 3, 4-5): an outbox to acknowledge or refuse.
  static void ThreeTransactions(Replica* r) {
    ASSERT_TRUE(r->Put("notes", "n1", {{"title", Value::String("one")},
                                       {"n", Value::Int(1)}}).ok());
    ASSERT_TRUE(r->Increment("notes", "n1", "views", 3).ok());
    WriteBatch b;
    b.Set("tasks", "t1", "done", Value::Bool(false)).Delete("notes", "n0");
    ASSERT_TRUE(r->Write(b).ok());
  }

  // Another replica (id 0x42..) with ThreeTransactions: its id and its five ops.
  void OtherReplicasOps(ReplicaId* origin, std::vector<Op>* ops) {
    auto other = Open(dir_.File("other.db"), 0x42);
    ASSERT_NE(other, nullptr);
    *origin = other->id();
    ThreeTransactions(other.get());
    ASSERT_TRUE(other->Log([&](const Op& op) {
                       ops->push_back(op);
                       return Status::OK();
                     }).ok());
  }

  TempDir dir_;
  FakeClock clock_;
  FaultVfs* vfs_ = nullptr;
};

TEST_P(StorageFaultTest, LocalWrite) {
  RunMatrix("write", ReplicaPath(ThreeTransactions, [](Replica* r) {
                        WriteBatch b;
                        b.Set("notes", "n2", "title", Value::String("two"))
                            .Increment("notes", "n1", "views", 2)
                            .Delete("tasks", "t1");
                        return r->Write(b).status();
                      }));
}

TEST_P(StorageFaultTest, AcknowledgeOutbox) {
  RunMatrix("ack",
            ReplicaPath(ThreeTransactions, [](Replica* r) { return SyncAccess(*r).AckOutbox(3); }));
}

TEST_P(StorageFaultTest, RefusedTransactionUndone) {
  RunMatrix("refuse", ReplicaPath(ThreeTransactions, [](Replica* r) {
                         RefusedTxn t;
                         t.first_seq = 4;
                         t.last_seq = 5;
                         t.code = Code::kEPERM;
                         t.reason = "no write access to tasks";
                         return SyncAccess(*r).AckOutbox(5, {t});
                       }));
}

TEST_P(StorageFaultTest, Import) {
  // Another replica's history, exported once.
  const std::string exported = dir_.File("other.cex");
  {
    auto other = Open(dir_.File("other.db"), 0x42);
    ASSERT_NE(other, nullptr);
    ThreeTransactions(other.get());
    ASSERT_TRUE(other->Put("notes", "n9", {{"title", Value::String("nine")}}).ok());
    ASSERT_TRUE(other->Export(exported).ok());
  }
  RunMatrix("import", ReplicaPath(ThreeTransactions,
                       [&](Replica* r) { return r->Import(exported).status(); }));
}

TEST_P(StorageFaultTest, ApplyServerBatch) {
  // A server batch carrying another replica's three transactions.
  ReplicaId origin, server;
  server.bytes.fill(0x5e);
  std::vector<Op> ops;
  OtherReplicasOps(&origin, &ops);
  protocol::BatchEncoder enc;
  for (const Op& op : ops) enc.Add(op);
  enc.Cover(origin, 0, ops.size());
  flatbuffers::FlatBufferBuilder fbb;
  enc.Finish(&fbb, /*cursor=*/7);
  const wire::Frame* frame = flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer());
  ASSERT_NE(frame->body_as_OpBatch(), nullptr);
  RunMatrix("apply", ReplicaPath(ThreeTransactions, [&](Replica* r) {
              return SyncAccess(*r).ApplyServerBatch(*frame->body_as_OpBatch(), 7, server).status();
            }));
}

// Appends that make the stream drop its oldest records: a full disk must not drop any.
TEST_P(StorageFaultTest, StreamAppend) {
  auto prepare = [](Replica* r) {
    StreamConfig c;
    c.max_bytes = 200;
    c.policy = StreamPolicy::kDropOldest;
    ASSERT_TRUE(r->ConfigureStream("temps", c).ok());
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(r->Append("temps", {{"c", Value::Double(20.5 + i)}, {"i", Value::Int(i)}}).ok());
    }
  };
  RunMatrix("append", ReplicaPath(prepare, [](Replica* r) {
                         RecordBatch b;
                         for (int i = 0; i < 4; ++i) {
                           Status st = b.Add({{"c", Value::Double(30.25)}, {"i", Value::Int(i)}});
                           if (!st.ok()) return st;
                         }
                         return r->Append("temps", b).status();
                       }));
}

TEST_P(StorageFaultTest, StreamAcknowledged) {
  auto prepare = [](Replica* r) {
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(r->Append("temps", {{"i", Value::Int(i)}}).ok());
    }
  };
  RunMatrix("stream-ack", ReplicaPath(prepare, [](Replica* r) {
              return SyncAccess(*r).AckStream("temps", 3).status();
            }));
}

// The server's side of a push: ApplyPush (ops, refusals, the global log, its trimming).
TEST_P(StorageFaultTest, ServerApplyPush) {
  // Another replica's three transactions, pushed in two batches: ops 1-3, then 4-5.
  std::vector<Op> ops;
  ReplicaId origin;
  OtherReplicasOps(&origin, &ops);
  ASSERT_EQ(ops.size(), 5u);
  flatbuffers::FlatBufferBuilder first, second;
  protocol::BatchEncoder enc;
  for (size_t i = 0; i < 3; ++i) enc.Add(ops[i]);
  enc.Finish(&first);
  for (size_t i = 3; i < 5; ++i) enc.Add(ops[i]);
  enc.Finish(&second);
  auto batch = [](const flatbuffers::FlatBufferBuilder& fbb) {
    return flatbuffers::GetRoot<wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
  };
  ASSERT_NE(batch(first), nullptr);
  ASSERT_NE(batch(second), nullptr);
  // The second batch's delete is refused: a refusal is written in the same transaction.
  auto admit = [](const Op& op) {
    return op.kind == OpKind::kDelete ? Status(Code::kEPERM, "no deletes") : Status::OK();
  };
  FaultPath<server::ServerStore> path;
  path.open = [this](const std::string& file) -> std::unique_ptr<server::ServerStore> {
    server::ServerStoreOptions o;
    o.clock = &clock_;
    o.keep_log_ops = 4;  // the second push trims the first batch from the log
    auto s = server::ServerStore::Open(file, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  };
  path.prepare = [&](server::ServerStore* s) {
    auto r = s->ApplyPush(origin, *batch(first), {}, admit, nullptr, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  };
  path.call = [&](server::ServerStore* s) {
    auto r = s->ApplyPush(origin, *batch(second), {}, admit, nullptr, nullptr);
    if (r.ok() && r.value().refused.size() != 1) return Status::Internal("refusal not reported");
    return r.status();
  };
  path.observe = [](server::ServerStore* s) {
    std::string out = "head " + std::to_string(s->head()) + " floor " +
                      std::to_string(s->floor()) + "\n";
    EXPECT_TRUE(s->ReadLog(0, 100, [&](const server::LogEntry& e) {
                   out += std::to_string(e.cursor) + " " + e.origin.Hex() + " " +
                          std::to_string(e.first_seq) + "-" + std::to_string(e.last_seq) + " " +
                          std::to_string(std::hash<std::string_view>()(e.batch)) + "\n";
                   return Status::OK();
                 }).ok());
    for (const char* sql : {"SELECT hex(coll), hex(key), hex(cells) FROM cairn_docs ORDER BY 1, 2",
                            "SELECT hex(origin), first_seq || '-' || last_seq, code FROM cairn_server_refused",
                            "SELECT hex(id), through, idx FROM cairn_origins "
                            "WHERE id != (SELECT replica_id FROM cairn_state) ORDER BY 1"}) {
      auto st = s->state()->db()->Prepare(sql);
      EXPECT_TRUE(st.ok()) << sql << ": " << st.status().ToString();
      if (!st.ok()) continue;
      store::Stmt& q = st.value();
      EXPECT_TRUE(q.ForEachRow([&] {
                     out += std::string(q.Text(0)) + " " + std::string(q.Text(1)) + " " +
                            std::string(q.Text(2)) + "\n";
                     return Status::OK();
                   }).ok());
    }
    return out;
  };
  RunMatrix("server-push", path);
}

INSTANTIATE_TEST_SUITE_P(Faults, StorageFaultTest,
                         ::testing::Values(StorageFault::kIoError, StorageFault::kIoErrorOnce,
                                           StorageFault::kDiskFull),
                         [](const ::testing::TestParamInfo<StorageFault>& p) {
                           switch (p.param) {
                             case StorageFault::kIoError:
                               return "IoError";
                             case StorageFault::kIoErrorOnce:
                               return "IoErrorOnce";
                             default:
                               return "DiskFull";
                           }
                         });

}  // namespace
}  // namespace cairn
