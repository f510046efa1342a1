// Telemetry streams through a real server on 127.0.0.1 (docs/protocol.md "Streams"): upload in
// order into a table per stream, no loss and no duplicate when connections are cut and acks lost
// (fault proxy), priorities, refusals that keep the records, live upload, documents and streams in
// one session.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "auth/jwt.h"
#include "port/port.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "support/fault_proxy.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"
#include "sync/sync_client.h"

namespace cairn {
namespace {

using testing::FaultProxy;
using testing::Faults;
using testing::ServerThread;
using testing::OpenReplica;
using testing::Options;
using testing::SyncOnce;
using testing::TempDir;

// One column of every row of an SQL query on the server's streams file, as text; with a
// PostgreSQL store (the ".pg" variants), on its database.
std::vector<std::string> ServerRows(const TempDir& dir, const std::string& sql) {
  std::vector<std::string> out;
  if (testing::TestOnPostgres()) {
#ifdef CAIRN_HAVE_POSTGRESQL
    auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("server.db")));
    if (!db.ok()) return {"error: " + db.status().ToString()};
    auto rows = db.value()->Query(sql);
    if (!rows.ok()) return {"error: " + rows.status().ToString()};
    for (int i = 0; i < rows->size(); i++) {
      out.emplace_back(rows->IsNull(i, 0) ? "NULL" : std::string(rows->Bytes(i, 0)));
    }
#endif
    return out;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(dir.File("server.db.streams").c_str(), &db, SQLITE_OPEN_READONLY,
                      nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return out;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      out.emplace_back(t ? reinterpret_cast<const char*>(t) : "NULL");
    }
  } else {
    out.push_back(std::string("error: ") + sqlite3_errmsg(db));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

std::string ServerValue(const TempDir& dir, const std::string& sql) {
  auto rows = ServerRows(dir, sql);
  return rows.empty() ? "" : rows[0];
}

// The server's stream tables among `names` ('a', 'b'), counted; a stream table's columns.
std::string CountTables(const TempDir& dir, const std::string& names) {
  return ServerValue(dir, testing::TestOnPostgres()
                              ? "SELECT count(*) FROM information_schema.tables WHERE "
                                "table_schema = current_schema() AND table_name IN (" + names + ")"
                              : "SELECT count(*) FROM sqlite_schema WHERE name IN (" + names + ")");
}
std::vector<std::string> Columns(const TempDir& dir, const std::string& stream) {
  return ServerRows(dir, testing::TestOnPostgres()
                             ? "SELECT column_name FROM information_schema.columns WHERE "
                               "table_schema = current_schema() AND table_name = '" + stream +
                               "' ORDER BY ordinal_position"
                             : "SELECT name FROM pragma_table_info('" + stream + "')");
}

// Appends records n = from..to to `stream` in batches of `batch`.
void AppendRange(Replica* r, const std::string& stream, int64_t from, int64_t to,
                 int64_t batch = 100) {
  for (int64_t start = from; start <= to; start += batch) {
    RecordBatch b;
    for (int64_t n = start; n <= std::min(to, start + batch - 1); n++) {
      ASSERT_TRUE(b.Add({{"n", Value::Int(n)},
                         {"temp", Value::Double(static_cast<double>(n) / 4)},
                         {"dev", Value::String("s" + std::to_string(n % 7))}},
                        1'700'000'000'000 + n)
                      .ok());
    }
    auto res = r->Append(stream, b);
    ASSERT_TRUE(res.ok()) << res.status().ToString();
  }
}

// The stream's table holds records 1..n of `origin` exactly once, each with its fields, seq = n.
void ExpectExactly(const TempDir& dir, const std::string& stream, const ReplicaId& origin,
                   int64_t n) {
  const std::string where = " FROM " + stream + " WHERE origin = '" + origin.Hex() + "'";
  EXPECT_EQ(ServerValue(dir, "SELECT count(*)" + where), std::to_string(n));
  EXPECT_EQ(ServerValue(dir, "SELECT count(DISTINCT n)" + where), std::to_string(n));
  EXPECT_EQ(ServerValue(dir, "SELECT count(*)" + where + " AND seq = n AND temp = n / 4.0 AND "
                                                          "ts_ms = 1700000000000 + n"),
            std::to_string(n));
  if (n > 0) {
    EXPECT_EQ(ServerValue(dir, "SELECT min(n) || '..' || max(n)" + where),
              "1.." + std::to_string(n));
  }
}

TEST(StreamSync, UploadsInOrderIntoATablePerStreamAndEmptiesTheQueue) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  AppendRange(a.get(), "climate", 1, 2500);
  AppendRange(a.get(), "power", 1, 300);
  AppendRange(b.get(), "climate", 1, 700);
  ASSERT_TRUE(a->Put("config", "gw", {{"rate_ms", Value::Int(1000)}}).ok());
  sync::SyncOptions o;
  o.max_batch_ops = 128;  // many batches, several in flight
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), o).ok());
  ASSERT_TRUE(SyncOnce(b.get(), server.address(), o).ok());
  ExpectExactly(dir, "climate", a->id(), 2500);
  ExpectExactly(dir, "power", a->id(), 300);
  ExpectExactly(dir, "climate", b->id(), 700);
  // The columns: the fixed ones, then the fields as they appeared.
  EXPECT_EQ(Columns(dir, "climate"),
            (std::vector<std::string>{"origin", "seq", "ts_ms", "received_ms", "dev", "n",
                                      "temp"}));
  EXPECT_EQ(ServerValue(dir, "SELECT count(*) FROM climate WHERE received_ms < ts_ms"), "0");
  for (Replica* r : {a.get(), b.get()}) {
    EXPECT_EQ(SyncAccess(*r).QueuedRecords().value(), 0u);
    const std::vector<StreamInfo> streams = r->Streams().value();  // (not a temporary's member)
    for (const StreamInfo& s : streams) {
      EXPECT_EQ(s.uploaded, s.last_seq) << s.name;
      EXPECT_EQ(s.bytes, 0u);
    }
  }
  // The document went the usual way in the same session.
  ASSERT_TRUE(SyncOnce(b.get(), server.address()).ok());
  EXPECT_EQ(b->Get("config", "gw").value()->at("rate_ms").as_int(), 1000);
  // More records later: seqs go on where they were.
  AppendRange(a.get(), "climate", 2501, 2600);
  ASSERT_TRUE(SyncOnce(a.get(), server.address(), o).ok());
  ExpectExactly(dir, "climate", a->id(), 2600);
}

