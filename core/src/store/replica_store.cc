#include "store/replica_store.h"

#include <algorithm>
#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/value_codec.h"

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

// Storage format 5 (docs/storage-format.md): format 1's tables, then kSyncSchema,
// kSnapshotSchema, kRefusalSchema and kStreamSchema (store/stream_store.cc).
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

int64_t I(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t U(int64_t v) { return static_cast<uint64_t>(v); }

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

// Cells blob flags.
constexpr uint8_t kCellHasSet = 1;
constexpr uint8_t kCellHasInc = 2;

}  // namespace

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
  if (version < kFormatVersion && tables > 0 && !options.read_only) {
    // Format 1 -> 2: the sync position; 2 -> 3: the snapshot being received; 3 -> 4: what
    // outbox transactions superseded, the clock offset; 4 -> 5: streams. One transaction; the version is read
    // again under the write lock, in case another connection upgraded the file meanwhile.
    CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(&s->db_));
    CAIRN_ASSIGN_OR_RETURN(version, pragma("PRAGMA user_version"));
    if (version < kFormatVersion) {
      std::string sql;
      if (version < 2) sql += kSyncSchema;
      if (version < 3) sql += kSnapshotSchema;
      if (version < 4) sql += kRefusalSchema;
      if (version < 5) sql += kStreamSchema;
      sql += "PRAGMA user_version=" + std::to_string(kFormatVersion) + ";";
      CAIRN_RETURN_IF_ERROR(s->db_.Exec(sql));
    }
    CAIRN_RETURN_IF_ERROR(txn->Commit());
    s->has_sync_table_ = s->has_snapshot_table_ = s->has_format4_ = has_streams = true;
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
                  &set_through_, &stage_op_, &data_version_stmt_, &outbox_after_, &set_sync_, &keep_outranked_}) {
    *s = Stmt();
  }
  materialize_.clear();
  delete_row_.clear();
  return db_.Close();
}

Status ReplicaStore::InitSchema(const ReplicaId& new_id, int64_t now_ms) {
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(&db_));
  CAIRN_RETURN_IF_ERROR(
      db_.Exec(std::string(kSchema) + kSyncSchema + kSnapshotSchema + kRefusalSchema +
               kStreamSchema));
  CAIRN_RETURN_IF_ERROR(db_.Exec("PRAGMA application_id=" + std::to_string(kApplicationId) +
                                 "; PRAGMA user_version=" + std::to_string(kFormatVersion)));
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_state VALUES (1, ?, 0, 0, ?)"));
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
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT replica_id, hlc, last_seq, "
      "(SELECT max(max_hlc) FROM cairn_outbox), (SELECT max(last_seq) FROM cairn_outbox) "
      "FROM cairn_state"));
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

// ---------------------------------------------------------------------------------------------
// Cells blob: varint count, then per cell: varint field index, flags byte (1 set, 2 increments),
// [set] varint hlc, varint origin index, varint seq, value (tag + payload);
// [increments] varint hlc, varint origin index, varint seq of the largest, signed varint counter,
// varint count.

OpId ReplicaStore::MakeOpId(int64_t hlc, int64_t origin, int64_t seq) const {
  auto it = origins_.find(origin);
  return OpId{U(hlc), it == origins_.end() ? ReplicaId() : it->second.id, U(seq)};
}

std::string ReplicaStore::EncodeCells(const crdt::DocState& state) const {
  std::string out;
  PutVarint(&out, state.cells.size());
  auto put_id = [&](const OpId& id) {
    PutVarint(&out, id.hlc);
    PutVarint(&out, U(origin_index_.at(id.origin)));
    PutVarint(&out, id.seq);
  };
  for (const auto& [field, cell] : state.cells) {
    PutVarint(&out, U(fields_.at(field)));
    uint8_t flags = static_cast<uint8_t>((cell.set_id.none() ? 0 : kCellHasSet) |
                                         (cell.inc_count > 0 ? kCellHasInc : 0));
    out.push_back(static_cast<char>(flags));
    if (flags & kCellHasSet) {
      put_id(cell.set_id);
      PutValue(&out, cell.set_value);
    }
    if (flags & kCellHasInc) {
      put_id(cell.inc_max);
      PutSignedVarint(&out, cell.counter);
      PutVarint(&out, U(cell.inc_count));
    }
  }
  return out;
}

bool ReplicaStore::DecodeCells(std::string_view blob,
                               crdt::CellMap* cells) const {
  Reader r(reinterpret_cast<const uint8_t*>(blob.data()), blob.size());
  uint64_t n;
  if (!r.GetVarint(&n)) return false;
  auto get_id = [&](OpId* id) {
    uint64_t hlc, origin, seq;
    if (!r.GetVarint(&hlc) || !r.GetVarint(&origin) || !r.GetVarint(&seq)) return false;
    *id = MakeOpId(I(hlc), I(origin), I(seq));
    return true;
  };
  for (uint64_t i = 0; i < n; i++) {
    uint64_t field;
    uint8_t flags;
    if (!r.GetVarint(&field) || !r.GetByte(&flags)) return false;
    auto name = field_names_.find(I(field));
    if (name == field_names_.end()) return false;
    crdt::Cell cell;
    if ((flags & kCellHasSet) && (!get_id(&cell.set_id) || !GetValue(&r, false, &cell.set_value))) {
      return false;
    }
    if (flags & kCellHasInc) {
      uint64_t count;
      if (!get_id(&cell.inc_max) || !r.GetSignedVarint(&cell.counter) || !r.GetVarint(&count)) {
        return false;
      }
      cell.inc_count = I(count);
    }
    (*cells)[name->second] = std::move(cell);
  }
  return r.done();
}

// ---------------------------------------------------------------------------------------------
// Applying ops

