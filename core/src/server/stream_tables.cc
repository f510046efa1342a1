#include "server/stream_tables.h"

#include "base/strings.h"
#include "oplog/record.h"
#include "protocol/stream_codec.h"
#include "store/replica_store.h"

namespace cairn::server {

Result<std::unique_ptr<StreamTables>> StreamTables::Open(const std::string& path) {
  std::unique_ptr<StreamTables> t(new StreamTables());
  CAIRN_RETURN_IF_ERROR(t->db_.Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  t->db_.SetBusyTimeout(5000);
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
  const std::string lower = AsciiLower(name);
  auto it = tables_.find(lower);
  if (it == tables_.end()) {
    // SQL names ignore case: a table (or view, index) of this name in another case would be
    // shared with another stream, whose (origin, seq) keys would take these records for copies.
    CAIRN_ASSIGN_OR_RETURN(store::Stmt find, db_.Prepare(
        "SELECT name, type FROM sqlite_schema WHERE name = ? COLLATE NOCASE"));
    find.BindText(1, name);
    CAIRN_ASSIGN_OR_RETURN(bool exists, find.Step());
    if (exists && (find.Text(1) != "table" || find.Text(0) != name)) {
      return Status::Invalid("stream '" + name + "' cannot have a table: the server's streams "
                             "file has a " + std::string(find.Text(1)) + " '" +
                             std::string(find.Text(0)) + "' (SQL names ignore case)");
    }
    find = store::Stmt();
    if (!exists) {
      CAIRN_RETURN_IF_ERROR(db_.Exec(
          "CREATE TABLE " + QuoteIdent(name) +
          "(origin TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, "
          "received_ms INTEGER NOT NULL, PRIMARY KEY (origin, seq)) WITHOUT ROWID"));
    }
    Table t;
    t.name = name;
    CAIRN_ASSIGN_OR_RETURN(store::Stmt info,
                           db_.Prepare("SELECT name FROM pragma_table_info(?)"));
    info.BindText(1, name);
    CAIRN_RETURN_IF_ERROR(info.ForEachRow([&] {
      std::string column(info.Text(0));
      t.columns[AsciiLower(column)] = column;
      return Status::OK();
    }));
    it = tables_.emplace(lower, std::move(t)).first;
  }
  if (it->second.name != name) {
    return Status::Invalid("stream '" + name + "' differs only in case from the stream '" +
                           it->second.name + "' (SQL names ignore case)");
  }
  return &it->second;
}

Status StreamTables::EnsureColumn(const std::string& stream, Table* t, const std::string& field,
                                  std::string* column) {
  const std::string lower = AsciiLower(field);
  auto it = t->columns.find(lower);
  if (it == t->columns.end()) {
    CAIRN_RETURN_IF_ERROR(db_.Exec("ALTER TABLE " + QuoteIdent(stream) + " ADD COLUMN " +
                                   QuoteIdent(field)));
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
  CAIRN_ASSIGN_OR_RETURN(const std::string stream,
                         protocol::StreamBatchName(batch, max_records));
  if (stream.empty()) return result;
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
  // The table and the columns the records use are made as needed. A schema change that fails
  // (a column limit, a name taken) is the batch's refusal, not a server error: the client would
  // otherwise send the same batch again at every reconnection.
  auto schema = [&](const Status& s) {
    return s.ok() || s.code() == Code::kEINVAL
               ? s
               : Status::Invalid("cannot store stream '" + stream + "': " + s.message());
  };
  Result<Table*> made = EnsureTable(stream);
  if (!made.ok()) return schema(made.status());
  Table* table = made.value();
  const auto* fields = batch.fields();
  std::vector<std::string> columns(fields ? fields->size() : 0);  // "" until a record uses it
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
          for (uint32_t idx : shape) {
            if (fields != nullptr && columns[idx].empty()) {
              CAIRN_RETURN_IF_ERROR(
                  schema(EnsureColumn(stream, table, fields->Get(idx)->str(), &columns[idx])));
            }
          }
          std::string sql = "INSERT OR IGNORE INTO " + QuoteIdent(stream) +
                            "(origin, seq, ts_ms, received_ms";
          std::string values = "?,?,?,?";
          for (uint32_t idx : shape) {
            sql += ", " + QuoteIdent(columns[idx]);
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
