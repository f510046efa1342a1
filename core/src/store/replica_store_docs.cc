// ReplicaStore: documents. The cells blob, the write-back cache of a transaction, applying ops
// through the merge rules (crdt/doc_state.h), writing documents back (their state, increments
// and SQL rows), and reading them (docs/storage-format.md).
#include "store/replica_store.h"

#include <algorithm>
#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/value_codec.h"
#include "store/replica_store_rows.h"

namespace cairn::store {

namespace {

// Cells blob flags.
constexpr uint8_t kCellHasSet = 1;
constexpr uint8_t kCellHasInc = 2;

}  // namespace

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
                                         (cell.inc_count() > 0 ? kCellHasInc : 0));
    out.push_back(static_cast<char>(flags));
    if (flags & kCellHasSet) {
      put_id(cell.set_id);
      PutValue(&out, cell.set_value);
    }
    if (flags & kCellHasInc) {
      put_id(cell.inc_max());
      PutSignedVarint(&out, cell.counter());
      PutVarint(&out, U(cell.inc_count()));
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
      crdt::IncSum& sum = cell.incs();
      // Written only for a cell with increments: a count of 0 (or past int64) is damage.
      if (!get_id(&sum.max) || !r.GetSignedVarint(&sum.counter) || !r.GetVarint(&count) ||
          count == 0 || count > static_cast<uint64_t>(INT64_MAX)) {
        return false;
      }
      sum.count = I(count);
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

Result<uint64_t> ReplicaStore::FirstUnacked() {
  if (unacked_from_ == 0) {
    CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("SELECT min(first_seq) FROM cairn_outbox"));
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    unacked_from_ = row && !st.IsNull(0) ? U(st.Int(0)) : last_seq_ + 1;
  }
  return unacked_from_;
}

// A received op that a local op not yet acknowledged outranks (it changes nothing now) is kept
// under that op's seq: if the server refuses the local op, the document is recomputed with it.
Status ReplicaStore::KeepIfOutranked(const crdt::DocState& state, const Op& op) {
  const OpId over = crdt::OutrankedBy(state, op);
  if (over.none() || over.origin != replica_id_) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(uint64_t unacked_from, FirstUnacked());
  if (over.seq < unacked_from) return Status::OK();  // acknowledged: it stands for good
  if (!keep_outranked_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(keep_outranked_, db_.Prepare(
        "INSERT OR IGNORE INTO cairn_superseded VALUES (?,?,?,?,?,?,?,?,?,?,?)"));
  }
  CAIRN_ASSIGN_OR_RETURN(int64_t origin, EnsureOrigin(op.id.origin));
  rows::BindOpRow(&keep_outranked_, I(over.seq), origin, op);
  return keep_outranked_.Run();
}

Status ReplicaStore::Apply(const Op& op, bool local, std::vector<Op>* superseded) {
  // Below the horizon the state is folded: a new op stamped there cannot be merged by the
  // rules any more (docs/crdt-semantics.md "History horizon"); a server refuses it, a replica
  // skips it. (A state's ops, ApplyIdempotent's, may be older: a field's set can be.)
  if (!local && op.id.hlc < horizon_) return Status::OK();
  return Merge(op, local, superseded);
}

Status ReplicaStore::Merge(const Op& op, bool local, std::vector<Op>* superseded) {
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
  if (superseded != nullptr) crdt::SupersededBy(doc->state, op, superseded);
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
// Reading

Result<crdt::DocState> ReplicaStore::CopyDoc(const std::string& collection,
                                             const std::string& key) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) {
    crdt::DocState empty;
    empty.incs_loaded = true;  // (it has none)
    return empty;
  }
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(c->second.idx, key));
  if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  crdt::DocState copy = doc->state;
  copy.ClearChanges();
  return copy;
}

