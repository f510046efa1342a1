// The server's stream tables (server/stream_tables.h): a table per stream with its columns,
// records stored once by (origin, seq), bad batches refused with nothing left behind, tables
// changed by someone else picked up.
#include "server/stream_tables.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "oplog/record.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "support/temp_dir.h"

namespace cairn::server {
namespace {

using testing::TempDir;

// A StreamBatch frame payload of records seq first..last of `stream`, fields {n: seq, temp}.
std::string Batch(const std::string& stream, uint64_t first, uint64_t last,
                  const std::string& temp_name = "temp") {
  protocol::StreamEncoder enc(stream);
  for (uint64_t seq = first; seq <= last; seq++) {
    std::string body;
    EncodeRecord({{"n", Value::Int(static_cast<int64_t>(seq))},
                  {temp_name, Value::Double(static_cast<double>(seq) / 2)}},
                 &body);
    EXPECT_TRUE(enc.Add(seq, 1000 + static_cast<int64_t>(seq), body).ok());
  }
  std::string frame;
  enc.FinishFrame(&frame);
  return frame.substr(4);
}

Result<StreamStoreResult> Store(StreamTables* t, const ReplicaId& origin,
                                const std::string& payload) {
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* f, protocol::VerifyFrame(payload, {}));
  return t->Store(origin, *f->body_as_StreamBatch(), 5000, 8192);
}

std::string Sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    out = std::string("error: ") + sqlite3_errmsg(db);
  }
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    for (int i = 0; i < sqlite3_column_count(st); i++) {
      const unsigned char* t = sqlite3_column_text(st, i);
      out += (i ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "NULL");
    }
    out += "\n";
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

// A fresh streams file `path` with its StreamTables `t`, and a sending replica `a`.
class StreamTablesTest : public ::testing::Test {
 protected:
  StreamTablesTest() { a.bytes.fill(0xaa); }
  TempDir dir;
  const std::string path = dir.File("s.db");
  std::unique_ptr<StreamTables> t = StreamTables::Open(path).value();
  ReplicaId a;
};

TEST_F(StreamTablesTest, StoresOnceByOriginAndSeqInATablePerStream) {
  ReplicaId b;
  b.bytes.fill(0xbb);
  auto r = Store(t.get(), a, Batch("temps", 1, 5));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stored, 5u);
  EXPECT_EQ(r->through, 5u);
  // Again (a lost ack), overlapping, and another origin with the same seqs.
  r = Store(t.get(), a, Batch("temps", 3, 7));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 2u);
  EXPECT_EQ(r->duplicates, 3u);
  ASSERT_TRUE(Store(t.get(), b, Batch("temps", 1, 2)).ok());
  EXPECT_EQ(Sql(path, "SELECT origin, count(*), min(seq), max(seq) FROM temps GROUP BY origin"),
            a.Hex() + "|7|1|7\n" + b.Hex() + "|2|1|2\n");
  EXPECT_EQ(Sql(path, "SELECT ts_ms, received_ms, n, temp FROM temps WHERE seq = 3 LIMIT 1"),
            "1003|5000|3|1.5\n");
  // A field differing from a column only in case shares it.
  ASSERT_TRUE(Store(t.get(), b, Batch("temps", 3, 3, "TEMP")).ok());
  EXPECT_EQ(Sql(path, "SELECT group_concat(name) FROM pragma_table_info('temps')"),
            "origin,seq,ts_ms,received_ms,n,temp\n");
  EXPECT_EQ(Sql(path, "SELECT temp FROM temps WHERE origin = '" + b.Hex() + "' AND seq = 3"),
            "1.5\n");
}

