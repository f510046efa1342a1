// Several cairn-server nodes on one PostgreSQL database (docs/scale-out.md): replicas synced
// through different nodes converge, a write reaches live sessions on every node, a cursor
// issued by one node is valid on another, concurrent pushes on two nodes are each logged once
// under cursors without gaps, and when a node is killed its clients carry on through another
// with nothing lost or duplicated. Runs only against PostgreSQL (CAIRN_TEST_POSTGRES: the ctest
// fixture "postgres" starts one).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <regex>
#include <thread>
#include <vector>

#include "base/strings.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "server/pg/pg.h"
#include "server/sync_server.h"
#include "support/fault_proxy.h"
#include "support/server_process.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"
#include "sync/sync_client.h"

namespace cairn {
namespace {

using testing::FaultProxy;
using testing::Faults;
using testing::OpenReplica;
using testing::ServerProcess;
using testing::ServerThread;
using testing::SyncOnce;
using testing::TempDir;

// Node `n` of the cluster whose database is the schema of `dir`: its own copy file.
server::ServerOptions Node(const TempDir& dir, int n) {
  server::ServerOptions o = testing::Options(dir);
  o.db_path = dir.File("node" + std::to_string(n) + ".db");
  o.store.url = testing::TestStoreUrl(dir.File("cluster"));
  return o;
}

// Polls `done` every 10 ms for up to `ms`.
bool WaitFor(const std::function<bool()>& done, int ms = 30000) {
  for (int waited = 0; waited < ms; waited += 10) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

std::string Digest(Replica* r) { return r->Digest().value(); }

// The database's log, as PostgreSQL has it: entries, lowest and highest cursor, ops.
struct LogShape {
  int64_t entries = -1, min_cursor = -1, max_cursor = -1, ops = -1;
};
LogShape ReadLogShape(const TempDir& dir) {
  LogShape shape;
  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  if (!db.ok()) return shape;
  auto rows = db.value()->Exec(
      "SELECT count(*)::bigint, coalesce(min(cursor), 0), coalesce(max(cursor), 0), "
      "coalesce(sum(op_count), 0)::bigint FROM cairn_log");
  EXPECT_TRUE(rows.ok()) << rows.status().ToString();
  if (!rows.ok()) return shape;
  shape.entries = rows->Int(0, 0);
  shape.min_cursor = rows->Int(0, 1);
  shape.max_cursor = rows->Int(0, 2);
  shape.ops = rows->Int(0, 3);
  return shape;
}

class MultiNode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::TestOnPostgres()) GTEST_SKIP() << "needs CAIRN_TEST_POSTGRES";
  }
};

TEST_F(MultiNode, ReplicasOnDifferentNodesConverge) {
  TempDir dir;
  ServerThread n1(Node(dir, 1)), n2(Node(dir, 2));
  const std::string nodes[2] = {n1.address(), n2.address()};
  std::vector<std::unique_ptr<Replica>> replicas;
  for (int i = 0; i < 4; i++) replicas.push_back(OpenReplica(dir.File("r" + std::to_string(i))));
  std::mt19937 rng(8);
  int64_t increments = 0;
  for (int round = 0; round < 6; round++) {
    for (size_t i = 0; i < replicas.size(); i++) {
      Replica* r = replicas[i].get();
      for (int k = 0; k < 20; k++) {
        const std::string key = "k" + std::to_string(rng() % 12);
        switch (rng() % 4) {
          case 0:
            ASSERT_TRUE(r->Delete("docs", key).ok());
            break;
          case 1:
            ASSERT_TRUE(r->Increment("counters", "c", "n", 1).ok());
            increments++;
            break;
          default:
            ASSERT_TRUE(r->Put("docs", key, {{"v", Value::Int(static_cast<int64_t>(rng() % 100))},
                                             {"by", Value::String("r" + std::to_string(i))}})
                            .ok());
        }
      }
      // Replicas 0 and 1 on node 1, 2 and 3 on node 2; now and then through the other node.
      const int node = static_cast<int>((i / 2 + (round == 3 ? 1 : 0)) % 2);
      Status st = SyncOnce(r, nodes[node]);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
  }
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < replicas.size(); i++) {
      ASSERT_TRUE(SyncOnce(replicas[i].get(), nodes[i / 2]).ok());
    }
  }
  const std::string want = Digest(replicas[0].get());
  for (auto& r : replicas) EXPECT_EQ(Digest(r.get()), want);
  auto doc = replicas[3]->Get("counters", "c").value();
  ASSERT_TRUE(doc.has_value());
  EXPECT_EQ(doc->at("n").as_int(), increments);
  // Both nodes' copies hold the same state.
  for (int n = 1; n <= 2; n++) {
    ReplicaOptions ro;
    ro.read_only = true;
    auto copy = Replica::Open(dir.File("node" + std::to_string(n) + ".db"), ro);
    ASSERT_TRUE(copy.ok()) << copy.status().ToString();
    EXPECT_EQ(Digest(copy.value().get()), want) << "node " << n;
  }
  const LogShape log = ReadLogShape(dir);
  EXPECT_EQ(log.min_cursor, 1);
  EXPECT_EQ(log.max_cursor, log.entries);
}

// The SQL tables of the documents (docs/backend.md "SQL tables"): `collection`'s rows, each
// field as PostgreSQL prints it (absent for NULL), with the column's type, by key.
struct SqlRow {
  std::map<std::string, std::pair<std::string, std::string>> fields;  // name -> (type, text)
};
std::map<std::string, SqlRow> SqlTable(server::pg::Conn* db, const std::string& collection) {
  std::map<std::string, SqlRow> out;
  auto schema = db->Query("SELECT current_schema()");
  EXPECT_TRUE(schema.ok());
  if (!schema.ok()) return out;
  const std::string data = std::string(schema->Bytes(0, 0)) + "_data";
  auto cols = db->Exec(
      "SELECT column_name::text, data_type::text FROM information_schema.columns "
      "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
      {server::pg::Param::Text(data), server::pg::Param::Text(collection)});
  EXPECT_TRUE(cols.ok()) << cols.status().ToString();
  if (!cols.ok() || cols->size() == 0) return out;
  std::vector<std::pair<std::string, std::string>> columns;
  std::string select = "SELECT ";
  for (int i = 0; i < cols->size(); i++) {
    columns.emplace_back(cols->Bytes(i, 0), cols->Bytes(i, 1));
    select += std::string(i ? ", " : "") + QuoteIdent(columns.back().first) + "::text";
  }
  auto rows = db->Query(select + " FROM " + QuoteIdent(data) + "." + QuoteIdent(collection));
  EXPECT_TRUE(rows.ok()) << rows.status().ToString();
  for (int r = 0; rows.ok() && r < rows->size(); r++) {
    SqlRow row;
    std::string key;
    for (size_t c = 0; c < columns.size(); c++) {
      if (rows->IsNull(r, static_cast<int>(c))) continue;
      const std::string text(rows->Bytes(r, static_cast<int>(c)));
      if (columns[c].first == "key") {
        key = text;
      } else if (columns[c].first != "cairn_cursor") {
        row.fields[columns[c].first] = {columns[c].second, text};
      }
    }
    out[key] = row;
  }
  return out;
}

