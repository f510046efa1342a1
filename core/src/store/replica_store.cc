#include "store/replica_store.h"

#include <algorithm>
#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/value_codec.h"
#include "store/replica_store_rows.h"

namespace cairn::store {

namespace {

// What format 2 added to format 1: the sync position (docs/storage-format.md).
const char* const kSyncSchema = R"sql(
CREATE TABLE IF NOT EXISTS cairn_sync(
  id INTEGER PRIMARY KEY CHECK (id = 1), server_id BLOB, cursor INTEGER NOT NULL,
  subscriptions TEXT, last_sync_ms INTEGER);
INSERT OR IGNORE INTO cairn_sync(id, cursor) VALUES (1, 0);
)sql";

// What format 3 added to format 2: a snapshot being received (docs/storage-format.md).
const char* const kSnapshotSchema = R"sql(
CREATE TABLE IF NOT EXISTS cairn_snapshot(
  id INTEGER PRIMARY KEY CHECK (id = 1), server_id BLOB NOT NULL, cursor INTEGER NOT NULL,
  rebase INTEGER NOT NULL, wanted TEXT NOT NULL,
  watermarks BLOB NOT NULL, after_collection TEXT NOT NULL, after_key TEXT NOT NULL);
)sql";

// What format 4 added to format 3: per outbox transaction, the ops it superseded (to undo it
// if the server refuses it); received ops that a local op not yet acknowledged outranks
// (cairn_superseded, by that op's seq); the clock correction last learnt from a server.
const char* const kRefusalSchema = R"sql(
ALTER TABLE cairn_outbox ADD COLUMN superseded BLOB;
ALTER TABLE cairn_sync ADD COLUMN clock_offset_ms INTEGER;
CREATE TABLE IF NOT EXISTS cairn_superseded(
  under_seq INTEGER NOT NULL, origin INTEGER NOT NULL, seq INTEGER NOT NULL,
  hlc INTEGER NOT NULL, kind INTEGER NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL,
  field TEXT, vtype INTEGER, value, delta INTEGER,
  PRIMARY KEY (under_seq, origin, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cairn_rejected_op ON cairn_rejected(origin, seq);
)sql";

// What format 6 added to format 5: the collections the server's sync rules keep one-way
// (docs/sync-rules.md), a JSON array of lower-case names.
const char* const kReadOnlySchema = R"sql(
ALTER TABLE cairn_sync ADD COLUMN read_only TEXT;
)sql";

// What format 7 added to format 6: the digest of the sync rules the cursor was received under
// (docs/sync-rules.md "Rules that change").
const char* const kRulesDigestSchema = R"sql(
ALTER TABLE cairn_sync ADD COLUMN rules_digest TEXT;
)sql";

// What format 8 added to format 7: the history horizon the state is folded at
// (docs/crdt-semantics.md "History horizon"; 0: never folded), and which refused ops are to be
// written again (refused for the horizon: the first seq of their transaction; 0: not).
const char* const kHorizonSchema = R"sql(
ALTER TABLE cairn_state ADD COLUMN horizon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cairn_rejected ADD COLUMN reapply INTEGER NOT NULL DEFAULT 0;
)sql";

