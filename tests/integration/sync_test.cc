// Sync through a real cairn server on 127.0.0.1 (in-process, its own loop thread), with real
// sockets, a fault-injecting proxy, TLS with certificates made at test time, and tokens.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "auth/jwt.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "server/sync_server.h"
#include "support/env.h"
#include "support/fault_proxy.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"
#include "sync/sync_client.h"

namespace cairn {
namespace {

using testing::FaultProxy;
using testing::Faults;
using testing::OpenReplica;
using testing::Options;
using testing::RejectedOps;
using testing::ServerThread;
using testing::SyncOnce;
using testing::TempDir;

// The server's file is a replica: its visible state, read while the server runs.
std::string ServerDigest(const TempDir& dir, const std::string& collection = "") {
  ReplicaOptions ro;
  ro.read_only = true;
  auto r = Replica::Open(dir.File("server.db"), ro);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (collection.empty()) return r.value()->Digest().value();
  auto d = r.value()->CollectionDigests().value();
  return d.count(collection) ? d[collection] : "";
}

int64_t Counter(Replica* r, const std::string& coll, const std::string& key,
                const std::string& field) {
  auto doc = r->Get(coll, key).value();
  if (!doc || !doc->count(field)) return 0;
  return doc->at(field).as_int();
}

TEST(Sync, TwoReplicasExchangeThroughTheServer) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(a->Put("notes", "n1", {{"title", Value::String("from a")}}).ok());
  ASSERT_TRUE(a->Increment("stats", "s", "hits", 5).ok());
  ASSERT_TRUE(b->Increment("stats", "s", "hits", 7).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(a->DumpString().value(), b->DumpString().value());
  EXPECT_EQ(Counter(a.get(), "stats", "s", "hits"), 12);
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  auto st = a->GetStatus().value();
  EXPECT_EQ(st.pending_ops, 0);
  EXPECT_GT(st.cursor, 0u);
  EXPECT_TRUE(st.last_sync_ms.has_value());
}

// Three replicas make random ops and sync at random moments; at the end all equal the server,
// and a collection written only with increments holds the exact sums.
TEST(Sync, ThreeClientsRandomOpsConverge) {
  TempDir dir;
  ServerThread server(Options(dir));
  std::vector<std::unique_ptr<Replica>> rs;
  for (int i = 0; i < 3; i++) rs.push_back(OpenReplica(dir.File("r" + std::to_string(i))));
  std::mt19937 rng(1234);
  std::map<std::string, int64_t> sums;
  for (int step = 0; step < 300; step++) {
    Replica* r = rs[rng() % 3].get();
    const std::string key = "k" + std::to_string(rng() % 8);
    switch (rng() % 6) {
      case 0:
      case 1:
        ASSERT_TRUE(r->Put("docs", key, {{"v", Value::Int(step)},
                                         {"by", Value::String(r->id().Hex().substr(0, 4))}})
                        .ok());
        break;
      case 2:
        ASSERT_TRUE(r->Delete("docs", key).ok());
        break;
      case 3:
      case 4: {
        int64_t d = static_cast<int64_t>(rng() % 100) - 30;
        ASSERT_TRUE(r->Increment("counters", key, "n", d).ok());
        sums[key] += d;
        break;
      }
      default:
        ASSERT_TRUE(SyncOnce(r, server.address()).ok());
    }
  }
  for (int round = 0; round < 2; round++) {
    for (auto& r : rs) ASSERT_TRUE(SyncOnce(r.get(), server.address()).ok());
  }
  const std::string want = ServerDigest(dir);
  for (auto& r : rs) {
    EXPECT_EQ(r->Digest().value(), want);
    for (const auto& [key, sum] : sums) EXPECT_EQ(Counter(r.get(), "counters", key, "n"), sum);
  }
}

// docs/crdt-semantics.md "Clock safety": a device whose clock runs a year ahead stamps its
// writes with the server's time once it has connected (the offset is taken against the replica's
// own clock).
TEST(Sync, ClientClockIsCorrectedByTheServerTime) {
  TempDir dir;
  ServerThread server(Options(dir));  // the system clock
  testing::FakeClock ahead(port::WallClockMs() + int64_t{365} * 24 * 3600 * 1000);
  ReplicaOptions ro;
  ro.clock = &ahead;
  auto opened = Replica::Open(dir.File("a.db"), ro);
  ASSERT_TRUE(opened.ok());
  auto a = std::move(opened.value());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  Hlc hlc = 0;
  ASSERT_TRUE(a->Log([&](const Op& op) {
                  hlc = op.id.hlc;
                  return Status::OK();
                }).ok());
  const int64_t skew = static_cast<int64_t>(HlcPhysical(hlc)) - port::WallClockMs();
  EXPECT_LT(std::llabs(skew), 60000) << "write stamped " << skew << " ms from the server's time";
}

// The connection is cut after the server committed a push and before the client got the Ack:
// the client pushes the same ops again, and the server applies them once.
TEST(Sync, LostAckDuplicatesNothing) {
  TempDir dir;
  ServerThread server(Options(dir));
  // Server frames to a new client: Welcome, CaughtUp, then the Ack of its push (frame 2).
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 2;
    return f;
  });
  auto a = OpenReplica(dir.File("a.db"));
  for (int i = 0; i < 10; i++) ASSERT_TRUE(a->Increment("c", "k", "n", 1).ok());
  Status first = SyncOnce(a.get(), "127.0.0.1:" + std::to_string(proxy.port()));
  EXPECT_FALSE(first.ok());
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 10);  // not acknowledged: still queued
  ASSERT_TRUE(SyncOnce(a.get(), "127.0.0.1:" + std::to_string(proxy.port())).ok());
  EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(Counter(b.get(), "c", "k", "n"), 10);
  EXPECT_EQ(b->Digest().value(), ServerDigest(dir));
}

// Random cuts, stalls and slow links between clients and the server, 100 runs: each run's
// replicas retry until they get through and end equal to the server, counters exact.
TEST(Sync, FaultProxyRandomizedRuns) {
  TempDir dir;
  ServerThread server(Options(dir));
  std::mt19937 rng(42);
  // The proxy's faults come from its own generator: it runs on the proxy's thread.
  FaultProxy proxy(server.port(), [rng = std::mt19937(1042)](int) mutable {
    Faults f;
    switch (rng() % 5) {
      case 0:
        f.cut_up_after = rng() % 600;
        break;
      case 1:
        f.cut_down_after = rng() % 600;
        break;
      case 2:
        f.chunk_bytes = static_cast<size_t>(1 + rng() % 64);
        f.chunk_delay_ms = 1;
        break;
      case 3:
        f.stall_down_at = rng() % 300;
        f.stall_ms = static_cast<uint32_t>(20 + rng() % 50);
        break;
      default:
        break;  // a clean link
    }
    return f;
  });
  const std::string via = "127.0.0.1:" + std::to_string(proxy.port());
  int failures = 0;
  // 100 runs in the host's Debug run; fewer where everything is slower (CAIRN_PROXY_RUNS).
  const int runs = static_cast<int>(cairn::testing::EnvCount("CAIRN_PROXY_RUNS", 100));
  for (int run = 0; run < runs; run++) {
    const std::string coll = "run" + std::to_string(run);
    std::vector<std::unique_ptr<Replica>> rs;
    int64_t sum = 0;
    for (int i = 0; i < 2; i++) {
      rs.push_back(OpenReplica(dir.File(coll + "_" + std::to_string(i))));
      for (int k = 0; k < 3; k++) {
        int64_t d = 1 + static_cast<int64_t>(rng() % 9);
        ASSERT_TRUE(rs.back()->Increment(coll, "ctr", "n", d).ok());
        sum += d;
      }
      ASSERT_TRUE(rs.back()->Put(coll, "doc" + std::to_string(rng() % 2),
                                 {{"v", Value::Int(run * 10 + i)}}).ok());
    }
    sync::SyncOptions o;
    o.only = {coll};
    // Everybody pushes, then everybody pulls; each sync retried until it gets through.
    for (int pass = 0; pass < 2; pass++) {
      for (auto& r : rs) {
        int attempts = 0;
        for (Status s = SyncOnce(r.get(), via, o); !s.ok(); s = SyncOnce(r.get(), via, o)) {
          if (getenv("CAIRN_VERBOSE")) fprintf(stderr, "run %d: %s\n", run, s.ToString().c_str());
          failures++;
          ASSERT_LT(++attempts, 50) << "run " << run << " never got through";
        }
      }
    }
    const std::string want = ServerDigest(dir, coll);
    for (auto& r : rs) {
      EXPECT_EQ(r->CollectionDigests().value()[coll], want) << "run " << run;
      EXPECT_EQ(Counter(r.get(), coll, "ctr", "n"), sum) << "run " << run;
      EXPECT_EQ(r->GetStatus().value().pending_ops, 0);
    }
  }
  EXPECT_GT(failures, runs / 10);  // the faults did happen
  EXPECT_GT(proxy.cuts(), runs / 10);
}

