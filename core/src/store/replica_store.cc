#include "store/replica_store.h"

#include <algorithm>

#include "base/strings.h"

namespace cairn::store {

namespace {

const char* const kSchema = R"sql(
CREATE TABLE cairn_state(
  id INTEGER PRIMARY KEY CHECK (id = 1), replica_id BLOB NOT NULL, hlc INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, next_doc INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE cairn_origins(
  idx INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, through INTEGER NOT NULL DEFAULT 0);
CREATE TABLE cairn_collections(
  idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, materialized INTEGER NOT NULL);
CREATE TABLE cairn_fields(idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE cairn_columns(
  coll INTEGER NOT NULL, field INTEGER NOT NULL, materialized INTEGER NOT NULL,
  PRIMARY KEY (coll, field)) WITHOUT ROWID;
CREATE TABLE cairn_docs(
  coll INTEGER NOT NULL, key TEXT NOT NULL, id INTEGER NOT NULL,
  del_hlc INTEGER, del_origin INTEGER, del_seq INTEGER,
  PRIMARY KEY (coll, key)) WITHOUT ROWID;
CREATE UNIQUE INDEX cairn_docs_by_id ON cairn_docs(id);
CREATE TABLE cairn_cells(
  doc INTEGER NOT NULL, field INTEGER NOT NULL,
  set_hlc INTEGER, set_origin INTEGER, set_seq INTEGER, vtype INTEGER, value,
  inc_hlc INTEGER, inc_origin INTEGER, inc_seq INTEGER,
  counter INTEGER NOT NULL, inc_count INTEGER NOT NULL,
  PRIMARY KEY (doc, field)) WITHOUT ROWID;
CREATE TABLE cairn_incs(
  doc INTEGER NOT NULL, field INTEGER NOT NULL, origin INTEGER NOT NULL, seq INTEGER NOT NULL,
  hlc INTEGER NOT NULL, delta INTEGER NOT NULL,
  PRIMARY KEY (doc, field, origin, seq)) WITHOUT ROWID;
CREATE TABLE cairn_outbox(
  seq INTEGER PRIMARY KEY, hlc INTEGER NOT NULL, txn INTEGER NOT NULL, kind INTEGER NOT NULL,
  coll INTEGER NOT NULL, key TEXT NOT NULL, field INTEGER, vtype INTEGER, value, delta INTEGER);
CREATE TABLE cairn_rejected(
  id INTEGER PRIMARY KEY, origin BLOB NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
  kind INTEGER NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL, field TEXT,
  vtype INTEGER, value, delta INTEGER, code INTEGER NOT NULL, reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL);
CREATE TABLE cairn_pending_ops(
  origin INTEGER NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL, kind INTEGER NOT NULL,
  collection TEXT NOT NULL, key TEXT NOT NULL, field TEXT, vtype INTEGER, value, delta INTEGER,
  PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE TABLE cairn_pending_ranges(
  origin INTEGER NOT NULL, from_seq INTEGER NOT NULL, through_seq INTEGER NOT NULL,
  PRIMARY KEY (origin, from_seq, through_seq)) WITHOUT ROWID;
)sql";

int64_t I(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t U(int64_t v) { return static_cast<uint64_t>(v); }

// Binds `v` as (vtype, value) at columns i, i+1.
void BindValue(Stmt* s, int i, const Value& v) {
  s->BindInt(i, static_cast<int>(v.type()));
  switch (v.type()) {
    case ValueType::kNull:
      s->BindNull(i + 1);
      break;
    case ValueType::kBool:
      s->BindInt(i + 1, v.as_bool() ? 1 : 0);
      break;
    case ValueType::kInt:
      s->BindInt(i + 1, v.as_int());
      break;
    case ValueType::kDouble:
      s->BindDouble(i + 1, v.as_double());
      break;
    case ValueType::kString:
      s->BindStaticText(i + 1, v.as_string());
      break;
    case ValueType::kBytes:
      s->BindStaticBlob(i + 1, v.as_string());
      break;
  }
}

// The materialized (SQL-visible) form of a value.
void BindSqlValue(Stmt* s, int i, const Value& v) {
  switch (v.type()) {
    case ValueType::kNull:
      s->BindNull(i);
      break;
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
  }
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

std::string CacheKey(int64_t coll, const std::string& key) {
  std::string k = std::to_string(coll);
  k.push_back('\0');
  k += key;
  return k;
}

}  // namespace

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
  // Probe the header: a file that is not SQLite fails here with SQLITE_NOTADB.
  CAIRN_ASSIGN_OR_RETURN(Stmt probe, s->db_.Prepare("PRAGMA application_id"));
  CAIRN_ASSIGN_OR_RETURN(bool has_row, probe.Step());
  int64_t app_id = has_row ? probe.Int(0) : 0;
  probe = Stmt();
  CAIRN_ASSIGN_OR_RETURN(Stmt uv, s->db_.Prepare("PRAGMA user_version"));
  CAIRN_ASSIGN_OR_RETURN(has_row, uv.Step());
  int64_t version = has_row ? uv.Int(0) : 0;
  uv = Stmt();
  CAIRN_ASSIGN_OR_RETURN(Stmt tables, s->db_.Prepare("SELECT count(*) FROM sqlite_schema"));
  CAIRN_ASSIGN_OR_RETURN(has_row, tables.Step());
  int64_t table_count = tables.Int(0);
  tables = Stmt();

  if (app_id == 0 && version == 0 && table_count == 0) {
    if (options.read_only) return Status(Code::kENOTREPLICA, path + " is an empty file");
    CAIRN_RETURN_IF_ERROR(s->InitSchema(new_id, now_ms));
  } else if (app_id != kApplicationId) {
    return Status(Code::kENOTREPLICA, path + " is not a Cairn replica");
  } else if (version > kFormatVersion) {
    return Status(Code::kEVERSION, path + " uses storage format " + std::to_string(version) +
                                       "; this Cairn reads formats up to " +
                                       std::to_string(kFormatVersion) + ": upgrade Cairn");
  }
  // Migrations from older formats go here (format 1 is the first).
  if (!options.read_only) {
    // WAL, and synchronous=FULL: a committed write survives power loss (storage-format.md).
    CAIRN_RETURN_IF_ERROR(s->db_.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  }
  CAIRN_RETURN_IF_ERROR(s->LoadRegistry());
  if (!options.read_only) CAIRN_RETURN_IF_ERROR(s->Prepare());
  return s;
}

ReplicaStore::~ReplicaStore() { (void)Close(); }

Status ReplicaStore::Close() {
  if (!db_.is_open()) return Status::OK();
  if (txn_) Rollback();
  for (Stmt* s : {&find_doc_, &load_cells_, &load_incs_, &insert_doc_, &update_doc_, &put_cell_,
                  &del_cell_, &put_inc_, &del_inc_, &del_incs_, &put_outbox_, &save_state_,
                  &set_through_, &stage_op_}) {
    *s = Stmt();
  }
  materialize_.clear();
  return db_.Close();
}

Status ReplicaStore::InitSchema(const ReplicaId& new_id, int64_t now_ms) {
  CAIRN_ASSIGN_OR_RETURN(auto txn, Txn::Begin(&db_));
  CAIRN_RETURN_IF_ERROR(db_.Exec(kSchema));
  CAIRN_RETURN_IF_ERROR(db_.Exec("PRAGMA application_id=" + std::to_string(kApplicationId) +
                                 "; PRAGMA user_version=" + std::to_string(kFormatVersion)));
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_state VALUES (1, ?, 0, 0, 1, ?)"));
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
  collections_lower_.clear();
  fields_.clear();
  fields_lower_.clear();
  field_names_.clear();
  columns_.clear();
  origin_index_.clear();
  origins_.clear();
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st, db_.Prepare("SELECT replica_id, hlc, last_seq, next_doc FROM cairn_state"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row || !ReplicaId::FromBytes(st.Blob(0).data(), st.Blob(0).size(), &replica_id_)) {
    return Status::Corrupt("replica state row is missing or malformed");
  }
  hlc_ = U(st.Int(1));
  last_seq_ = U(st.Int(2));
  next_doc_ = st.Int(3);
  CAIRN_ASSIGN_OR_RETURN(Stmt c, db_.Prepare("SELECT idx, name, materialized FROM cairn_collections"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(row, c.Step());
    if (!row) break;
    std::string name(c.Text(1));
    collections_lower_[AsciiLower(name)] = name;
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
  origins_[local_origin_].through = last_seq_;
  return Status::OK();
}

Status ReplicaStore::Prepare() {
  auto prep = [&](Stmt* s, const char* sql) -> Status {
    CAIRN_ASSIGN_OR_RETURN(*s, db_.Prepare(sql));
    return Status::OK();
  };
  CAIRN_RETURN_IF_ERROR(prep(&find_doc_,
      "SELECT id, del_hlc, del_origin, del_seq FROM cairn_docs WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&load_cells_,
      "SELECT field, set_hlc, set_origin, set_seq, vtype, value, inc_hlc, inc_origin, inc_seq, "
      "counter, inc_count FROM cairn_cells WHERE doc = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&load_incs_,
      "SELECT field, hlc, origin, seq, delta FROM cairn_incs WHERE doc = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&insert_doc_,
      "INSERT INTO cairn_docs(coll, key, id, del_hlc, del_origin, del_seq) VALUES (?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&update_doc_,
      "UPDATE cairn_docs SET del_hlc = ?, del_origin = ?, del_seq = ? WHERE coll = ? AND key = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&put_cell_,
      "INSERT OR REPLACE INTO cairn_cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&del_cell_, "DELETE FROM cairn_cells WHERE doc = ? AND field = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&put_inc_, "INSERT OR IGNORE INTO cairn_incs VALUES (?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&del_inc_,
      "DELETE FROM cairn_incs WHERE doc = ? AND field = ? AND origin = ? AND seq = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&del_incs_, "DELETE FROM cairn_incs WHERE doc = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&put_outbox_,
      "INSERT INTO cairn_outbox VALUES (?,?,?,?,?,?,?,?,?,?)"));
  CAIRN_RETURN_IF_ERROR(prep(&save_state_,
      "UPDATE cairn_state SET hlc = ?, last_seq = ?, next_doc = ? WHERE id = 1"));
  CAIRN_RETURN_IF_ERROR(prep(&set_through_, "UPDATE cairn_origins SET through = ? WHERE idx = ?"));
  CAIRN_RETURN_IF_ERROR(prep(&stage_op_,
      "INSERT OR IGNORE INTO cairn_pending_ops VALUES (?,?,?,?,?,?,?,?,?,?)"));
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Transactions

Status ReplicaStore::Begin() {
  if (txn_) return Status::Internal("transaction already open");
  CAIRN_ASSIGN_OR_RETURN(txn_, Txn::Begin(&db_));
  cache_.clear();
  return Status::OK();
}

Status ReplicaStore::Commit(Hlc hlc) {
  Status st = FlushAll();
  if (st.ok()) {
    hlc_ = std::max(hlc_, hlc);
    save_state_.BindInt(1, I(hlc_));
    save_state_.BindInt(2, I(last_seq_));
    save_state_.BindInt(3, next_doc_);
    st = save_state_.Run();
  }
  if (st.ok()) {
    set_through_.BindInt(1, I(last_seq_));
    set_through_.BindInt(2, local_origin_);
    st = set_through_.Run();
  }
  if (st.ok()) st = txn_->Commit();
  if (!st.ok()) {
    Rollback();
    return st;
  }
  txn_.reset();
  return Status::OK();
}

void ReplicaStore::Rollback() {
  txn_.reset();  // ROLLBACK
  cache_.clear();
  materialize_.clear();  // DDL of the transaction is gone
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
  const Collection* c = nullptr;
  for (const auto& [name, info] : collections_) {
    if (info.idx == coll) c = &info;
  }
  if (c == nullptr) return Status::Internal("unknown collection index");
  // A field whose name clashes in case with another column of this table is not materialized.
  bool materialize = c->materialized;
  const std::string& fname = FieldName(field);
  for (const auto& [key, mat] : columns_) {
    if (key.first == coll && mat && AsciiLower(FieldName(key.second)) == AsciiLower(fname)) {
      materialize = false;
    }
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("INSERT INTO cairn_columns VALUES (?, ?, ?)"));
  st.BindInt(1, coll);
  st.BindInt(2, field);
  st.BindInt(3, materialize ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  if (materialize) {
    CAIRN_RETURN_IF_ERROR(db_.Exec("ALTER TABLE " + QuoteIdent(c->name) + " ADD COLUMN " +
                                   QuoteIdent(fname)));
  }
  columns_[{coll, field}] = materialize;
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
// Applying ops

Result<ReplicaStore::CachedDoc*> ReplicaStore::LoadDoc(const std::string& collection,
                                                        const std::string& key) {
  int64_t coll = collections_.at(collection).idx;
  std::string ck = CacheKey(coll, key);
  auto it = cache_.find(ck);
  if (it != cache_.end()) return &it->second;
  CachedDoc doc;
  doc.coll = coll;
  doc.collection = collection;
  doc.key = key;
  find_doc_.BindInt(1, coll);
  find_doc_.BindStaticText(2, key);
  CAIRN_ASSIGN_OR_RETURN(bool found, find_doc_.Step());
  if (found) {
    doc.doc_id = find_doc_.Int(0);
    if (!find_doc_.IsNull(3)) {
      doc.state.del = OpId{U(find_doc_.Int(1)), origins_[find_doc_.Int(2)].id, U(find_doc_.Int(3))};
    }
  }
  find_doc_.Reset();
  if (found) {
    load_cells_.BindInt(1, doc.doc_id);
    for (;;) {
      auto row = load_cells_.Step();
      if (!row.ok()) {
        load_cells_.Reset();
        return row.status();
      }
      if (!row.value()) break;
      crdt::Cell cell;
      if (!load_cells_.IsNull(3)) {
        cell.set_id = OpId{U(load_cells_.Int(1)), origins_[load_cells_.Int(2)].id,
                           U(load_cells_.Int(3))};
        cell.set_value = ReadValue(load_cells_, 4);
      }
      if (!load_cells_.IsNull(8)) {
        cell.inc_max = OpId{U(load_cells_.Int(6)), origins_[load_cells_.Int(7)].id,
                            U(load_cells_.Int(8))};
      }
      cell.counter = load_cells_.Int(9);
      cell.inc_count = load_cells_.Int(10);
      doc.state.cells[FieldName(load_cells_.Int(0))] = std::move(cell);
    }
    load_cells_.Reset();
  }
  return &cache_.emplace(std::move(ck), std::move(doc)).first->second;
}

Status ReplicaStore::LoadIncs(CachedDoc* doc) {
  auto& incs = doc->state.incs;
  incs.clear();
  if (doc->doc_id != 0 && !doc->state.changes.all_incs_removed) {
    load_incs_.BindInt(1, doc->doc_id);
    for (;;) {
      auto row = load_incs_.Step();
      if (!row.ok()) {
        load_incs_.Reset();
        return row.status();
      }
      if (!row.value()) break;
      crdt::IncEntry e{OpId{U(load_incs_.Int(1)), origins_[load_incs_.Int(2)].id,
                            U(load_incs_.Int(3))},
                       load_incs_.Int(4)};
      incs[FieldName(load_incs_.Int(0))].push_back(e);
    }
    load_incs_.Reset();
  }
  // Increments applied earlier in this transaction are not in the file yet.
  for (const auto& [field, entry] : doc->state.changes.added_incs) incs[field].push_back(entry);
  doc->state.incs_loaded = true;
  return Status::OK();
}

Status ReplicaStore::AppendOutbox(const Op& op, int64_t coll, int64_t field) {
  Stmt& s = put_outbox_;
  s.BindInt(1, I(op.id.seq));
  s.BindInt(2, I(op.id.hlc));
  s.BindInt(3, op.continues_txn ? 1 : 0);
  s.BindInt(4, static_cast<int>(op.kind));
  s.BindInt(5, coll);
  s.BindStaticText(6, op.key);
  if (op.kind == OpKind::kDelete) {
    s.BindNull(7);
  } else {
    s.BindInt(7, field);
  }
  if (op.kind == OpKind::kSet) {
    BindValue(&s, 8, op.value);
  } else {
    s.BindNull(8);
    s.BindNull(9);
  }
  s.BindInt(10, op.delta);
  return s.Run();
}

Status ReplicaStore::Apply(const Op& op, bool local) {
  if (!txn_) return Status::Internal("Apply outside a transaction");
  CAIRN_ASSIGN_OR_RETURN(int64_t coll, EnsureCollection(op.collection));
  int64_t field = 0;
  if (op.kind != OpKind::kDelete) {
    CAIRN_ASSIGN_OR_RETURN(field, EnsureField(op.field));
    CAIRN_RETURN_IF_ERROR(EnsureColumn(coll, field));
  }
  CAIRN_RETURN_IF_ERROR(EnsureOrigin(op.id.origin).status());
  if (local) {
    if (op.id.seq != last_seq_ + 1 || op.id.origin != replica_id_) {
      return Status::Internal("local op out of sequence");
    }
    CAIRN_RETURN_IF_ERROR(AppendOutbox(op, coll, field));
    last_seq_ = op.id.seq;
    origins_[local_origin_].through = last_seq_;
  }
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(op.collection, op.key));
  if (crdt::NeedsIncrements(doc->state, op) && !doc->state.incs_loaded) {
    CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  }
  crdt::ApplyOp(&doc->state, op);
  if (cache_.size() > options_.cache_docs) CAIRN_RETURN_IF_ERROR(FlushAll());
  return Status::OK();
}

Result<Stmt*> ReplicaStore::MaterializeStmt(int64_t coll, int64_t field) {
  auto it = materialize_.find({coll, field});
  if (it != materialize_.end()) return &it->second;
  std::string table;
  for (const auto& [name, info] : collections_) {
    if (info.idx == coll) table = QuoteIdent(name);
  }
  std::string sql;
  if (field < 0) {
    sql = "DELETE FROM " + table + " WHERE key = ?1";
  } else {
    std::string col = QuoteIdent(FieldName(field));
    sql = "INSERT INTO " + table + " (key, " + col + ") VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET " +
          col + " = excluded." + col;
  }
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(sql));
  return &materialize_.emplace(std::make_pair(coll, field), std::move(st)).first->second;
}

Status ReplicaStore::FlushDoc(CachedDoc* doc) {
  crdt::DocState& s = doc->state;
  crdt::DocChanges& ch = s.changes;
  if (!ch.any() && ch.added_incs.empty() && ch.removed_incs.empty()) return Status::OK();
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
  if (doc->doc_id == 0) {
    doc->doc_id = next_doc_++;
    insert_doc_.BindInt(1, doc->coll);
    insert_doc_.BindStaticText(2, doc->key);
    insert_doc_.BindInt(3, doc->doc_id);
    bind_id(&insert_doc_, 4, s.del);
    CAIRN_RETURN_IF_ERROR(insert_doc_.Run());
  } else if (ch.del_changed) {
    bind_id(&update_doc_, 1, s.del);
    update_doc_.BindInt(4, doc->coll);
    update_doc_.BindStaticText(5, doc->key);
    CAIRN_RETURN_IF_ERROR(update_doc_.Run());
  }
  if (ch.all_incs_removed) {
    del_incs_.BindInt(1, doc->doc_id);
    CAIRN_RETURN_IF_ERROR(del_incs_.Run());
  }
  for (const auto& [field, id] : ch.removed_incs) {
    del_inc_.BindInt(1, doc->doc_id);
    del_inc_.BindInt(2, fields_.at(field));
    del_inc_.BindInt(3, origin_index_.at(id.origin));
    del_inc_.BindInt(4, I(id.seq));
    CAIRN_RETURN_IF_ERROR(del_inc_.Run());
  }
  for (const auto& [field, e] : ch.added_incs) {
    put_inc_.BindInt(1, doc->doc_id);
    put_inc_.BindInt(2, fields_.at(field));
    put_inc_.BindInt(3, origin_index_.at(e.id.origin));
    put_inc_.BindInt(4, I(e.id.seq));
    put_inc_.BindInt(5, I(e.id.hlc));
    put_inc_.BindInt(6, e.delta);
    CAIRN_RETURN_IF_ERROR(put_inc_.Run());
  }
  const bool visible = s.Visible();
  if (!visible && collections_.at(doc->collection).materialized) {
    CAIRN_ASSIGN_OR_RETURN(Stmt * del, MaterializeStmt(doc->coll, -1));
    del->BindStaticText(1, doc->key);
    CAIRN_RETURN_IF_ERROR(del->Run());
  }
  for (const std::string& field : ch.dirty_fields) {
    int64_t fidx = fields_.at(field);
    auto cell = s.cells.find(field);
    if (cell == s.cells.end()) {
      del_cell_.BindInt(1, doc->doc_id);
      del_cell_.BindInt(2, fidx);
      CAIRN_RETURN_IF_ERROR(del_cell_.Run());
    } else {
      const crdt::Cell& c = cell->second;
      put_cell_.BindInt(1, doc->doc_id);
      put_cell_.BindInt(2, fidx);
      bind_id(&put_cell_, 3, c.set_id);
      if (c.set_id.none()) {
        put_cell_.BindNull(6);
        put_cell_.BindNull(7);
      } else {
        BindValue(&put_cell_, 6, c.set_value);
      }
      bind_id(&put_cell_, 8, c.inc_max);
      put_cell_.BindInt(11, c.counter);
      put_cell_.BindInt(12, c.inc_count);
      CAIRN_RETURN_IF_ERROR(put_cell_.Run());
    }
    if (visible && columns_.at({doc->coll, fidx})) {
      CAIRN_ASSIGN_OR_RETURN(Stmt * up, MaterializeStmt(doc->coll, fidx));
      Value shown = cell == s.cells.end() ? Value::Null() : cell->second.Visible();
      up->BindStaticText(1, doc->key);
      BindSqlValue(up, 2, shown);
      CAIRN_RETURN_IF_ERROR(up->Run());
    }
  }
  ch.Clear();
  return Status::OK();
}

Status ReplicaStore::FlushAll() {
  for (auto& [k, doc] : cache_) CAIRN_RETURN_IF_ERROR(FlushDoc(&doc));
  cache_.clear();
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Pending (held-back) ops

Status ReplicaStore::StagePending(const Op& op) {
  CAIRN_ASSIGN_OR_RETURN(int64_t origin, EnsureOrigin(op.id.origin));
  Stmt& s = stage_op_;
  s.BindInt(1, origin);
  s.BindInt(2, I(op.id.seq));
  s.BindInt(3, I(op.id.hlc));
  s.BindInt(4, static_cast<int>(op.kind));
  s.BindStaticText(5, op.collection);
  s.BindStaticText(6, op.key);
  if (op.kind == OpKind::kDelete) {
    s.BindNull(7);
  } else {
    s.BindStaticText(7, op.field);
  }
  if (op.kind == OpKind::kSet) {
    BindValue(&s, 8, op.value);
  } else {
    s.BindNull(8);
    s.BindNull(9);
  }
  s.BindInt(10, op.delta);
  return s.Run();
}

Status ReplicaStore::StagePendingRange(const ReplicaId& origin, uint64_t from, uint64_t through) {
  CAIRN_ASSIGN_OR_RETURN(int64_t idx, EnsureOrigin(origin));
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "INSERT OR IGNORE INTO cairn_pending_ranges VALUES (?, ?, ?)"));
  st.BindInt(1, idx);
  st.BindInt(2, I(from));
  st.BindInt(3, I(through));
  return st.Run();
}

Status ReplicaStore::DrainPending() {
  for (bool progress = true; progress;) {
    progress = false;
    CAIRN_ASSIGN_OR_RETURN(Stmt ranges, db_.Prepare(
        "SELECT origin, from_seq, through_seq FROM cairn_pending_ranges ORDER BY origin, from_seq"));
    std::vector<std::tuple<int64_t, uint64_t, uint64_t>> ready;
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, ranges.Step());
      if (!row) break;
      int64_t origin = ranges.Int(0);
      if (U(ranges.Int(1)) <= origins_[origin].through) {
        ready.emplace_back(origin, U(ranges.Int(1)), U(ranges.Int(2)));
      }
    }
    ranges = Stmt();
    for (const auto& [origin, from, through] : ready) {
      const OriginInfo info = origins_[origin];
      CAIRN_ASSIGN_OR_RETURN(Stmt ops, db_.Prepare(
          "SELECT seq, hlc, kind, collection, key, field, vtype, value, delta "
          "FROM cairn_pending_ops WHERE origin = ? AND seq > ? AND seq <= ? ORDER BY seq"));
      ops.BindInt(1, origin);
      ops.BindInt(2, I(info.through));
      ops.BindInt(3, I(through));
      for (;;) {
        CAIRN_ASSIGN_OR_RETURN(bool row, ops.Step());
        if (!row) break;
        Op op;
        op.id = OpId{U(ops.Int(1)), info.id, U(ops.Int(0))};
        op.kind = static_cast<OpKind>(ops.Int(2));
        op.collection = std::string(ops.Text(3));
        op.key = std::string(ops.Text(4));
        op.field = std::string(ops.Text(5));
        if (op.kind == OpKind::kSet) op.value = ReadValue(ops, 6);
        op.delta = ops.Int(8);
        CAIRN_RETURN_IF_ERROR(Apply(op, /*local=*/false));
      }
      ops = Stmt();
      CAIRN_RETURN_IF_ERROR(SetThrough(info.id, through));
      CAIRN_ASSIGN_OR_RETURN(Stmt del, db_.Prepare(
          "DELETE FROM cairn_pending_ops WHERE origin = ? AND seq <= ?"));
      del.BindInt(1, origin);
      del.BindInt(2, I(origins_[origin].through));
      CAIRN_RETURN_IF_ERROR(del.Run());
      CAIRN_ASSIGN_OR_RETURN(Stmt delr, db_.Prepare(
          "DELETE FROM cairn_pending_ranges WHERE origin = ? AND through_seq <= ?"));
      delr.BindInt(1, origin);
      delr.BindInt(2, I(origins_[origin].through));
      CAIRN_RETURN_IF_ERROR(delr.Run());
      progress = true;
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Reading

Result<std::optional<Fields>> ReplicaStore::GetDoc(const std::string& collection,
                                                    const std::string& key) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return std::optional<Fields>();
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT f.name, c.set_hlc, c.set_origin, c.set_seq, c.vtype, c.value, c.inc_hlc, "
      "c.inc_origin, c.inc_seq, c.counter FROM cairn_docs d JOIN cairn_cells c ON c.doc = d.id "
      "JOIN cairn_fields f ON f.idx = c.field WHERE d.coll = ? AND d.key = ?"));
  st.BindInt(1, c->second.idx);
  st.BindText(2, key);
  Fields fields;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    crdt::Cell cell;
    if (!st.IsNull(3)) {
      cell.set_id = OpId{U(st.Int(1)), origins_[st.Int(2)].id, U(st.Int(3))};
      cell.set_value = ReadValue(st, 4);
    }
    if (!st.IsNull(8)) cell.inc_max = OpId{U(st.Int(6)), origins_[st.Int(7)].id, U(st.Int(8))};
    cell.counter = st.Int(9);
    fields[std::string(st.Text(0))] = cell.Visible();
  }
  if (fields.empty()) return std::optional<Fields>();
  return std::optional<Fields>(std::move(fields));
}

Status ReplicaStore::ForEachVisibleDoc(
    const std::function<Status(const std::string&, const std::string&, const Fields&)>& fn) {
  std::map<std::string, int64_t> sorted;
  for (const auto& [name, info] : collections_) sorted[name] = info.idx;
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(
      "SELECT d.key, f.name, c.set_hlc, c.set_origin, c.set_seq, c.vtype, c.value, c.inc_hlc, "
      "c.inc_origin, c.inc_seq, c.counter FROM cairn_docs d JOIN cairn_cells c ON c.doc = d.id "
      "JOIN cairn_fields f ON f.idx = c.field WHERE d.coll = ? ORDER BY d.key"));
  for (const auto& [name, idx] : sorted) {
    st.BindInt(1, idx);
    std::string key;
    Fields fields;
    for (;;) {
      auto row = st.Step();
      if (!row.ok()) {
        st.Reset();
        return row.status();
      }
      if (!row.value() || st.Text(0) != key) {
        if (!fields.empty()) {
          Status s = fn(name, key, fields);
          if (!s.ok()) {
            st.Reset();
            return s;
          }
          fields.clear();
        }
        if (!row.value()) break;
        key = std::string(st.Text(0));
      }
      crdt::Cell cell;
      if (!st.IsNull(4)) {
        cell.set_id = OpId{U(st.Int(2)), origins_[st.Int(3)].id, U(st.Int(4))};
        cell.set_value = ReadValue(st, 5);
      }
      if (!st.IsNull(9)) cell.inc_max = OpId{U(st.Int(7)), origins_[st.Int(8)].id, U(st.Int(9))};
      cell.counter = st.Int(10);
      fields[std::string(st.Text(1))] = cell.Visible();
    }
    st.Reset();
  }
  return Status::OK();
}

// Columns: origin idx, seq, hlc, kind, collection, key, field, vtype, value, delta.
Status ReplicaStore::ScanOps(Stmt* st, const std::function<Status(const Op&)>& fn) {
  Op op;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st->Step());
    if (!row) break;
    op.id = OpId{U(st->Int(2)), origins_[st->Int(0)].id, U(st->Int(1))};
    op.kind = static_cast<OpKind>(st->Int(3));
    op.collection = std::string(st->Text(4));
    op.key = std::string(st->Text(5));
    op.field = op.kind == OpKind::kDelete ? std::string() : std::string(st->Text(6));
    op.value = op.kind == OpKind::kSet ? ReadValue(*st, 7) : Value();
    op.delta = op.kind == OpKind::kIncrement ? st->Int(9) : 0;
    op.continues_txn = false;
    CAIRN_RETURN_IF_ERROR(fn(op));
  }
  return Status::OK();
}

static const char* const kSurvivorsSql = R"sql(
SELECT s.origin, s.seq, s.hlc, s.kind, c.name, d.key, f.name, s.vtype, s.value, s.delta FROM (
  SELECT set_origin AS origin, set_seq AS seq, set_hlc AS hlc, 0 AS kind, doc, field,
         vtype, value, 0 AS delta FROM cairn_cells WHERE set_seq IS NOT NULL
  UNION ALL
  SELECT origin, seq, hlc, 1, doc, field, NULL, NULL, delta FROM cairn_incs
  UNION ALL
  SELECT del_origin, del_seq, del_hlc, 2, id, NULL, NULL, NULL, 0 FROM cairn_docs
   WHERE del_seq IS NOT NULL
) s JOIN cairn_docs d ON d.id = s.doc JOIN cairn_collections c ON c.idx = d.coll
  LEFT JOIN cairn_fields f ON f.idx = s.field
)sql";

Status ReplicaStore::ForEachSurvivor(const std::function<Status(const Op&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(std::string(kSurvivorsSql) + " ORDER BY 1, 2"));
  return ScanOps(&st, fn);
}

Status ReplicaStore::ForEachLoggedOp(const std::function<Status(const Op&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare(std::string(kSurvivorsSql) + R"sql(
UNION
SELECT ?1, o.seq, o.hlc, o.kind, c.name, o.key, f.name, o.vtype, o.value,
       CASE o.kind WHEN 1 THEN o.delta ELSE 0 END
  FROM cairn_outbox o JOIN cairn_collections c ON c.idx = o.coll
  LEFT JOIN cairn_fields f ON f.idx = o.field
ORDER BY 1, 2)sql"));
  st.BindInt(1, local_origin_);
  return ScanOps(&st, fn);
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
  return Count(&db_, "SELECT count(*) FROM cairn_outbox");
}
Result<int64_t> ReplicaStore::RejectedCount() {
  return Count(&db_, "SELECT count(*) FROM cairn_rejected");
}
Result<int64_t> ReplicaStore::PendingCount() {
  return Count(&db_, "SELECT count(*) FROM cairn_pending_ops");
}

}  // namespace cairn::store