// Storage format 8 (docs/storage-format.md): format 1's tables, then kSyncSchema,
// kSnapshotSchema, kRefusalSchema, kStreamSchema (store/stream_store.cc), kReadOnlySchema,
// kRulesDigestSchema and kHorizonSchema.
const char* const kSchema = R"sql(
CREATE TABLE cairn_state(
  id INTEGER PRIMARY KEY CHECK (id = 1), replica_id BLOB NOT NULL, hlc INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE cairn_origins(
  idx INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, through INTEGER NOT NULL DEFAULT 0);
CREATE TABLE cairn_collections(
  idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, materialized INTEGER NOT NULL);
CREATE TABLE cairn_fields(idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE cairn_columns(
  coll INTEGER NOT NULL, field INTEGER NOT NULL, materialized INTEGER NOT NULL,
  PRIMARY KEY (coll, field)) WITHOUT ROWID;
CREATE TABLE cairn_docs(
  coll INTEGER NOT NULL, key TEXT NOT NULL,
  del_hlc INTEGER, del_origin INTEGER, del_seq INTEGER, cells BLOB,
  PRIMARY KEY (coll, key)) WITHOUT ROWID;
CREATE TABLE cairn_incs(
  coll INTEGER NOT NULL, key TEXT NOT NULL, field INTEGER NOT NULL, origin INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, delta INTEGER NOT NULL,
  PRIMARY KEY (coll, key, field, origin, seq)) WITHOUT ROWID;
CREATE TABLE cairn_outbox(
  first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, max_hlc INTEGER NOT NULL,
  batch BLOB NOT NULL);
CREATE TABLE cairn_rejected(
  id INTEGER PRIMARY KEY, origin BLOB NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
  kind INTEGER NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL, field TEXT,
  vtype INTEGER, value, delta INTEGER, code INTEGER NOT NULL, reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL);
CREATE TABLE cairn_pending_ops(
  unit INTEGER NOT NULL, origin INTEGER NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
  kind INTEGER NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL, field TEXT,
  vtype INTEGER, value, delta INTEGER,
  PRIMARY KEY (unit, origin, seq)) WITHOUT ROWID;
CREATE TABLE cairn_pending_ranges(
  unit INTEGER NOT NULL, origin INTEGER NOT NULL, from_seq INTEGER NOT NULL,
  through_seq INTEGER NOT NULL, PRIMARY KEY (unit, origin)) WITHOUT ROWID;
)sql";

}  // namespace

namespace rows {

// Binds `v` as (vtype, value) at columns i, i+1 (the pending and rejected tables).
void BindValue(Stmt* s, int i, const Value& v) {
  s->BindInt(i, static_cast<int>(v.type()));
  BindSqlValue(s, i + 1, v);
}

// Binds (owner, origin, seq, hlc, kind, collection, key, field, vtype, value, delta): a row of
// cairn_pending_ops (owner: the unit) or cairn_superseded (owner: the outranking seq).
void BindOpRow(Stmt* s, int64_t owner, int64_t origin, const Op& op) {
  s->BindInt(1, owner);
  s->BindInt(2, origin);
  s->BindInt(3, I(op.id.seq));
  s->BindInt(4, I(op.id.hlc));
  s->BindInt(5, static_cast<int>(op.kind));
  s->BindStaticText(6, op.collection);
  s->BindStaticText(7, op.key);
  if (op.kind == OpKind::kDelete) {
    s->BindNull(8);
  } else {
    s->BindStaticText(8, op.field);
  }
  if (op.kind == OpKind::kSet) {
    BindValue(s, 9, op.value);
  } else {
    s->BindNull(9);
    s->BindNull(10);
  }
  s->BindInt(11, op.delta);
}

Value ReadValue(const Stmt& s, int i) {
  switch (static_cast<ValueType>(s.Int(i))) {
    case ValueType::kNull:
      return Value::Null();
    case ValueType::kBool:
      return Value::Bool(s.Int(i + 1) != 0);
    case ValueType::kInt:
      return Value::Int(s.Int(i + 1));
    case ValueType::kDouble:
      return Value::Double(s.Double(i + 1));
    case ValueType::kString:
      return Value::String(std::string(s.Text(i + 1)));
    case ValueType::kBytes:
      return Value::Bytes(std::string(s.Blob(i + 1)));
  }
  return Value::Null();
}

}  // namespace rows

void BindSqlValue(Stmt* s, int i, const Value& v) {
  switch (v.type()) {
    case ValueType::kBool:
      s->BindInt(i, v.as_bool() ? 1 : 0);
      break;
    case ValueType::kInt:
      s->BindInt(i, v.as_int());
      break;
    case ValueType::kDouble:
      s->BindDouble(i, v.as_double());
      break;
    case ValueType::kString:
      s->BindStaticText(i, v.as_string());
      break;
    case ValueType::kBytes:
      s->BindStaticBlob(i, v.as_string());
      break;
    default:
      s->BindNull(i);
  }
}