Result<ReplicaStore::CachedDoc*> ReplicaStore::LoadDoc(int64_t coll, const std::string& key) {
  auto& docs = cache_[coll];
  auto it = docs.find(key);
  if (it != docs.end()) {
    it->second.last_used = ++tick_;
    return &it->second;
  }
  const std::string& collection = collection_names_.at(coll);
  CachedDoc doc;
  doc.coll = coll;
  doc.key = key;
  doc.last_used = ++tick_;
  find_doc_.BindInt(1, coll);
  find_doc_.BindStaticText(2, key);
  auto found = find_doc_.Step();
  if (!found.ok()) return found.status();
  if (found.value()) {
    doc.in_file = true;
    if (!find_doc_.IsNull(2)) {
      doc.state.del = MakeOpId(find_doc_.Int(0), find_doc_.Int(1), find_doc_.Int(2));
    }
    if (!find_doc_.IsNull(3) && !DecodeCells(find_doc_.Blob(3), &doc.state.cells)) {
      find_doc_.Reset();
      return Status::Corrupt("malformed cells of " + collection + "/" + key);
    }
    doc.was_visible = doc.state.Visible();
  }
  find_doc_.Reset();
  cache_count_++;
  return &docs.emplace(key, std::move(doc)).first->second;
}

Status ReplicaStore::LoadIncs(CachedDoc* doc) {
  auto& incs = doc->state.incs;
  incs.clear();
  if (doc->in_file && !doc->state.changes.all_incs_removed) {
    load_incs_.BindInt(1, doc->coll);
    load_incs_.BindStaticText(2, doc->key);
    CAIRN_RETURN_IF_ERROR(load_incs_.ForEachRow([&] {
      crdt::IncEntry e{MakeOpId(load_incs_.Int(1), load_incs_.Int(2), load_incs_.Int(3)),
                       load_incs_.Int(4)};
      incs[FieldName(load_incs_.Int(0))].push_back(e);
      return Status::OK();
    }));
  }
  // Increments applied earlier in this transaction are not in the file yet.
  for (const auto& [field, entry] : doc->state.changes.added_incs) incs[field].push_back(entry);
  doc->state.incs_loaded = true;
  return Status::OK();
}

// Every op `state` keeps (its delete, its fields' sets, its increments), as ops of
// `collection`/`key` (REQUIRES: state.incs_loaded).
static void StateOps(const std::string& collection, const std::string& key,
                     const crdt::DocState& state, std::vector<Op>* out) {
  Op op;
  op.collection = collection;
  op.key = key;
  if (!state.del.none()) {
    op.kind = OpKind::kDelete;
    op.id = state.del;
    out->push_back(op);
  }
  for (const auto& [field, cell] : state.cells) {
    if (cell.set_id.none()) continue;
    op.kind = OpKind::kSet;
    op.id = cell.set_id;
    op.field = field;
    op.value = cell.set_value;
    out->push_back(op);
  }
  op.kind = OpKind::kIncrement;
  op.value = Value();
  for (const auto& [field, incs] : state.incs) {
    for (const crdt::IncEntry& e : incs) {
      op.id = e.id;
      op.field = field;
      op.delta = e.delta;
      out->push_back(op);
    }
  }
}

// The ops of `state` that `op` removes from it (superseded sets, what a delete covers), as ops
// of `collection`/`key` (REQUIRES: state.incs_loaded for a delete).
static void Superseded(const crdt::DocState& state, const Op& op, std::vector<Op>* out) {
  if (op.kind == OpKind::kSet) {
    if (op.id < state.del) return;
    auto it = state.cells.find(op.field);
    if (it == state.cells.end() || it->second.set_id.none() || !(it->second.set_id < op.id)) return;
    Op old = op;
    old.id = it->second.set_id;
    old.value = it->second.set_value;
    out->push_back(std::move(old));
  } else if (op.kind == OpKind::kDelete && state.del < op.id) {
    const auto from = static_cast<std::ptrdiff_t>(out->size());
    StateOps(op.collection, op.key, state, out);
    out->erase(std::remove_if(out->begin() + from, out->end(),
                              [&](const Op& o) { return !(o.id < op.id); }),
               out->end());
  }
}

// A received op that a local op not yet acknowledged outranks (it changes nothing now) is kept
// under that op's seq: if the server refuses the local op, the document is recomputed with it.
Status ReplicaStore::KeepIfOutranked(const crdt::DocState& state, const Op& op) {
  OpId over;
  if (op.id < state.del) {
    over = state.del;
  } else if (op.kind == OpKind::kSet) {
    auto it = state.cells.find(op.field);
    if (it != state.cells.end() && op.id < it->second.set_id) over = it->second.set_id;
  }
  if (over.none() || over.origin != replica_id_) return Status::OK();
  if (unacked_from_ == 0) {
    CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("SELECT min(first_seq) FROM cairn_outbox"));
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    unacked_from_ = row && !st.IsNull(0) ? U(st.Int(0)) : last_seq_ + 1;
  }
  if (over.seq < unacked_from_) return Status::OK();  // acknowledged: it stands for good
  if (!keep_outranked_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(keep_outranked_, db_.Prepare(
        "INSERT OR IGNORE INTO cairn_superseded VALUES (?,?,?,?,?,?,?,?,?,?,?)"));
  }
  CAIRN_ASSIGN_OR_RETURN(int64_t origin, EnsureOrigin(op.id.origin));
  BindOpRow(&keep_outranked_, I(over.seq), origin, op);
  return keep_outranked_.Run();
}