// Partial sync: a client that asked for some collections gets only those, even when their
// origin's other ops (skipped for this client) come before, between and after them.
TEST(Sync, PartialSyncGetsOnlyItsCollections) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  sync::SyncOptions only;
  only.only = {"tasks"};
  for (int round = 0; round < 3; round++) {
    ASSERT_TRUE(a->Put("notes", "n" + std::to_string(round), {{"v", Value::Int(round)}}).ok());
    ASSERT_TRUE(a->Put("tasks", "t" + std::to_string(round), {{"v", Value::Int(round)}}).ok());
    ASSERT_TRUE(a->Increment("tasks", "count", "n", 1).ok());
    ASSERT_TRUE(a->Put("notes", "m" + std::to_string(round), {{"v", Value::Int(round)}}).ok());
    ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
    Status s = SyncOnce(b.get(), server.address(), only);
    ASSERT_TRUE(s.ok()) << "round " << round << ": " << s.ToString();
  }
  // Notes only, at the end: the client must still be at the server's head.
  ASSERT_TRUE(a->Put("notes", "last", {{"v", Value::Int(9)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), only).ok());
  ASSERT_TRUE(a->Put("tasks", "t9", {{"v", Value::Int(9)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), only).ok());
  auto digests = b->CollectionDigests().value();
  EXPECT_EQ(digests.count("notes"), 0u);
  EXPECT_EQ(digests["tasks"], ServerDigest(dir, "tasks"));
  EXPECT_EQ(Counter(b.get(), "tasks", "count", "n"), 3);
  EXPECT_TRUE(b->Get("tasks", "t9").value().has_value());
}

// Writes `n` rounds of edits from `r` (sets, deletes, increments over 20 documents), syncing
// after each round; adds the increments to `sums`.
void EditAndSync(Replica* r, const std::string& server, int rounds, std::mt19937* rng,
                 std::map<std::string, int64_t>* sums) {
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < 10; i++) {
      const std::string key = "k" + std::to_string((*rng)() % 20);
      switch ((*rng)() % 4) {
        case 0:
          ASSERT_TRUE(r->Put("docs", key, {{"v", Value::Int(round * 100 + i)}}).ok());
          break;
        case 1:
          ASSERT_TRUE(r->Delete("docs", key).ok());
          break;
        default: {
          const int64_t d = 1 + static_cast<int64_t>((*rng)() % 5);
          ASSERT_TRUE(r->Increment("counters", key, "n", d).ok());
          (*sums)[key] += d;
        }
      }
    }
    ASSERT_TRUE(SyncOnce(r, server).ok());
  }
}

// A server that keeps 20 ops of log: two rounds of EditAndSync.
server::ServerOptions ShortLog(const TempDir& dir) {
  server::ServerOptions o = Options(dir);
  o.store.keep_log_ops = 20;
  return o;
}

void ExpectSums(Replica* r, const std::map<std::string, int64_t>& sums) {
  for (const auto& [key, sum] : sums) EXPECT_EQ(Counter(r, "counters", key, "n"), sum) << key;
}

// The server keeps 20 ops of log: a new replica joins after it trimmed the rest and gets a
// snapshot of the state, then the log from the snapshot's cursor.
TEST(SyncSnapshot, NewReplicaJoinsAfterTheLogWasTrimmed) {
  TempDir dir;
  server::ServerOptions so = ShortLog(dir);
  ServerThread server(so);
  std::mt19937 rng(7);
  std::map<std::string, int64_t> sums;
  auto a = OpenReplica(dir.File("a.db"));
  EditAndSync(a.get(), server.address(), 10, &rng, &sums);
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_NE(server.log().find(", snapshot"), std::string::npos);
  EXPECT_EQ(b->Digest().value(), ServerDigest(dir));
  ExpectSums(b.get(), sums);
  // And it goes on from the snapshot's cursor.
  EditAndSync(a.get(), server.address(), 1, &rng, &sums);
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(b->Digest().value(), a->Digest().value());
  ExpectSums(b.get(), sums);
}

// A replica offline for longer than the kept log: it gets a snapshot, keeps the ops it made
// offline, and pushes them afterwards; everyone converges with exact counters.
TEST(SyncSnapshot, ReplicaOfflineLongerThanTheLogKeepsItsOps) {
  TempDir dir;
  server::ServerOptions so = ShortLog(dir);
  ServerThread server(so);
  std::mt19937 rng(8);
  std::map<std::string, int64_t> sums;
  auto a = OpenReplica(dir.File("a.db"));
  auto c = OpenReplica(dir.File("c.db"));
  EditAndSync(a.get(), server.address(), 2, &rng, &sums);
  ASSERT_TRUE(SyncOnce(c.get(), server.address()).ok());
  // c edits offline (the same documents) while a writes far more than the server keeps.
  for (int i = 0; i < 30; i++) {
    const std::string key = "k" + std::to_string(rng() % 20);
    if (i % 3 == 0) {
      ASSERT_TRUE(c->Delete("docs", key).ok());
    } else {
      ASSERT_TRUE(c->Increment("counters", key, "n", 1000).ok());
      sums[key] += 1000;
    }
  }
  EditAndSync(a.get(), server.address(), 10, &rng, &sums);
  ASSERT_TRUE(SyncOnce(c.get(), server.address()).ok());
  EXPECT_NE(server.log().find(", snapshot"), std::string::npos);
  EXPECT_EQ(c->GetStatus().value().pending_ops, 0);
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(c->Digest().value(), ServerDigest(dir));
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  ExpectSums(a.get(), sums);
  ExpectSums(c.get(), sums);
}

// A snapshot cut in the middle resumes after the last document the client staged, even though
// the server's state moved on meanwhile; nothing is counted twice.
TEST(SyncSnapshot, CutSnapshotResumes) {
  TempDir dir;
  server::ServerOptions so = ShortLog(dir);
  so.max_batch_ops = 8;  // many small chunks
  ServerThread server(so);
  // Frames to the joining client: Welcome, SnapshotBegin, chunks...: cut before the 5th chunk.
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n <= 1) f.cut_down_before_frame = 6;
    return f;
  });
  std::mt19937 rng(9);
  std::map<std::string, int64_t> sums;
  auto a = OpenReplica(dir.File("a.db"));
  EditAndSync(a.get(), server.address(), 10, &rng, &sums);
  auto b = OpenReplica(dir.File("b.db"));
  EXPECT_FALSE(SyncOnce(b.get(), "127.0.0.1:" + std::to_string(proxy.port())).ok());
  auto staged = SyncAccess(*b).GetSnapshot().value();
  ASSERT_TRUE(staged.has_value());
  EXPECT_FALSE(staged->after_key.empty());
  EXPECT_EQ(b->DumpString().value(), "{}");  // nothing applied before the snapshot is whole
  // The state moves on (the log still holds the snapshot's cursor), then the client is back.
  EditAndSync(a.get(), server.address(), 1, &rng, &sums);
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_NE(server.log().find("(resumed)"), std::string::npos);
  EXPECT_FALSE(SyncAccess(*b).GetSnapshot().value().has_value());
  EXPECT_EQ(b->Digest().value(), ServerDigest(dir));
  ExpectSums(b.get(), sums);
  // Cut again, and this time the log moves past the snapshot's cursor: a new snapshot.
  auto c = OpenReplica(dir.File("c.db"));
  EXPECT_FALSE(SyncOnce(c.get(), "127.0.0.1:" + std::to_string(proxy.port())).ok());
  ASSERT_TRUE(SyncAccess(*c).GetSnapshot().value().has_value());
  EditAndSync(a.get(), server.address(), 3, &rng, &sums);
  ASSERT_TRUE(SyncOnce(c.get(), server.address()).ok());
  EXPECT_EQ(c->Digest().value(), ServerDigest(dir));
  ExpectSums(c.get(), sums);
}