// Cuts at random byte offsets in both directions (a cut after the server stored a batch and
// before its ack arrived loses the ack; the batch is sent again), while the gateway keeps
// appending between attempts: in the end every record is on the server exactly once.
TEST(StreamSync, NoLossAndNoDuplicateWhenConnectionsAreCut) {
  TempDir dir;
  ServerThread server(Options(dir));
  std::mt19937 rng(7);
  // The proxy's faults come from its own generator: it runs on the proxy's thread.
  FaultProxy proxy(server.port(), [rng = std::mt19937(1007)](int) mutable {
    Faults f;
    switch (rng() % 4) {
      case 0:
        f.cut_up_after = 200 + rng() % 20000;
        break;
      case 1:
        f.cut_down_after = rng() % 400;
        break;
      case 2:
        f.cut_down_before_frame = 1 + static_cast<uint32_t>(rng() % 6);
        break;
      default:
        break;
    }
    return f;
  });
  const std::string via = "127.0.0.1:" + std::to_string(proxy.port());
  auto gw = OpenReplica(dir.File("gw.db"));
  sync::SyncOptions o;
  o.max_batch_ops = 50;
  o.window = 4;
  int64_t appended = 0;
  int failures = 0;
  for (int round = 0; round < 40; round++) {
    const int64_t more = 1 + static_cast<int64_t>(rng() % 300);
    AppendRange(gw.get(), "readings", appended + 1, appended + more, 37);
    appended += more;
    if (!SyncOnce(gw.get(), via, o).ok()) failures++;
  }
  for (int attempt = 0; SyncOnce(gw.get(), via, o).code() != Code::kOK; attempt++) {
    failures++;
    ASSERT_LT(attempt, 100) << "never got through";
  }
  EXPECT_GT(proxy.cuts(), 10);
  EXPECT_GT(failures, 10);
  ExpectExactly(dir, "readings", gw->id(), appended);
  EXPECT_EQ(SyncAccess(*gw).QueuedRecords().value(), 0u);
  auto info = gw->Streams().value();
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0].uploaded, static_cast<uint64_t>(appended));
  EXPECT_EQ(info[0].dropped + info[0].rejected, 0u);
}

// When the uplink carries only part of the queue, the higher priority goes first.
TEST(StreamSync, HigherPriorityStreamsUploadFirst) {
  TempDir dir;
  ServerThread server(Options(dir));
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_up_after = 12000;  // a few batches of the first stream get through
    return f;
  });
  auto gw = OpenReplica(dir.File("gw.db"));
  StreamConfig high;
  high.priority = 5;
  StreamConfig low;
  low.priority = -1;
  ASSERT_TRUE(gw->ConfigureStream("alarms", high).ok());
  ASSERT_TRUE(gw->ConfigureStream("bulk", low).ok());
  // Names sort "alarms" < "bulk" < "climate": priority, not the name, must decide.
  ASSERT_TRUE(gw->ConfigureStream("alarms", low).ok());
  ASSERT_TRUE(gw->ConfigureStream("climate", high).ok());
  AppendRange(gw.get(), "alarms", 1, 2000);
  AppendRange(gw.get(), "bulk", 1, 2000);
  AppendRange(gw.get(), "climate", 1, 2000);
  sync::SyncOptions o;
  o.max_batch_ops = 100;
  o.window = 1;
  const std::string via = "127.0.0.1:" + std::to_string(proxy.port());
  EXPECT_FALSE(SyncOnce(gw.get(), via, o).ok());
  const int64_t got = std::stoll(ServerValue(dir, "SELECT count(*) FROM climate"));
  EXPECT_GT(got, 0);
  EXPECT_LT(got, 2000);
  // Nothing of the lower-priority streams yet (their tables do not even exist).
  EXPECT_EQ(CountTables(dir, "'alarms', 'bulk'"), "0");
  ASSERT_TRUE(SyncOnce(gw.get(), via, o).ok());
  ExpectExactly(dir, "climate", gw->id(), 2000);
  ExpectExactly(dir, "alarms", gw->id(), 2000);
  ExpectExactly(dir, "bulk", gw->id(), 2000);
}