Status ReplicaStore::Apply(const Op& op, bool local, std::vector<Op>* superseded) {
  if (!in_txn_) return Status::Internal("Apply outside a transaction");
  if (op.collection != last_collection_ || last_coll_idx_ < 0) {
    CAIRN_ASSIGN_OR_RETURN(last_coll_idx_, EnsureCollection(op.collection));
    last_collection_ = op.collection;
    last_field_idx_ = -1;
  }
  const int64_t coll = last_coll_idx_;
  if (op.kind != OpKind::kDelete && (op.field != last_field_ || last_field_idx_ < 0)) {
    CAIRN_ASSIGN_OR_RETURN(int64_t field, EnsureField(op.field));
    CAIRN_RETURN_IF_ERROR(EnsureColumn(coll, field));
    last_field_ = op.field;
    last_field_idx_ = field;
  }
  if (!local) CAIRN_RETURN_IF_ERROR(EnsureOrigin(op.id.origin).status());
  if (local) {
    txn_local_ = true;
    if (op.id.seq != last_seq_ + 1 || op.id.origin != replica_id_) {
      return Status::Internal("local op out of sequence");
    }
    last_seq_ = op.id.seq;
    origins_[local_origin_].through = last_seq_;
  }
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(coll, op.key));
  const bool load_incs = superseded != nullptr && op.kind == OpKind::kDelete;
  if ((load_incs || crdt::NeedsIncrements(doc->state, op)) && !doc->state.incs_loaded) {
    CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  }
  if (superseded != nullptr) Superseded(doc->state, op, superseded);
  // Received ops, and local ones written after the clock was wound back (docs/crdt-semantics.md
  // "Clock safety").
  CAIRN_RETURN_IF_ERROR(KeepIfOutranked(doc->state, op));
  crdt::ApplyOp(&doc->state, op);
  if (cache_count_ > options_.cache_docs) CAIRN_RETURN_IF_ERROR(TrimCache());
  return Status::OK();
}

Status ReplicaStore::WriteBack() {
  CAIRN_RETURN_IF_ERROR(FlushAll());
  ClearCache();
  return Status::OK();
}

Status ReplicaStore::AppendOutbox(uint64_t first_seq, uint64_t last_seq, Hlc max_hlc,
                                  std::string_view batch, std::string_view superseded) {
  outbox_hlc_ = std::max(outbox_hlc_, max_hlc);  // what the file will imply once committed
  outbox_seq_ = std::max(outbox_seq_, last_seq);
  put_outbox_.BindInt(1, I(first_seq));
  put_outbox_.BindInt(2, I(last_seq));
  put_outbox_.BindInt(3, I(max_hlc));
  put_outbox_.BindStaticBlob(4, batch);
  if (superseded.empty()) {
    put_outbox_.BindNull(5);
  } else {
    put_outbox_.BindStaticBlob(5, superseded);
  }
  return put_outbox_.Run();
}

Result<Stmt*> ReplicaStore::MaterializeStmt(int64_t coll, const std::vector<int64_t>& fields) {
  auto key = std::make_pair(coll, fields);
  auto it = materialize_.find(key);
  if (it != materialize_.end()) return &it->second;
  std::string table = QuoteIdent(CollectionByIndex(coll).name);
  std::string cols, params, sets;
  int i = 2;
  for (int64_t f : fields) {
    std::string c = QuoteIdent(FieldName(f));
    cols += ", " + c;
    params += ", ?" + std::to_string(i++);
    sets += (sets.empty() ? "" : ", ") + c + " = excluded." + c;
  }
  std::string sql = "INSERT INTO " + table + " (key" + cols + ") VALUES (?1" + params +
                    ") ON CONFLICT(key) DO " + (sets.empty() ? "NOTHING" : "UPDATE SET " + sets);
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(sql));
  return &materialize_.emplace(std::move(key), std::move(st)).first->second;
}

Result<Stmt*> ReplicaStore::DeleteRowStmt(int64_t coll) {
  auto it = delete_row_.find(coll);
  if (it != delete_row_.end()) return &it->second;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("DELETE FROM " +
                                              QuoteIdent(CollectionByIndex(coll).name) +
                                              " WHERE key = ?1"));
  return &delete_row_.emplace(coll, std::move(st)).first->second;
}

Status ReplicaStore::FlushDoc(CachedDoc* doc) {
  crdt::DocState& s = doc->state;
  crdt::DocChanges& ch = s.changes;
  if (!ch.any() && ch.added_incs.empty() && ch.removed_incs.empty()) return Status::OK();
  if (track_changes_ && ch.any()) txn_changed_.emplace_back(doc->coll, doc->key);
  auto bind_id = [&](Stmt* st, int i, const OpId& id) {
    if (id.none()) {
      st->BindNull(i);
      st->BindNull(i + 1);
      st->BindNull(i + 2);
    } else {
      st->BindInt(i, I(id.hlc));
      st->BindInt(i + 1, origin_index_.at(id.origin));
      st->BindInt(i + 2, I(id.seq));
    }
  };
  const bool visible = s.Visible();
  std::string cells = visible ? EncodeCells(s) : std::string();
  if (!doc->in_file) {
    insert_doc_.BindInt(1, doc->coll);
    insert_doc_.BindStaticText(2, doc->key);
    bind_id(&insert_doc_, 3, s.del);
    if (visible) {
      insert_doc_.BindStaticBlob(6, cells);
    } else {
      insert_doc_.BindNull(6);
    }
    CAIRN_RETURN_IF_ERROR(insert_doc_.Run());
    doc->in_file = true;
  } else {
    bind_id(&update_doc_, 1, s.del);
    if (visible) {
      update_doc_.BindStaticBlob(4, cells);
    } else {
      update_doc_.BindNull(4);
    }
    update_doc_.BindInt(5, doc->coll);
    update_doc_.BindStaticText(6, doc->key);
    CAIRN_RETURN_IF_ERROR(update_doc_.Run());
  }
  if (ch.all_incs_removed) {
    del_incs_.BindInt(1, doc->coll);
    del_incs_.BindStaticText(2, doc->key);
    CAIRN_RETURN_IF_ERROR(del_incs_.Run());
  }
  for (const auto& [field, id] : ch.removed_incs) {
    del_inc_.BindInt(1, doc->coll);
    del_inc_.BindStaticText(2, doc->key);
    del_inc_.BindInt(3, fields_.at(field));
    del_inc_.BindInt(4, origin_index_.at(id.origin));
    del_inc_.BindInt(5, I(id.seq));
    CAIRN_RETURN_IF_ERROR(del_inc_.Run());
  }
  for (const auto& [field, e] : ch.added_incs) {
    put_inc_.BindInt(1, doc->coll);
    put_inc_.BindStaticText(2, doc->key);
    put_inc_.BindInt(3, fields_.at(field));
    put_inc_.BindInt(4, origin_index_.at(e.id.origin));
    put_inc_.BindInt(5, I(e.id.seq));
    put_inc_.BindInt(6, I(e.id.hlc));
    put_inc_.BindInt(7, e.delta);
    CAIRN_RETURN_IF_ERROR(put_inc_.Run());
  }
  // The SQL table: one statement per document.
  if (CollectionByIndex(doc->coll).materialized) {
    if (!visible && doc->was_visible) {
      CAIRN_ASSIGN_OR_RETURN(Stmt * del, DeleteRowStmt(doc->coll));
      del->BindStaticText(1, doc->key);
      CAIRN_RETURN_IF_ERROR(del->Run());
    } else if (visible) {
      std::vector<int64_t> cols;
      std::vector<Value> values;
      auto add = [&](const std::string& field, const Value& v) {
        int64_t fidx = fields_.at(field);
        if (!columns_.at({doc->coll, fidx})) return;
        // Removed then re-added within one batch: the cell's value wins (it comes later).
        auto dup = std::find(cols.begin(), cols.end(), fidx);
        if (dup != cols.end()) {
          values[static_cast<size_t>(dup - cols.begin())] = v;
          return;
        }
        cols.push_back(fidx);
        values.push_back(v);
      };
      for (const std::string& field : ch.removed_fields) {
        if (!s.cells.count(field)) add(field, Value::Null());
      }
      for (const auto& [field, cell] : s.cells) {
        if (cell.dirty) add(field, cell.Visible());
      }
      std::vector<size_t> order(cols.size());
      for (size_t i = 0; i < order.size(); i++) order[i] = i;
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cols[a] < cols[b]; });
      std::vector<int64_t> sorted_cols;
      std::vector<Value> sorted_values;
      for (size_t i : order) {
        sorted_cols.push_back(cols[i]);
        sorted_values.push_back(std::move(values[i]));
      }
      cols.swap(sorted_cols);
      values.swap(sorted_values);
      if (!cols.empty() || !doc->was_visible) {
        CAIRN_ASSIGN_OR_RETURN(Stmt * up, MaterializeStmt(doc->coll, cols));
        up->BindStaticText(1, doc->key);
        for (size_t i = 0; i < values.size(); i++) {
          BindSqlValue(up, static_cast<int>(i) + 2, values[i]);
        }
        CAIRN_RETURN_IF_ERROR(up->Run());
      }
    }
  }
  doc->was_visible = visible;
  s.ClearChanges();
  return Status::OK();
}