// Partial sync: adding a collection brings its current state; asking for everything brings
// the rest; removing one keeps the others going.
TEST(SyncPartial, AddingACollectionBringsItsState) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  auto sync_b = [&](std::vector<std::string> only) {
    sync::SyncOptions o;
    o.only = std::move(only);
    return SyncOnce(b.get(), server.address(), o);
  };
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(a->Put("tasks", "t" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
    ASSERT_TRUE(a->Put("notes", "n" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
    ASSERT_TRUE(a->Increment("stats", "s", "n", 1).ok());
  }
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks"}).ok());
  EXPECT_EQ(b->CollectionDigests().value().count("notes"), 0u);
  // Meanwhile a writes to both; then b adds notes.
  ASSERT_TRUE(a->Delete("notes", "n1").ok());
  ASSERT_TRUE(a->Put("tasks", "t9", {{"v", Value::Int(9)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks", "notes"}).ok());
  EXPECT_NE(server.log().find("snapshot of added collections"), std::string::npos);
  auto digests = b->CollectionDigests().value();
  EXPECT_EQ(digests["notes"], ServerDigest(dir, "notes"));
  EXPECT_EQ(digests["tasks"], ServerDigest(dir, "tasks"));
  EXPECT_EQ(digests.count("stats"), 0u);
  // Later ops of the added collection arrive once (a later set and a delete).
  ASSERT_TRUE(a->Put("notes", "n2", {{"v", Value::Int(20)}}).ok());
  ASSERT_TRUE(a->Delete("notes", "n3").ok());
  ASSERT_TRUE(a->Increment("stats", "s", "n", 1).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks", "notes"}).ok());
  EXPECT_EQ(b->CollectionDigests().value()["notes"], ServerDigest(dir, "notes"));
  // Everything: the rest comes as a snapshot, counters exact.
  ASSERT_TRUE(sync_b({}).ok());
  EXPECT_EQ(b->Digest().value(), ServerDigest(dir));
  EXPECT_EQ(Counter(b.get(), "stats", "s", "n"), 6);
  ASSERT_TRUE(a->Increment("stats", "s", "n", 1).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({}).ok());
  EXPECT_EQ(Counter(b.get(), "stats", "s", "n"), 7);
  // Removing a collection: its updates stop, the others go on.
  ASSERT_TRUE(a->Put("tasks", "t1", {{"v", Value::Int(100)}}).ok());
  ASSERT_TRUE(a->Put("notes", "n0", {{"v", Value::Int(100)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks"}).ok());
  EXPECT_EQ(b->CollectionDigests().value()["tasks"], ServerDigest(dir, "tasks"));
  EXPECT_NE(b->CollectionDigests().value()["notes"], ServerDigest(dir, "notes"));
  // A partial replica cannot export (its receipts cover ops it skipped).
  EXPECT_EQ(b->Export(dir.File("b.cex")).status().code(), Code::kEINVAL);
}

// The log is trimmed while a client is still receiving its snapshot (the server reads one
// document per loop turn here, and another client pushes meanwhile): the server notices the
// session fell behind the log and sends a snapshot again, in the same session.
TEST(SyncSnapshot, LogTrimmedDuringASnapshot) {
  TempDir dir;
  server::ServerOptions so = ShortLog(dir);
  so.snapshot_docs_per_turn = 1;
  ServerThread server(so);
  auto a = OpenReplica(dir.File("a.db"));
  int64_t sum = 0;
  WriteBatch big;
  for (int i = 0; i < 3000; i++) big.Increment("counters", "k" + std::to_string(i), "n", 1);
  ASSERT_TRUE(a->Write(big).ok());
  sum += 3000;
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  auto w = OpenReplica(dir.File("w.db"));
  auto push = [&] {
    for (int i = 0; i < 10; i++) ASSERT_TRUE(w->Increment("counters", "w", "n", 1).ok());
    (void)SyncOnce(w.get(), server.address());
  };
  push();  // the big batch leaves the log: a new replica needs a snapshot
  auto b = OpenReplica(dir.File("b.db"));
  // 15 small pushes while b receives its snapshot: each trims the log. (Pushing for as long as
  // a snapshot takes would starve it: each new one would fall behind again.)
  std::thread writer([&] {
    for (int i = 0; i < 15; i++) push();
  });
  Status s = SyncOnce(b.get(), server.address());
  writer.join();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_NE(server.log().find("fell behind the kept log"), std::string::npos);
  ASSERT_TRUE(SyncOnce(w.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(b->Digest().value(), ServerDigest(dir));
  EXPECT_EQ(Counter(b.get(), "counters", "w", "n"), Counter(w.get(), "counters", "w", "n"));
  EXPECT_EQ(Counter(b.get(), "counters", "k0", "n"), 1);
  EXPECT_EQ(sum, 3000);
}

// An add snapshot is cut; the client then syncs without that collection (the log moves on and
// its ops are skipped for it), then asks for it again: it must get everything, not resume a
// snapshot whose cursor it has left.
TEST(SyncPartial, StaleSnapshotIsNotResumed) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.max_batch_ops = 8;
  ServerThread server(so);
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 4;  // Welcome, SnapshotBegin, 2 chunks, cut
    return f;
  });
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  auto sync_b = [&](std::vector<std::string> only, const std::string& via) {
    sync::SyncOptions o;
    o.only = std::move(only);
    return SyncOnce(b.get(), via, o);
  };
  int64_t sum = 0;
  for (int i = 0; i < 40; i++) {
    ASSERT_TRUE(a->Increment("notes", "n" + std::to_string(i), "c", 1).ok());
    sum++;
  }
  ASSERT_TRUE(a->Put("tasks", "t", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks"}, server.address()).ok());
  const std::string via = "127.0.0.1:" + std::to_string(proxy.port());
  EXPECT_FALSE(sync_b({"tasks", "notes"}, via).ok());
  ASSERT_TRUE(SyncAccess(*b).GetSnapshot().value().has_value());
  // Without notes for a while; a writes to notes meanwhile.
  for (int i = 0; i < 40; i++) {
    ASSERT_TRUE(a->Increment("notes", "n" + std::to_string(i), "c", 1).ok());
    sum++;
  }
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(sync_b({"tasks"}, server.address()).ok());
  EXPECT_FALSE(SyncAccess(*b).GetSnapshot().value().has_value());  // stale: dropped
  ASSERT_TRUE(sync_b({"tasks", "notes"}, server.address()).ok());
  EXPECT_EQ(b->CollectionDigests().value()["notes"], ServerDigest(dir, "notes"));
  int64_t total = 0;
  for (int i = 0; i < 40; i++) total += Counter(b.get(), "notes", "n" + std::to_string(i), "c");
  EXPECT_EQ(total, sum);
}

// After an add snapshot, the client's state is exactly what its receipts count: a file from a
// full replica imported before the log caught up counts nothing twice.
TEST(SyncPartial, AddSnapshotKeepsReceiptsExact) {
  TempDir dir;
  ServerThread server(Options(dir));
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 4;  // Welcome, Begin, Chunk, End; cut before the log
    return f;
  });
  auto a = OpenReplica(dir.File("a.db"));
  auto p = OpenReplica(dir.File("p.db"));
  sync::SyncOptions tasks_only;
  tasks_only.only = {"tasks"};
  ASSERT_TRUE(a->Increment("notes", "n", "c", 1).ok());
  ASSERT_TRUE(a->Put("tasks", "t", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(p.get(), server.address(), tasks_only).ok());
  // a goes on: notes increments the partial replica's receipts do not count yet.
  for (int i = 0; i < 5; i++) ASSERT_TRUE(a->Increment("notes", "n", "c", 10).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  sync::SyncOptions both;
  both.only = {"tasks", "notes"};
  EXPECT_FALSE(SyncOnce(p.get(), "127.0.0.1:" + std::to_string(proxy.port()), both).ok());
  EXPECT_FALSE(SyncAccess(*p).GetSnapshot().value().has_value());  // the snapshot was applied
  // A file from a full replica, then the log: every increment counted once.
  ASSERT_TRUE(a->Export(dir.File("a.cex")).ok());
  ASSERT_TRUE(p->Import(dir.File("a.cex")).ok());
  EXPECT_EQ(Counter(p.get(), "notes", "n", "c"), 51);
  ASSERT_TRUE(SyncOnce(p.get(), server.address(), both).ok());
  EXPECT_EQ(Counter(p.get(), "notes", "n", "c"), 51);
  EXPECT_EQ(p->CollectionDigests().value()["notes"], ServerDigest(dir, "notes"));
}

// Raw sockets sending bad frames: the server answers with an Error and closes; it keeps
// serving others, and nothing changes.
int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Reads until the server closes; returns the Error code it sent (0 if none). *closed_by_server
// tells whether the read ended at the server's close rather than at our 5 s read timeout.
int ReadErrorAndEof(int fd, bool* closed_by_server = nullptr) {
  std::string in;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) in.append(buf, static_cast<size_t>(n));
  const bool timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  if (closed_by_server) *closed_by_server = !timed_out;
  close(fd);
  if (getenv("CAIRN_VERBOSE")) fprintf(stderr, "read %zu bytes (errno %d)\n", in.size(), errno);
  if (in.size() < 4) return 0;
  const std::string payload = in.substr(4);
  auto f = protocol::VerifyFrame(payload, {});
  if (!f.ok() || !f.value()->body_as_Error()) return 0;
  return f.value()->body_as_Error()->code();
}

// A Hello with a reserved replica id (all zero, all 0xff) or the server's own id is refused
// (EINVAL) before anything else of the session is read: its ops would be taken for the server's
// own. The client side refuses to make a replica with a reserved id at all.
TEST(Sync, ReservedReplicaIdsAreRefusedBeforeAnyOp) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  const std::optional<ReplicaId> server_id = SyncAccess(*a).GetSyncPosition().value().server_id;
  ASSERT_TRUE(server_id.has_value());
  const std::string before = ServerDigest(dir);

  ReplicaId zero, ones;
  zero.bytes.fill(0x00);
  ones.bytes.fill(0xff);
  for (const ReplicaId& id : {zero, ones, *server_id}) {
    // A raw Hello, then a push under that id: the Error comes for the Hello.
    flatbuffers::FlatBufferBuilder fbb;
    const wire::ReplicaId wid = protocol::ToWire(id);
    std::string bytes = protocol::FinishFrame(
        &fbb, wire::Body::Hello, wire::CreateHello(fbb, protocol::kProtocolVersion, &wid));
    protocol::BatchEncoder enc;
    Op op;
    op.id = OpId{MakeHlc(1700000000000, 0), id, 1};
    op.kind = OpKind::kSet;
    op.collection = "c";
    op.key = "k";
    op.field = "v";
    op.value = Value::Int(666);
    enc.Add(op);
    enc.FinishFrame(&bytes);
    int fd = Connect(server.port());
    EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    EXPECT_EQ(ReadErrorAndEof(fd), static_cast<int>(Code::kEINVAL)) << id.Hex();
  }
  // Cairn's own client with a file made under the server's id.
  ReplicaOptions as_server;
  as_server.new_id = *server_id;
  auto impostor = Replica::Open(dir.File("impostor.db"), as_server);
  ASSERT_TRUE(impostor.ok()) << impostor.status().ToString();
  ASSERT_TRUE(impostor.value()->Put("c", "k", {{"v", Value::Int(666)}}).ok());
  EXPECT_EQ(SyncOnce(impostor.value().get(), server.address()).code(), Code::kEINVAL);
  EXPECT_EQ(impostor.value()->PendingOps().value(), 1);  // refused, not lost
  EXPECT_EQ(ServerDigest(dir), before);
  // And the others are served as before.
  ASSERT_TRUE(a->Put("c", "k2", {{"v", Value::Int(2)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  // No replica is made with a reserved id.
  for (const ReplicaId& id : {zero, ones}) {
    ReplicaOptions o;
    o.new_id = id;
    EXPECT_EQ(Replica::Open(dir.File("reserved.db"), o).status().code(), Code::kEINVAL);
  }
}

TEST(Sync, MalformedFramesGetAnErrorAndTheServerKeepsServing) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  const std::string before = ServerDigest(dir);

  auto send = [&](const std::string& bytes) {
    int fd = Connect(server.port());
    EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    return ReadErrorAndEof(fd);
  };
  // Oversized length prefix: refused before any allocation.
  EXPECT_EQ(send(std::string("\xff\xff\xff\x7f", 4)), static_cast<int>(Code::kECORRUPT));
  // Garbage of a plausible length.
  EXPECT_EQ(send(std::string("\x10\x00\x00\x00", 4) + std::string(16, 'x')),
            static_cast<int>(Code::kECORRUPT));
  // A valid frame of the wrong type (an Ack before Hello).
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto ack = wire::CreateAck(fbb);
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::Ack, ack.Union()), wire::FrameIdentifier());
    std::string frame;
    protocol::AppendFrame(fbb, &frame);
    EXPECT_EQ(send(frame), static_cast<int>(Code::kEINVAL));
  }
  // Truncated: half a frame, then silence: the frame timeout closes it (no Error needed).
  {
    int fd = Connect(server.port());
    EXPECT_EQ(write(fd, "\x40\x00\x00\x00" "abc", 7), 7);
    shutdown(fd, SHUT_WR);
    ReadErrorAndEof(fd);
  }
  EXPECT_EQ(ServerDigest(dir), before);
  // Still serving.
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(b->Digest().value(), before);
}

// The frame timeout closes a connection whose frame never completes, the handshake timeout one
// that never says Hello: the server closes them itself, before the client's read gives up.
TEST(Sync, FrameAndHandshakeTimeouts) {
  TempDir dir;
  server::ServerOptions o = Options(dir);
  o.conn.frame_timeout_ms = 200;
  o.handshake_timeout_ms = 300;
  ServerThread server(o);
  int fd = Connect(server.port());
  ASSERT_EQ(write(fd, "\x40\x00\x00\x00" "abc", 7), 7);
  bool closed = false;
  ReadErrorAndEof(fd, &closed);
  EXPECT_TRUE(closed) << "a half frame was kept open";
  fd = Connect(server.port());  // connects, says nothing
  closed = false;
  ReadErrorAndEof(fd, &closed);
  EXPECT_TRUE(closed) << "a silent connection was kept open";
}

TEST(Sync, LiveSyncPushesNewWritesToOtherClients) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  sync::SyncOptions o;
  o.server = server.address();
  sync::SyncClient ca(a.get(), o), cb(b.get(), o);
  std::atomic<uint64_t> durable{0};
  ca.SetDurableCallback([&](uint64_t through) { durable = through; });
  ASSERT_TRUE(ca.Start().ok());
  ASSERT_TRUE(cb.Start().ok());
  ASSERT_TRUE(a->Put("live", "x", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Increment("live", "x", "n", 3).ok());
  bool seen = false;
  for (int i = 0; i < 500 && !seen; i++) {
    auto doc = b->Get("live", "x").value();
    seen = doc && doc->count("n") && doc->at("n").as_int() == 3;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(seen);
  // B may see the ops before A has processed its Ack: wait for the notification.
  for (int i = 0; i < 500 && durable.load() < 2; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(durable.load(), 2u);
  for (int i = 0; i < 200 && cb.status().state != sync::SyncState::kIdle; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(cb.status().state, sync::SyncState::kIdle);
  ca.Stop();
  cb.Stop();
  EXPECT_EQ(ca.status().state, sync::SyncState::kOffline);
}

// A document's integer field; nullopt when the document or the field is missing.
std::optional<int64_t> IntField(Replica* r, const std::string& coll, const std::string& key,
                                const std::string& field) {
  auto doc = r->Get(coll, key);
  if (!doc.ok() || !doc->has_value()) return std::nullopt;
  auto it = (*doc)->find(field);
  if (it == (*doc)->end() || it->second.type() != ValueType::kInt) return std::nullopt;
  return it->second.as_int();
}

// Restored replicas (docs/protocol.md): a device's file is lost and an older backup of it is
// restored. `keep_log_ops` 0: the server's default log.
struct RestoredDevice {
  TempDir dir;
  std::unique_ptr<ServerThread> server;
  ReplicaId id;
  // The device syncs op 1, is backed up, then syncs ops 2..1+`later` (sets and an increment),
  // and is lost: backup.db is what is left.
  void Build(uint64_t keep_log_ops, int later) {
    server::ServerOptions o = Options(dir);
    if (keep_log_ops > 0) o.store.keep_log_ops = keep_log_ops;
    server = std::make_unique<ServerThread>(o);
    auto a = OpenReplica(dir.File("a.db"));
    id = a->id();
    ASSERT_TRUE(a->Put("c", "k1", {{"v", Value::Int(1)}}).ok());
    ASSERT_TRUE(SyncOnce(a.get(), server->address()).ok());
    ASSERT_TRUE(a->Close().ok());
    std::filesystem::copy_file(dir.File("a.db"), dir.File("backup.db"));
    a = OpenReplica(dir.File("a.db"));
    for (int i = 2; i <= later; i++) {
      ASSERT_TRUE(a->Put("c", "k" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
      ASSERT_TRUE(SyncOnce(a.get(), server->address()).ok());
    }
    ASSERT_TRUE(a->Increment("c", "n", "x", 5).ok());
    ASSERT_TRUE(SyncOnce(a.get(), server->address()).ok());
    ASSERT_TRUE(a->Close().ok());
  }
};

// Restored before it writes: it gets back its own newer ops (the server never sent a replica
// its own ops, so they were missing for good), and its next write takes a new seq (it took a
// seq the server had, and the server dropped the write as a duplicate: lost).
TEST(SyncRestored, BackupGetsItsOwnNewerOpsBackAndNeverReusesASeq) {
  RestoredDevice d;
  d.Build(0, 3);  // seqs 1..4 on the server; the backup has 1
  auto r = OpenReplica(d.dir.File("backup.db"));
  ASSERT_EQ(r->GetStatus().value().last_seq, 1u);
  ASSERT_TRUE(SyncOnce(r.get(), d.server->address()).ok());
  EXPECT_EQ(r->GetStatus().value().last_seq, 4u);
  EXPECT_EQ(IntField(r.get(), "c", "k3", "v"), 3);
  EXPECT_EQ(IntField(r.get(), "c", "n", "x"), 5);
  ASSERT_TRUE(r->Put("c", "k9", {{"v", Value::Int(9)}}).ok());
  EXPECT_EQ(r->GetStatus().value().last_seq, 5u);
  ASSERT_TRUE(SyncOnce(r.get(), d.server->address()).ok());
  auto b = OpenReplica(d.dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), d.server->address()).ok());
  EXPECT_EQ(IntField(b.get(), "c", "k9", "v"), 9) << "the restored replica's write was lost";
  EXPECT_EQ(b->Digest().value(), r->Digest().value());
}

// The same when the server's log no longer has the ops: they come in the snapshot.
TEST(SyncRestored, BackupBehindTheKeptLogGetsItsOwnOpsInTheSnapshot) {
  RestoredDevice d;
  d.Build(2, 6);
  auto r = OpenReplica(d.dir.File("backup.db"));
  ASSERT_TRUE(SyncOnce(r.get(), d.server->address()).ok());
  EXPECT_EQ(r->GetStatus().value().last_seq, 7u);
  EXPECT_EQ(IntField(r.get(), "c", "n", "x"), 5);
  ASSERT_TRUE(r->Put("c", "k9", {{"v", Value::Int(9)}}).ok());
  ASSERT_TRUE(SyncOnce(r.get(), d.server->address()).ok());
  auto b = OpenReplica(d.dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), d.server->address()).ok());
  EXPECT_EQ(IntField(b.get(), "c", "k9", "v"), 9) << "the restored replica's write was lost";
  EXPECT_EQ(b->Digest().value(), r->Digest().value());
}

// Restored and written to before it syncs: its new ops reuse seqs the server has. They are
// refused with EFORKED and stay queued (they were acknowledged as duplicates and dropped).
TEST(SyncRestored, BackupThatWroteFirstIsRefusedNotDropped) {
  RestoredDevice d;
  d.Build(0, 3);
  auto r = OpenReplica(d.dir.File("backup.db"));
  ASSERT_TRUE(r->Put("c", "k1", {{"v", Value::Int(100)}}).ok());  // seq 2, as the server's k2
  Status s = SyncOnce(r.get(), d.server->address());
  EXPECT_EQ(s.code(), Code::kEFORKED) << s.ToString();
  EXPECT_EQ(r->PendingOps().value(), 1);
  EXPECT_NE(d.server->log().find("history forked at seq 2"), std::string::npos);
  auto b = OpenReplica(d.dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), d.server->address()).ok());
  EXPECT_EQ(IntField(b.get(), "c", "k1", "v"), 1);
  // A device that lost only an Ack is not taken for a fork: same seq, same op.
  auto c = OpenReplica(d.dir.File("c.db"));
  ASSERT_TRUE(c->Put("c", "z", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(c.get(), d.server->address()).ok());
  ASSERT_TRUE(c->Put("c", "z", {{"v", Value::Int(2)}}).ok());
  ASSERT_TRUE(c->Close().ok());
  std::filesystem::copy_file(d.dir.File("c.db"), d.dir.File("c-unacked.db"));
  c = OpenReplica(d.dir.File("c.db"));
  ASSERT_TRUE(SyncOnce(c.get(), d.server->address()).ok());
  auto unacked = OpenReplica(d.dir.File("c-unacked.db"));  // pushed, its Ack never recorded
  EXPECT_EQ(unacked->PendingOps().value(), 1);
  ASSERT_TRUE(SyncOnce(unacked.get(), d.server->address()).ok());
  EXPECT_EQ(unacked->PendingOps().value(), 0);
}

// Backed up with an op not yet pushed, which the lost device pushed later, then more: the
// restored file pushes that op again (a duplicate, the same op) and gets the later ones back;
// the Ack covers them too (it looked beyond what was pushed: the session failed, for good).
TEST(SyncRestored, BackupWithAnUnpushedOpSyncs) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k1", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(a->Put("c", "k2", {{"v", Value::Int(2)}}).ok());  // seq 2, not pushed yet
  ASSERT_TRUE(a->Close().ok());
  std::filesystem::copy_file(dir.File("a.db"), dir.File("backup.db"));
  a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(a->Put("c", "k3", {{"v", Value::Int(3)}}).ok());  // seq 3
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(a->Close().ok());
  auto r = OpenReplica(dir.File("backup.db"));
  EXPECT_EQ(r->PendingOps().value(), 1);
  Status s = SyncOnce(r.get(), server.address());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(r->PendingOps().value(), 0);
  EXPECT_EQ(IntField(r.get(), "c", "k3", "v"), 3);
  ASSERT_TRUE(r->Put("c", "k4", {{"v", Value::Int(4)}}).ok());
  EXPECT_EQ(r->GetStatus().value().last_seq, 4u);
  ASSERT_TRUE(SyncOnce(r.get(), server.address()).ok());
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(IntField(b.get(), "c", "k4", "v"), 4);
  EXPECT_EQ(b->Digest().value(), r->Digest().value());
}

// Restored, then written past what the server has (its last seq is beyond the server's: Hello
// cannot tell): the push's "duplicates" are not the ops the server has under those seqs. Refused
// with EFORKED, nothing applied (they were dropped, and the rest of their transaction applied).
TEST(SyncRestored, BackupThatWrotePastTheServerIsRefusedNotDropped) {
  RestoredDevice d;
  d.Build(0, 3);  // the server has seqs 1..4; the backup 1
  auto r = OpenReplica(d.dir.File("backup.db"));
  for (int i = 0; i < 4; i++) {  // seqs 2..5
    ASSERT_TRUE(r->Put("c", "x" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
  }
  Status s = SyncOnce(r.get(), d.server->address());
  EXPECT_EQ(s.code(), Code::kEFORKED) << s.ToString();
  EXPECT_EQ(r->PendingOps().value(), 4);
  auto b = OpenReplica(d.dir.File("b.db"));
  ASSERT_TRUE(SyncOnce(b.get(), d.server->address()).ok());
  EXPECT_FALSE(b->Get("c", "x3").value().has_value());
  EXPECT_EQ(IntField(b.get(), "c", "k3", "v"), 3);
}

// Found by the simulation (tests/sim): a replica's own ops pushed through another session (a
// second process syncing the same file) were skipped silently by its live session, whose cursor
// then stayed behind the log's head for good. The server says CaughtUp at the new head.
TEST(Sync, LiveSessionCursorPassesItsOwnOpsPushedElsewhere) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto app = OpenReplica(dir.File("a.db"));
  sync::SyncOptions o;
  o.server = server.address();
  o.poll_ms = 600000;  // the live client does not look for other processes' writes
  sync::SyncClient live(app.get(), o);
  ASSERT_TRUE(live.Start().ok());
  for (int i = 0; i < 500 && live.status().state != sync::SyncState::kIdle; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(live.status().state, sync::SyncState::kIdle);
  // Another process writes to the same file and syncs it once.
  auto other = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(other->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(other.get(), server.address()).ok());
  const uint64_t head = SyncAccess(*other).GetSyncPosition()->cursor;
  ASSERT_GT(head, 0u);
  for (int i = 0; i < 500 && live.status().cursor != head; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(live.status().cursor, head);
  live.Stop();
}

// A write made just as live sync starts, before its thread listens for wake-ups, is not lost to
// the status callback: offline, nothing else would wake the thread to count it (seen under qemu,
// where starting the thread is slow; here many starts race a write each).
TEST(Sync, StatusHearsAWriteMadeAsLiveSyncStarts) {
  TempDir dir;
  auto a = OpenReplica(dir.File("a.db"));
  sync::SyncOptions o;
  o.server = "127.0.0.1:1";  // nothing listens there: offline throughout
  o.backoff_min_ms = 60000;  // no reconnection attempt during the test either
  o.backoff_max_ms = 60000;
  for (int round = 1; round <= 40; round++) {
    SCOPED_TRACE(round);
    sync::SyncClient c(a.get(), o);
    std::mutex mu;
    std::condition_variable cv;
    int64_t heard = 0;
    c.SetStatusCallback([&](const sync::SyncStatus& st) {
      std::lock_guard<std::mutex> lock(mu);
      heard = st.pending_ops;
      cv.notify_all();
    });
    ASSERT_TRUE(c.Start().ok());
    ASSERT_TRUE(a->Put("c", "k" + std::to_string(round), {{"v", Value::Int(round)}}).ok());
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::seconds(5), [&] { return heard == round; });
      EXPECT_EQ(heard, round) << "the status callback missed the write";
    }
    c.Stop();
    if (::testing::Test::HasFailure()) break;
  }
}

TEST(Sync, ReconnectsWithBackoffAndAtOnceWhenTheNetworkComesBack) {
  TempDir dir;
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  // Nothing listens yet: find a free port by starting and stopping a server.
  uint16_t port;
  {
    ServerThread probe(Options(dir));
    port = probe.port();
  }
  sync::SyncOptions o;
  o.server = "127.0.0.1:" + std::to_string(port);
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 60000;  // the backoff grows large: NetworkChanged must cut it short
  sync::SyncClient c(a.get(), o);
  ASSERT_TRUE(c.Start().ok());
  // After the 8th failure the next attempt waits at least 1,280 ms (20 ms doubled, jittered
  // down to half at most).
  for (int i = 0; i < 600 && c.status().reconnects < 8; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(c.status().reconnects, 8u);
  EXPECT_EQ(c.status().state, sync::SyncState::kOffline);
  EXPECT_FALSE(c.status().last_error.empty());
  server::ServerOptions so = Options(dir);
  so.port = port;
  ServerThread server(so);
  c.NetworkChanged();
  for (int i = 0; i < 100 && c.status().state != sync::SyncState::kIdle; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(c.status().state, sync::SyncState::kIdle);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
  c.Stop();
}

// --- TLS: certificates made now by examples/make_dev_certs.py ---

class SyncTls : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string cmd = std::string("python3 ") + CAIRN_TEST_SRCDIR + "/../examples/make_dev_certs.py " +
                      dir_.path();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  server::ServerOptions TlsOptions(const std::string& cert = "server") {
    server::ServerOptions o = Options(dir_);
    o.tls_cert_file = dir_.File(cert + ".pem");
    o.tls_key_file = dir_.File(cert + ".key");
    return o;
  }
  sync::SyncOptions Client(const std::string& ca = "ca", const std::string& name = "localhost") {
    sync::SyncOptions o;
    o.tls = true;
    o.ca_file = dir_.File(ca + ".pem");
    o.server_name = name;
    return o;
  }
  TempDir dir_;
};

TEST_F(SyncTls, VerifiedConnectionSyncs) {
  ServerThread server(TlsOptions());
  auto a = OpenReplica(dir_.File("a.db"));
  auto b = OpenReplica(dir_.File("b.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::String("secret")}}).ok());
  Status st = SyncOnce(a.get(), server.address(), Client());
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = SyncOnce(b.get(), server.address(), Client());
  ASSERT_TRUE(st.ok()) << st.ToString();
  // mbedTLS 2.28 matches DNS names only: an IP address as the name is refused, not trusted.
  EXPECT_FALSE(SyncOnce(b.get(), server.address(), Client("ca", "127.0.0.1")).ok());
  EXPECT_EQ(b->Digest().value(), a->Digest().value());
}

TEST_F(SyncTls, RefusesWrongCaWrongNameExpiredAndPlain) {
  auto a = OpenReplica(dir_.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  {
    ServerThread server(TlsOptions());
    Status st = SyncOnce(a.get(), server.address(), Client("other_ca"));
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("certificate"), std::string::npos) << st.ToString();
    st = SyncOnce(a.get(), server.address(), Client("ca", "not-the-server.example"));
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("certificate"), std::string::npos) << st.ToString();
    // A plain client on the TLS port: a clean error, no hang.
    st = SyncOnce(a.get(), server.address());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.code(), Code::kETIMEDOUT) << st.ToString();
  }
  {
    ServerThread server(TlsOptions("expired"));
    Status st = SyncOnce(a.get(), server.address(), Client());
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("expired"), std::string::npos) << st.ToString();
  }
  {
    // A TLS client on a plain port.
    ServerThread server(Options(dir_));
    Status st = SyncOnce(a.get(), server.address(), Client());
    EXPECT_FALSE(st.ok());
  }
  EXPECT_EQ(a->GetStatus().value().pending_ops, 1);  // nothing was pushed anywhere
}

// --- Tokens ---

constexpr char kSecret[] = "a test secret that is long enough, 32+ bytes";

std::string Token(const std::string& sub, int64_t ttl_s, std::vector<std::string> read = {"*"},
                  std::vector<std::string> write = {"*"}, const std::string& secret = kSecret,
                  std::optional<std::string> rid = std::nullopt) {
  auth::Claims c;
  c.subject = sub;
  c.expires_s = port::WallClockMs() / 1000 + ttl_s;
  c.read = std::move(read);
  c.write = std::move(write);
  c.replica_id = std::move(rid);
  return auth::MintToken(c, secret);
}

TEST(SyncAuth, TokensAreChecked) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  const std::string empty = ServerDigest(dir);
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  auto with = [&](const std::string& token, std::vector<std::string> only = {}) {
    sync::SyncOptions o;
    o.token = token;
    o.only = std::move(only);
    return SyncOnce(a.get(), server.address(), o);
  };
  EXPECT_EQ(with("").code(), Code::kEPERM);
  EXPECT_EQ(with("not.a.token").code(), Code::kEPERM);
  Status st = with(Token("alice", 3600, {"*"}, {"*"}, "another secret, also 32 bytes long......"));
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_NE(st.message().find("signature"), std::string::npos);
  st = with(Token("alice", -(auth::kClockLeewayS + 10)));
  EXPECT_EQ(st.code(), Code::kETOKEN);
  EXPECT_NE(st.message().find("expired"), std::string::npos);
  EXPECT_EQ(with(Token("alice", 3600, {"*"}, {"*"}, kSecret, std::string(32, 'a'))).code(),
            Code::kEPERM);  // a token for another replica
  EXPECT_EQ(with(Token("alice", 3600, {"x"}), {"c"}).code(), Code::kEPERM);  // may not read c
  EXPECT_EQ(ServerDigest(dir), empty);  // nothing of a refused client was applied
  ASSERT_TRUE(with(Token("alice", 3600)).ok());
  EXPECT_EQ(ServerDigest(dir), a->Digest().value());
  // The replica is bound to alice now: bob cannot sync as it.
  EXPECT_EQ(with(Token("bob", 3600)).code(), Code::kEPERM);
}

TEST(SyncAuth, ReadPermissionLimitsWhatIsSent) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("public", "p", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Put("private", "q", {{"v", Value::Int(2)}}).ok());
  sync::SyncOptions o;
  o.token = Token("alice", 3600);
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), o).ok());
  auto b = OpenReplica(dir.File("b.db"));
  o.token = Token("bob", 3600, {"public"});
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), o).ok());
  EXPECT_EQ(b->DumpString().value(), R"({"public":{"p":{"v":1}}})");
}

// docs/protocol.md "Token renewal": a renewed token must still read what the session syncs
// (every collection, or those it subscribed to); else the session ends with EPERM, naming it.
TEST(SyncAuth, ARenewedTokenMustReadWhatTheSessionSyncs) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  struct Case {
    std::vector<std::string> only, read, renewed_read;
    std::string refused;  // what the error names
  };
  const std::vector<Case> cases = {Case{{}, {"*"}, {"public"}, "'*'"},
                                   Case{{"c"}, {"c", "d"}, {"d"}, "'c'"}};
  for (size_t n = 0; n < cases.size(); n++) {
    const Case& c = cases[n];
    const std::string user = "alice" + std::to_string(n);
    auto a = OpenReplica(dir.File(user + ".db"));
    sync::SyncOptions o;
    o.server = server.address();
    o.only = c.only;
    o.token = Token(user, 3600, c.read);
    sync::SyncClient live(a.get(), o);
    std::mutex mu;
    std::vector<std::string> errors;
    live.SetStatusCallback([&](const sync::SyncStatus& st) {
      std::lock_guard<std::mutex> lock(mu);
      if (!st.last_error.empty()) errors.push_back(st.last_error);
    });
    ASSERT_TRUE(live.Start().ok());
    auto idle = [&] { return live.status().state == sync::SyncState::kIdle; };
    for (int i = 0; i < 1000 && !idle(); i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(idle()) << live.status().ToJson();
    live.SetToken(Token(user, 7200, c.renewed_read));
    const std::string want = "EPERM: server: the renewed token does not allow reading " +
                             c.refused + ", which this session syncs";
    auto heard = [&] {
      std::lock_guard<std::mutex> lock(mu);
      for (const std::string& e : errors) {
        if (e == want) return true;
      }
      return false;
    };
    for (int i = 0; i < 1000 && !heard(); i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(heard()) << live.status().ToJson();
    live.Stop();
  }
}

std::string QueryRows(Replica* r, const std::string& sql) {
  std::string out;
  EXPECT_TRUE(r->Query(sql, [&](const std::string& row) {
                 out += row + "\n";
                 return Status::OK();
               }).ok());
  return out;
}

// docs/protocol.md "Authentication and tokens": a token names the collections its holder may write.
// The server refuses, whole, a transaction that writes elsewhere; the origin records its ops as
// rejected, with the reason, and undoes them (what they had replaced comes back), so it ends equal
// to everyone else.
TEST(SyncAuth, WritesTheTokenDoesNotAllowAreRefusedAndUndone) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  sync::SyncOptions admin, limited;
  admin.token = Token("admin", 3600);
  limited.token = Token("alice", 3600, {"*"}, {"notes"});
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(b->Put("prices", "p1", {{"v", Value::Int(1)}, {"w", Value::Int(1)}}).ok());
  ASSERT_TRUE(b->Put("prices", "p2", {{"v", Value::Int(2)}}).ok());
  ASSERT_TRUE(b->Increment("prices", "p3", "n", 10).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), admin).ok());
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), limited).ok());
  const std::string prices_before = QueryRows(a.get(), "SELECT * FROM prices ORDER BY key");

  ASSERT_TRUE(a->Put("notes", "n1", {{"t", Value::String("kept")}}).ok());
  ASSERT_TRUE(a->Put("prices", "p1", {{"v", Value::Int(100)}}).ok());  // replaces b's set
  ASSERT_TRUE(a->Put("prices", "p1", {{"v", Value::Int(101)}}).ok());  // replaces its own
  ASSERT_TRUE(a->Delete("prices", "p2").ok());                         // hides a document
  ASSERT_TRUE(a->Increment("prices", "p3", "n", 5).ok());
  WriteBatch mixed;  // one transaction: refused whole, its allowed note with it
  mixed.Set("notes", "n2", "t", Value::String("refused with its transaction"))
      .Set("prices", "p4", "v", Value::Int(4));
  ASSERT_TRUE(a->Write(mixed).ok());
  ASSERT_TRUE(a->Put("notes", "n3", {{"t", Value::String("kept too")}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), limited).ok());

  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  EXPECT_EQ(QueryRows(a.get(), "SELECT * FROM prices ORDER BY key"), prices_before);
  EXPECT_EQ(Counter(a.get(), "prices", "p3", "n"), 10);
  EXPECT_FALSE(a->Get("notes", "n2").value().has_value());
  EXPECT_TRUE(a->Get("notes", "n1").value().has_value());
  EXPECT_TRUE(a->Get("notes", "n3").value().has_value());
  auto rejected = RejectedOps(a.get());
  ASSERT_EQ(rejected.size(), 6u);  // p1 twice, the delete, the increment, n2 and p4
  for (const auto& r : rejected) {
    EXPECT_EQ(r.code, static_cast<int>(Code::kEPERM));
    EXPECT_NE(r.reason.find("writing 'prices'"), std::string::npos) << r.reason;
  }
  EXPECT_EQ(rejected[4].op.key, "n2");
  auto st = a->GetStatus().value();
  EXPECT_EQ(st.pending_ops, 0);
  EXPECT_EQ(st.rejected_ops, 6);
  EXPECT_NE(server.log().find("refused seqs"), std::string::npos);

  // Nobody else ever sees a refused op, and its seqs are no gap for them.
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), admin).ok());
  auto c = OpenReplica(dir.File("c.db"));
  ASSERT_TRUE(SyncOnce(c.get(), server.address(), admin).ok());
  EXPECT_EQ(b->Digest().value(), a->Digest().value());
  EXPECT_EQ(c->Digest().value(), a->Digest().value());
  // The origin goes on: later writes flow, refusals are not recorded twice.
  ASSERT_TRUE(a->Put("notes", "n4", {{"t", Value::String("later")}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), limited).ok());
  ASSERT_TRUE(SyncOnce(c.get(), server.address(), admin).ok());
  EXPECT_EQ(c->Digest().value(), a->Digest().value());
  EXPECT_EQ(RejectedOps(a.get()).size(), 6u);
}