Result<std::unique_ptr<ReplicaStore>> ReplicaStore::Open(const std::string& path,
                                                         const StoreOptions& options,
                                                         const ReplicaId& new_id,
                                                         int64_t now_ms) {
  std::unique_ptr<ReplicaStore> s(new ReplicaStore());
  s->options_ = options;
  int flags = options.read_only ? SQLITE_OPEN_READONLY
                                : SQLITE_OPEN_READWRITE | (options.create ? SQLITE_OPEN_CREATE : 0);
  CAIRN_RETURN_IF_ERROR(s->db_.Open(path, flags));
  sqlite3_busy_timeout(s->db_.raw(), static_cast<int>(options.busy_timeout_ms));
  auto pragma = [&](const char* sql) -> Result<int64_t> {
    CAIRN_ASSIGN_OR_RETURN(Stmt st, s->db_.Prepare(sql));
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    return row ? st.Int(0) : 0;
  };
  // Reading the header: a file that is not SQLite fails here with ENOTREPLICA.
  CAIRN_ASSIGN_OR_RETURN(int64_t app_id, pragma("PRAGMA application_id"));
  CAIRN_ASSIGN_OR_RETURN(int64_t version, pragma("PRAGMA user_version"));
  CAIRN_ASSIGN_OR_RETURN(int64_t tables, pragma("SELECT count(*) FROM sqlite_schema"));
  if (app_id == 0 && version == 0 && tables == 0) {
    if (options.read_only) return Status(Code::kENOTREPLICA, path + " is an empty file");
    CAIRN_RETURN_IF_ERROR(s->InitSchema(new_id, now_ms));
  } else if (app_id != kApplicationId) {
    return Status(Code::kENOTREPLICA, path + " is not a Cairn replica");
  } else if (version > kFormatVersion) {
    return Status(Code::kEVERSION, path + " uses storage format " + std::to_string(version) +
                                       "; this Cairn reads formats up to " +
                                       std::to_string(kFormatVersion) + ": upgrade Cairn");
  }
  s->has_sync_table_ = version >= 2 || tables == 0;
  s->has_snapshot_table_ = version >= 3 || tables == 0;
  s->has_format4_ = version >= 4 || tables == 0;
  bool has_streams = version >= 5 || tables == 0;
  s->has_format6_ = version >= 6 || tables == 0;
  s->has_format7_ = version >= 7 || tables == 0;
  s->has_format8_ = version >= 8 || tables == 0;
  if (version < kFormatVersion && tables > 0 && !options.read_only) {
    // Format 1 -> 2: the sync position; 2 -> 3: the snapshot being received; 3 -> 4: what
    // outbox transactions superseded, the clock offset; 4 -> 5: streams; 5 -> 6: the one-way
    // collections; 6 -> 7: the sync rules' digest; 7 -> 8: the history horizon. One
    // transaction; the version is read
    // again under the write lock, in case another connection upgraded the file meanwhile.
    CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(&s->db_));
    CAIRN_ASSIGN_OR_RETURN(version, pragma("PRAGMA user_version"));
    if (version < kFormatVersion) {
      std::string sql;
      if (version < 2) sql += kSyncSchema;
      if (version < 3) sql += kSnapshotSchema;
      if (version < 4) sql += kRefusalSchema;
      if (version < 5) sql += kStreamSchema;
      if (version < 6) sql += kReadOnlySchema;
      if (version < 7) sql += kRulesDigestSchema;
      if (version < 8) sql += kHorizonSchema;
      sql += "PRAGMA user_version=" + std::to_string(kFormatVersion) + ";";
      CAIRN_RETURN_IF_ERROR(s->db_.Exec(sql));
    }
    CAIRN_RETURN_IF_ERROR(txn->Commit());
    s->has_sync_table_ = s->has_snapshot_table_ = s->has_format4_ = s->has_format6_ =
        s->has_format7_ = s->has_format8_ = has_streams = true;
  }
  s->streams_ = std::make_unique<StreamStore>(&s->db_, has_streams, options.read_only);
  if (!options.read_only) {
    // WAL, and synchronous=FULL: a committed write survives power loss (storage-format.md).
    CAIRN_RETURN_IF_ERROR(s->db_.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  }
  CAIRN_RETURN_IF_ERROR(s->Refresh());
  if (!options.read_only) CAIRN_RETURN_IF_ERROR(s->Prepare());
  return s;
}