Status ReplicaStore::FlushAll() {
  for (auto& [coll, docs] : cache_) {
    for (auto& [key, doc] : docs) CAIRN_RETURN_IF_ERROR(FlushDoc(&doc));
  }
  return Status::OK();
}

// Writes back every changed document, then drops the least recently used half of the cache.
Status ReplicaStore::TrimCache() {
  CAIRN_RETURN_IF_ERROR(FlushAll());
  std::vector<uint64_t> ages;
  ages.reserve(cache_count_);
  for (const auto& [coll, docs] : cache_) {
    for (const auto& [key, doc] : docs) ages.push_back(doc.last_used);
  }
  auto mid = ages.begin() + static_cast<std::ptrdiff_t>(ages.size() / 2);
  std::nth_element(ages.begin(), mid, ages.end());
  uint64_t cutoff = *mid;
  for (auto& [coll, docs] : cache_) {
    for (auto it = docs.begin(); it != docs.end();) {
      if (it->second.last_used < cutoff) {
        it = docs.erase(it);
        cache_count_--;
      } else {
        ++it;
      }
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Pending (held-back) units: a received file whose assumptions this replica does not meet yet
// is kept whole, and applied whole once they are met (docs/crdt-semantics.md, "Gaps").

Result<int64_t> ReplicaStore::NewPendingUnit() {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT coalesce(max(unit), 0) + 1 FROM cairn_pending_ranges"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 1;
}

Status ReplicaStore::StagePending(int64_t unit, const Op& op) {
  CAIRN_ASSIGN_OR_RETURN(int64_t origin, EnsureOrigin(op.id.origin));
  BindOpRow(&stage_op_, unit, origin, op);
  return stage_op_.Run();
}

Status ReplicaStore::StagePendingRange(int64_t unit, const ReplicaId& origin, uint64_t from,
                                       uint64_t through) {
  CAIRN_ASSIGN_OR_RETURN(int64_t idx, EnsureOrigin(origin));
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "INSERT OR REPLACE INTO cairn_pending_ranges VALUES (?, ?, ?, ?)"));
  st.BindInt(1, unit);
  st.BindInt(2, idx);
  st.BindInt(3, I(from));
  st.BindInt(4, I(through));
  return st.Run();
}

Status ReplicaStore::DrainPending() {
  for (bool progress = true; progress;) {
    progress = false;
    // Units whose every assumption (from_seq) is now covered by this replica's watermarks.
    std::map<int64_t, std::vector<std::pair<int64_t, uint64_t>>> units;  // unit -> (origin, through)
    std::set<int64_t> blocked;
    {
      CAIRN_ASSIGN_OR_RETURN(Stmt ranges, db_.Prepare(
          "SELECT unit, origin, from_seq, through_seq FROM cairn_pending_ranges ORDER BY unit"));
      for (;;) {
        CAIRN_ASSIGN_OR_RETURN(bool row, ranges.Step());
        if (!row) break;
        int64_t unit = ranges.Int(0), origin = ranges.Int(1);
        if (U(ranges.Int(2)) > origins_[origin].through) blocked.insert(unit);
        units[unit].emplace_back(origin, U(ranges.Int(3)));
      }
    }
    for (const auto& [unit, ranges] : units) {
      if (blocked.count(unit)) continue;
      CAIRN_RETURN_IF_ERROR(ForEachPendingOp(unit, [&](const Op& op) -> Status {
        if (op.id.seq <= Through(op.id.origin)) return Status::OK();  // accounted for meanwhile
        return Apply(op, /*local=*/false);
      }));
      for (const auto& [origin, through] : ranges) {
        CAIRN_RETURN_IF_ERROR(SetThrough(origins_[origin].id, through));
      }
      for (const char* sql : {"DELETE FROM cairn_pending_ops WHERE unit = ?",
                              "DELETE FROM cairn_pending_ranges WHERE unit = ?"}) {
        CAIRN_ASSIGN_OR_RETURN(Stmt del, db_.Prepare(sql));
        del.BindInt(1, unit);
        CAIRN_RETURN_IF_ERROR(del.Run());
      }
      progress = true;
    }
  }
  return Status::OK();
}


// ---------------------------------------------------------------------------------------------
// Reading

static Fields VisibleFields(const crdt::CellMap& cells) {
  Fields out;
  for (const auto& [name, cell] : cells) out.emplace(name, cell.Visible());
  return out;
}

Result<std::optional<Fields>> ReplicaStore::GetDoc(const std::string& collection,
                                                    const std::string& key) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return std::optional<Fields>();
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT cells FROM cairn_docs WHERE coll = ? AND key = ? AND cells IS NOT NULL"));
  st.BindInt(1, c->second.idx);
  st.BindText(2, key);
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<Fields>();
  crdt::CellMap cells;
  if (!DecodeCells(st.Blob(0), &cells)) return Status::Corrupt("malformed cells");
  return std::optional<Fields>(VisibleFields(cells));
}