// Write receipts (docs/c-api.md "Write receipts"): each refused transaction is reported with
// its seqs, code and reason before the durable watermark that covers it, and the watermark
// never moves for refused transactions alone; the receipts the writes returned are the seqs
// reported.
TEST(SyncAuth, RefusalsAreReportedBeforeTheWatermarkThatCoversThem) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  sync::SyncOptions o;
  o.server = server.address();
  o.backoff_min_ms = 10;
  o.token = Token("alice", 3600, {"*"}, {"notes"});
  auto a = OpenReplica(dir.File("a.db"));
  std::vector<std::string> events;
  sync::SyncClient c(a.get(), o);
  c.SetDurableCallback(
      [&](uint64_t through) { events.push_back("durable " + std::to_string(through)); });
  c.SetRefusedCallback([&](uint64_t first, uint64_t last, Code code, const std::string& reason) {
    events.push_back("refused " + std::to_string(first) + ".." + std::to_string(last) + " " +
                     CodeName(code) +
                     (reason.find("writing 'prices'") != std::string::npos ? " (writing prices)"
                                                                           : " " + reason));
  });
  EXPECT_EQ(a->Put("notes", "n1", {{"v", Value::Int(1)}}).value(), 1u);
  WriteBatch two;
  two.Set("prices", "p1", "v", Value::Int(1)).Set("prices", "p1", "w", Value::Int(2));
  EXPECT_EQ(a->Write(two).value(), 3u);
  EXPECT_EQ(a->Put("notes", "n2", {{"v", Value::Int(2)}}).value(), 4u);
  EXPECT_EQ(a->Increment("prices", "p2", "n", 1).value(), 5u);
  ASSERT_TRUE(c.SyncOnce(30000).ok());
  EXPECT_EQ(events, (std::vector<std::string>{"refused 2..3 EPERM (writing prices)",
                                              "refused 5..5 EPERM (writing prices)", "durable 4"}));
  // Refused alone: reported, the watermark stays.
  events.clear();
  EXPECT_EQ(a->Delete("prices", "p1").value(), 6u);
  ASSERT_TRUE(c.SyncOnce(30000).ok());
  EXPECT_EQ(events, std::vector<std::string>{"refused 6..6 EPERM (writing prices)"});
  events.clear();
  EXPECT_EQ(a->Put("notes", "n3", {{"v", Value::Int(3)}}).value(), 7u);
  ASSERT_TRUE(c.SyncOnce(30000).ok());
  EXPECT_EQ(events, std::vector<std::string>{"durable 7"});
  EXPECT_EQ(RejectedOps(a.get()).size(), 4u);  // p1's two sets, the increment, the delete
}