// Whether PostgreSQL's text of a column of type `type` shows `v` (docs/backend.md "SQL
// tables": the column types and how a widened column holds each value).
bool SqlShows(const std::string& type, const std::string& text, const Value& v) {
  switch (v.type()) {
    case ValueType::kNull:
      return false;  // (a NULL cell is absent)
    case ValueType::kBool:
      return text ==
             (type == "boolean" ? (v.as_bool() ? "t" : "f") : (v.as_bool() ? "true" : "false"));
    case ValueType::kInt:
      if (type == "double precision") return std::stod(text) == static_cast<double>(v.as_int());
      return text == std::to_string(v.as_int());
    case ValueType::kDouble:
      return std::stod(text) == v.as_double();
    case ValueType::kString:
      return text == v.as_string();
    case ValueType::kBytes:
      return text == (type == "bytea" ? "\\x" : "") + HexEncode(v.as_string());
  }
  return false;
}

// Expects the SQL tables of `collections` to show `replica`'s documents k0..k9 (every field
// in its column, a row per visible document) at the log's head.
void ExpectTablesShow(server::pg::Conn* db, Replica* replica,
                      const std::vector<std::string>& collections, const char* when) {
  for (const std::string& coll : collections) {
    const auto table = SqlTable(db, coll);
    size_t visible = 0;
    for (int k = 0; k < 10; k++) {
      const std::string key = "k" + std::to_string(k);
      auto doc = replica->Get(coll, key);
      ASSERT_TRUE(doc.ok());
      auto row = table.find(key);
      if (!doc->has_value()) {
        EXPECT_TRUE(row == table.end()) << when << ": " << coll << "/" << key << " is deleted";
        continue;
      }
      visible++;
      ASSERT_TRUE(row != table.end()) << when << ": " << coll << "/" << key;
      size_t non_null = 0;
      for (const auto& [field, v] : **doc) {
        if (v.type() == ValueType::kNull) continue;
        non_null++;
        auto cell = row->second.fields.find(field);
        ASSERT_TRUE(cell != row->second.fields.end())
            << when << ": " << coll << "/" << key << "." << field;
        Value shown = v;
        if (v.type() == ValueType::kString) {  // (U+0000 shows as U+FFFD)
          std::string s = v.as_string();
          for (size_t at; (at = s.find('\0')) != std::string::npos;)
            s.replace(at, 1, "\xEF\xBF\xBD");
          shown = Value::String(s);
        }
        EXPECT_TRUE(SqlShows(cell->second.first, cell->second.second, shown))
            << when << ": " << coll << "/" << key << "." << field << " is " << cell->second.second
            << " (" << cell->second.first << ")";
      }
      EXPECT_EQ(row->second.fields.size(), non_null) << when << ": " << coll << "/" << key;
    }
    EXPECT_EQ(table.size(), visible) << when << ": " << coll;
  }
  auto meta = db->Query("SELECT head = data_cursor FROM cairn_meta");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->Bytes(0, 0), "t") << when;
}

// The tables equal the documents after random writes of every value type (columns made and
// widened) through two nodes, deletes and revivals included; and a node that starts on a
// database whose tables are behind its log (written by an earlier version) brings them up
// to it: from the log when its copy's log reaches back, else rewritten whole.
TEST_F(MultiNode, SqlTablesShowTheDocumentsAfterRandomWritesThroughSeveralNodes) {
  TempDir dir;
  auto node = [&](int n, uint64_t keep_log) {
    server::ServerOptions o = Node(dir, n);
    o.store.keep_log_ops = keep_log;
    return o;
  };
  ServerThread n1(node(1, 1000000)), n2(node(2, 1000000));
  const std::string nodes[2] = {n1.address(), n2.address()};
  std::vector<std::unique_ptr<Replica>> replicas;
  for (int i = 0; i < 3; i++) replicas.push_back(OpenReplica(dir.File("r" + std::to_string(i))));
  std::mt19937 rng(11);
  auto value = [&]() {
    switch (rng() % 6) {
      case 0:
        return Value::Int(static_cast<int64_t>(rng() % 1000) - 500);
      case 1:
        return Value::Double(static_cast<double>(rng() % 1000) / 8);
      case 2:
        return Value::String("s" + std::to_string(rng() % 50) +
                             (rng() % 10 == 0 ? std::string("\0nul", 4) : std::string()) +
                             (rng() % 5 == 0 ? "\ttab \\ back\nline\r\"q\"" : ""));
      case 3:
        return Value::Bool(rng() % 2 == 0);
      case 4:
        return Value::Bytes(std::string("\x01\xff", 2) + std::to_string(rng() % 9));
      default:
        return Value::Null();
    }
  };
  const std::vector<std::string> collections = {"tasks", "readings"};
  for (int round = 0; round < 8; round++) {
    for (size_t i = 0; i < replicas.size(); i++) {
      Replica* r = replicas[i].get();
      for (int k = 0; k < 15; k++) {
        const std::string& coll = collections[rng() % 2];
        const std::string key = "k" + std::to_string(rng() % 10);
        switch (rng() % 6) {
          case 0:
            ASSERT_TRUE(r->Delete(coll, key).ok());
            break;
          case 1:
            ASSERT_TRUE(r->Increment(coll, key, "count", static_cast<int64_t>(rng() % 5)).ok());
            break;
          default: {
            // f0 holds integers in the first rounds: its column is made bigint, then widened.
            const std::string field = "f" + std::to_string(rng() % 4);
            Value v =
                round < 3 && field == "f0" ? Value::Int(static_cast<int64_t>(rng() % 9)) : value();
            ASSERT_TRUE(r->Put(coll, key, {{field, std::move(v)}}).ok());
          }
        }
      }
      ASSERT_TRUE(SyncOnce(r, nodes[(i + static_cast<size_t>(round)) % 2]).ok());
    }
  }
  for (auto& r : replicas) ASSERT_TRUE(SyncOnce(r.get(), nodes[0]).ok());
  ASSERT_TRUE(SyncOnce(replicas[0].get(), nodes[1]).ok());  // (it has everything now)

  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto check = [&](const char* when) {
    ExpectTablesShow(db.value().get(), replicas[0].get(), collections, when);
  };
  check("written through two nodes");
  auto widened = db.value()->Query(
      "SELECT count(*) FROM information_schema.columns WHERE column_name = 'f0' "
      "AND data_type = 'text' AND table_schema = current_schema() || '_data'");
  ASSERT_TRUE(widened.ok());
  EXPECT_NE(widened->Bytes(0, 0), "0");

  // Tables behind the log, as an earlier version leaves them: a node starting brings them up,
  // from its copy's log (node 3), or, the log trimmed in its copy, rewritten whole (node 4).
  for (int n : {3, 4}) {
    auto reset = db.value()->Query(
        "DO $$ DECLARE t text; BEGIN FOR t IN SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() || '_data' LOOP EXECUTE format('DELETE FROM %I.%I "
        "WHERE key <> ''k1''', current_schema() || '_data', t); END LOOP; END $$");
    ASSERT_TRUE(reset.ok()) << reset.status().ToString();
    ASSERT_TRUE(db.value()->Query("UPDATE cairn_meta SET data_cursor = 0").ok());
    ServerThread late(node(n, n == 4 ? 1 : 1000000));
    check(n == 3 ? "brought up from the log" : "rewritten whole");
  }
}