Status ReplicaStore::ForEachVisibleDoc(
    const std::function<Status(const std::string&, const std::string&, const Fields&)>& fn) {
  std::map<std::string, int64_t> sorted;
  for (const auto& [name, info] : collections_) sorted[name] = info.idx;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT key, cells FROM cairn_docs WHERE coll = ? AND cells IS NOT NULL ORDER BY key"));
  for (const auto& [name, idx] : sorted) {
    st.BindInt(1, idx);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      crdt::CellMap cells;
      if (!DecodeCells(st.Blob(1), &cells)) return Status::Corrupt("malformed cells");
      CAIRN_RETURN_IF_ERROR(fn(name, std::string(st.Text(0)), VisibleFields(cells)));
    }
    st.Reset();
  }
  return Status::OK();
}

Status ReplicaStore::ForEachSurvivor(const std::function<Status(const Op&)>& fn) {
  // Sets live inside the cells blobs, so the survivors are gathered into a temporary table
  // (SQLite spills it to disk when large: memory stays bounded) and read back in (origin, seq)
  // order, which the op batch encoding compresses best.
  CAIRN_RETURN_IF_ERROR(db_.Exec(
      "DROP TABLE IF EXISTS temp.cairn_survivors;"
      "CREATE TEMP TABLE cairn_survivors(origin INTEGER, seq INTEGER, hlc INTEGER, kind INTEGER,"
      " coll INTEGER, key TEXT, field INTEGER, value BLOB, delta INTEGER,"
      " PRIMARY KEY (origin, seq)) WITHOUT ROWID;"
      "INSERT INTO temp.cairn_survivors SELECT origin, seq, hlc, 1, coll, key, field, NULL, delta"
      " FROM cairn_incs;"
      "INSERT INTO temp.cairn_survivors SELECT del_origin, del_seq, del_hlc, 2, coll, key, NULL,"
      " NULL, 0 FROM cairn_docs WHERE del_seq IS NOT NULL;"));
  Status st;
  {
    CAIRN_ASSIGN_OR_RETURN(Stmt docs, db_.Prepare(
        "SELECT coll, key, cells FROM cairn_docs WHERE cells IS NOT NULL"));
    CAIRN_ASSIGN_OR_RETURN(Stmt put, db_.Prepare(
        "INSERT INTO temp.cairn_survivors VALUES (?, ?, ?, 0, ?, ?, ?, ?, 0)"));
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, docs.Step());
      if (!row) break;
      crdt::CellMap cells;
      if (!DecodeCells(docs.Blob(2), &cells)) return Status::Corrupt("malformed cells");
      for (const auto& [field, cell] : cells) {
        if (cell.set_id.none()) continue;
        std::string value;
        PutValue(&value, cell.set_value);
        put.BindInt(1, origin_index_.at(cell.set_id.origin));
        put.BindInt(2, I(cell.set_id.seq));
        put.BindInt(3, I(cell.set_id.hlc));
        put.BindInt(4, docs.Int(0));
        put.BindText(5, docs.Text(1));
        put.BindInt(6, fields_.at(field));
        put.BindBlob(7, value);
        CAIRN_RETURN_IF_ERROR(put.Run());
      }
    }
    CAIRN_ASSIGN_OR_RETURN(Stmt scan, db_.Prepare(
        "SELECT origin, seq, hlc, kind, coll, key, field, value, delta "
        "FROM temp.cairn_survivors ORDER BY origin, seq"));
    Op op;
    for (;;) {
      auto row = scan.Step();
      if (!row.ok() || !row.value()) {
        st = row.status();
        break;
      }
      op.id = MakeOpId(scan.Int(2), scan.Int(0), scan.Int(1));
      op.kind = static_cast<OpKind>(scan.Int(3));
      op.collection = collection_names_.at(scan.Int(4));
      op.key = std::string(scan.Text(5));
      op.field = op.kind == OpKind::kDelete ? std::string() : FieldName(scan.Int(6));
      op.value = Value();
      if (op.kind == OpKind::kSet) {
        std::string_view blob = scan.Blob(7);
        Reader r(reinterpret_cast<const uint8_t*>(blob.data()), blob.size());
        if (!GetValue(&r, false, &op.value)) {
          st = Status::Corrupt("malformed value");
          break;
        }
      }
      op.delta = scan.Int(8);
      op.continues_txn = false;
      st = fn(op);
      if (!st.ok()) break;
    }
  }
  Status drop = db_.Exec("DROP TABLE IF EXISTS temp.cairn_survivors");
  return st.ok() ? drop : st;
}

Status ReplicaStore::ForEachOutbox(
    const std::function<Status(uint64_t, uint64_t, std::string_view)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT first_seq, last_seq, batch FROM cairn_outbox ORDER BY first_seq"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_RETURN_IF_ERROR(fn(U(st.Int(0)), U(st.Int(1)), st.Blob(2)));
  }
  return Status::OK();
}