// The Ack that carries a refusal is lost: the client pushes the same ops again and the server,
// which remembers what it refused, reports it again; the ops are recorded and undone once.
TEST(SyncAuth, LostAckOfARefusalReportsItAgain) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  ServerThread server(so);
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 2;  // Welcome, CaughtUp, then the Ack
    return f;
  });
  sync::SyncOptions limited;
  limited.token = Token("alice", 3600, {"*"}, {"notes"});
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("prices", "p", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(a->Put("notes", "n", {{"t", Value::String("ok")}}).ok());
  const std::string via_proxy = "127.0.0.1:" + std::to_string(proxy.port());
  EXPECT_FALSE(SyncOnce(a.get(), via_proxy, limited).ok());
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 2);
  EXPECT_TRUE(a->Get("prices", "p").value().has_value());  // not known to be refused yet
  ASSERT_TRUE(SyncOnce(a.get(), via_proxy, limited).ok());
  EXPECT_FALSE(a->Get("prices", "p").value().has_value());
  EXPECT_EQ(RejectedOps(a.get()).size(), 1u);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
}

// Twelve one-op transactions for a token that may write only "notes": seqs 1, 3, ... 11 (prices)
// are refused, 2, 4, ... 12 (notes) taken.
void WriteRefusedAndTakenInTurn(Replica* a) {
  for (int i = 0; i < 6; i++) {
    ASSERT_TRUE(a->Put("prices", "p" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
    ASSERT_TRUE(a->Put("notes", "n" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
  }
}

// docs/protocol.md "Refused ops": refusals beyond an Ack's budget (here one each) go in further
// Acks, each acknowledging only up to the next one's first refusal, so the client takes none of
// them for accepted, also when a retry after a lost Ack gets them all again.
TEST(SyncAuth, ManyRefusalsComeInSeveralAcks) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  so.max_ack_bytes = 1;
  ServerThread server(so);
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 3;  // Welcome, CaughtUp, the first Ack, cut
    return f;
  });
  sync::SyncOptions limited;
  limited.token = Token("alice", 3600, {"*"}, {"notes"});
  auto a = OpenReplica(dir.File("a.db"));
  WriteRefusedAndTakenInTurn(a.get());
  const std::string via_proxy = "127.0.0.1:" + std::to_string(proxy.port());
  EXPECT_FALSE(SyncOnce(a.get(), via_proxy, limited).ok());
  EXPECT_EQ(proxy.cuts(), 1);
  // The first Ack: seq 1 refused, 2 taken, up to 2 only (one Ack for all: nothing pending).
  EXPECT_EQ(a->GetStatus().value().pending_ops, 10);
  EXPECT_EQ(RejectedOps(a.get()).size(), 1u);
  ASSERT_TRUE(SyncOnce(a.get(), via_proxy, limited).ok());
  EXPECT_EQ(RejectedOps(a.get()).size(), 6u);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
  for (int i = 0; i < 6; i++) {
    EXPECT_FALSE(a->Get("prices", "p" + std::to_string(i)).value().has_value()) << i;
    EXPECT_TRUE(a->Get("notes", "n" + std::to_string(i)).value().has_value()) << i;
  }
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  // Listed: the six of the push, then the five the retry repeats (from its first seq, 3).
  const std::string log = server.log();
  size_t listed = 0;
  for (size_t at = log.find("refused seqs"); at != std::string::npos;
       at = log.find("refused seqs", at + 1)) {
    listed++;
  }
  EXPECT_EQ(listed, 11u) << log;
}

// The same through pipelined pushes (three in flight, all judged before the cut): each retried
// push's Acks repeat the refusals from its first seq, so their receipts go back and forth; the
// durable callback never goes back (fails with each Ack's receipt as it comes: checked), tells
// only the watermarks that moved, each below the refusals told before it, and each refusal is
// told once (docs/c-api.md "Write receipts").
TEST(SyncAuth, DurableReceiptsNeverGoBackAcrossSplitAcks) {
  TempDir dir;
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  so.max_ack_bytes = 1;
  so.max_batch_ops = 4;  // the twelve transactions in three pushes
  ServerThread server(so);
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) {
      f.cut_down_before_frame = 3;  // Welcome, CaughtUp, the first Ack, cut
      // The first Ack held back a while: the server judges the three pushes meanwhile (all
      // sent at the Welcome), else the cut could come before it read the later ones.
      f.stall_down_before_frame = 2;
      f.stall_ms = 500;
    }
    return f;
  });
  sync::SyncOptions o;
  o.server = "127.0.0.1:" + std::to_string(proxy.port());
  o.token = Token("alice", 3600, {"*"}, {"notes"});
  auto a = OpenReplica(dir.File("a.db"));
  WriteRefusedAndTakenInTurn(a.get());
  EXPECT_FALSE(SyncOnce(a.get(), o.server, o).ok());
  EXPECT_EQ(proxy.cuts(), 1);
  // Live: the client stays for every Ack (SyncOnce would end at the first CaughtUp).
  std::mutex mu;
  std::vector<uint64_t> reported, refused_firsts;
  sync::SyncClient c(a.get(), o);
  c.SetDurableCallback([&](uint64_t through) {
    std::lock_guard<std::mutex> lock(mu);
    reported.push_back(through);
  });
  c.SetRefusedCallback([&](uint64_t first, uint64_t, Code, const std::string&) {
    std::lock_guard<std::mutex> lock(mu);
    refused_firsts.push_back(first);
  });
  ASSERT_TRUE(c.Start().ok());
  // The retry's Acks: 5 refusals from seq 3, 3 from seq 7, 1 from seq 11, one an Ack.
  for (int i = 0; i < 1000 && c.status().txns_refused < 9u; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  c.Stop();
  EXPECT_EQ(RejectedOps(a.get()).size(), 6u);
  EXPECT_EQ(a->GetStatus().value().pending_ops, 0);
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
  ASSERT_FALSE(reported.empty());
  for (size_t i = 1; i < reported.size(); i++) {
    EXPECT_GE(reported[i], reported[i - 1]) << "report " << i;
  }
  EXPECT_EQ(c.status().txns_refused, 9u);
  EXPECT_EQ(reported, (std::vector<uint64_t>{4, 6, 8, 10, 12}));
  EXPECT_EQ(refused_firsts, (std::vector<uint64_t>{3, 5, 7, 9, 11}));
}

