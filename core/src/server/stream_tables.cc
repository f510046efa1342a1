#include "server/stream_tables.h"

#include "base/strings.h"
#include "oplog/record.h"
#include "protocol/stream_codec.h"
#include "store/replica_store.h"

namespace cairn::server {

Result<std::unique_ptr<StreamTables>> StreamTables::Open(const std::string& path) {
  std::unique_ptr<StreamTables> t(new StreamTables());
  CAIRN_RETURN_IF_ERROR(t->db_.Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  sqlite3_busy_timeout(t->db_.raw(), 5000);
  // WAL and synchronous=FULL: a record is acknowledged only once it would survive power loss.
  CAIRN_RETURN_IF_ERROR(t->db_.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  return t;
}

Result<int64_t> StreamTables::SchemaVersion() {
  CAIRN_ASSIGN_OR_RETURN(store::Stmt st, db_.Prepare("PRAGMA schema_version"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : int64_t{-1};
}

Result<StreamTables::Table*> StreamTables::EnsureTable(const std::string& name) {
  auto it = tables_.find(name);
  if (it != tables_.end()) return &it->second;
  CAIRN_RETURN_IF_ERROR(db_.Exec(
      "CREATE TABLE IF NOT EXISTS " + store::QuoteIdent(name) +
      "(origin TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, "
      "received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID"));
  Table t;
  CAIRN_ASSIGN_OR_RETURN(store::Stmt info,
                         db_.Prepare("SELECT name FROM pragma_table_info(?)"));
  info.BindText(1, name);
  CAIRN_RETURN_IF_ERROR(info.ForEachRow([&] {
    std::string column(info.Text(0));
    t.columns[AsciiLower(column)] = column;
    return Status::OK();
  }));
  return &tables_.emplace(name, std::move(t)).first->second;
}

Status StreamTables::EnsureColumn(const std::string& stream, Table* t, const std::string& field,
                                  std::string* column) {
  const std::string lower = AsciiLower(field);
  auto it = t->columns.find(lower);
  if (it == t->columns.end()) {
    CAIRN_RETURN_IF_ERROR(db_.Exec("ALTER TABLE " + store::QuoteIdent(stream) + " ADD COLUMN " +
                                   store::QuoteIdent(field)));
    it = t->columns.emplace(lower, field).first;
  }
  // A field differing from an existing column only in case shares it (SQL names ignore case).
  *column = it->second;
  return Status::OK();
}

Result<StreamStoreResult> StreamTables::Store(const ReplicaId& origin,
                                              const wire::StreamBatch& batch, int64_t now_ms,
                                              uint32_t max_records) {
  StreamStoreResult result;
  // Names are checked before any table or column is made for them.
  CAIRN_RETURN_IF_ERROR(protocol::CheckStreamBatchHeader(batch, max_records));
  const flatbuffers::String* name = batch.stream();
  if (batch.record_count() == 0 || name == nullptr) return result;  // (the check refused no name)
  const std::string stream = name->str();
  CAIRN_ASSIGN_OR_RETURN(auto txn, store::Txn::Begin(&db_));
  // Someone changed the file's tables since this server last did (an archive job dropped a
  // table, say): what the cache says exists is read again.
  CAIRN_ASSIGN_OR_RETURN(int64_t version, SchemaVersion());
  if (version != schema_version_) tables_.clear();
  // Schema changes happen inside the transaction, so a failed batch leaves no table or column
  // behind; the cache is then forgotten too.
  struct ForgetUnlessCommitted {
    StreamTables* self;
    bool committed = false;
    ~ForgetUnlessCommitted() {
      if (!committed) self->tables_.clear();
    }
  } forget{this};
  CAIRN_ASSIGN_OR_RETURN(Table * table, EnsureTable(stream));
  std::vector<std::string> columns;
  if (const auto* fields = batch.fields()) {
    columns.resize(fields->size());
    for (uint32_t i = 0; i < fields->size(); i++) {
      CAIRN_RETURN_IF_ERROR(EnsureColumn(stream, table, fields->Get(i)->str(), &columns[i]));
    }
  }
  const std::string origin_hex = origin.Hex();
  // One statement per shape of record (which fields, in which order) within this batch.
  std::map<std::vector<uint32_t>, store::Stmt> inserts;
  std::vector<uint32_t> shape;
  Status st = protocol::DecodeStreamBatch(
      batch, max_records, [&](const protocol::StreamRecord& rec) -> Status {
        shape.clear();
        for (const auto& f : rec.fields) shape.push_back(f.first);
        auto it = inserts.find(shape);
        if (it == inserts.end()) {
          std::string sql = "INSERT OR IGNORE INTO " + store::QuoteIdent(stream) +
                            "(origin, seq, ts_ms, received_ms";
          std::string values = "?,?,?,?";
          for (uint32_t idx : shape) {
            sql += ", " + store::QuoteIdent(columns[idx]);
            values += ",?";
          }
          CAIRN_ASSIGN_OR_RETURN(store::Stmt s, db_.Prepare(sql + ") VALUES (" + values + ")"));
          it = inserts.emplace(shape, std::move(s)).first;
        }
        store::Stmt& ins = it->second;
        ins.BindStaticText(1, origin_hex);
        ins.BindInt(2, static_cast<int64_t>(rec.seq));
        ins.BindInt(3, rec.ts_ms);
        ins.BindInt(4, now_ms);
        int i = 5;
        for (const auto& f : rec.fields) store::BindSqlValue(&ins, i++, f.second);
        CAIRN_RETURN_IF_ERROR(ins.Run());
        if (db_.Changes() > 0) {
          result.stored++;
        } else {
          result.duplicates++;
        }
        result.through = rec.seq;
        return Status::OK();
      });
  CAIRN_RETURN_IF_ERROR(st);
  inserts.clear();
  CAIRN_ASSIGN_OR_RETURN(schema_version_, SchemaVersion());
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  forget.committed = true;
  return result;
}

}  // namespace cairn::server