Result<std::optional<Fields>> ReplicaStore::GetDoc(const std::string& collection,
                                                    const std::string& key) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return std::optional<Fields>();
  // (Prepared once: the change feed and the HTTP API read documents one by one.)
  if (!get_doc_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(get_doc_, db_.Prepare(
        "SELECT cells FROM cairn_docs WHERE coll = ? AND key = ? AND cells IS NOT NULL"));
  }
  Stmt& st = get_doc_;
  st.BindInt(1, c->second.idx);
  st.BindStaticText(2, key);
  Result<bool> row = st.Step();
  crdt::CellMap cells;
  const bool decoded = row.ok() && row.value() && DecodeCells(st.Blob(0), &cells);
  st.Reset();  // (no read left open)
  if (!row.ok()) return row.status();
  if (!row.value()) return std::optional<Fields>();
  if (!decoded) return Status::Corrupt("malformed cells");
  return std::optional<Fields>(crdt::VisibleFields(cells));
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
      CAIRN_RETURN_IF_ERROR(fn(name, std::string(st.Text(0)), crdt::VisibleFields(cells)));
    }
    st.Reset();
  }
  return Status::OK();
}

Status ReplicaStore::ForEachDocFields(
    const std::string& collection,
    const std::function<Status(const std::string&, const Fields&)>& fn) {
  return ForEachDocFields(collection, "", SIZE_MAX, fn);
}

Status ReplicaStore::ForEachDocFields(
    const std::string& collection, const std::string& after_key, size_t max_docs,
    const std::function<Status(const std::string&, const Fields&)>& fn) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("SELECT key, cells FROM cairn_docs"
                                              " WHERE coll = ? AND key > ? ORDER BY key LIMIT ?"));
  st.BindInt(1, c->second.idx);
  st.BindText(2, after_key);
  st.BindInt(3, max_docs > static_cast<size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(max_docs));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    crdt::CellMap cells;
    if (!st.IsNull(1) && !DecodeCells(st.Blob(1), &cells))
      return Status::Corrupt("malformed cells");
    CAIRN_RETURN_IF_ERROR(fn(std::string(st.Text(0)), crdt::VisibleFields(cells)));
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

Status ReplicaStore::RebuildDoc(const std::string& collection, const std::string& key,
                                const std::function<bool(const OpId&)>& drop,
                                const std::vector<Op>& extra) {
  if (!in_txn_) return Status::Internal("RebuildDoc outside a transaction");
  auto c = collections_.find(collection);
  if (c == collections_.end()) return Status::OK();  // never written here: nothing to undo
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(c->second.idx, key));
  if (!doc->in_file && !doc->state.changes.any() && extra.empty()) return Status::OK();
  if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  std::vector<Op> ops;
  crdt::StateOps(collection, key, doc->state, &ops);
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

Result<bool> ReplicaStore::HasOps(const std::string& collection, const std::string& key) {
  auto c = collections_.find(collection);
  if (c == collections_.end()) return false;
  CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(c->second.idx, key));
  if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
  std::vector<Op> ops;
  crdt::StateOps(collection, key, doc->state, &ops);
  return !ops.empty();
}

Status ReplicaStore::ApplyIdempotent(const Op& op) {
  // (No horizon check: a state's ops may be older than it, and are merged into what this
  // replica holds of the document only when their identities are its own: docs/crdt-semantics.md
  // "History horizon", 4.)
  if (op.kind == OpKind::kIncrement) {
    CAIRN_ASSIGN_OR_RETURN(int64_t coll, EnsureCollection(op.collection));
    CAIRN_ASSIGN_OR_RETURN(CachedDoc * doc, LoadDoc(coll, op.key));
    if (!doc->state.incs_loaded) CAIRN_RETURN_IF_ERROR(LoadIncs(doc));
    if (crdt::HasIncrement(doc->state, op)) {
      // Counted already, or below the document's delete: kept if that delete may be undone.
      return op.id < doc->state.del ? KeepIfOutranked(doc->state, op) : Status::OK();
    }
  }
  return Merge(op, /*local=*/false, nullptr);
}