Status ReplicaStore::ForEachOutboxAfter(
    uint64_t after_seq, size_t max_rows,
    const std::function<Status(uint64_t, uint64_t, std::string_view)>& fn) {
  if (!outbox_after_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(outbox_after_, db_.Prepare(
        "SELECT first_seq, last_seq, batch FROM cairn_outbox WHERE last_seq > ? "
        "ORDER BY first_seq LIMIT ?"));
  }
  Stmt& st = outbox_after_;
  st.BindInt(1, I(after_seq));
  st.BindInt(2, static_cast<int64_t>(max_rows));
  return st.ForEachRow([&] { return fn(U(st.Int(0)), U(st.Int(1)), st.Blob(2)); });
}

Status ReplicaStore::AckOutbox(uint64_t through) {
  if (!in_txn_) return Status::Internal("AckOutbox outside a transaction");
  if (through > last_seq_) {
    return Status::Corrupt("acknowledgement of seq " + std::to_string(through) +
                           " beyond the last local op " + std::to_string(last_seq_));
  }
  // The outbox rows imply the clock and the seq (see Commit): persist both before they go.
  save_state_.BindInt(1, I(hlc_));
  save_state_.BindInt(2, I(last_seq_));
  CAIRN_RETURN_IF_ERROR(save_state_.Run());
  persisted_hlc_ = hlc_;
  persisted_seq_ = last_seq_;
  unacked_from_ = 0;
  CAIRN_ASSIGN_OR_RETURN(Stmt kept, db_.Prepare(
      "DELETE FROM cairn_superseded WHERE under_seq <= ?"));
  kept.BindInt(1, I(through));
  CAIRN_RETURN_IF_ERROR(kept.Run());
  CAIRN_ASSIGN_OR_RETURN(Stmt del, db_.Prepare("DELETE FROM cairn_outbox WHERE last_seq <= ?"));
  del.BindInt(1, I(through));
  return del.Run();
}

Result<std::optional<Hlc>> ReplicaStore::OutboxHlcAt(uint64_t seq) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("SELECT max_hlc FROM cairn_outbox WHERE last_seq = ?"));
  st.BindInt(1, I(seq));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<Hlc>();
  return std::optional<Hlc>(U(st.Int(0)));
}

Result<SyncPosition> ReplicaStore::GetSyncPosition() {
  SyncPosition pos;
  if (!has_sync_table_) return pos;  // a format 1 file opened read-only: never synced
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      std::string("SELECT server_id, cursor, subscriptions, last_sync_ms, ") +
      (has_format4_ ? "clock_offset_ms" : "NULL") + " FROM cairn_sync WHERE id = 1"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return pos;
  if (!st.IsNull(0)) {
    ReplicaId id;
    if (ReplicaId::FromBytes(st.Blob(0).data(), st.Blob(0).size(), &id)) pos.server_id = id;
  }
  pos.cursor = U(st.Int(1));
  if (!st.IsNull(2)) pos.subscriptions = std::string(st.Text(2));
  if (!st.IsNull(3)) pos.last_sync_ms = st.Int(3);
  if (!st.IsNull(4)) pos.clock_offset_ms = st.Int(4);
  return pos;
}

Status ReplicaStore::SetSyncPosition(const SyncPosition& pos) {
  if (!in_txn_) return Status::Internal("SetSyncPosition outside a transaction");
  if (!set_sync_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(set_sync_, db_.Prepare(
        "UPDATE cairn_sync SET server_id = ?, cursor = ?, subscriptions = ?, last_sync_ms = ?, "
        "clock_offset_ms = ? WHERE id = 1"));
  }
  if (pos.server_id) {
    set_sync_.BindBlob(1, pos.server_id->Bytes());
  } else {
    set_sync_.BindNull(1);
  }
  set_sync_.BindInt(2, I(pos.cursor));
  if (pos.subscriptions) {
    set_sync_.BindText(3, *pos.subscriptions);
  } else {
    set_sync_.BindNull(3);
  }
  if (pos.last_sync_ms) {
    set_sync_.BindInt(4, *pos.last_sync_ms);
  } else {
    set_sync_.BindNull(4);
  }
  if (pos.clock_offset_ms) {
    set_sync_.BindInt(5, *pos.clock_offset_ms);
  } else {
    set_sync_.BindNull(5);
  }
  return set_sync_.Run();
}

Status ReplicaStore::TakeOutbox(
    uint64_t first_seq, uint64_t last_seq,
    const std::function<Status(std::string_view, std::string_view)>& fn) {
  if (!in_txn_) return Status::Internal("TakeOutbox outside a transaction");
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT batch, superseded FROM cairn_outbox WHERE first_seq >= ? AND last_seq <= ? "
      "ORDER BY first_seq"));
  st.BindInt(1, I(first_seq));
  st.BindInt(2, I(last_seq));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_RETURN_IF_ERROR(fn(st.Blob(0), st.IsNull(1) ? std::string_view() : st.Blob(1)));
  }
  st = Stmt();
  unacked_from_ = 0;
  CAIRN_ASSIGN_OR_RETURN(Stmt del, db_.Prepare(
      "DELETE FROM cairn_outbox WHERE first_seq >= ? AND last_seq <= ?"));
  del.BindInt(1, I(first_seq));
  del.BindInt(2, I(last_seq));
  return del.Run();
}