ReplicaStore::~ReplicaStore() { (void)Close(); }

Status ReplicaStore::Close() {
  if (!db_.is_open()) return Status::OK();
  if (in_txn_) Rollback();
  streams_.reset();  // its statements go before the connection
  for (Stmt* s : {&begin_, &commit_, &rollback_, &find_doc_, &load_incs_, &insert_doc_,
                  &update_doc_, &put_inc_, &del_inc_, &del_incs_, &put_outbox_, &save_state_,
                  &set_through_, &stage_op_, &data_version_stmt_, &outbox_after_, &set_sync_, &keep_outranked_,
                  &get_doc_}) {
    *s = Stmt();
  }
  materialize_.clear();
  delete_row_.clear();
  return db_.Close();
}

Status ReplicaStore::InitSchema(const ReplicaId& new_id, int64_t now_ms) {
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(&db_));
  CAIRN_RETURN_IF_ERROR(db_.Exec(std::string(kSchema) + kSyncSchema + kSnapshotSchema +
                                 kRefusalSchema + kStreamSchema + kReadOnlySchema +
                                 kRulesDigestSchema + kHorizonSchema));
  CAIRN_RETURN_IF_ERROR(db_.Exec("PRAGMA application_id=" + std::to_string(kApplicationId) +
                                 "; PRAGMA user_version=" + std::to_string(kFormatVersion)));
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_state(id, replica_id, hlc, "
                                              "last_seq, created_ms) VALUES (1, ?, 0, 0, ?)"));
  st.BindBlob(1, new_id.Bytes());
  st.BindInt(2, now_ms);
  CAIRN_RETURN_IF_ERROR(st.Run());
  CAIRN_ASSIGN_OR_RETURN(Stmt o, db_.Prepare("INSERT INTO cairn_origins(idx, id) VALUES (1, ?)"));
  o.BindBlob(1, new_id.Bytes());
  CAIRN_RETURN_IF_ERROR(o.Run());
  return txn->Commit();
}