// cairn-server --sql-tables (docs/backend.md "SQL tables"): off is the database's setting, which
// every node follows (its tables dropped, no push writes them, a node started without the flag
// keeps it off); on again, the tables are written whole and pushes keep them up.
TEST_F(MultiNode, SqlTablesCanBeTurnedOffAndOnForEveryNode) {
  TempDir dir;
  auto node = [&](int n, std::optional<bool> tables) {
    server::ServerOptions o = Node(dir, n);
    o.store.sql_tables = tables;
    return o;
  };
  const std::vector<std::string> collections = {"tasks"};
  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto replica = OpenReplica(dir.File("r"));
  auto write = [&](int from, int to) {
    for (int k = from; k < to; k++) {
      ASSERT_TRUE(replica->Put("tasks", "k" + std::to_string(k), {{"n", Value::Int(k)}}).ok());
    }
  };
  auto tables_in_schema = [&]() {
    auto n = db.value()->Query(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() || '_data'");
    EXPECT_TRUE(n.ok());
    return n.ok() ? std::string(n->Bytes(0, 0)) : std::string("?");
  };
  auto setting = [&]() {
    auto m = db.value()->Query("SELECT data_tables FROM cairn_meta");
    EXPECT_TRUE(m.ok());
    return m.ok() ? std::string(m->Bytes(0, 0)) : std::string("?");
  };
  {
    ServerThread n1(node(1, std::nullopt));  // (a new database: on)
    write(0, 3);
    ASSERT_TRUE(SyncOnce(replica.get(), n1.address()).ok());
    ExpectTablesShow(db.value().get(), replica.get(), collections, "on when new");
  }
  {
    ServerThread n1(node(1, false)), n2(node(2, std::nullopt));
    EXPECT_EQ(setting(), "f");
    EXPECT_EQ(tables_in_schema(), "0");
    write(3, 6);
    ASSERT_TRUE(SyncOnce(replica.get(), n1.address()).ok());
    ASSERT_TRUE(replica->Delete("tasks", "k0").ok());
    ASSERT_TRUE(SyncOnce(replica.get(), n2.address()).ok());
    EXPECT_EQ(tables_in_schema(), "0") << "a node wrote SQL tables while they were off";
  }
  {
    ServerThread n2(node(2, std::nullopt));  // (no flag: still off)
    write(6, 8);
    ASSERT_TRUE(SyncOnce(replica.get(), n2.address()).ok());
    EXPECT_EQ(setting(), "f");
    EXPECT_EQ(tables_in_schema(), "0");
  }
  ServerThread n1(node(1, true)), n2(node(2, std::nullopt));
  EXPECT_EQ(setting(), "t");
  ExpectTablesShow(db.value().get(), replica.get(), collections, "on again");
  write(8, 10);
  ASSERT_TRUE(replica->Delete("tasks", "k3").ok());
  ASSERT_TRUE(SyncOnce(replica.get(), n2.address()).ok());
  ExpectTablesShow(db.value().get(), replica.get(), collections, "pushed to the other node");
}

// Writes through SQL (docs/backend.md "Writing through SQL"): rows inserted into cairn_inbox
// while two nodes race to take them are each applied once (500 increments of one counter
// count 500), as the server's own writes that reach devices; a bad row is refused with its
// reason, the rows after it applied.
TEST_F(MultiNode, SqlInboxRowsAreAppliedOnceWhileTwoNodesRace) {
  TempDir dir;
  auto node = [&](int n) {
    server::ServerOptions o = Node(dir, n);
    o.catch_up_ms = 20;  // (how often each node looks at the inbox)
    return o;
  };
  ServerThread n1(node(1)), n2(node(2));
  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  for (int batch = 0; batch < 10; batch++) {
    std::string sql = "INSERT INTO cairn_inbox(op, collection, key, fields, field, delta) VALUES ";
    for (int i = 0; i < 50; i++) {
      sql += std::string(i ? "," : "") + "('inc', 'counters', 'c', NULL, 'n', 1)";
    }
    ASSERT_TRUE(db.value()->Query(sql).ok());
    ASSERT_TRUE(db.value()
                    ->Query("INSERT INTO cairn_inbox(op, collection, key, fields) VALUES "
                            "('set', 'orders', 'o" +
                            std::to_string(batch) + "', '{\"qty\": " + std::to_string(batch) +
                            ", \"note\": \"from sql\"}')")
                    .ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
  }
  ASSERT_TRUE(db.value()
                  ->Query("INSERT INTO cairn_inbox(op, collection, key, fields) VALUES "
                          "('set', 'bad name', 'k', '{\"a\": 1}'), "
                          "('set', 'orders', 'o1', '[1]'), ('del', 'orders', 'o2', NULL)")
                  .ok());
  ASSERT_TRUE(WaitFor([&] {
    auto left = db.value()->Query(
        "SELECT count(*) FROM cairn_inbox WHERE applied_cursor IS NULL AND refused IS NULL");
    return left.ok() && left->Bytes(0, 0) == "0";
  }));
  auto done = db.value()->Query(
      "SELECT count(*) FILTER (WHERE applied_cursor IS NOT NULL), "
      "count(*) FILTER (WHERE refused IS NOT NULL), count(DISTINCT claimed_by) FROM cairn_inbox");
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->Bytes(0, 0), "511");
  EXPECT_EQ(done->Bytes(0, 1), "2");
  auto reasons =
      db.value()->Query("SELECT refused FROM cairn_inbox WHERE refused IS NOT NULL ORDER BY id");
  ASSERT_TRUE(reasons.ok() && reasons->size() == 2);
  EXPECT_NE(std::string(reasons->Bytes(0, 0)).find("collection name"), std::string::npos)
      << reasons->Bytes(0, 0);
  EXPECT_NE(std::string(reasons->Bytes(1, 0)).find("row"), std::string::npos)
      << reasons->Bytes(1, 0);
  // A device sees them once, through either node.
  auto device = OpenReplica(dir.File("device"));
  ASSERT_TRUE(SyncOnce(device.get(), n2.address()).ok());
  EXPECT_EQ(device->Get("counters", "c").value()->at("n").as_int(), 500);
  EXPECT_EQ(device->Get("orders", "o7").value()->at("qty").as_int(), 7);
  EXPECT_EQ(device->Get("orders", "o7").value()->at("note").as_string(), "from sql");
  EXPECT_FALSE(device->Get("orders", "o2").value().has_value());
  // And the SQL tables show them.
  auto table = SqlTable(db.value().get(), "counters");
  EXPECT_EQ(table["c"].fields["n"].second, "500");
}

// A backend's transaction reading a SQL table (docs/backend.md "SQL tables") does not stall
// the pushes of every node: a push that must add a column to that table waits for it 2 s at
// most, then fails (its client sends it again later) and frees the log's lock, so another
// replica's push goes through meanwhile; once the reader is done the first push lands.
TEST_F(MultiNode, AReaderOfASqlTableDoesNotStallOtherPushes) {
  TempDir dir;
  ServerThread n1(Node(dir, 1));
  auto a = OpenReplica(dir.File("a")), b = OpenReplica(dir.File("b"));
  ASSERT_TRUE(a->Put("tasks", "t1", {{"x", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  auto reader = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ASSERT_TRUE(reader.value()->ExecScript("BEGIN").ok());
  auto read = reader.value()->Query(
      "SELECT count(*) FROM \"" +
      std::string(reader.value()->Query("SELECT current_schema()")->Bytes(0, 0)) + "_data\".tasks");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  // A new field of tasks: its push needs the table to itself.
  ASSERT_TRUE(a->Put("tasks", "t2", {{"y", Value::Int(2)}}).ok());
  std::thread blocked([&] { (void)SyncOnce(a.get(), n1.address()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(b->Put("notes", "n1", {{"z", Value::Int(3)}}).ok());
  const auto start = std::chrono::steady_clock::now();
  Status other = SyncOnce(b.get(), n1.address());
  const auto waited = std::chrono::steady_clock::now() - start;
  blocked.join();
  EXPECT_TRUE(other.ok()) << other.ToString();
  EXPECT_LT(waited, std::chrono::seconds(10));  // (the server's lock_timeout is 30 s)
  ASSERT_TRUE(reader.value()->ExecScript("COMMIT").ok());
  ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  auto shown = SqlTable(reader.value().get(), "tasks");
  EXPECT_EQ(shown["t2"].fields["y"].second, "2");
}

// A write pushed to one node reaches a live session on the other through the database's
// notification: the nodes' periodic catch-up is an hour here, longer than the test waits.
TEST_F(MultiNode, LiveWritesReachSessionsOnTheOtherNode) {
  TempDir dir;
  server::ServerOptions o1 = Node(dir, 1), o2 = Node(dir, 2);
  o1.catch_up_ms = o2.catch_up_ms = 3600000;
  ServerThread n1(o1), n2(o2);
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  sync::SyncOptions sa, sb;
  sa.server = n1.address();
  sb.server = n2.address();
  sync::SyncClient ca(a.get(), sa), cb(b.get(), sb);
  ASSERT_TRUE(ca.Start().ok());
  ASSERT_TRUE(cb.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return ca.status().state == sync::SyncState::kIdle &&
                                   cb.status().state == sync::SyncState::kIdle; }));
  ASSERT_TRUE(a->Put("live", "from-a", {{"v", Value::Int(1)}}).ok());
  EXPECT_TRUE(WaitFor([&] { return b->Get("live", "from-a").value().has_value(); }))
      << "node 2 log:\n" << n2.log();
  ASSERT_TRUE(b->Put("live", "from-b", {{"v", Value::Int(2)}}).ok());
  EXPECT_TRUE(WaitFor([&] { return a->Get("live", "from-b").value().has_value(); }))
      << "node 1 log:\n" << n1.log();
  ca.Stop();
  cb.Stop();
  EXPECT_EQ(Digest(a.get()), Digest(b.get()));
}

TEST_F(MultiNode, CursorFromOneNodeIsValidOnAnother) {
  TempDir dir;
  ServerThread n1(Node(dir, 1)), n2(Node(dir, 2));
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(a->Put("t", "a" + std::to_string(i), {{"v", Value::Int(i)}}).ok());
  }
  ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  const uint64_t cursor = SyncAccess(*a).GetSyncPosition().value().cursor;
  ASSERT_GT(cursor, 0u);
  ASSERT_TRUE(b->Put("t", "b", {{"v", Value::Int(9)}}).ok());
  ASSERT_TRUE(SyncOnce(b.get(), n2.address()).ok());
  // Node 2 resumes A at its cursor from node 1: the log after it, no snapshot.
  ASSERT_TRUE(SyncOnce(a.get(), n2.address()).ok());
  const std::regex resumed("session " + a->id().Hex() + " from [^ ]+ at cursor " +
                           std::to_string(cursor) + "\n");
  EXPECT_TRUE(std::regex_search(n2.log(), resumed)) << n2.log();
  EXPECT_EQ(n2.log().find("snapshot"), std::string::npos) << n2.log();
  EXPECT_TRUE(a->Get("t", "b").value().has_value());
  EXPECT_EQ(Digest(a.get()), Digest(b.get()));
}

// Writers push through both nodes at once while a live reader on each node follows: every
// reader ends with every write, the log has each push once under cursors 1..n, no gap.
TEST_F(MultiNode, ConcurrentPushesThroughTwoNodesAreLoggedOnceWithoutGaps) {
  TempDir dir;
  ServerThread n1(Node(dir, 1)), n2(Node(dir, 2));
  const std::string nodes[2] = {n1.address(), n2.address()};
  std::vector<std::unique_ptr<Replica>> readers;
  std::vector<std::unique_ptr<sync::SyncClient>> live;
  for (int n = 0; n < 2; n++) {
    readers.push_back(OpenReplica(dir.File("reader" + std::to_string(n))));
    sync::SyncOptions o;
    o.server = nodes[n];
    live.push_back(std::make_unique<sync::SyncClient>(readers.back().get(), o));
    ASSERT_TRUE(live.back()->Start().ok());
  }
  constexpr int kWriters = 4, kWrites = 30;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; w++) {
    writers.emplace_back([&, w] {
      auto r = OpenReplica(dir.File("writer" + std::to_string(w)));
      for (int i = 0; i < kWrites; i++) {
        const std::string key = "w" + std::to_string(w) + "-" + std::to_string(i);
        if (!r->Put("load", key, {{"i", Value::Int(i)}}).ok()) failures++;
        if (!SyncOnce(r.get(), nodes[(w + i) % 2]).ok()) failures++;
      }
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_EQ(failures.load(), 0);
  auto count = [](Replica* r) {
    int n = 0;
    for (int w = 0; w < kWriters; w++) {
      for (int i = 0; i < kWrites; i++) {
        if (r->Get("load", "w" + std::to_string(w) + "-" + std::to_string(i)).value()) n++;
      }
    }
    return n;
  };
  for (size_t n = 0; n < 2; n++) {
    EXPECT_TRUE(WaitFor([&] { return count(readers[n].get()) == kWriters * kWrites; }))
        << "reader on node " << n + 1 << " has " << count(readers[n].get());
    live[n]->Stop();
  }
  const LogShape log = ReadLogShape(dir);
  EXPECT_EQ(log.ops, kWriters * kWrites);  // each write logged once
  EXPECT_EQ(log.min_cursor, 1);
  EXPECT_EQ(log.max_cursor, log.entries);  // no gap
  EXPECT_EQ(Digest(readers[0].get()), Digest(readers[1].get()));
}

// A node killed (SIGKILL) in the middle of a client's upload: the client, through a load
// balancer that moves it to the other node, finishes; every op is on the server once, and a
// reader on the surviving node gets all of them.
TEST_F(MultiNode, KilledNodesClientsResumeOnAnotherWithNothingLostOrDuplicated) {
  TempDir dir;
  const std::string url = testing::TestStoreUrl(dir.File("cluster"));
  auto node = [&](int n) {
    return std::make_unique<ServerProcess>(
        dir.File("node" + std::to_string(n) + ".db"), dir.File("node" + std::to_string(n) + ".log"),
        0, std::vector<std::string>{"--store", url});
  };
  auto n1 = node(1), n2 = node(2);
  const uint16_t p1 = n1->WaitListening(), p2 = n2->WaitListening();
  ASSERT_GT(p1, 0);
  ASSERT_GT(p2, 0);
  FaultProxy balancer(p1, [](int) { return Faults(); });
  auto writer = OpenReplica(dir.File("writer.db"));
  constexpr int kTxns = 400, kOpsPerTxn = 5;
  for (int t = 0; t < kTxns; t++) {
    WriteBatch batch;
    for (int k = 0; k < kOpsPerTxn; k++) {
      batch.Set("bulk", "d" + std::to_string(t * kOpsPerTxn + k), "t", Value::Int(t));
    }
    ASSERT_TRUE(writer->Write(batch).ok());
  }
  const uint64_t last = writer->GetStatus().value().last_seq;
  sync::SyncOptions o;
  o.server = "127.0.0.1:" + std::to_string(balancer.port());
  o.max_batch_ops = 25;
  o.window = 2;
  o.backoff_min_ms = 10;
  o.backoff_max_ms = 100;
  sync::SyncClient client(writer.get(), o);
  std::atomic<uint64_t> durable{0};
  client.SetDurableCallback([&](uint64_t through) { durable = through; });
  ASSERT_TRUE(client.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return durable.load() > 0; }));
  EXPECT_GT(n1->Signal(SIGKILL, 5000), -1);
  balancer.set_target(p2);
  EXPECT_TRUE(WaitFor([&] { return durable.load() == last; }, 60000))
      << "durable through " << durable.load() << " of " << last;
  client.Stop();
  auto reader = OpenReplica(dir.File("reader.db"));
  ASSERT_TRUE(SyncOnce(reader.get(), "127.0.0.1:" + std::to_string(p2)).ok());
  EXPECT_EQ(Digest(reader.get()), Digest(writer.get()));
  const LogShape log = ReadLogShape(dir);
  EXPECT_EQ(log.ops, static_cast<int64_t>(last));  // every op once
  EXPECT_EQ(log.max_cursor, log.entries);
  // A node restarted on its old copy catches up with what it missed while down.
  auto again = node(1);
  const uint16_t p3 = again->WaitListening(2);  // (its log file has the first run's)
  ASSERT_GT(p3, 0);
  auto late = OpenReplica(dir.File("late.db"));
  ASSERT_TRUE(SyncOnce(late.get(), "127.0.0.1:" + std::to_string(p3)).ok());
  EXPECT_EQ(Digest(late.get()), Digest(writer.get()));
}

// The text of the first column of every row of `sql` on the cluster's database.
std::vector<std::string> Query(const TempDir& dir, const std::string& sql) {
  std::vector<std::string> out;
  auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  if (!db.ok()) return out;
  auto rows = db.value()->Query(sql);
  EXPECT_TRUE(rows.ok()) << rows.status().ToString();
  if (!rows.ok()) return out;
  for (int i = 0; i < rows->size(); i++) {
    out.emplace_back(rows->IsNull(i, 0) ? "NULL" : std::string(rows->Bytes(i, 0)));
  }
  return out;
}

// Telemetry goes into the database's tables, shared by the nodes: a batch stored through one
// node whose acknowledgement was lost, sent again through the other, is stored once.
TEST_F(MultiNode, TelemetryRetriedThroughAnotherNodeIsStoredOnce) {
  TempDir dir;
  ServerThread n1(Node(dir, 1)), n2(Node(dir, 2));
  FaultProxy balancer(n1.port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 2;  // after Welcome and CaughtUp: no StreamAck
    return f;
  });
  auto gw = OpenReplica(dir.File("gw.db"));
  for (int64_t start = 1; start <= 1000; start += 100) {
    RecordBatch b;
    for (int64_t n = start; n < start + 100; n++) {
      ASSERT_TRUE(b.Add({{"n", Value::Int(n)}}, 1'700'000'000'000 + n).ok());
    }
    ASSERT_TRUE(gw->Append("readings", b).ok());
  }
  sync::SyncOptions o;
  o.max_batch_ops = 100;
  o.window = 4;
  const std::string via = "127.0.0.1:" + std::to_string(balancer.port());
  EXPECT_FALSE(SyncOnce(gw.get(), via, o).ok());  // cut: stored, not acknowledged
  EXPECT_GT(std::stoll(Query(dir, "SELECT count(*) FROM readings").at(0)), 0);
  EXPECT_EQ(SyncAccess(*gw).QueuedRecords().value(), 1000u);
  balancer.set_target(n2.port());
  ASSERT_TRUE(SyncOnce(gw.get(), via, o).ok());
  EXPECT_EQ(SyncAccess(*gw).QueuedRecords().value(), 0u);
  EXPECT_EQ(Query(dir, "SELECT count(*) || ' ' || count(DISTINCT seq) || ' ' || sum(n) "
                       "FROM readings WHERE seq = n"),
            (std::vector<std::string>{"1000 1000 500500"}));
}

// PostgreSQL columns have types: a field's column takes its first values' type and widens when
// a later value does not fit (bigint to double precision, then to text), keeping every value.
TEST_F(MultiNode, StreamColumnsWidenToHoldEveryValue) {
  TempDir dir;
  ServerThread n1(Node(dir, 1));
  auto gw = OpenReplica(dir.File("gw.db"));
  const std::vector<Fields> records = {
      {{"v", Value::Int(1)}, {"ok", Value::Bool(true)}, {"raw", Value::Bytes("\x01\xff")}},
      {{"v", Value::Double(2.5)}, {"ok", Value::Bool(false)}},
      {{"v", Value::String("x")}, {"ok", Value::Int(3)}, {"raw", Value::String("text")}},
      {{"v", Value::Null()}}};
  for (size_t i = 0; i < records.size(); i++) {
    RecordBatch b;
    ASSERT_TRUE(b.Add(records[i], 1'700'000'000'000 + static_cast<int64_t>(i)).ok());
    ASSERT_TRUE(gw->Append("mixed", b).ok());
    ASSERT_TRUE(SyncOnce(gw.get(), n1.address()).ok());
    if (i == 0) {
      EXPECT_EQ(Query(dir, "SELECT data_type FROM information_schema.columns WHERE "
                           "table_schema = current_schema() AND table_name = 'mixed' "
                           "ORDER BY ordinal_position"),
                (std::vector<std::string>{"text", "bigint", "bigint", "bigint", "boolean",
                                          "bytea", "bigint"}));
    }
  }
  EXPECT_EQ(Query(dir, "SELECT data_type FROM information_schema.columns WHERE "
                       "table_schema = current_schema() AND table_name = 'mixed' "
                       "ORDER BY ordinal_position"),
            (std::vector<std::string>{"text", "bigint", "bigint", "bigint", "text", "text",
                                      "text"}));
  EXPECT_EQ(Query(dir, "SELECT coalesce(v, 'NULL') || ' ' || coalesce(ok, '-') || ' ' || "
                       "coalesce(raw, '-') FROM mixed ORDER BY seq"),
            (std::vector<std::string>{"1 true 01ff", "2.5 false -", "x 3 text", "NULL - -"}));
}

// Ends the nodes' notification connections (LISTEN) on the cluster's database, as a network cut
// or a database restart would; how many there were.
int KillListeners(const TempDir& dir) {
  const std::vector<std::string> id = Query(dir, "SELECT encode(server_id, 'hex') FROM cairn_meta");
  if (id.size() != 1) return -1;
  return std::stoi(Query(dir, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE query LIKE 'LISTEN %" + id[0] + "%'").at(0));
}

int CountListeners(const TempDir& dir) {
  const std::vector<std::string> id = Query(dir, "SELECT encode(server_id, 'hex') FROM cairn_meta");
  if (id.size() != 1) return -1;
  return std::stoi(Query(dir, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %" +
                                  id[0] + "%'").at(0));
}

// A node that catches up for a client's Hello feeds what it took in to its other live sessions
// too (here nothing else would: no notifications, no periodic catch-up within the test).
TEST_F(MultiNode, CatchingUpForAHelloFeedsTheNodesOtherSessions) {
  TempDir dir;
  server::ServerOptions o1 = Node(dir, 1), o2 = Node(dir, 2);
  o1.catch_up_ms = o2.catch_up_ms = 3600000;
  ServerThread n1(o1), n2(o2);
  auto live = OpenReplica(dir.File("live.db"));
  sync::SyncOptions o;
  o.server = n2.address();
  sync::SyncClient client(live.get(), o);
  ASSERT_TRUE(client.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return client.status().state == sync::SyncState::kIdle; }));
  ASSERT_EQ(KillListeners(dir), 2);
  auto writer = OpenReplica(dir.File("writer.db"));
  ASSERT_TRUE(writer->Put("t", "w", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(writer.get(), n1.address()).ok());
  auto reader = OpenReplica(dir.File("reader.db"));  // pushes nothing
  ASSERT_TRUE(SyncOnce(reader.get(), n2.address()).ok());
  EXPECT_TRUE(reader->Get("t", "w").value().has_value());
  EXPECT_TRUE(WaitFor([&] { return live->Get("t", "w").value().has_value(); }, 10000))
      << n2.log();
  client.Stop();
}

// A node's connection ended by the database (a restart, an administrator): the next client is
// served on a new one, not failed for the broken one.
TEST_F(MultiNode, ConnectionsBrokenSinceTheLastCallAreRemade) {
  TempDir dir;
  ServerThread n1(Node(dir, 1));
  auto a = OpenReplica(dir.File("a.db"));
  ASSERT_TRUE(a->Put("t", "a", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  const std::string schema = Query(dir, "SELECT current_schema()").at(0);
  // (Not the LISTEN connection: its break would make the node catch up, and so reconnect,
  // before the client comes.)
  EXPECT_EQ(Query(dir, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                       "application_name = '" + schema + "' AND pid <> pg_backend_pid() AND "
                       "query NOT LIKE 'LISTEN%'"),
            (std::vector<std::string>{"1"}));
  ASSERT_TRUE(a->Put("t", "b", {{"v", Value::Int(2)}}).ok());
  Status st = SyncOnce(a.get(), n1.address());
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << n1.log();
  EXPECT_EQ(ReadLogShape(dir).entries, 2);
}

// A node whose notification connection broke makes a new one (and catches up meanwhile).
TEST_F(MultiNode, BrokenNotificationConnectionIsRemade) {
  TempDir dir;
  server::ServerOptions o1 = Node(dir, 1), o2 = Node(dir, 2);
  o1.catch_up_ms = o2.catch_up_ms = 100;
  ServerThread n1(o1), n2(o2);
  ASSERT_EQ(CountListeners(dir), 2);
  ASSERT_EQ(KillListeners(dir), 2);
  EXPECT_TRUE(WaitFor([&] { return CountListeners(dir) == 2; }, 10000));
  EXPECT_NE(n2.log().find("listening again"), std::string::npos) << n2.log();
  auto live = OpenReplica(dir.File("live.db"));
  sync::SyncOptions o;
  o.server = n2.address();
  sync::SyncClient client(live.get(), o);
  ASSERT_TRUE(client.Start().ok());
  auto writer = OpenReplica(dir.File("writer.db"));
  ASSERT_TRUE(writer->Put("t", "w", {{"v", Value::Int(1)}}).ok());
  ASSERT_TRUE(SyncOnce(writer.get(), n1.address()).ok());
  EXPECT_TRUE(WaitFor([&] { return live->Get("t", "w").value().has_value(); }, 10000));
  client.Stop();
}

// A push that no node could merge (here: together with an earlier one, more columns than
// SQLite allows in a table) fails for its client and never reaches the log, where every node
// would stop at it; the others go on syncing through both nodes.
TEST_F(MultiNode, APushNoNodeCanMergeIsNotLogged) {
  TempDir dir;
  ServerThread n1(Node(dir, 1)), n2(Node(dir, 2));
  auto wide = [](const std::string& prefix, int n) {
    Fields f;
    for (int i = 0; i < n; i++) f[prefix + std::to_string(i)] = Value::Int(i);
    return f;
  };
  auto a = OpenReplica(dir.File("a.db"));
  auto b = OpenReplica(dir.File("b.db"));
  ASSERT_TRUE(a->Put("wide", "a", wide("f", 1000)).ok());
  ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  ASSERT_TRUE(b->Put("wide", "b", wide("g", 1100)).ok());
  EXPECT_FALSE(SyncOnce(b.get(), n1.address()).ok());
  EXPECT_EQ(ReadLogShape(dir).entries, 1);
  EXPECT_EQ(b->PendingOps().value(), 1100);  // kept, not lost
  auto c = OpenReplica(dir.File("c.db"));
  ASSERT_TRUE(c->Put("t", "c", {{"v", Value::Int(1)}}).ok());
  for (const ServerThread* node : {&n2, &n1}) {
    Status st = SyncOnce(c.get(), node->address());
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  auto d = OpenReplica(dir.File("d.db"));
  ASSERT_TRUE(SyncOnce(d.get(), n2.address()).ok());
  EXPECT_TRUE(d->Get("wide", "a").value().has_value());
  EXPECT_TRUE(d->Get("t", "c").value().has_value());
}

// The database's log is trimmed to --keep-log as the SQLite store's is, after a checkpoint of
// the state: a node started later (an empty file) starts from the checkpoint and the log after
// it, and a replica whose cursor the log no longer reaches gets a snapshot; nothing is counted
// twice.
TEST_F(MultiNode, TrimmedLogNodesStartFromACheckpoint) {
  TempDir dir;
  server::ServerOptions o1 = Node(dir, 1);
  o1.store.keep_log_ops = 20;
  o1.catch_up_ms = 50;
  auto n1 = std::make_unique<ServerThread>(o1);
  auto early = OpenReplica(dir.File("early.db"));
  ASSERT_TRUE(early->Put("t", "early", {{"v", Value::Int(0)}}).ok());
  ASSERT_TRUE(SyncOnce(early.get(), n1->address()).ok());
  auto writer = OpenReplica(dir.File("writer.db"));
  for (int push = 0; push < 30; push++) {
    WriteBatch b;
    for (int k = 0; k < 4; k++) {
      b.Set("t", "d" + std::to_string((push * 4 + k) % 50), "v", Value::Int(push));
    }
    b.Increment("c", "total", "n", 1);
    ASSERT_TRUE(writer->Write(b).ok());
    ASSERT_TRUE(SyncOnce(writer.get(), n1->address()).ok());
  }
  // (The checkpoint is written at the node's next catch-up after the push that crossed the mark.)
  EXPECT_TRUE(WaitFor([&] {
    return Query(dir, "SELECT (count(*) = 1)::text FROM cairn_checkpoints") ==
               std::vector<std::string>{"true"} &&
           Query(dir, "SELECT (min(cursor) > 1 AND sum(op_count) <= 30)::text FROM cairn_log") ==
               std::vector<std::string>{"true"};
  }, 10000)) << Query(dir, "SELECT min(cursor) || ' ' || sum(op_count) FROM cairn_log").at(0);
  // A second node, started now on an empty file.
  server::ServerOptions o2 = Node(dir, 2);
  o2.store.keep_log_ops = 20;
  ServerThread n2(o2);
  auto fresh = OpenReplica(dir.File("fresh.db"));
  ASSERT_TRUE(SyncOnce(fresh.get(), n2.address()).ok());
  EXPECT_EQ(Digest(fresh.get()), Digest(writer.get()));
  EXPECT_EQ(fresh->Get("c", "total").value()->at("n").as_int(), 30);
  ASSERT_TRUE(SyncOnce(early.get(), n2.address()).ok());  // its cursor: trimmed away
  EXPECT_EQ(Digest(early.get()), Digest(writer.get()));
  EXPECT_NE(n2.log().find("snapshot"), std::string::npos) << n2.log();
  // More writes through the new node reach the first, live.
  ASSERT_TRUE(writer->Increment("c", "total", "n", 1).ok());
  ASSERT_TRUE(SyncOnce(writer.get(), n2.address()).ok());
  ASSERT_TRUE(SyncOnce(fresh.get(), n1->address()).ok());
  EXPECT_EQ(fresh->Get("c", "total").value()->at("n").as_int(), 31);
}

// A node down while the log was trimmed past what its file has: restarted on that file, it
// starts from the newest checkpoint (merged over its older state: nothing counted twice).
TEST_F(MultiNode, NodeDownWhileTheLogWasTrimmedStartsFromTheCheckpoint) {
  TempDir dir;
  server::ServerOptions o1 = Node(dir, 1), o2 = Node(dir, 2);
  o1.store.keep_log_ops = o2.store.keep_log_ops = 20;
  o1.catch_up_ms = 50;
  ServerThread n1(o1);
  auto writer = OpenReplica(dir.File("writer.db"));
  auto push = [&](int i) {
    WriteBatch b;
    b.Set("t", "d" + std::to_string(i % 7), "v", Value::Int(i));
    b.Increment("c", "total", "n", 1);
    ASSERT_TRUE(writer->Write(b).ok());
    ASSERT_TRUE(SyncOnce(writer.get(), n1.address()).ok());
  };
  uint64_t down_at = 0;
  {
    ServerThread n2(o2);
    for (int i = 0; i < 5; i++) push(i);
    auto probe = OpenReplica(dir.File("probe.db"));
    ASSERT_TRUE(SyncOnce(probe.get(), n2.address()).ok());  // node 2 has taken in all five
    down_at = SyncAccess(*probe).GetSyncPosition().value().cursor;
  }
  for (int i = 5; i < 40; i++) push(i);
  ASSERT_TRUE(WaitFor([&] {
    return std::stoull(Query(dir, "SELECT coalesce(min(cursor), 0) FROM cairn_log").at(0)) >
           down_at + 1;
  }, 10000)) << "the log was not trimmed past node 2's file";
  ServerThread n2(o2);  // its old file
  auto fresh = OpenReplica(dir.File("fresh.db"));
  Status st = SyncOnce(fresh.get(), n2.address());
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << n2.log();
  EXPECT_EQ(Digest(fresh.get()), Digest(writer.get()));
  EXPECT_EQ(fresh->Get("c", "total").value()->at("n").as_int(), 40);
}

// Bad settings are refused at start with a clear error, and nothing is changed.
TEST_F(MultiNode, BadStoresAndForeignNodeFilesAreRefused) {
  TempDir dir;
  auto open = [&](server::ServerOptions o) { return server::SyncServer::Create(o).status(); };
  server::ServerOptions o = Node(dir, 1);
  o.store.url = "mysql://localhost/cairn";
  Status st = open(o);
  EXPECT_EQ(st.code(), Code::kEINVAL) << st.ToString();
  EXPECT_NE(st.message().find("not a PostgreSQL URL"), std::string::npos) << st.ToString();
  o.store.url = "postgresql:///cairn?host=" + dir.File("no-such-socket-dir") + "&connect_timeout=2";
  st = open(o);
  EXPECT_EQ(st.code(), Code::kENETWORK) << st.ToString();
  EXPECT_NE(st.message().find("cannot connect"), std::string::npos) << st.ToString();
  EXPECT_FALSE(std::filesystem::exists(o.db_path)) << "nothing made for a refused store";

  // A node's file belongs to its database: given another database, the node refuses to start.
  {
    ServerThread n1(Node(dir, 1));
    auto a = OpenReplica(dir.File("a.db"));
    ASSERT_TRUE(a->Put("t", "k", {{"v", Value::Int(1)}}).ok());
    ASSERT_TRUE(SyncOnce(a.get(), n1.address()).ok());
  }
  o = Node(dir, 1);
  o.store.url = testing::TestStoreUrl(dir.File("another-cluster"));
  st = open(o);
  EXPECT_EQ(st.code(), Code::kEINVAL) << st.ToString();
  EXPECT_NE(st.message().find("give each node a file of its own"), std::string::npos)
      << st.ToString();
  // A database that lost commits the node's file has (restored from an older backup): refused,
  // and moving the file away lets the node rebuild it from the database.
  {
    auto db = server::pg::Conn::Connect(testing::TestStoreUrl(dir.File("cluster")));
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    ASSERT_TRUE(db.value()->ExecScript(
        "DELETE FROM cairn_log; DELETE FROM cairn_receipts; UPDATE cairn_meta SET head = 0").ok());
  }
  st = open(Node(dir, 1));
  EXPECT_EQ(st.code(), Code::kEINVAL) << st.ToString();
  EXPECT_NE(st.message().find("does not have as this node does"), std::string::npos)
      << st.ToString();
  std::filesystem::rename(dir.File("node1.db"), dir.File("node1.db.old"));
  EXPECT_TRUE(open(Node(dir, 1)).ok());
}

}  // namespace
}  // namespace cairn
