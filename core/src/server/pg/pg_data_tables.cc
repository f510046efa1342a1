#include "server/pg/pg_data_tables.h"

#include <algorithm>
#include <vector>

#include "base/strings.h"
#include "crdt/doc_state.h"

namespace cairn::server::pg {

namespace {

// Documents read and written at a time by a rebuild.
constexpr size_t kRebuildChunk = 1000;

// A text column cannot hold U+0000, which a Cairn string may: it shows as U+FFFD there (the
// document itself keeps it; docs/backend.md "SQL tables").
Value ForText(const Value& v) {
  if (v.type() != ValueType::kString || v.as_string().find('\0') == std::string::npos) return v;
  std::string s;
  for (char c : v.as_string()) {
    if (c == '\0') {
      s += "\xEF\xBF\xBD";
    } else {
      s += c;
    }
  }
  return Value::String(std::move(s));
}

}  // namespace

std::string DataTables::SchemaFor(const std::string& store_schema) {
  return store_schema == "public" || store_schema.empty() ? "cairn_data" : store_schema + "_data";
}

Status DataTables::EnsureSchema(Conn* db) {
  // Made by an administrator beforehand, the role needs no CREATE on the database.
  CAIRN_ASSIGN_OR_RETURN(
      Rows found,
      db->Exec("SELECT 1::bigint FROM pg_namespace WHERE nspname = $1", {Param::Text(schema_)}));
  if (found.size() > 0) return Status::OK();
  // (IF NOT EXISTS: a node of an earlier version may make it at the same moment.)
  return db->ExecScript(("CREATE SCHEMA IF NOT EXISTS " + QuoteIdent(schema_)).c_str());
}

Result<DataTables::Table> DataTables::ReadTable(Conn* db, const std::string& collection) {
  Table t;
  // (The catalog, not information_schema: read at every push.)
  CAIRN_ASSIGN_OR_RETURN(
      Rows cols,
      db->Exec("SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
               "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
               {Param::Text(QuoteIdent(schema_) + "." + QuoteIdent(collection))}));
  for (int i = 0; i < cols.size(); i++) {
    t.exists = true;
    const std::string name(cols.Bytes(i, 0));
    if (name == "key" || name == "cairn_cursor") continue;
    t.columns[name] = FromSqlType(cols.Bytes(i, 1));
  }
  return t;
}

Result<DataTables::Table> DataTables::EnsureTable(Conn* db, const std::string& collection,
                                                  const std::map<std::string, ColType>& needs) {
  const std::string table = QuoteIdent(schema_) + "." + QuoteIdent(collection);
  auto plan = [&](const Table& t, std::vector<std::string>* ddl) {
    Table out = t;
    if (!t.exists) {
      ddl->push_back("CREATE TABLE " + table +
                     "(key text PRIMARY KEY, cairn_cursor bigint NOT NULL)");
      out.exists = true;
    }
    for (const auto& [field, type] : needs) {
      auto it = t.columns.find(field);
      if (it == t.columns.end()) {
        const ColType made = type == ColType::kNone ? ColType::kText : type;  // (all null)
        ddl->push_back("ALTER TABLE " + table + " ADD COLUMN " + QuoteIdent(field) + " " +
                       SqlType(made));
        out.columns[field] = made;
        continue;
      }
      const ColType wider = Join(it->second, type);
      if (wider != it->second) {
        ddl->push_back("ALTER TABLE " + table + " " +
                       WidenColumn(QuoteIdent(field), it->second, wider));
        out.columns[field] = wider;
      }
    }
    return out;
  };
  // The table as it is now (read every time: another node may have widened a column, and
  // every writer of these tables holds the log's head lock, so nothing changes it meanwhile).
  std::vector<std::string> ddl;
  CAIRN_ASSIGN_OR_RETURN(Table now, ReadTable(db, collection));
  Table out = plan(now, &ddl);
  if (ddl.empty()) return out;
  // DDL needs the table to itself: a reader's open transaction on it would hold the push (and
  // the log's lock) without end, so it waits 2 s at most, then the push fails (its client
  // sends it again). Statements of this transaction after it: the server's usual timeout.
  CAIRN_RETURN_IF_ERROR(db->ExecScript("SET LOCAL lock_timeout = '2s'"));
  for (const std::string& statement : ddl) {
    Status made = db->ExecScript(statement.c_str());
    if (!made.ok()) return Status(Code::kEBUSY, "changing a SQL table: " + made.message());
  }
  return db->ExecScript("SET LOCAL lock_timeout = DEFAULT").ok()
             ? Result<Table>(std::move(out))
             : Result<Table>(Status(Code::kEBUSY, "resetting lock_timeout"));
}

Status DataTables::WriteCollection(Conn* db, const std::string& collection,
                                   const std::map<std::string, std::optional<Fields>>& docs,
                                   uint64_t cursor) {
  std::map<std::string, ColType> needs;
  for (const auto& [key, fields] : docs) {
    if (!fields) continue;
    for (const auto& [name, value] : *fields) needs[name] = Join(needs[name], TypeOf(value));
  }
  CAIRN_ASSIGN_OR_RETURN(const Table t, EnsureTable(db, collection, needs));
  const std::string table = QuoteIdent(schema_) + "." + QuoteIdent(collection);
  // The documents' rows go, then the visible ones come back whole (COPY): a field a document
  // no longer has (deleted, then written again without it) leaves nothing behind.
  std::vector<const std::string*> keys;
  for (const auto& entry : docs) keys.push_back(&entry.first);
  CAIRN_RETURN_IF_ERROR(
      db->Exec("DELETE FROM " + table + " WHERE key IN (SELECT unnest($1::text[]))",
               {Param::Text(TextArray(keys))})
          .status());
  std::string copy = "COPY " + table + "(key, cairn_cursor";
  for (const auto& [field, type] : needs) copy += ", " + QuoteIdent(field);
  copy += ") FROM STDIN";
  std::string data;
  const std::string cursor_text = "\t" + std::to_string(cursor);
  for (const auto& [key, visible] : docs) {
    if (!visible) continue;
    AppendCopyField(&data, key);
    data += cursor_text;
    for (const auto& [field, type] : needs) {
      data += '\t';
      auto v = visible->find(field);
      if (v == visible->end() || v->second.type() == ValueType::kNull) {
        data += "\\N";
      } else {
        AppendCopyField(&data, TextOf(ForText(v->second), t.columns.at(field)));
      }
    }
    data += '\n';
  }
  if (!data.empty()) CAIRN_RETURN_IF_ERROR(db->CopyIn(copy, data));
  return Status::OK();
}

Status DataTables::Write(Conn* db, store::ReplicaStore* state, const DocRefs& docs,
                         uint64_t cursor) {
  Status st;
  for (auto it = docs.begin(); st.ok() && it != docs.end();) {
    const std::string& collection = it->first;
    std::map<std::string, std::optional<Fields>> rows;
    for (; it != docs.end() && it->first == collection; ++it) {
      // (CopyDoc: the push's changes are not written to the file before its commit.)
      Result<crdt::DocState> doc = state->CopyDoc(collection, it->second);
      if (!doc.ok()) {
        st = doc.status();
        break;
      }
      rows.emplace(it->second, doc->Visible()
                                   ? std::optional<Fields>(crdt::VisibleFields(doc->cells))
                                   : std::nullopt);
    }
    if (st.ok()) st = WriteCollection(db, collection, rows, cursor);
  }
  return st;
}

Status DataTables::Rebuild(Conn* db, store::ReplicaStore* state, uint64_t cursor) {
  CAIRN_ASSIGN_OR_RETURN(Rows tables,
                         db->Exec("SELECT table_name::text FROM information_schema.tables "
                                  "WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
                                  {Param::Text(schema_)}));
  for (int i = 0; i < tables.size(); i++) {
    CAIRN_RETURN_IF_ERROR(db->ExecScript(
        ("TRUNCATE " + QuoteIdent(schema_) + "." + QuoteIdent(std::string(tables.Bytes(i, 0))))
            .c_str()));
  }
  for (const std::string& collection : state->CollectionNames()) {
    std::map<std::string, std::optional<Fields>> rows;
    auto flush = [&]() -> Status {
      Status written = WriteCollection(db, collection, rows, cursor);
      rows.clear();
      return written;
    };
    CAIRN_RETURN_IF_ERROR(state->ForEachDocFields(
        collection, [&](const std::string& key, const Fields& fields) -> Status {
          if (fields.empty()) return Status::OK();  // deleted
          rows.emplace(key, fields);
          return rows.size() == kRebuildChunk ? flush() : Status::OK();
        }));
    if (!rows.empty()) CAIRN_RETURN_IF_ERROR(flush());
  }
  return Status::OK();
}

}  // namespace cairn::server::pg