Status ReplicaStore::LoadRegistry() {
  collections_.clear();
  collection_names_.clear();
  collections_lower_.clear();
  fields_.clear();
  fields_lower_.clear();
  field_names_.clear();
  columns_.clear();
  columns_lower_.clear();
  origin_index_.clear();
  origins_.clear();
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st,
      db_.Prepare(std::string("SELECT replica_id, hlc, last_seq, "
                              "(SELECT max(max_hlc) FROM cairn_outbox), (SELECT max(last_seq) FROM "
                              "cairn_outbox), ") +
                  (has_format8_ ? "horizon" : "0") + " FROM cairn_state"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || !ReplicaId::FromBytes(st.Blob(0).data(), st.Blob(0).size(), &replica_id_)) {
    return Status::Corrupt("replica state row is missing or malformed");
  }
  // Local writes do not rewrite the state row: the outbox's newest transaction implies the
  // clock and the seq (docs/storage-format.md, "Write path").
  persisted_hlc_ = std::max(U(st.Int(1)), U(st.Int(3)));
  persisted_seq_ = std::max(U(st.Int(2)), U(st.Int(4)));
  hlc_ = persisted_hlc_;
  last_seq_ = persisted_seq_;
  horizon_ = U(st.Int(5));
  CAIRN_ASSIGN_OR_RETURN(Stmt c, db_.Prepare("SELECT idx, name, materialized FROM cairn_collections"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(row, c.Step());
    if (!row) break;
    std::string name(c.Text(1));
    collections_lower_[AsciiLower(name)] = name;
    collection_names_[c.Int(0)] = name;
    collections_[name] = Collection{c.Int(0), name, c.Int(2) != 0};
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt f, db_.Prepare("SELECT idx, name FROM cairn_fields"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(row, f.Step());
    if (!row) break;
    std::string name(f.Text(1));
    fields_lower_[AsciiLower(name)] = name;
    fields_[name] = f.Int(0);
    field_names_[f.Int(0)] = name;
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt col, db_.Prepare("SELECT coll, field, materialized FROM cairn_columns"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(row, col.Step());
    if (!row) break;
    columns_[{col.Int(0), col.Int(1)}] = col.Int(2) != 0;
    if (col.Int(2) != 0) columns_lower_.emplace(col.Int(0), AsciiLower(FieldName(col.Int(1))));
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt o, db_.Prepare("SELECT idx, id, through FROM cairn_origins"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(row, o.Step());
    if (!row) break;
    OriginInfo info;
    if (!ReplicaId::FromBytes(o.Blob(1).data(), o.Blob(1).size(), &info.id)) {
      return Status::Corrupt("malformed origin id");
    }
    info.through = U(o.Int(2));
    origin_index_[info.id] = o.Int(0);
    origins_[o.Int(0)] = info;
  }
  auto it = origin_index_.find(replica_id_);
  if (it == origin_index_.end()) return Status::Corrupt("local origin missing");
  local_origin_ = it->second;
  origins_[local_origin_].through = last_seq_;  // the local watermark is last_seq, not stored
  CAIRN_ASSIGN_OR_RETURN(SyncPosition pos, GetSyncPosition());
  read_only_ = std::move(pos.read_only);
  return Status::OK();
}

Status ReplicaStore::Prepare() {
  auto prep = [&](Stmt* s, const char* sql) -> Status {
    CAIRN_ASSIGN_OR_RETURN(*s, db_.Prepare(sql));
    return Status::OK();
  };
  CAIRN_RETURN_IF_ERROR(prep(&begin_, "BEGIN IMMEDIATE"));
  CAIRN_RETURN_IF_ERROR(prep(&commit_, "COMMIT"));
  CAIRN_RETURN_IF_ERROR(prep(&rollback_, "ROLLBACK"));
  CAIRN_RETURN_IF_ERROR(prep(&find_doc_,
      "SELECT del_hlc, del_origin, del_seq, cells FROM cairn_docs WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&load_incs_,
      "SELECT field, hlc, origin, seq, delta FROM cairn_incs WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&insert_doc_,
      "INSERT INTO cairn_docs(coll, key, del_hlc, del_origin, del_seq, cells) "
      "VALUES (?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&update_doc_,
      "UPDATE cairn_docs SET del_hlc = ?, del_origin = ?, del_seq = ?, cells = ? "
      "WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&put_inc_,
      "INSERT OR IGNORE INTO cairn_incs VALUES (?,?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&del_inc_,
      "DELETE FROM cairn_incs WHERE coll = ? AND key = ? AND field = ? AND origin = ? AND seq = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&del_incs_, "DELETE FROM cairn_incs WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&put_outbox_,
      "INSERT INTO cairn_outbox(first_seq, last_seq, max_hlc, batch, superseded) "
      "VALUES (?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&save_state_,
      "UPDATE cairn_state SET hlc = ?, last_seq = ? WHERE id = 1"));
  CAIRN_RETURN_IF_ERROR(prep(&set_through_, "UPDATE cairn_origins SET through = ? WHERE idx = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&stage_op_,
      "INSERT OR IGNORE INTO cairn_pending_ops VALUES (?,?,?,?,?,?,?,?,?,?,?)"));
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Transactions

Status ReplicaStore::Refresh() {
  if (!data_version_stmt_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(data_version_stmt_, db_.Prepare("PRAGMA data_version"));
  }
  auto row = data_version_stmt_.Step();
  int64_t version = row.ok() && row.value() ? data_version_stmt_.Int(0) : -1;
  data_version_stmt_.Reset();
  if (!row.ok()) return row.status();
  if (version == data_version_) return Status::OK();
  materialize_.clear();
  delete_row_.clear();
  CAIRN_RETURN_IF_ERROR(LoadRegistry());
  data_version_ = version;
  return Status::OK();
}

void ReplicaStore::ClearCache() {
  cache_.clear();
  cache_count_ = 0;
  last_coll_idx_ = last_field_idx_ = -1;
}

Status ReplicaStore::Begin() {
  if (in_txn_) return Status::Internal("transaction already open");
  if (!begin_.valid()) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(begin_.Run());
  in_txn_ = true;
  Status fresh = Refresh();  // under the write lock: nobody else can commit now
  if (!fresh.ok()) {
    Rollback();
    return fresh;
  }
  outbox_hlc_ = 0;
  outbox_seq_ = 0;
  unacked_from_ = 0;
  txn_local_ = false;
  txn_changed_.clear();
  ClearCache();
  return Status::OK();
}

Status ReplicaStore::Commit(Hlc hlc) {
  Status st = FlushAll();
  hlc_ = std::max(hlc_, hlc);
  const Hlc implied_hlc = std::max(persisted_hlc_, outbox_hlc_);
  const uint64_t implied_seq = std::max(persisted_seq_, outbox_seq_);
  if (st.ok() && (hlc_ > implied_hlc || last_seq_ > implied_seq)) {
    save_state_.BindInt(1, I(hlc_));
    save_state_.BindInt(2, I(last_seq_));
    st = save_state_.Run();
  }
  if (st.ok()) st = commit_.Run();
  if (!st.ok()) {
    Rollback();
    return st;
  }
  persisted_hlc_ = hlc_;
  persisted_seq_ = last_seq_;
  in_txn_ = false;
  commits_++;
  ClearCache();
  RecordChanges();
  return Status::OK();
}

void ReplicaStore::RecordChanges() {
  if (txn_changed_.empty()) return;
  std::sort(txn_changed_.begin(), txn_changed_.end());
  txn_changed_.erase(std::unique(txn_changed_.begin(), txn_changed_.end()), txn_changed_.end());
  const auto first = static_cast<std::ptrdiff_t>(committed_changes_.size());
  int64_t last_coll = -1;
  for (auto& [coll, key] : txn_changed_) {
    if (coll != last_coll) {
      committed_changes_.push_back(ChangeSet{CollectionByIndex(coll).name, {}, txn_local_});
      last_coll = coll;
    }
    committed_changes_.back().keys.push_back(std::move(key));
  }
  txn_changed_.clear();
  std::sort(committed_changes_.begin() + first, committed_changes_.end(),
            [](const ChangeSet& a, const ChangeSet& b) { return a.collection < b.collection; });
}

std::vector<ReplicaStore::ChangeSet> ReplicaStore::TakeChanges() {
  std::vector<ChangeSet> out;
  out.swap(committed_changes_);
  return out;
}

void ReplicaStore::Rollback() {
  if (in_txn_ && sqlite3_get_autocommit(db_.raw()) == 0) (void)rollback_.Run();
  in_txn_ = false;
  txn_changed_.clear();
  ClearCache();
  materialize_.clear();  // DDL of the transaction is gone
  delete_row_.clear();
  Status st = LoadRegistry();
  (void)st;  // the registry is re-read from the file; a failure here shows on the next call
}

// ---------------------------------------------------------------------------------------------
// Registry

std::string ReplicaStore::CollectionClash(const std::string& name) const {
  auto it = collections_lower_.find(AsciiLower(name));
  return it != collections_lower_.end() && it->second != name ? it->second : std::string();
}

std::string ReplicaStore::FieldClash(const std::string& name) const {
  auto it = fields_lower_.find(AsciiLower(name));
  return it != fields_lower_.end() && it->second != name ? it->second : std::string();
}

const ReplicaStore::Collection& ReplicaStore::CollectionByIndex(int64_t idx) const {
  return collections_.at(collection_names_.at(idx));
}

Result<int64_t> ReplicaStore::EnsureCollection(const std::string& name) {
  auto it = collections_.find(name);
  if (it != collections_.end()) return it->second.idx;
  // A name that clashes in case with an existing collection (possible only when two replicas
  // created them concurrently) is merged normally but not materialized as an SQL table.
  bool materialize = CollectionClash(name).empty();
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "INSERT INTO cairn_collections(name, materialized) VALUES (?, ?)"));
  st.BindText(1, name);
  st.BindInt(2, materialize ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  int64_t idx = sqlite3_last_insert_rowid(db_.raw());
  if (materialize) {
    CAIRN_RETURN_IF_ERROR(db_.Exec("CREATE TABLE " + QuoteIdent(name) +
                                   " (key TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID"));
  }
  collections_[name] = Collection{idx, name, materialize};
  collection_names_[idx] = name;
  collections_lower_.emplace(AsciiLower(name), name);
  return idx;
}

Result<int64_t> ReplicaStore::EnsureField(const std::string& name) {
  auto it = fields_.find(name);
  if (it != fields_.end()) return it->second;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_fields(name) VALUES (?)"));
  st.BindText(1, name);
  CAIRN_RETURN_IF_ERROR(st.Run());
  int64_t idx = sqlite3_last_insert_rowid(db_.raw());
  fields_[name] = idx;
  fields_lower_.emplace(AsciiLower(name), name);
  field_names_[idx] = name;
  return idx;
}

Status ReplicaStore::EnsureColumn(int64_t coll, int64_t field) {
  if (columns_.count({coll, field})) return Status::OK();
  const Collection& c = CollectionByIndex(coll);
  // A field whose name clashes in case with another column of this table is not materialized.
  const std::string& fname = FieldName(field);
  const bool materialize = c.materialized && !columns_lower_.count({coll, AsciiLower(fname)});
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_columns VALUES (?, ?, ?)"));
  st.BindInt(1, coll);
  st.BindInt(2, field);
  st.BindInt(3, materialize ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (materialize) {
    CAIRN_RETURN_IF_ERROR(db_.Exec("ALTER TABLE " + QuoteIdent(c.name) + " ADD COLUMN " +
                                   QuoteIdent(fname)));
  }
  columns_[{coll, field}] = materialize;
  if (materialize) columns_lower_.emplace(coll, AsciiLower(fname));
  return Status::OK();
}

Result<int64_t> ReplicaStore::EnsureOrigin(const ReplicaId& id) {
  auto it = origin_index_.find(id);
  if (it != origin_index_.end()) return it->second;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_origins(id) VALUES (?)"));
  st.BindBlob(1, id.Bytes());
  CAIRN_RETURN_IF_ERROR(st.Run());
  int64_t idx = sqlite3_last_insert_rowid(db_.raw());
  origin_index_[id] = idx;
  origins_[idx] = OriginInfo{id, 0};
  return idx;
}

uint64_t ReplicaStore::Through(const ReplicaId& origin) {
  auto it = origin_index_.find(origin);
  return it == origin_index_.end() ? 0 : origins_[it->second].through;
}

Status ReplicaStore::SetThrough(const ReplicaId& origin, uint64_t through) {
  CAIRN_ASSIGN_OR_RETURN(int64_t idx, EnsureOrigin(origin));
  if (through <= origins_[idx].through) return Status::OK();
  origins_[idx].through = through;
  if (idx == local_origin_) {
    last_seq_ = through;  // ops of ours we had lost (a restored backup): never reuse their seqs
    return Status::OK();  // saved by Commit
  }
  set_through_.BindInt(1, I(through));
  set_through_.BindInt(2, idx);
  return set_through_.Run();
}

std::vector<OriginInfo> ReplicaStore::Origins() const {
  std::vector<OriginInfo> out;
  for (const auto& [idx, info] : origins_) out.push_back(info);
  std::sort(out.begin(), out.end(), [](const OriginInfo& a, const OriginInfo& b) {
    return a.id < b.id;
  });
  return out;
}

}  // namespace cairn::store
