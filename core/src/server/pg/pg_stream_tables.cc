#include "server/pg/pg_stream_tables.h"

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <deque>
#include <map>
#include <vector>

#include "base/strings.h"
#include "protocol/stream_codec.h"
#include "server/pg/pg.h"
#include "server/pg/pg_columns.h"

namespace cairn::server {

namespace {

using pg::ColType;
using pg::FromSqlType;
using pg::Join;
using pg::SqlType;
using pg::ToParam;
using pg::TypeOf;

// Parameters of one INSERT: PostgreSQL takes at most 65,535.
constexpr size_t kMaxParams = 60000;

class PgStreamTables final : public StreamSink {
 public:
  explicit PgStreamTables(std::string url) : url_(std::move(url)) {}
  Status Connect() { return pg::Reconnected(&db_, url_).status(); }
  Result<StreamStoreResult> Store(const ReplicaId& origin, const wire::StreamBatch& batch,
                                  int64_t now_ms, uint32_t max_records) override;

 private:
  struct Column {
    std::string name;
    ColType type = ColType::kNone;
  };
  struct Table {
    bool exists = false;
    std::map<std::string, Column> columns;  // by lower-case name
  };
  // What the database has for `stream` (in this transaction); EINVAL when the name is taken by
  // something else: another stream's table differing only in case, a view.
  Result<Table> ReadTable(pg::Conn* db, const std::string& stream);

  std::string url_;
  std::unique_ptr<pg::Conn> db_;
};

Result<PgStreamTables::Table> PgStreamTables::ReadTable(pg::Conn* db, const std::string& stream) {
  Table t;
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows found,
      db->Exec("SELECT table_name::text, table_type::text FROM information_schema.tables "
               "WHERE table_schema = current_schema() AND lower(table_name) = lower($1)",
               {pg::Param::Text(stream)}));
  for (int i = 0; i < found.size(); i++) {
    const std::string_view name = found.Bytes(i, 0), type = found.Bytes(i, 1);
    if (name != stream || type != "BASE TABLE") {
      return Status::Invalid("stream '" + stream + "' cannot have a table: the database has a " +
                             std::string(type == "BASE TABLE" ? "table" : type) + " '" +
                             std::string(name) + "' (SQL names ignore case)");
    }
    t.exists = true;
  }
  if (!t.exists) return t;
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows cols,
      db->Exec("SELECT column_name::text, data_type::text FROM information_schema.columns "
               "WHERE table_schema = current_schema() AND table_name = $1",
               {pg::Param::Text(stream)}));
  for (int i = 0; i < cols.size(); i++) {
    Column c{std::string(cols.Bytes(i, 0)), FromSqlType(cols.Bytes(i, 1))};
    t.columns[AsciiLower(c.name)] = c;
  }
  return t;
}