Status ReplicaStore::RebuildDoc(const std::string& collection, const std::string& key,
                                const std::function<bool(const OpId&)>& drop,
                                const std::vector<Op>& extra) {
  if (!in_txn_) return Status::Internal("RebuildDoc outside a transaction");
  auto c = collections_.find(collection);
  if (c == collections_.end()) return Status::OK();  // never written here: nothing to undo
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(c->second.idx, key));
  if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  std::vector<Op> ops;
  StateOps(collection, key, doc->state, &ops);
  ops.insert(ops.end(), extra.begin(), extra.end());
  // The merge rules from nothing, over what is left: the state is a function of the op set.
  crdt::DocState fresh;
  fresh.incs_loaded = true;
  for (const Op& op : ops) {
    if (drop(op.id)) continue;
    if (op.kind == OpKind::kIncrement && crdt::HasIncrement(fresh, op)) continue;
    // A kept op may name a field or an origin that nothing applied here before.
    CAIRN_RETURN_IF_ERROR(EnsureOrigin(op.id.origin).status());
    if (op.kind != OpKind::kDelete) {
      CAIRN_ASSIGN_OR_RETURN(int64_t field, EnsureField(op.field));
      CAIRN_RETURN_IF_ERROR(EnsureColumn(c->second.idx, field));
    }
    crdt::ApplyOp(&fresh, op);
  }
  // What a local op still unacknowledged outranks stays kept: it may be refused too.
  for (const Op& op : extra) {
    if (!drop(op.id)) CAIRN_RETURN_IF_ERROR(KeepIfOutranked(fresh, op));
  }
  // Written back whole: the delete, every cell, every increment; fields gone are cleared.
  crdt::DocChanges& ch = fresh.changes;
  for (const auto& [field, cell] : doc->state.cells) ch.removed_fields.push_back(field);
  ch.del_changed = ch.cells_changed = ch.all_incs_removed = true;
  ch.removed_incs.clear();
  for (auto& [field, cell] : fresh.cells) cell.dirty = true;
  doc->state = std::move(fresh);
  return Status::OK();
}

Status ReplicaStore::RecordRejected(const Op& op, int code, const std::string& reason,
                                    int64_t now_ms) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "INSERT INTO cairn_rejected(origin, seq, hlc, kind, collection, key, field, vtype, value, "
      "delta, code, reason, at_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"));
  st.BindBlob(1, op.id.origin.Bytes());
  st.BindInt(2, I(op.id.seq));
  st.BindInt(3, I(op.id.hlc));
  st.BindInt(4, static_cast<int>(op.kind));
  st.BindText(5, op.collection);
  st.BindText(6, op.key);
  if (op.kind == OpKind::kDelete) {
    st.BindNull(7);
  } else {
    st.BindText(7, op.field);
  }
  if (op.kind == OpKind::kSet) {
    BindValue(&st, 8, op.value);
  } else {
    st.BindNull(8);
    st.BindNull(9);
  }
  st.BindInt(10, op.delta);
  st.BindInt(11, code);
  st.BindText(12, reason);
  st.BindInt(13, now_ms);
  return st.Run();
}

Status ReplicaStore::ForEachRejected(const std::function<Status(const RejectedOp&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT id, origin, seq, hlc, kind, collection, key, field, vtype, value, delta, code, "
      "reason, at_ms FROM cairn_rejected ORDER BY id"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    RejectedOp r;
    r.id = st.Int(0);
    ReplicaId::FromBytes(st.Blob(1).data(), st.Blob(1).size(), &r.op.id.origin);
    r.op.id.seq = U(st.Int(2));
    r.op.id.hlc = U(st.Int(3));
    r.op.kind = static_cast<OpKind>(st.Int(4));
    r.op.collection = std::string(st.Text(5));
    r.op.key = std::string(st.Text(6));
    r.op.field = std::string(st.Text(7));
    if (r.op.kind == OpKind::kSet) r.op.value = ReadValue(st, 8);
    r.op.delta = st.Int(10);
    r.code = static_cast<int>(st.Int(11));
    r.reason = std::string(st.Text(12));
    r.at_ms = st.Int(13);
    CAIRN_RETURN_IF_ERROR(fn(r));
  }
  return Status::OK();
}

static Result<int64_t> Count(Db* db, const char* sql) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db->Prepare(sql));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 0;
}

Result<int64_t> ReplicaStore::OutboxCount() {
  return Count(&db_, "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM cairn_outbox");
}
Result<bool> ReplicaStore::IsRejected(const OpId& id) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT 1 FROM cairn_rejected WHERE origin = ? AND seq = ?"));
  st.BindBlob(1, id.origin.Bytes());
  st.BindInt(2, I(id.seq));
  return st.Step();
}

Result<int64_t> ReplicaStore::RejectedCount() {
  return Count(&db_, "SELECT count(*) FROM cairn_rejected");
}
Result<int64_t> ReplicaStore::PendingCount() {
  return Count(&db_, "SELECT count(*) FROM cairn_pending_ops WHERE unit != 0");
}

// Reads the op of a row selected as (origin, seq, hlc, kind, collection, key, field, vtype,
// value, delta).
Op ReplicaStore::ReadOpRow(const Stmt& st) const {
  Op op;
  op.id = MakeOpId(st.Int(2), st.Int(0), st.Int(1));
  op.kind = static_cast<OpKind>(st.Int(3));
  op.collection = std::string(st.Text(4));
  op.key = std::string(st.Text(5));
  op.field = std::string(st.Text(6));
  if (op.kind == OpKind::kSet) op.value = ReadValue(st, 7);
  op.delta = st.Int(9);
  return op;
}

// Runs `st` (a select of op rows, ReadOpRow's columns), passing each op to `fn`.
Status ReplicaStore::ForEachOpRow(Stmt* st, const std::function<Status(const Op&)>& fn) {
  return st->ForEachRow([&] { return fn(ReadOpRow(*st)); });
}

Status ReplicaStore::ForEachPendingOp(int64_t unit, const std::function<Status(const Op&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt ops, db_.Prepare(
      "SELECT origin, seq, hlc, kind, collection, key, field, vtype, value, delta "
      "FROM cairn_pending_ops WHERE unit = ? ORDER BY origin, seq"));
  ops.BindInt(1, unit);
  return ForEachOpRow(&ops, fn);
}