// docs/crdt-semantics.md "Clock safety". A device whose clock runs a year ahead writes offline; the
// server refuses those ops (ECLOCK) instead of letting them win every conflict for a year; the
// device records and undoes them, winds its clock back, and its later writes are taken and ordered
// with everyone else's, also after a restart offline. Every replica ends in the same state.
TEST(SyncClock, AClockAYearAheadDoesNotWinForever) {
  TempDir dir;
  ServerThread server(Options(dir));  // the system clock, max drift 60 s
  const int64_t year_ms = int64_t{365} * 24 * 3600 * 1000;
  testing::FakeClock ahead(port::WallClockMs() + year_ms);
  ReplicaOptions ro;
  ro.clock = &ahead;
  auto a = std::move(Replica::Open(dir.File("a.db"), ro).value());
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(b->Put("c", "k", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(2)}}).ok());  // stamped a year ahead
  ASSERT_TRUE(a->Increment("c", "k", "n", 1).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  auto rejected = RejectedOps(a.get());
  ASSERT_EQ(rejected.size(), 2u);
  EXPECT_EQ(rejected[0].code, static_cast<int>(Code::kECLOCK));
  EXPECT_NE(rejected[0].reason.find("ahead of the server's clock"), std::string::npos);
  EXPECT_EQ(a->DumpString().value(), R"({"c":{"k":{"v":1}}})");
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));

  // Its next write is stamped with the server's time: taken, and it wins over b's older one.
  ASSERT_TRUE(a->Put("c", "k", {{"v", Value::Int(3)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  EXPECT_EQ(RejectedOps(a.get()).size(), 2u);
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(b->DumpString().value(), R"({"c":{"k":{"v":3}}})");
  // b's later write wins in turn: a's clock no longer outranks everyone.
  ASSERT_TRUE(b->Put("c", "k", {{"v", Value::Int(4)}}).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  // Restarted offline, a keeps the correction: a write made then is taken too.
  a.reset();
  a = std::move(Replica::Open(dir.File("a.db"), ro).value());
  ASSERT_TRUE(a->Put("c", "j", {{"v", Value::Int(5)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), server.address()).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(RejectedOps(a.get()).size(), 2u);
  EXPECT_EQ(a->DumpString().value(), R"({"c":{"j":{"v":5},"k":{"v":4}}})");
  EXPECT_EQ(b->Digest().value(), a->Digest().value());
  EXPECT_EQ(a->Digest().value(), ServerDigest(dir));
}

// Refusals at random: replica 0 may not write "closed" or "counters", replica 1's clock
// jumps a year ahead now and then; all three write random transactions across collections
// (sets, deletes, increments) and sync at random moments. At the end every replica equals the
// server, and each counter holds exactly the sum of the increments that were not refused.
TEST(SyncAuth, RandomRefusalsConverge) {
  const int64_t year_ms = int64_t{365} * 24 * 3600 * 1000;
  for (uint32_t seed = 1; seed <= 4; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    TempDir dir;
    server::ServerOptions so = Options(dir);
    so.token_secret = kSecret;
    ServerThread server(so);
    std::vector<sync::SyncOptions> opts(3);
    opts[0].token = Token("limited", 3600, {"*"}, {"open"});
    opts[1].token = Token("drifting", 3600);
    opts[2].token = Token("plain", 3600);
    testing::FakeClock drifting(port::WallClockMs());
    ReplicaOptions ro;
    ro.clock = &drifting;
    std::vector<std::unique_ptr<Replica>> rs;
    rs.push_back(OpenReplica(dir.File("r0")));
    rs.push_back(std::move(Replica::Open(dir.File("r1"), ro).value()));
    rs.push_back(OpenReplica(dir.File("r2")));
    std::mt19937 rng(seed);
    std::map<std::string, int64_t> sums;  // every increment written
    const char* colls[] = {"open", "closed"};
    for (int step = 0; step < 250; step++) {
      const size_t who = rng() % 3;
      Replica* r = rs[who].get();
      const std::string key = "k" + std::to_string(rng() % 6);
      const std::string coll = colls[rng() % 2];
      switch (rng() % 8) {
        case 0:
        case 1:
          ASSERT_TRUE(r->Put(coll, key, {{"v", Value::Int(step)}}).ok());
          break;
        case 2:
          ASSERT_TRUE(r->Delete(coll, key).ok());
          break;
        case 3: {
          int64_t d = static_cast<int64_t>(rng() % 100) - 30;
          ASSERT_TRUE(r->Increment("counters", key, "n", d).ok());
          sums[key] += d;
          break;
        }
        case 4: {  // one transaction over several collections
          int64_t d = static_cast<int64_t>(rng() % 10) + 1;
          WriteBatch b;
          b.Set("open", key, "w", Value::Int(step)).Set(coll, key, "v", Value::Int(-step));
          b.Increment("counters", key, "n", d);
          ASSERT_TRUE(r->Write(b).ok());
          sums[key] += d;
          break;
        }
        case 5:
          if (rng() % 4 == 0) drifting.Advance(year_ms);  // replica 1's clock jumps ahead
          break;
        default:
          ASSERT_TRUE(SyncOnce(r, server.address(), opts[who]).ok());
      }
    }
    for (int round = 0; round < 2; round++) {
      for (size_t i = 0; i < rs.size(); i++) {
        ASSERT_TRUE(SyncOnce(rs[i].get(), server.address(), opts[i]).ok());
      }
    }
    const std::string want = ServerDigest(dir);
    for (auto& [key, sum] : sums) {
      for (auto& r : rs) {
        for (const auto& rej : RejectedOps(r.get())) {
          if (rej.op.collection == "counters" && rej.op.key == key) sum -= rej.op.delta;
        }
      }
    }
    for (auto& r : rs) {
      EXPECT_EQ(r->Digest().value(), want);
      EXPECT_EQ(r->GetStatus().value().pending_ops, 0);
      for (const auto& [key, sum] : sums) EXPECT_EQ(Counter(r.get(), "counters", key, "n"), sum);
    }
    EXPECT_GT(RejectedOps(rs[0].get()).size(), 0u);  // both kinds of refusal happened
    auto drifted = RejectedOps(rs[1].get());
    ASSERT_GT(drifted.size(), 0u);
    EXPECT_EQ(drifted[0].code, static_cast<int>(Code::kECLOCK));
  }
}

// A device clock: the machine's, moved by an offset that the test changes from any thread.
class OffsetClock final : public Clock {
 public:
  explicit OffsetClock(int64_t offset_ms) : offset_ms_(offset_ms) {}
  int64_t NowMs() override { return port::WallClockMs() + offset_ms_.load(); }
  void Jump(int64_t ms) { offset_ms_ += ms; }

 private:
  std::atomic<int64_t> offset_ms_;
};

// The clock matrix (docs/RELIABILITY.md, "Clocks"): six devices whose clocks run a year, a day
// and an hour behind the server's, right, an hour and a year ahead, and jump both ways (a year,
// a day, a minute) between sessions and, for the device that syncs live, during one, write the
// same documents and counters. At the end every replica equals the server and each counter
// holds exactly the increments that were not refused (ECLOCK). And no clock wins forever: each
// device in turn syncs and then writes the same field, and its write is the one everybody
// ends with, whatever its clock said before.
TEST(SyncClock, ClockMatrixConverges) {
  constexpr int64_t kMinute = 60'000, kHour = 60 * kMinute, kDay = 24 * kHour,
                    kYear = 365 * kDay;
  const int64_t start[] = {-kYear, -kDay, -kHour, 0, kHour, kYear};
  const int64_t jumps[] = {-kYear, -kDay, -kMinute, kMinute, kDay, kYear};
  constexpr size_t kDevices = 6, kLive = 5;
  for (uint32_t seed = 1; seed <= 3; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    TempDir dir;
    ServerThread server(Options(dir));  // the system clock, max drift 60 s
    std::vector<std::unique_ptr<OffsetClock>> clocks;
    std::vector<std::unique_ptr<Replica>> rs;
    for (size_t i = 0; i < kDevices; i++) {
      clocks.push_back(std::make_unique<OffsetClock>(start[i]));
      ReplicaOptions ro;
      ro.clock = clocks.back().get();
      auto r = Replica::Open(dir.File("r" + std::to_string(i)), ro);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      rs.push_back(std::move(r).value());
    }
    sync::SyncOptions lo;
    lo.server = server.address();
    lo.backoff_min_ms = 10;
    auto live = std::make_unique<sync::SyncClient>(rs[kLive].get(), lo);
    ASSERT_TRUE(live->Start().ok());
    std::mt19937 rng(seed);
    std::map<std::string, int64_t> sums;
    int jumped = 0;
    for (int step = 0; step < 150; step++) {
      const size_t who = rng() % kDevices;
      Replica* r = rs[who].get();
      const std::string key = "k" + std::to_string(rng() % 3);
      switch (rng() % 6) {
        case 0:
        case 1:
          ASSERT_TRUE(r->Put("docs", key, {{"v", Value::Int(step)},
                                           {"by", Value::Int(static_cast<int64_t>(who))}}).ok());
          break;
        case 2: {
          const int64_t d = static_cast<int64_t>(rng() % 20) - 5;
          ASSERT_TRUE(r->Increment("counters", key, "n", d).ok());
          sums[key] += d;
          break;
        }
        case 3:
          clocks[who]->Jump(jumps[rng() % 6]);
          jumped++;
          break;
        default:
          if (who != kLive) {
            ASSERT_TRUE(SyncOnce(r, server.address()).ok());
          }
      }
    }
    live->Stop();
    live.reset();
    for (int round = 0; round < 2; round++) {
      for (auto& r : rs) ASSERT_TRUE(SyncOnce(r.get(), server.address()).ok());
    }
    EXPECT_GT(jumped, 10);
    const std::string want = ServerDigest(dir);
    size_t refused = 0;
    for (auto& r : rs) {
      for (const auto& rej : RejectedOps(r.get())) {
        EXPECT_EQ(rej.code, static_cast<int>(Code::kECLOCK)) << rej.reason;
        if (rej.op.kind == OpKind::kIncrement) sums[rej.op.key] -= rej.op.delta;
        refused++;
      }
    }
    EXPECT_GT(refused, 0u);  // the clocks ahead were caught
    // Nothing kept is stamped beyond the server's clock plus the drift it allows: a minute
    // from now, any new write outranks every op there is.
    const int64_t bound = port::WallClockMs() + 60'000;
    for (auto& r : rs) {
      ASSERT_TRUE(r->Log([&](const Op& op) {
                     EXPECT_LE(static_cast<int64_t>(HlcPhysical(op.id.hlc)), bound)
                         << op.id.origin.Hex() << ":" << op.id.seq;
                     return Status::OK();
                   }).ok());
    }
    for (auto& r : rs) {
      EXPECT_EQ(r->Digest().value(), want);
      EXPECT_EQ(r->GetStatus().value().pending_ops, 0);
      for (const auto& [key, sum] : sums) EXPECT_EQ(Counter(r.get(), "counters", key, "n"), sum);
    }
    // No clock wins forever: the last device to write (having synced first) is what all see.
    for (size_t i = 0; i < kDevices; i++) {
      SCOPED_TRACE("final writer " + std::to_string(i));
      clocks[i]->Jump(jumps[rng() % 6]);  // whatever its clock does now
      const size_t refused_before = RejectedOps(rs[i].get()).size();
      ASSERT_TRUE(SyncOnce(rs[i].get(), server.address()).ok());
      ASSERT_TRUE(rs[i]->Put("docs", "last", {{"by", Value::Int(static_cast<int64_t>(i))}}).ok());
      ASSERT_TRUE(SyncOnce(rs[i].get(), server.address()).ok());
      EXPECT_EQ(RejectedOps(rs[i].get()).size(), refused_before);
      for (auto& r : rs) {
        ASSERT_TRUE(SyncOnce(r.get(), server.address()).ok());
        auto doc = r->Get("docs", "last").value();
        ASSERT_TRUE(doc.has_value());
        EXPECT_EQ(doc->at("by").as_int(), static_cast<int64_t>(i));
      }
    }
  }
}

// A client that pushes ops of another origin is refused and nothing is applied.
TEST(SyncAuth, ForgedOriginIsRefused) {
  TempDir dir;
  ServerThread server(Options(dir));
  const std::string before = ServerDigest(dir);
  int fd = Connect(server.port());
  std::string bytes;
  {
    flatbuffers::FlatBufferBuilder fbb;
    ReplicaId me;
    me.bytes.fill(1);
    wire::ReplicaId rid = protocol::ToWire(me);
    auto hello = wire::CreateHello(fbb, protocol::kProtocolVersion, &rid);
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::Hello, hello.Union()), wire::FrameIdentifier());
    protocol::AppendFrame(fbb, &bytes);
  }
  {
    protocol::BatchEncoder enc;
    Op op;
    op.id.origin.bytes.fill(2);  // somebody else
    op.id.seq = 1;
    op.id.hlc = MakeHlc(1700000000000, 0);
    op.kind = OpKind::kSet;
    op.collection = "c";
    op.key = "k";
    op.field = "v";
    op.value = Value::Int(666);
    enc.Add(op);
    enc.FinishFrame(&bytes, 0, 1);
  }
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) in.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_NE(in.find("only its own ops"), std::string::npos);
  EXPECT_EQ(ServerDigest(dir), before);
}

}  // namespace
}  // namespace cairn