Result<StreamStoreResult> PgStreamTables::Store(const ReplicaId& origin,
                                                const wire::StreamBatch& batch, int64_t now_ms,
                                                uint32_t max_records) {
  StreamStoreResult result;
  CAIRN_ASSIGN_OR_RETURN(const std::string stream, protocol::StreamBatchName(batch, max_records));
  if (stream.empty()) return result;
  std::vector<protocol::StreamRecord> records;
  CAIRN_RETURN_IF_ERROR(protocol::DecodeStreamBatch(
      batch, max_records, [&](const protocol::StreamRecord& rec) -> Status {
        records.push_back(rec);
        return Status::OK();
      }));
  if (records.empty()) return result;
  // Per field of the batch (by its index): the type its values need, whether any record has it.
  const auto* fields = batch.fields();
  const size_t field_count = fields ? fields->size() : 0;
  std::vector<ColType> needs(field_count, ColType::kNone);
  std::vector<bool> used(field_count, false);
  for (const auto& rec : records) {
    for (const auto& [idx, value] : rec.fields) {
      used[idx] = true;
      needs[idx] = Join(needs[idx], TypeOf(value));
    }
  }

  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, pg::Reconnected(&db_, url_));
  pg::Txn txn(db);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  // A schema change the database refuses for what it is (a name, a limit, a value: SQLSTATE
  // classes 42, 54, 22) is the batch's refusal (EINVAL); a passing trouble (a lock or statement
  // timeout, a lost connection) is the server's, and the client sends the batch again later.
  auto schema = [&](const Status& s) {
    if (s.ok() || s.code() == Code::kEINVAL) return s;
    const std::string state = db->last_sqlstate();
    if (state.rfind("42", 0) != 0 && state.rfind("54", 0) != 0 && state.rfind("22", 0) != 0) {
      return s;
    }
    return Status::Invalid("cannot store stream '" + stream + "': " + s.message());
  };
  // The table and columns as the batch needs them: what to make or widen, if anything.
  std::vector<Column> columns(field_count);
  auto plan = [&](const Table& t, std::vector<std::string>* ddl) {
    const std::string table = QuoteIdent(stream);
    if (!t.exists) {
      ddl->push_back("CREATE TABLE " + table +
                     "(origin text NOT NULL, seq bigint NOT NULL, ts_ms bigint NOT NULL, "
                     "received_ms bigint NOT NULL, PRIMARY KEY (origin, seq))");
    }
    for (size_t i = 0; i < field_count; i++) {
      if (!used[i]) continue;
      const std::string field = fields->Get(static_cast<flatbuffers::uoffset_t>(i))->str();
      auto it = t.columns.find(AsciiLower(field));
      if (it == t.columns.end()) {
        // A new column: the type of its values here (text when all are null).
        const ColType type = needs[i] == ColType::kNone ? ColType::kText : needs[i];
        columns[i] = Column{field, type};
        ddl->push_back("ALTER TABLE " + table + " ADD COLUMN " + QuoteIdent(field) + " " +
                       SqlType(type));
        continue;
      }
      // A field differing from a column only in case shares it (as with SQLite).
      columns[i] = it->second;
      const ColType wider = Join(it->second.type, needs[i]);
      if (wider != it->second.type) {
        ddl->push_back("ALTER TABLE " + table + " " +
                       pg::WidenColumn(QuoteIdent(it->second.name), it->second.type, wider));
        columns[i].type = wider;
      }
    }
  };
  Result<Table> table = ReadTable(db, stream);
  if (!table.ok()) return schema(table.status());
  std::vector<std::string> ddl;
  plan(*table, &ddl);
  if (!ddl.empty()) {
    // Another node may be making the same table or column: one at a time, and look again.
    // (The same lock on every node of this schema.)
    CAIRN_RETURN_IF_ERROR(
        db->Exec("SELECT pg_advisory_xact_lock(hashtext(current_schema()), 2)").status());
    table = ReadTable(db, stream);
    if (!table.ok()) return schema(table.status());
    ddl.clear();
    plan(*table, &ddl);
    for (const std::string& statement : ddl) {
      CAIRN_RETURN_IF_ERROR(schema(db->ExecScript(statement.c_str())));
    }
  }

  // The rows, many per INSERT; records lacking a field get NULL there.
  std::string head = "INSERT INTO " + QuoteIdent(stream) + "(origin, seq, ts_ms, received_ms";
  std::vector<size_t> present;  // the batch's field indexes that some record has
  for (size_t i = 0; i < field_count; i++) {
    if (!used[i]) continue;
    present.push_back(i);
    head += ", " + QuoteIdent(columns[i].name);
  }
  head += ") VALUES ";
  const size_t per_row = 4 + present.size();
  const size_t rows_per_insert = std::max<size_t>(1, std::min<size_t>(1000, kMaxParams / per_row));
  const std::string origin_hex = origin.Hex();
  std::vector<const Value*> row(field_count);
  for (size_t first = 0; first < records.size(); first += rows_per_insert) {
    const size_t last = std::min(records.size(), first + rows_per_insert);
    std::string sql = head;
    std::vector<pg::Param> params;
    std::deque<std::string> arena;
    params.reserve((last - first) * per_row);
    for (size_t r = first; r < last; r++) {
      const protocol::StreamRecord& rec = records[r];
      std::fill(row.begin(), row.end(), nullptr);
      for (const auto& [idx, value] : rec.fields) row[idx] = &value;
      sql += r == first ? "(" : ",(";
      for (size_t c = 0; c < per_row; c++) {
        sql += (c == 0 ? "$" : ",$") + std::to_string(params.size() + c + 1);
      }
      sql += ")";
      params.push_back(pg::Param::Text(origin_hex));
      params.push_back(pg::Param(rec.seq));
      params.push_back(pg::Param(rec.ts_ms));
      params.push_back(pg::Param(now_ms));
      for (size_t i : present) {
        params.push_back(row[i] ? ToParam(*row[i], columns[i].type, &arena) : pg::Param::Null());
      }
    }
    sql += " ON CONFLICT (origin, seq) DO NOTHING RETURNING 1";
    CAIRN_ASSIGN_OR_RETURN(pg::Rows stored, db->Exec(sql, params));
    result.stored += static_cast<uint64_t>(stored.size());
    result.duplicates += (last - first) - static_cast<uint64_t>(stored.size());
  }
  result.through = records.back().seq;
  CAIRN_RETURN_IF_ERROR(txn.Commit());
  return result;
}

}  // namespace

Result<std::unique_ptr<StreamSink>> OpenPgStreamTables(const std::string& url) {
  auto tables = std::make_unique<PgStreamTables>(url);
  CAIRN_RETURN_IF_ERROR(tables->Connect());
  return std::unique_ptr<StreamSink>(std::move(tables));
}

}  // namespace cairn::server