Status ReplicaStore::TakeOutranked(uint64_t first_seq, uint64_t last_seq,
                                   const std::function<Status(const Op&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt ops, db_.Prepare(
      "SELECT origin, seq, hlc, kind, collection, key, field, vtype, value, delta "
      "FROM cairn_superseded WHERE under_seq BETWEEN ? AND ?"));
  ops.BindInt(1, I(first_seq));
  ops.BindInt(2, I(last_seq));
  CAIRN_RETURN_IF_ERROR(ForEachOpRow(&ops, fn));
  ops = Stmt();
  CAIRN_ASSIGN_OR_RETURN(Stmt del, db_.Prepare(
      "DELETE FROM cairn_superseded WHERE under_seq BETWEEN ? AND ?"));
  del.BindInt(1, I(first_seq));
  del.BindInt(2, I(last_seq));
  return del.Run();
}

Status ReplicaStore::ApplyIdempotent(const Op& op) {
  if (op.kind == OpKind::kIncrement) {
    CAIRN_ASSIGN_OR_RETURN(int64_t coll, EnsureCollection(op.collection));
    CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(coll, op.key));
    if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
    if (crdt::HasIncrement(doc->state, op)) {
      // Counted already, or below the document's delete: kept if that delete may be undone.
      return op.id < doc->state.del ? KeepIfOutranked(doc->state, op) : Status::OK();
    }
  }
  return Apply(op, /*local=*/false);
}

Result<std::optional<SnapshotState>> ReplicaStore::GetSnapshot() {
  std::optional<SnapshotState> out;
  if (!has_snapshot_table_) return out;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT server_id, cursor, rebase, wanted, watermarks, after_collection, after_key "
      "FROM cairn_snapshot WHERE id = 1"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return out;
  SnapshotState s;
  std::string_view w = st.Blob(4);
  if (!ReplicaId::FromBytes(st.Blob(0).data(), st.Blob(0).size(), &s.server_id) ||
      w.size() % 24 != 0) {
    return Status::Corrupt("malformed cairn_snapshot row");
  }
  s.cursor = U(st.Int(1));
  s.rebase = st.Int(2) != 0;
  s.wanted = std::string(st.Text(3));
  Reader r(reinterpret_cast<const uint8_t*>(w.data()), w.size());
  while (!r.done()) {
    ReplicaId id;
    uint64_t seq = 0;
    for (auto& b : id.bytes) r.GetByte(&b);
    if (!r.GetFixed64(&seq)) return Status::Corrupt("malformed snapshot watermarks");
    s.watermarks[id] = seq;
  }
  s.after_collection = std::string(st.Text(5));
  s.after_key = std::string(st.Text(6));
  out = std::move(s);
  return out;
}

Status ReplicaStore::SetSnapshot(const SnapshotState& snap) {
  if (!in_txn_) return Status::Internal("SetSnapshot outside a transaction");
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "INSERT OR REPLACE INTO cairn_snapshot VALUES (1, ?, ?, ?, ?, ?, ?, ?)"));
  std::string w;
  for (const auto& [id, seq] : snap.watermarks) {
    w.append(reinterpret_cast<const char*>(id.bytes.data()), id.bytes.size());
    PutFixed64(&w, seq);
  }
  st.BindBlob(1, snap.server_id.Bytes());
  st.BindInt(2, I(snap.cursor));
  st.BindInt(3, snap.rebase ? 1 : 0);
  st.BindText(4, snap.wanted);
  st.BindBlob(5, w);
  st.BindText(6, snap.after_collection);
  st.BindText(7, snap.after_key);
  return st.Run();
}

Status ReplicaStore::SetSnapshotPosition(const std::string& after_collection,
                                         const std::string& after_key) {
  if (!in_txn_) return Status::Internal("SetSnapshotPosition outside a transaction");
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "UPDATE cairn_snapshot SET after_collection = ?, after_key = ? WHERE id = 1"));
  st.BindText(1, after_collection);
  st.BindText(2, after_key);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (db_.Changes() == 0) return Status::Invalid("a snapshot chunk without a snapshot");
  return Status::OK();
}

Status ReplicaStore::ClearSnapshot() {
  if (!in_txn_) return Status::Internal("ClearSnapshot outside a transaction");
  return db_.Exec("DELETE FROM cairn_snapshot; DELETE FROM cairn_pending_ops WHERE unit = 0;");
}

std::vector<std::string> ReplicaStore::CollectionNames() const {
  std::vector<std::string> names;
  for (const auto& [name, c] : collections_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

Status ReplicaStore::ForEachDocSurvivors(
    const std::string& collection, const std::string& after_key, size_t max_docs,
    const std::function<Status(const std::string&, std::vector<Op>*)>& fn) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return Status::OK();
  const int64_t coll = c->second.idx;
  CAIRN_ASSIGN_OR_RETURN(Stmt docs, db_.Prepare(
      "SELECT key, del_hlc, del_origin, del_seq, cells FROM cairn_docs "
      "WHERE coll = ? AND key > ? ORDER BY key LIMIT ?"));
  CAIRN_ASSIGN_OR_RETURN(Stmt incs, db_.Prepare(
      "SELECT field, hlc, origin, seq, delta FROM cairn_incs WHERE coll = ? AND key = ?"));
  docs.BindInt(1, coll);
  docs.BindText(2, after_key);
  docs.BindInt(3, static_cast<int64_t>(max_docs));
  std::vector<Op> ops;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, docs.Step());
    if (!row) break;
    ops.clear();
    const std::string key(docs.Text(0));
    crdt::DocState state;
    if (!docs.IsNull(3)) state.del = MakeOpId(docs.Int(1), docs.Int(2), docs.Int(3));
    if (!docs.IsNull(4) && !DecodeCells(docs.Blob(4), &state.cells)) {
      return Status::Corrupt("malformed cells");
    }
    incs.BindInt(1, coll);
    incs.BindText(2, key);
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool inc, incs.Step());
      if (!inc) break;
      state.incs[FieldName(incs.Int(0))].push_back(
          crdt::IncEntry{MakeOpId(incs.Int(1), incs.Int(2), incs.Int(3)), incs.Int(4)});
    }
    incs.Reset();
    StateOps(collection, key, state, &ops);
    CAIRN_RETURN_IF_ERROR(fn(key, &ops));
  }
  return Status::OK();
}

}  // namespace cairn::store