TEST_F(StreamTablesTest, ABadBatchLeavesNothingBehind) {
  // A good record, then one whose string is not UTF-8: nothing of the batch, no table.
  protocol::StreamEncoder enc("fresh");
  std::string good, bad;
  EncodeRecord({{"v", Value::Int(1)}}, &good);
  EncodeRecord({{"v", Value::String("\xff")}}, &bad);
  ASSERT_TRUE(enc.Add(1, 1, good).ok());
  ASSERT_TRUE(enc.Add(2, 2, bad).ok());
  std::string frame;
  enc.FinishFrame(&frame);
  auto r = Store(t.get(), a, frame.substr(4));
  EXPECT_EQ(r.status().code(), Code::kECORRUPT);
  EXPECT_EQ(Sql(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'fresh'"), "0\n");
  EXPECT_EQ(Store(t.get(), a, Batch("1bad", 1, 1)).status().code(), Code::kEINVAL);
  // The same store goes on working.
  ASSERT_TRUE(Store(t.get(), a, Batch("fresh", 1, 2)).ok());
  EXPECT_EQ(Sql(path, "SELECT count(*) FROM fresh"), "2\n");
}

// SQL table names ignore case: a stream name differing only in case from an existing table
// would share it (and its (origin, seq) keys) with another stream. Refused, nothing stored.
TEST_F(StreamTablesTest, AStreamNameDifferingOnlyInCaseFromATableIsRefused) {
  ASSERT_TRUE(Store(t.get(), a, Batch("Temps", 1, 3)).ok());
  auto r = Store(t.get(), a, Batch("temps", 1, 5));
  EXPECT_EQ(r.status().code(), Code::kEINVAL) << r.status().ToString();
  EXPECT_EQ(Sql(path, "SELECT count(*) FROM Temps"), "3\n");
  // A fresh server (no cache) refuses it too.
  t = StreamTables::Open(path).value();
  EXPECT_EQ(Store(t.get(), a, Batch("TEMPS", 4, 4)).status().code(), Code::kEINVAL);
  EXPECT_TRUE(Store(t.get(), a, Batch("Temps", 4, 4)).ok());
}

// Only the fields records use get columns; a table that cannot take more columns refuses the
// batch (a refusal, not a server error that would make the client retry forever).
TEST_F(StreamTablesTest, ColumnsOnlyForFieldsInUseAndSchemaErrorsAreRefusals) {
  // A batch naming a field no record uses (one record: gap 0, ts 0, one field, index 0, int 5).
  flatbuffers::FlatBufferBuilder fbb;
  const std::string rec("\x00\x00\x01\x00\x03\x0a", 6);
  auto b = wire::CreateStreamBatch(
      fbb, fbb.CreateString("temps"), 1, 0, fbb.CreateVectorOfStrings({"n", "unused"}),
      fbb.CreateVector(reinterpret_cast<const uint8_t*>(rec.data()), rec.size()), 1);
  fbb.Finish(wire::CreateFrame(fbb, wire::Body::StreamBatch, b.Union()), wire::FrameIdentifier());
  ASSERT_TRUE(Store(t.get(), a, std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()),
                                            fbb.GetSize()))
                  .ok());
  EXPECT_EQ(Sql(path, "SELECT group_concat(name) FROM pragma_table_info('temps')"),
            "origin,seq,ts_ms,received_ms,n\n");
  EXPECT_EQ(Sql(path, "CREATE VIEW hum AS SELECT 1"), "");  // a name the stream cannot take
  auto r = Store(t.get(), a, Batch("hum", 1, 1));
  EXPECT_EQ(r.status().code(), Code::kEINVAL) << r.status().ToString();
}

TEST_F(StreamTablesTest, ATableDroppedByAnotherConnectionIsMadeAgain) {
  ASSERT_TRUE(Store(t.get(), a, Batch("temps", 1, 3)).ok());
  EXPECT_EQ(Sql(path, "DROP TABLE temps"), "");  // an archive job took the rows away
  auto r = Store(t.get(), a, Batch("temps", 4, 6));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Sql(path, "SELECT min(seq), max(seq) FROM temps"), "4|6\n");
}

}  // namespace
}  // namespace cairn::server