// A stream the token may not write: the server refuses its batches, the records stay queued,
// the session reports it (SyncOnce fails with EPERM once the rest is done) and the documents
// still sync; with a token that allows it, the records go.
TEST(StreamSync, ARefusedStreamKeepsItsRecordsAndIsReported) {
  TempDir dir;
  const std::string secret(32, 's');
  server::ServerOptions so = Options(dir);
  so.token_secret = secret;
  ServerThread server(so);
  auto gw = OpenReplica(dir.File("gw.db"));
  AppendRange(gw.get(), "readings", 1, 250);
  AppendRange(gw.get(), "status", 1, 10);
  ASSERT_TRUE(gw->Put("docs", "d", {{"v", Value::Int(1)}}).ok());
  auth::Claims claims;
  claims.subject = "gw";
  claims.expires_s = port::WallClockMs() / 1000 + 86400;
  claims.read = {"*"};
  claims.write = {"docs", "status"};
  sync::SyncOptions o;
  o.token = auth::MintToken(claims, secret);
  o.max_batch_ops = 100;
  Status s = SyncOnce(gw.get(), server.address(), o);
  EXPECT_EQ(s.code(), Code::kEPERM) << s.ToString();
  EXPECT_NE(s.message().find("stream 'readings'"), std::string::npos) << s.ToString();
  EXPECT_EQ(gw->PendingOps().value(), 0);  // the document went
  EXPECT_EQ(SyncAccess(*gw).QueuedRecords().value(),
            250u);  // the refused records stayed, all of them
  ExpectExactly(dir, "status", gw->id(), 10);
  EXPECT_EQ(CountTables(dir, "'readings'"), "0");
  claims.write = {"*"};
  o.token = auth::MintToken(claims, secret);
  ASSERT_TRUE(SyncOnce(gw.get(), server.address(), o).ok());
  ExpectExactly(dir, "readings", gw->id(), 250);
  EXPECT_EQ(SyncAccess(*gw).QueuedRecords().value(), 0u);
}

// An app appending faster than the uplink carries: a SyncOnce uploads what was queued when it
// began and returns, instead of chasing the queue forever.
TEST(StreamSync, SyncOnceFinishesWhileTheAppKeepsAppending) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto gw = OpenReplica(dir.File("gw.db"));
  AppendRange(gw.get(), "busy", 1, 300);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> appended{300};
  std::thread app([&] {
    while (!stop) {
      const int64_t n = appended;
      AppendRange(gw.get(), "busy", n + 1, n + 200, 200);
      appended = n + 200;
    }
  });
  sync::SyncOptions o;
  o.max_batch_ops = 10;  // a slow uplink: 10 records per round trip
  o.window = 1;
  Status s = SyncOnce(gw.get(), server.address(), o);
  stop = true;
  app.join();
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Everything queued when it began is there, in order, once.
  EXPECT_EQ(ServerValue(dir, "SELECT count(*) FROM busy WHERE n <= 300"), "300");
  EXPECT_EQ(ServerValue(dir, "SELECT count(*) - count(DISTINCT n) FROM busy"), "0");
  // And the rest goes with the next exchange.
  ASSERT_TRUE(SyncOnce(gw.get(), server.address()).ok());
  ExpectExactly(dir, "busy", gw->id(), appended);
}

// Live sync uploads what is appended while it runs, and its status counts the queue.
TEST(StreamSync, LiveSyncUploadsAppendsAsTheyCome) {
  TempDir dir;
  ServerThread server(Options(dir));
  auto gw = OpenReplica(dir.File("gw.db"));
  sync::SyncOptions o;
  o.server = server.address();
  o.backoff_min_ms = 10;
  sync::SyncClient client(gw.get(), o);
  ASSERT_TRUE(client.Start().ok());
  for (int64_t n = 1; n <= 300; n += 30) {
    AppendRange(gw.get(), "live", n, n + 29, 10);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline &&
         (client.status().pending_records > 0 || client.status().records_uploaded < 300)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(client.status().pending_records, 0u);
  EXPECT_EQ(client.status().records_uploaded, 300u);
  client.Stop();
  ExpectExactly(dir, "live", gw->id(), 300);
}

}  // namespace
}  // namespace cairn