Result<ReplicaStore::FoldStats> ReplicaStore::FoldHistory(Hlc horizon) {
  if (!in_txn_) return Status::Internal("FoldHistory outside a transaction");
  FoldStats stats;
  // (An HLC past 2^63 is a broken clock's: stored negative, never folded.)
  if (horizon <= horizon_ || horizon > static_cast<Hlc>(INT64_MAX)) return stats;
  CAIRN_RETURN_IF_ERROR(WriteBack());
  // Folding changes no document's visible state: nothing for change listeners.
  const bool track = track_changes_;
  track_changes_ = false;
  // The documents with two or more increments of one field below the horizon, a run at a time
  // in key order (each run folded and written back before the next is read).
  CAIRN_ASSIGN_OR_RETURN(
      Stmt find,
      db_.Prepare(
          "SELECT coll, key FROM cairn_incs WHERE hlc >= 0 AND hlc < ?1 AND (coll, key) > (?2, ?3) "
          "GROUP BY coll, key, field HAVING count(*) > 1 ORDER BY coll, key LIMIT 512"));
  std::pair<int64_t, std::string> after{-1, ""};
  Status st;
  for (;;) {
    std::vector<std::pair<int64_t, std::string>> docs;
    find.BindInt(1, I(horizon));
    find.BindInt(2, after.first);
    find.BindText(3, after.second);
    st = find.ForEachRow([&] {
      std::pair<int64_t, std::string> doc{find.Int(0), std::string(find.Text(1))};
      if (docs.empty() || docs.back() != doc) docs.push_back(std::move(doc));
      return Status::OK();
    });
    if (!st.ok() || docs.empty()) break;
    for (const auto& [coll, key] : docs) {
      auto doc = LoadDoc(coll, key);
      if (!doc.ok()) {
        st = doc.status();
        break;
      }
      if (!(*doc)->state.incs_loaded) st = LoadIncs(*doc);
      if (!st.ok()) break;
      const crdt::DocState& state = (*doc)->state;
      if (!state.del.none() && state.del.hlc < horizon) stats.deletes_cleared++;
      crdt::FoldHistory(&(*doc)->state, horizon);
      stats.docs++;
      stats.increments += static_cast<int64_t>((*doc)->state.changes.removed_incs.size()) -
                          static_cast<int64_t>((*doc)->state.changes.added_incs.size());
    }
    if (st.ok()) st = WriteBack();
    if (!st.ok()) break;
    after = std::move(docs.back());
  }
  track_changes_ = track;
  CAIRN_RETURN_IF_ERROR(st);
  // Deletes below the horizon: a deleted document's row goes (it has no cells and no
  // increments); one written again since forgets its delete (everything it holds is above).
  CAIRN_ASSIGN_OR_RETURN(
      Stmt drop,
      db_.Prepare("DELETE FROM cairn_docs WHERE cells IS NULL AND del_hlc >= 0 AND del_hlc < ?"));
  drop.BindInt(1, I(horizon));
  CAIRN_RETURN_IF_ERROR(drop.Run());
  stats.tombstones = sqlite3_changes64(db_.raw());
  CAIRN_ASSIGN_OR_RETURN(
      Stmt clear,
      db_.Prepare("UPDATE cairn_docs SET del_hlc = NULL, del_origin = NULL, del_seq = NULL "
                  "WHERE cells IS NOT NULL AND del_hlc >= 0 AND del_hlc < ?"));
  clear.BindInt(1, I(horizon));
  CAIRN_RETURN_IF_ERROR(clear.Run());
  stats.deletes_cleared += sqlite3_changes64(db_.raw());
  CAIRN_ASSIGN_OR_RETURN(Stmt set, db_.Prepare("UPDATE cairn_state SET horizon = ? WHERE id = 1"));
  set.BindInt(1, I(horizon));
  CAIRN_RETURN_IF_ERROR(set.Run());
  horizon_ = horizon;  // (a rollback reads it back from the file)
  return stats;
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
    crdt::StateOps(collection, key, state, &ops);
    CAIRN_RETURN_IF_ERROR(fn(key, &ops));
  }
  return Status::OK();
}

Result<bool> ReplicaStore::IsServerFile() {
  CAIRN_ASSIGN_OR_RETURN(Stmt st, db_.Prepare("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                              " AND name = 'cairn_server_log'"));
  return st.Step();
}

}  // namespace cairn::store
