#include "replica/replica.h"
#include "replica/replica_locked.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>

#include "base/killpoint.h"
#include "base/coding.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "oplog/value_codec.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"

namespace cairn {

namespace {

// Export batches stay well below the frame limit: one op record is at most ~1.1 KiB of key plus
// its value, so the byte cap is checked after each op.
constexpr size_t kExportBatchOps = 1u << 16;
constexpr size_t kExportBatchBytes = 4u << 20;
constexpr uint16_t kExportFormatVersion = 1;
// No replica makes 2^62 ops; a larger seq in a file is damage (and would wrap counters).
constexpr uint64_t kMaxSeq = uint64_t{1} << 62;

// Rolls the store's open transaction back when the call leaves without committing (an error
// return, or an exception such as bad_alloc), so a replica never stays locked in a half-done
// transaction. A no-op once committed or rolled back.
class RollbackUnlessCommitted {
 public:
  explicit RollbackUnlessCommitted(store::ReplicaStore* store) : store_(store) {}
  ~RollbackUnlessCommitted() {
    try {
      if (store_->in_transaction()) store_->Rollback();
    } catch (...) {
    }
  }

 private:
  store::ReplicaStore* store_;
};

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

// WriteBatch encoding: per entry, kind byte, length-prefixed collection and key, then for set
// and increment the length-prefixed field, then the value (set) or signed varint delta.
void WriteBatch::AddEntry(OpKind kind, std::string_view collection, std::string_view key) {
  rep_.push_back(static_cast<char>(kind));
  PutLengthPrefixed(&rep_, collection);
  PutLengthPrefixed(&rep_, key);
  count_++;
}

WriteBatch& WriteBatch::Set(std::string_view collection, std::string_view key,
                            std::string_view field, const Value& value) {
  AddEntry(OpKind::kSet, collection, key);
  PutLengthPrefixed(&rep_, field);
  PutValue(&rep_, value);
  return *this;
}

WriteBatch& WriteBatch::Increment(std::string_view collection, std::string_view key,
                                  std::string_view field, int64_t delta) {
  AddEntry(OpKind::kIncrement, collection, key);
  PutLengthPrefixed(&rep_, field);
  PutSignedVarint(&rep_, delta);
  return *this;
}

WriteBatch& WriteBatch::Delete(std::string_view collection, std::string_view key) {
  AddEntry(OpKind::kDelete, collection, key);
  return *this;
}

Status WriteBatch::ForEach(const std::function<Status(const Entry&)>& fn) const {
  Reader r(reinterpret_cast<const uint8_t*>(rep_.data()), rep_.size());
  Entry e{OpKind::kSet, {}, {}, {}, Value(), 0};
  while (!r.done()) {
    uint8_t kind;
    bool ok = r.GetByte(&kind) && kind <= 2 && GetLengthPrefixed(&r, &e.collection) &&
              GetLengthPrefixed(&r, &e.key);
    e.kind = static_cast<OpKind>(kind);
    e.field = {};
    e.value = Value();
    e.delta = 0;
    if (ok && e.kind != OpKind::kDelete) ok = GetLengthPrefixed(&r, &e.field);
    if (ok && e.kind == OpKind::kSet) ok = GetValue(&r, false, &e.value);
    if (ok && e.kind == OpKind::kIncrement) ok = r.GetSignedVarint(&e.delta);
    if (!ok) return Status::Internal("malformed write batch");
    CAIRN_RETURN_IF_ERROR(fn(e));
  }
  return Status::OK();
}

// The ops of an OpBatch frame the file keeps (an outbox row), verified first.
static Status DecodeFrameOps(std::string_view blob, const std::function<Status(const Op&)>& fn) {
  return protocol::DecodeBatchFrame(blob, "outbox entry", fn);
}

// The ops a local transaction removes from the state, kept with its outbox row so that a
// refusal can undo it (UndoRefused). A transaction rewriting many documents supersedes many
// ops, so they are held encoded (a few bytes plus their strings each, not an Op apiece) until
// the row is written: one OpBatch frame without a length prefix, each op once, in (origin, seq)
// order as the encoding requires.
class KeptOps {
 public:
  void Add(const Op& op) {
    if (origins_.empty() || origins_[last_origin_] != op.id.origin) {
      // A few origins at most: this file's own and those it merged.
      auto it = std::find(origins_.begin(), origins_.end(), op.id.origin);
      if (it == origins_.end()) it = origins_.insert(origins_.end(), op.id.origin);
      last_origin_ = static_cast<uint32_t>(it - origins_.begin());
    }
    refs_.push_back({rep_.size(), op.id.seq, last_origin_});
    PutVarint(&rep_, op.id.hlc);
    rep_.push_back(static_cast<char>(op.kind));
    PutLengthPrefixed(&rep_, op.collection);
    PutLengthPrefixed(&rep_, op.key);
    PutLengthPrefixed(&rep_, op.field);
    if (op.kind == OpKind::kSet) PutValue(&rep_, op.value);
    if (op.kind == OpKind::kIncrement) PutSignedVarint(&rep_, op.delta);
  }

  // The frame; empty for no ops.
  Result<std::string> Encode() {
    if (refs_.empty()) return std::string();
    std::sort(refs_.begin(), refs_.end(), [this](const Ref& a, const Ref& b) {
      return a.origin != b.origin ? origins_[a.origin] < origins_[b.origin] : a.seq < b.seq;
    });
    protocol::BatchEncoder enc;
    Op op;
    for (size_t i = 0; i < refs_.size(); i++) {
      const Ref& ref = refs_[i];
      if (i > 0 && ref.origin == refs_[i - 1].origin && ref.seq == refs_[i - 1].seq) continue;
      Reader r(reinterpret_cast<const uint8_t*>(rep_.data()) + ref.offset,
               rep_.size() - ref.offset);
      uint8_t kind = 0;
      std::string_view collection, key, field;
      op.id.origin = origins_[ref.origin];
      op.id.seq = ref.seq;
      op.value = Value();
      op.delta = 0;
      bool ok = r.GetVarint(&op.id.hlc) && r.GetByte(&kind) && kind <= 2 &&
                GetLengthPrefixed(&r, &collection) && GetLengthPrefixed(&r, &key) &&
                GetLengthPrefixed(&r, &field);
      op.kind = static_cast<OpKind>(kind);
      op.collection.assign(collection);
      op.key.assign(key);
      op.field.assign(field);
      if (ok && op.kind == OpKind::kSet) ok = GetValue(&r, false, &op.value);
      if (ok && op.kind == OpKind::kIncrement) ok = r.GetSignedVarint(&op.delta);
      if (!ok) return Status::Internal("malformed list of superseded ops");
      op.continues_txn = false;
      enc.Add(op);
    }
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    enc.Finish(&fbb);
    return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
  }

 private:
  struct Ref {
    uint64_t offset;  // of the op's hlc in rep_
    uint64_t seq;
    uint32_t origin;  // index in origins_
  };
  std::string rep_;
  std::vector<Ref> refs_;
  std::vector<ReplicaId> origins_;
  uint32_t last_origin_ = 0;
};

Result<std::unique_ptr<Replica>> Replica::Open(const std::string& path,
                                               const ReplicaOptions& options) {
  std::unique_ptr<Replica> r(new Replica());
  r->clock_source_ = options.clock ? options.clock : Clock::System();
  r->clock_ = std::make_unique<HybridClock>(r->clock_source_);
  r->read_only_ = options.read_only;
  ReplicaId new_id;
  if (options.new_id) {
    new_id = *options.new_id;
  } else {
    CAIRN_RETURN_IF_ERROR(port::SecureRandom(new_id.bytes.data(), new_id.bytes.size()));
  }
  store::StoreOptions so;
  so.create = options.create;
  so.read_only = options.read_only;
  so.busy_timeout_ms = options.busy_timeout_ms;
  CAIRN_ASSIGN_OR_RETURN(r->store_,
                         store::ReplicaStore::Open(path, so, new_id, r->clock_source_->NowMs()));
  r->id_ = r->store_->replica_id();
  r->clock_->Restore(r->store_->stored_hlc());
  // A server's clock correction holds offline too (docs/crdt-semantics.md "Clock safety").
  CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, r->store_->GetSyncPosition());
  r->stored_offset_ms_ = pos.clock_offset_ms;
  if (pos.clock_offset_ms) r->clock_->set_offset_ms(*pos.clock_offset_ms);
  return r;
}

Replica::~Replica() { (void)Close(); }

Status Replica::Close() {
  Locked lock(this);
  if (!store_) return Status::OK();
  Status st = store_->Close();
  store_.reset();
  return st;
}

Status Replica::CheckOpen() const {
  if (!store_) return Status(Code::kECLOSED, "replica is closed");
  return Status::OK();
}

Status Replica::ValidateBatch(const WriteBatch& batch) {
  if (batch.empty()) return Status::Invalid("a write needs at least one change");
  if (batch.size() > kMaxTransactionOps) {
    return Status::Invalid("a transaction of " + std::to_string(batch.size()) +
                           " changes exceeds the limit of " + std::to_string(kMaxTransactionOps));
  }
  // Names repeat across a batch: check each distinct one once. New names must not clash in case
  // with existing ones, nor with each other.
  std::string last_coll, last_field;
  std::map<std::string, std::string> new_lower;  // lower(name) -> name, per kind
  auto clash_in_batch = [&](const char* kind, const std::string& name) -> Status {
    auto [it, inserted] = new_lower.emplace(std::string(kind) + ":" + AsciiLower(name), name);
    if (!inserted && it->second != name) {
      return Status::Invalid(std::string(kind) + " '" + name + "' differs only in case from '" +
                             it->second + "' in the same write");
    }
    return Status::OK();
  };
  return batch.ForEach([&](const WriteBatch::Entry& e) -> Status {
    if (e.collection != last_coll) {
      CAIRN_RETURN_IF_ERROR(ValidateCollectionName(e.collection));
      std::string name(e.collection);
      std::string clash = store_->CollectionClash(name);
      if (!clash.empty()) {
        return Status::Invalid("collection '" + name +
                               "' differs only in case from the existing collection '" + clash +
                               "'");
      }
      CAIRN_RETURN_IF_ERROR(clash_in_batch("collection", name));
      last_coll = std::move(name);
    }
    CAIRN_RETURN_IF_ERROR(ValidateKey(e.key));
    if (e.kind != OpKind::kDelete && e.field != last_field) {
      CAIRN_RETURN_IF_ERROR(ValidateFieldName(e.field));
      std::string name(e.field);
      std::string clash = store_->FieldClash(name);
      if (!clash.empty()) {
        return Status::Invalid("field '" + name +
                               "' differs only in case from the existing field '" + clash + "'");
      }
      CAIRN_RETURN_IF_ERROR(clash_in_batch("field", name));
      last_field = std::move(name);
    }
    if (e.kind == OpKind::kSet) CAIRN_RETURN_IF_ERROR(ValidateValue(e.value));
    return Status::OK();
  });
}

Status Replica::WriteLocked(const WriteBatch& batch) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  RollbackUnlessCommitted guard(store_.get());
  // Validated under the write lock, against the registry as it is now.
  CAIRN_RETURN_IF_ERROR(ValidateBatch(batch));
  // Every op goes through the merge rules and into one outbox row: the transaction's OpBatch,
  // ready to be pushed as it is.
  protocol::BatchEncoder outbox;
  // The ops this transaction removes from the state, kept with it until the server takes it,
  // so that a refusal can undo it (UndoRefused): what each op superseded, then kept.
  std::vector<Op> superseded;
  KeptOps kept;
  Op op;
  op.id.origin = id_;
  const uint64_t first_seq = store_->last_seq() + 1;
  Status st = batch.ForEach([&](const WriteBatch::Entry& e) -> Status {
    op.id.hlc = clock_->Now();
    op.id.seq = store_->last_seq() + 1;
    op.kind = e.kind;
    op.collection.assign(e.collection);
    op.key.assign(e.key);
    op.field.assign(e.field);
    op.value = e.value;
    op.delta = e.delta;
    op.continues_txn = op.id.seq != first_seq;
    outbox.Add(op);
    superseded.clear();
    CAIRN_RETURN_IF_ERROR(store_->Apply(op, /*local=*/true, &superseded));
    for (const Op& o : superseded) {
      // Ops of this same transaction are refused or taken with it: not kept.
      if (o.id.origin != id_ || o.id.seq < first_seq) kept.Add(o);
    }
    return Status::OK();
  });
  if (st.ok()) st = store_->WriteBack();
  if (st.ok()) {
    flatbuffers::FlatBufferBuilder fbb(outbox.ops_bytes() + 1024);
    outbox.Finish(&fbb);
    // The transaction travels as one frame: it must fit the frame limit every peer enforces.
    if (fbb.GetSize() > protocol::kDefaultMaxFrameBytes) {
      store_->Rollback();
      return Status::Invalid("transaction of " + std::to_string(fbb.GetSize()) +
                             " bytes encoded exceeds the frame limit of " +
                             std::to_string(protocol::kDefaultMaxFrameBytes) + ": split it");
    }
    auto kept_frame = kept.Encode();
    st = kept_frame.status();
    if (st.ok()) {
      st = store_->AppendOutbox(
          first_seq, store_->last_seq(), clock_->last(),
          std::string_view(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()),
          kept_frame.value());
    }
  }
  if (!st.ok()) {
    store_->Rollback();
    return st;
  }
  return store_->Commit(clock_->last());
}

void Replica::DeliverChanges() noexcept {
  for (;;) {
    // One deliverer at a time: a thread that finds another delivering leaves its changes to it.
    bool idle = false;
    if (!delivering_.compare_exchange_strong(idle, true)) return;
    try {
      std::vector<ChangeSet> changes;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (store_ != nullptr) changes = store_->TakeChanges();
      }
      std::vector<std::shared_ptr<Listener>> listeners;
      {
        std::lock_guard<std::mutex> lock(listener_mu_);
        for (const auto& [id, l] : change_listeners_) listeners.push_back(l);
      }
      for (const ChangeSet& c : changes) {
        for (const auto& l : listeners) {
          if (!l->removed) l->fn(c);
        }
      }
    } catch (...) {
      // Out of memory, or a listener that threw (it must not): these changes are not delivered.
    }
    delivering_ = false;  // before looking again: a committer that found it set relies on that
    if (!MoreChanges()) return;
  }
}

bool Replica::MoreChanges() {
  // Committed while this thread delivered, by threads that left them to it.
  std::lock_guard<std::mutex> lock(mu_);
  return store_ != nullptr && store_->has_changes();
}

uint64_t Replica::AddChangeListener(ChangeListener fn) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(listener_mu_);
    id = next_listener_++;
    change_listeners_[id] = std::make_shared<Listener>(std::move(fn));
  }
  TrackChangesIfListened();
  return id;
}

void Replica::TrackChangesIfListened() {
  std::lock_guard<std::mutex> lock(mu_);
  std::lock_guard<std::mutex> listeners(listener_mu_);  // the one place both are held: mu_ first
  if (store_ != nullptr) store_->set_track_changes(!change_listeners_.empty());
}

bool Replica::RemoveChangeListener(uint64_t id) {
  std::shared_ptr<Listener> gone;  // destroyed after the locks are released
  {
    std::lock_guard<std::mutex> lock(listener_mu_);
    auto it = change_listeners_.find(id);
    if (it == change_listeners_.end()) return false;
    gone = std::move(it->second);
    gone->removed = true;  // a deliverer holding a copy skips it from now on
    change_listeners_.erase(it);
  }
  TrackChangesIfListened();
  return true;
}

Status Replica::Write(const WriteBatch& batch) {
  CAIRN_RETURN_IF_ERROR(WriteLocked(batch));
  NotifyWritten();
  return Status::OK();
}

void Replica::NotifyWritten() {
  std::function<void()> listener;
  {
    std::lock_guard<std::mutex> lock(listener_mu_);
    listener = write_listener_;
  }
  if (listener) listener();
}

void Replica::SetWriteListener(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  write_listener_ = std::move(fn);
}

Status Replica::Put(const std::string& collection, const std::string& key, const Fields& fields) {
  WriteBatch b;
  for (const auto& [name, value] : fields) b.Set(collection, key, name, value);
  return Write(b);
}

Status Replica::Increment(const std::string& collection, const std::string& key,
                          const std::string& field, int64_t delta) {
  WriteBatch b;
  b.Increment(collection, key, field, delta);
  return Write(b);
}

Status Replica::Delete(const std::string& collection, const std::string& key) {
  WriteBatch b;
  b.Delete(collection, key);
  return Write(b);
}

Result<std::optional<Fields>> Replica::Get(const std::string& collection, const std::string& key) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  CAIRN_RETURN_IF_ERROR(ValidateCollectionName(collection));
  CAIRN_RETURN_IF_ERROR(ValidateKey(key));
  return store_->GetDoc(collection, key);
}

Status Replica::Dump(const std::function<void(std::string_view)>& sink) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  std::string current;
  bool first_doc = true;
  sink("{");
  Status st = store_->ForEachVisibleDoc(
      [&](const std::string& coll, const std::string& key, const Fields& fields) {
        if (coll != current) {
          if (!current.empty()) sink("},");
          sink(CanonicalJson(coll));
          sink(":{");
          current = coll;
          first_doc = true;
        }
        if (!first_doc) sink(",");
        first_doc = false;
        sink(CanonicalJson(key));
        sink(":");
        sink(CanonicalJson(FieldsToJson(fields)));
        return Status::OK();
      });
  CAIRN_RETURN_IF_ERROR(st);
  if (!current.empty()) sink("}");
  sink("}");
  return Status::OK();
}

Result<std::string> Replica::DumpString() {
  std::string out;
  CAIRN_RETURN_IF_ERROR(Dump([&](std::string_view s) { out.append(s); }));
  return out;
}

Result<std::string> Replica::Digest() {
  Sha256 sha;
  CAIRN_RETURN_IF_ERROR(Dump([&](std::string_view s) { sha.Update(s); }));
  return HexEncode(sha.Finish());
}

Result<std::map<std::string, std::string>> Replica::CollectionDigests() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  std::map<std::string, std::string> out;
  std::string current;
  std::unique_ptr<Sha256> sha;
  auto finish = [&] {
    if (sha) {
      sha->Update("}");
      out[current] = HexEncode(sha->Finish());
    }
  };
  CAIRN_RETURN_IF_ERROR(store_->ForEachVisibleDoc(
      [&](const std::string& coll, const std::string& key, const Fields& fields) {
        if (!sha || coll != current) {
          finish();
          sha = std::make_unique<Sha256>();
          current = coll;
          sha->Update("{");
        } else {
          sha->Update(",");
        }
        sha->Update(CanonicalJson(key) + ":" + CanonicalJson(FieldsToJson(fields)));
        return Status::OK();
      }));
  finish();
  return out;
}

// Denies everything a read-only query has no business doing.
static int QueryAuthorizer(void*, int action, const char*, const char*, const char*, const char*) {
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    default:
      return SQLITE_DENY;
  }
}

Status Replica::Query(const std::string& sql, const std::vector<Value>& params,
                      const std::function<Status(const std::string&)>& row) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  sqlite3* db = store_->db()->raw();
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  sqlite3_set_authorizer(db, QueryAuthorizer, nullptr);
  int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &raw, &tail);
  sqlite3_set_authorizer(db, nullptr, nullptr);
  store::Stmt stmt(store_->db(), raw);
  if (rc == SQLITE_AUTH) {
    return Status(Code::kEREADONLY, "query must be a read-only SELECT: " +
                                        std::string(sqlite3_errmsg(db)));
  }
  if (rc != SQLITE_OK) return store_->db()->Error("query", rc);
  if (raw == nullptr) return Status::Invalid("empty query");
  for (; tail && *tail; tail++) {
    if (!std::isspace(static_cast<unsigned char>(*tail)) && *tail != ';') {
      return Status::Invalid("query must be a single statement");
    }
  }
  if (!sqlite3_stmt_readonly(raw)) {
    return Status(Code::kEREADONLY, "query must be a read-only SELECT");
  }
  if (static_cast<size_t>(sqlite3_bind_parameter_count(raw)) != params.size()) {
    return Status::Invalid("the query has " + std::to_string(sqlite3_bind_parameter_count(raw)) +
                           " parameters, " + std::to_string(params.size()) + " given");
  }
  for (size_t i = 0; i < params.size(); i++) {
    store::BindSqlValue(&stmt, static_cast<int>(i) + 1, params[i]);  // as the tables hold them
  }
  int n = stmt.ColumnCount();
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool has, stmt.Step());
    if (!has) break;
    Json obj = Json::object();
    for (int i = 0; i < n; i++) {
      Json& v = obj[stmt.ColumnName(i)];
      switch (stmt.ColumnType(i)) {
        case SQLITE_INTEGER:
          v = stmt.Int(i);
          break;
        case SQLITE_FLOAT:
          v = stmt.Double(i);
          break;
        case SQLITE_TEXT:
          v = std::string(stmt.Text(i));
          break;
        case SQLITE_BLOB:
          v = ValueToJson(Value::Bytes(std::string(stmt.Blob(i))));
          break;
        default:
          v = nullptr;
      }
    }
    std::string line;
    try {
      line = CanonicalJson(obj);
    } catch (const Json::exception&) {
      return Status::Invalid("query result holds text that is not UTF-8");
    }
    CAIRN_RETURN_IF_ERROR(row(line));
  }
  return Status::OK();
}

Status Replica::Log(const std::function<Status(const Op&)>& fn) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  // The unacknowledged local transactions, whole, then the other ops the state depends on.
  uint64_t outbox_first = 0;
  CAIRN_RETURN_IF_ERROR(store_->ForEachOutbox(
      [&](uint64_t first, uint64_t, std::string_view batch) -> Status {
        if (outbox_first == 0) outbox_first = first;
        return DecodeFrameOps(batch, fn);
      }));
  return store_->ForEachSurvivor([&](const Op& op) -> Status {
    if (op.id.origin == id_ && outbox_first != 0 && op.id.seq >= outbox_first) {
      return Status::OK();  // listed above with its transaction
    }
    return fn(op);
  });
}

Status Replica::Rejected(const std::function<Status(const store::RejectedOp&)>& fn) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->ForEachRejected(fn);
}

VersionVector Replica::Known() {
  Locked lock(this);
  VersionVector vv;
  if (!store_ || !store_->Refresh().ok()) return vv;
  for (const auto& o : store_->Origins()) {
    if (o.through > 0) vv[o.id] = o.through;  // an origin known only from a held-back file: none
  }
  return vv;
}

Json ReplicaStatus::ToJson() const {
  Json known_json = Json::object();
  for (const auto& [origin, through] : known) known_json[origin.Hex()] = through;
  Json streams_json = Json::object();
  for (const StreamInfo& st : streams) streams_json[st.name] = StreamJson(st, now_ms);
  return Json{{"replica_id", id.Hex()},     {"seq", last_seq},
              {"pending_ops", pending_ops}, {"held_back_ops", held_back_ops},
              {"rejected_ops", rejected_ops}, {"cursor", cursor},
              {"last_sync_ms", last_sync_ms ? Json(*last_sync_ms) : Json(nullptr)},
              {"known", known_json}, {"streams", streams_json}};
}

Result<int64_t> Replica::PendingOps() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->OutboxCount();
}

Result<ReplicaStatus> Replica::GetStatus() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  ReplicaStatus s;
  s.id = id_;
  s.last_seq = store_->last_seq();
  s.hlc = clock_->last();
  CAIRN_ASSIGN_OR_RETURN(s.pending_ops, store_->OutboxCount());
  CAIRN_ASSIGN_OR_RETURN(s.held_back_ops, store_->PendingCount());
  CAIRN_ASSIGN_OR_RETURN(s.rejected_ops, store_->RejectedCount());
  CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
  s.cursor = pos.cursor;
  s.last_sync_ms = pos.last_sync_ms;
  for (const auto& o : store_->Origins()) {
    if (o.through > 0) s.known[o.id] = o.through;
  }
  CAIRN_ASSIGN_OR_RETURN(s.streams, store_->streams()->List());
  s.now_ms = NowMs();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Export / import (docs/protocol.md, "Export files")

Result<ExportStats> Replica::Export(const std::string& path, const VersionVector* since) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  {
    // A partial replica's receipts count ops of collections it skipped: a file from it would
    // tell the receiver it has ops it never gets.
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
    if (pos.subscriptions) {
      return Status::Invalid("this replica syncs only some collections (partial sync): it "
                             "cannot export; export from a replica that syncs everything");
    }
  }
  std::string tmp = path + ".tmp";
  File out(std::fopen(tmp.c_str(), "wb"));
  if (!out) return Status::IOError("cannot write " + tmp + ": " + std::strerror(errno));
  // On any failure the half-written temporary file goes away.
  struct RemoveTmp {
    const std::string& path;
    bool keep = false;
    ~RemoveTmp() {
      if (!keep) std::remove(path.c_str());
    }
  } remove_tmp{tmp};
  ExportStats stats;
  Sha256 sha;
  std::string buf;
  auto emit = [&]() -> Status {
    if (buf.empty()) return Status::OK();
    sha.Update(buf);
    stats.bytes += buf.size();
    if (std::fwrite(buf.data(), 1, buf.size(), out.get()) != buf.size()) {
      return Status::IOError("write to " + tmp + " failed");
    }
    buf.clear();
    return Status::OK();
  };
  // A read transaction: the header's ranges and the ops come from one snapshot.
  CAIRN_ASSIGN_OR_RETURN(auto txn, store::Txn::Begin(store_->db(), /*immediate=*/false));
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  std::vector<store::OriginInfo> origins = store_->Origins();
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<wire::ReplicaId> ids;
    std::vector<wire::SeqRange> ranges;
    for (const auto& o : origins) {
      uint64_t from = 0;
      if (since) {
        auto it = since->find(o.id);
        if (it != since->end()) from = std::min(it->second, o.through);
      }
      // Every origin is listed, even with nothing new (from == through): `from` is what this
      // file assumes the receiver has, and the receiver checks all of it before applying.
      if (o.through == 0) continue;
      ranges.emplace_back(static_cast<uint32_t>(ids.size()), from, o.through);
      ids.push_back(protocol::ToWire(o.id));
    }
    wire::ReplicaId src = protocol::ToWire(id_);
    auto hdr = wire::CreateExportHeader(fbb, kExportFormatVersion, &src,
                                        clock_source_->NowMs(), fbb.CreateVectorOfStructs(ids),
                                        fbb.CreateVectorOfStructs(ranges), clock_->last());
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::ExportHeader, hdr.Union()),
               wire::FrameIdentifier());
    protocol::AppendFrame(fbb, &buf);
    CAIRN_RETURN_IF_ERROR(emit());
  }
  protocol::BatchEncoder enc;
  Status st = store_->ForEachSurvivor([&](const Op& op) -> Status {
    if (since) {
      auto it = since->find(op.id.origin);
      if (it != since->end() && op.id.seq <= it->second) return Status::OK();
    }
    enc.Add(op);
    stats.ops++;
    if (enc.op_count() >= kExportBatchOps || enc.ops_bytes() >= kExportBatchBytes) {
      enc.FinishFrame(&buf);
      stats.batches++;
      return emit();
    }
    return Status::OK();
  });
  CAIRN_RETURN_IF_ERROR(st);
  if (!enc.empty()) {
    enc.FinishFrame(&buf);
    stats.batches++;
    CAIRN_RETURN_IF_ERROR(emit());
  }
  CAIRN_RETURN_IF_ERROR(txn->Commit());
  {
    std::string digest = sha.Finish();
    flatbuffers::FlatBufferBuilder fbb;
    auto end = wire::CreateExportEnd(
        fbb, static_cast<uint32_t>(stats.batches), stats.ops,
        fbb.CreateVector(reinterpret_cast<const uint8_t*>(digest.data()), digest.size()));
    fbb.Finish(wire::CreateFrame(fbb, wire::Body::ExportEnd, end.Union()), wire::FrameIdentifier());
    protocol::AppendFrame(fbb, &buf);
    stats.bytes += buf.size();
    if (std::fwrite(buf.data(), 1, buf.size(), out.get()) != buf.size()) {
      return Status::IOError("write to " + tmp + " failed");
    }
  }
  if (std::fflush(out.get()) != 0 || fsync(fileno(out.get())) != 0) {
    return Status::IOError("cannot flush " + tmp + ": " + std::strerror(errno));
  }
  out.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  remove_tmp.keep = true;
  return stats;
}

Result<ImportStats> Replica::Import(const std::string& path) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  File in(std::fopen(path.c_str(), "rb"));
  if (!in) return Status::IOError("cannot read " + path + ": " + std::strerror(errno));
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  RollbackUnlessCommitted guard(store_.get());
  auto r = ImportLocked(in.get());
  if (!r.ok()) {
    store_->Rollback();
    // Whatever is wrong inside the file (a bad name or value included) is a damaged import.
    Status st = r.status().code() == Code::kEINVAL ? Status::Corrupt(r.status().message())
                                                   : r.status();
    return st.WithContext("import " + path);
  }
  return r;
}

Result<ImportStats> Replica::ImportLocked(std::FILE* in) {
  protocol::FrameLimits limits;
  protocol::FrameReader reader(in, limits);
  Sha256 sha;
  std::string payload, raw;
  bool eof = false;

  // Header: what the file covers.
  CAIRN_RETURN_IF_ERROR(reader.Next(&payload, &eof, &raw));
  if (eof) return Status::Corrupt("empty file");
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* frame, protocol::VerifyFrame(payload, limits));
  const wire::ExportHeader* hdr = frame->body_as_ExportHeader();
  if (hdr == nullptr) return Status::Corrupt("not a Cairn export (no export header)");
  if (hdr->format_version() > kExportFormatVersion) {
    return Status(Code::kEVERSION, "export format " + std::to_string(hdr->format_version()) +
                                       " is newer than this Cairn reads (" +
                                       std::to_string(kExportFormatVersion) + "): upgrade Cairn");
  }
  struct Range {
    uint64_t from, through;
  };
  std::map<ReplicaId, Range> ranges;
  if (hdr->ranges()) {
    for (const auto* rg : *hdr->ranges()) {
      if (!hdr->origins() || rg->origin() >= hdr->origins()->size() ||
          rg->from_seq() > rg->through_seq() || rg->through_seq() > kMaxSeq) {
        return Status::Corrupt("bad range in export header");
      }
      ReplicaId id = protocol::FromWire(*hdr->origins()->Get(rg->origin()));
      if (!ranges.emplace(id, Range{rg->from_seq(), rg->through_seq()}).second) {
        return Status::Corrupt("origin listed twice in export header");
      }
    }
  }
  sha.Update(raw);

  ImportStats stats;
  Hlc max_hlc = 0;
  // The file's ops are complete only together with what it assumes this replica has (each
  // range's `from`). If anything is missing, the whole file is held back as one unit: applying
  // part of it could count an op as received whose dominating op has not arrived.
  bool hold = false;
  for (const auto& [origin, rg] : ranges) hold = hold || rg.from > store_->Through(origin);
  int64_t unit = 0;
  if (hold) {
    CAIRN_ASSIGN_OR_RETURN(unit, store_->NewPendingUnit());
  }
  uint32_t batches = 0;
  protocol::DecodeLimits dlimits;
  // Per origin, the last seq read: a file lists each origin's ops in increasing seq order (the
  // watermarks advance only at the end, so a repeated op would otherwise be applied twice).
  std::map<ReplicaId, uint64_t> last_seq;
  for (;;) {
    CAIRN_RETURN_IF_ERROR(reader.Next(&payload, &eof, &raw));
    if (eof) return Status::Corrupt("truncated export (no end frame)");
    CAIRN_ASSIGN_OR_RETURN(frame, protocol::VerifyFrame(payload, limits));
    if (const wire::ExportEnd* end = frame->body_as_ExportEnd()) {
      std::string digest = sha.Finish();
      if (!end->sha256() || end->sha256()->size() != 32 ||
          std::memcmp(end->sha256()->data(), digest.data(), 32) != 0) {
        return Status::Corrupt("checksum mismatch: the file is damaged");
      }
      if (end->batch_count() != batches || end->op_count() != stats.ops) {
        return Status::Corrupt("op or batch count mismatch");
      }
      break;
    }
    const wire::OpBatch* batch = frame->body_as_OpBatch();
    if (batch == nullptr) return Status::Corrupt("unexpected message in export");
    sha.Update(raw);
    batches++;
    CAIRN_RETURN_IF_ERROR(protocol::DecodeBatch(*batch, dlimits, [&](const Op& op) -> Status {
      stats.ops++;
      auto rg = ranges.find(op.id.origin);
      if (rg == ranges.end() || op.id.seq <= rg->second.from || op.id.seq > rg->second.through) {
        return Status::Corrupt("op " + op.id.origin.Hex() + ":" + std::to_string(op.id.seq) +
                               " lies outside the ranges the file declares");
      }
      uint64_t& last = last_seq[op.id.origin];
      if (op.id.seq <= last) {
        return Status::Corrupt("op " + op.id.origin.Hex() + ":" + std::to_string(op.id.seq) +
                               " repeated or out of order");
      }
      last = op.id.seq;
      CAIRN_RETURN_IF_ERROR(ValidateOp(op));
      max_hlc = std::max(max_hlc, op.id.hlc);
      if (hold) {
        stats.held_back++;
        return store_->StagePending(unit, op);
      }
      if (op.id.seq <= store_->Through(op.id.origin)) {
        stats.duplicates++;
        return Status::OK();
      }
      stats.applied++;
      return store_->Apply(op, /*local=*/false);
    }));
  }
  // Nothing may follow the end frame.
  if (std::fgetc(in) != EOF) return Status::Corrupt("data after the end frame");
  for (const auto& [origin, rg] : ranges) {
    if (hold) {
      CAIRN_RETURN_IF_ERROR(store_->StagePendingRange(unit, origin, rg.from, rg.through));
    } else {
      CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, rg.through));
    }
  }
  CAIRN_RETURN_IF_ERROR(store_->DrainPending());
  clock_->Observe(max_hlc);
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Sync support (docs/protocol.md, "Exchange")

Result<store::SyncPosition> Replica::GetSyncPosition() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->GetSyncPosition();
}

Result<Replica::OwnHead> Replica::GetOwnHead() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  OwnHead head;
  head.last_seq = store_->last_seq();
  if (head.last_seq > 0) {
    CAIRN_ASSIGN_OR_RETURN(head.hlc, store_->OutboxHlcAt(head.last_seq));
  }
  return head;
}

Result<ServerBatchStats> Replica::ApplyServerBatch(const wire::OpBatch& batch, uint64_t cursor,
                                                   const ReplicaId& server) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  RollbackUnlessCommitted guard(store_.get());
  ServerBatchStats stats;
  Hlc max_hlc = 0;
  // Per origin: the watermark before the batch, the last seq seen in it, and the seqs the
  // server says it covers (ops skipped for this client: docs/protocol.md, "Partial sync").
  struct Track {
    uint64_t through = 0, last = 0;
    bool covered = false;
    uint64_t from = 0, to = 0;
  };
  std::map<ReplicaId, Track> tracks;
  auto track = [&](const ReplicaId& origin) -> Track& {
    auto [it, first] = tracks.try_emplace(origin);
    if (first) it->second.through = it->second.last = store_->Through(origin);
    return it->second;
  };
  Status st;
  if (batch.covers()) {
    for (const wire::Coverage* c : *batch.covers()) {
      const ReplicaId origin = protocol::FromWire(c->origin());
      Track& t = track(origin);
      // (Its own origin too: a restored file gets back its own ops it lacks.)
      if (t.covered || c->from_seq() > c->through_seq() || c->through_seq() > kMaxSeq) {
        st = Status::Corrupt("bad coverage for origin " + origin.Hex() + " in a server batch");
        break;
      }
      if (c->from_seq() > t.through) {
        st = Status::Corrupt("server skipped origin " + origin.Hex() + " from seq " +
                             std::to_string(c->from_seq()) + " but this replica has only " +
                             std::to_string(t.through) + " (a gap)");
        break;
      }
      t.covered = true;
      t.last = t.from = c->from_seq();
      t.to = c->through_seq();
    }
  }
  if (st.ok()) st = protocol::DecodeBatch(batch, {}, [&](const Op& op) -> Status {
    stats.ops++;
    CAIRN_RETURN_IF_ERROR(ValidateOp(op));
    Track& t = track(op.id.origin);
    auto name = [&op] { return op.id.origin.Hex() + ":" + std::to_string(op.id.seq); };
    if (t.covered) {
      // Inside the declared range, in increasing order; what this replica has is a duplicate.
      if (op.id.seq <= t.from || op.id.seq > t.to || op.id.seq <= t.last) {
        return Status::Corrupt("server sent op " + name() + " outside or out of order in the "
                               "range it declared");
      }
      t.last = op.id.seq;
      if (op.id.seq <= t.through) {
        stats.duplicates++;
        return Status::OK();
      }
    } else {
      if (op.id.seq <= t.last) {
        stats.duplicates++;
        return Status::OK();
      }
      if (op.id.seq != t.last + 1) {
        return Status::Corrupt("server sent op " + name() + " after seq " + std::to_string(t.last) +
                               " (a gap)");
      }
      t.last = op.id.seq;
    }
    max_hlc = std::max(max_hlc, op.id.hlc);
    stats.applied++;
    return store_->Apply(op, /*local=*/false);
  });
  std::map<ReplicaId, uint64_t> through;
  for (const auto& [origin, t] : tracks) {
    const uint64_t after = t.covered ? std::max(t.through, t.to) : t.last;
    if (after > t.through) through[origin] = after;
  }
  for (const auto& [origin, seq] : through) {
    if (!st.ok()) break;
    st = store_->SetThrough(origin, seq);
  }
  if (st.ok()) {
    auto pos = store_->GetSyncPosition();
    if (!pos.ok()) {
      st = pos.status();
    } else {
      pos->cursor = cursor;
      pos->server_id = server;
      st = store_->SetSyncPosition(*pos);
    }
  }
  if (st.ok()) st = store_->DrainPending();
  if (!st.ok()) {
    store_->Rollback();
    return st;
  }
  clock_->Observe(max_hlc);
  KillPoint("replica.apply.before_commit");
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  return stats;
}

Status Replica::InWriteTxn(const std::function<Status()>& body) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  RollbackUnlessCommitted guard(store_.get());
  CAIRN_RETURN_IF_ERROR(body());
  return store_->Commit(clock_->last());
}

Status Replica::UpdateSyncPosition(const std::function<void(store::SyncPosition*)>& change) {
  return InWriteTxn([&]() -> Status {
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
    change(&pos);
    return store_->SetSyncPosition(pos);
  });
}

Status Replica::SetSyncPosition(uint64_t cursor, const ReplicaId& server,
                                std::optional<int64_t> synced_ms) {
  return UpdateSyncPosition([&](store::SyncPosition* pos) {
    pos->cursor = cursor;
    pos->server_id = server;
    if (synced_ms) pos->last_sync_ms = synced_ms;
  });
}

Result<uint64_t> Replica::ReadOutbox(uint64_t after_seq, size_t max_ops,
                                     protocol::BatchEncoder* enc) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  uint64_t last = after_seq;
  // Rows are whole transactions; stop after the one that reaches max_ops. Rows are read a few
  // at a time, so a huge outbox is never in memory at once.
  for (;;) {
    bool more = false;
    CAIRN_RETURN_IF_ERROR(store_->ForEachOutboxAfter(
        last, 16, [&](uint64_t first, uint64_t through, std::string_view blob) -> Status {
          if (enc->op_count() >= max_ops) return Status::OK();
          if (first <= last) {
            return Status::Corrupt("outbox rows overlap at seq " + std::to_string(first));
          }
          CAIRN_RETURN_IF_ERROR(DecodeFrameOps(blob, [&](const Op& op) -> Status {
            enc->Add(op);
            return Status::OK();
          }));
          last = through;
          more = true;
          return Status::OK();
        }));
    if (!more || enc->op_count() >= max_ops) break;
  }
  return last;
}

Status Replica::AckOutbox(uint64_t through, const std::vector<RefusedTxn>& refused) {
  return InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(UndoRefused(refused));
    if (clock_rewound_) store_->RewindHlc(clock_->last());
    return store_->AckOutbox(through);
  });
}

Status Replica::UndoRefused(const std::vector<RefusedTxn>& refused) {
  if (refused.empty()) return Status::OK();
  // Refused now, or by an earlier Ack (an op of a refused transaction that a later one, still
  // pending then, had superseded).
  Status lookup;
  auto is_refused = [&](const OpId& id) {
    if (id.origin != id_) return false;
    for (const RefusedTxn& r : refused) {
      if (id.seq >= r.first_seq && id.seq <= r.last_seq) return true;
    }
    auto earlier = store_->IsRejected(id);
    if (!earlier.ok()) lookup = earlier.status();
    return earlier.ok() && earlier.value();
  };
  // Per document touched: the ops the refused transactions superseded there (when written) or
  // outranked (received later).
  std::map<std::pair<std::string, std::string>, std::vector<Op>> docs;
  const int64_t now = clock_source_->NowMs();
  for (const RefusedTxn& r : refused) {
    // Rows already gone: this refusal was handled before (an Ack repeated after a lost one).
    CAIRN_RETURN_IF_ERROR(store_->TakeOutbox(
        r.first_seq, r.last_seq,
        [&](std::string_view batch, std::string_view superseded) -> Status {
          CAIRN_RETURN_IF_ERROR(DecodeFrameOps(batch, [&](const Op& op) -> Status {
            docs[{op.collection, op.key}];
            return store_->RecordRejected(op, static_cast<int>(r.code), r.reason, now);
          }));
          if (superseded.empty()) return Status::OK();
          return DecodeFrameOps(superseded, [&](const Op& op) -> Status {
            docs[{op.collection, op.key}].push_back(op);
            return Status::OK();
          });
        }));
    // And the ops received later that they outranked.
    CAIRN_RETURN_IF_ERROR(store_->TakeOutranked(r.first_seq, r.last_seq, [&](const Op& op) {
      docs[{op.collection, op.key}].push_back(op);
      return Status::OK();
    }));
  }
  for (const auto& [doc, extra] : docs) {
    CAIRN_RETURN_IF_ERROR(store_->RebuildDoc(doc.first, doc.second, is_refused, extra));
    CAIRN_RETURN_IF_ERROR(lookup);
  }
  return Status::OK();
}

Status Replica::SetCoverage(const std::optional<std::string>& coverage) {
  return UpdateSyncPosition([&](store::SyncPosition* pos) { pos->subscriptions = coverage; });
}

Result<std::optional<store::SnapshotState>> Replica::GetSnapshot() {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  return store_->GetSnapshot();
}

Status Replica::BeginSnapshot(const store::SnapshotState& snap) {
  return InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(store_->ClearSnapshot());
    CAIRN_RETURN_IF_ERROR(store_->SetSnapshot(snap));
    // The cursor belongs to this server from now on (a cut snapshot resumes only with it).
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
    if (pos.server_id == snap.server_id) return Status::OK();
    pos.server_id = snap.server_id;
    pos.cursor = 0;
    return store_->SetSyncPosition(pos);
  });
}

Status Replica::DiscardSnapshot() {
  return InWriteTxn([&] { return store_->ClearSnapshot(); });
}

Status Replica::StageSnapshotChunk(const wire::OpBatch& batch, const std::string& after_collection,
                                   const std::string& after_key) {
  return InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(store_->SetSnapshotPosition(after_collection, after_key));
    return protocol::DecodeBatch(batch, {}, [&](const Op& op) -> Status {
      CAIRN_RETURN_IF_ERROR(ValidateOp(op));
      return store_->StagePending(store::kSnapshotUnit, op);
    });
  });
}

Result<uint64_t> Replica::FinishSnapshot(const std::optional<std::string>& coverage) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  RollbackUnlessCommitted guard(store_.get());
  CAIRN_ASSIGN_OR_RETURN(std::optional<store::SnapshotState> snap, store_->GetSnapshot());
  if (!snap) return Status::Invalid("no snapshot to finish");
  uint64_t applied = 0;
  Hlc max_hlc = 0;
  CAIRN_RETURN_IF_ERROR(store_->ForEachPendingOp(store::kSnapshotUnit, [&](const Op& op) -> Status {
    // Its own ops it has; a restored file gets back those it lacks (docs/protocol.md
    // "Restored replicas").
    if (op.id.origin == id_ && op.id.seq <= store_->last_seq()) return Status::OK();
    // Ops above the limit come from the log that follows (a resumed snapshot reads a later
    // state): applying them here too would count an increment twice.
    uint64_t limit = 0;
    if (snap->rebase) {
      auto w = snap->watermarks.find(op.id.origin);
      if (w != snap->watermarks.end()) limit = w->second;
    } else {
      limit = store_->Through(op.id.origin);
    }
    if (op.id.seq > limit) return Status::OK();
    max_hlc = std::max(max_hlc, op.id.hlc);
    applied++;
    return store_->ApplyIdempotent(op);
  }));
  CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, store_->GetSyncPosition());
  if (snap->rebase) {
    for (const auto& [origin, through] : snap->watermarks) {
      if (through > store_->Through(origin)) {  // its own too: never reuse a seq
        CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, through));
      }
    }
    pos.cursor = snap->cursor;
  }
  pos.subscriptions = coverage;  // (BeginSnapshot stored the server's id)
  CAIRN_RETURN_IF_ERROR(store_->SetSyncPosition(pos));
  CAIRN_RETURN_IF_ERROR(store_->ClearSnapshot());
  CAIRN_RETURN_IF_ERROR(store_->DrainPending());
  clock_->Observe(max_hlc);
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  return applied;
}

Status Replica::CorrectClock(int64_t server_time_ms, uint32_t max_drift_ms) {
  const int64_t offset = server_time_ms - clock_source_->NowMs();
  {
    Locked lock(this);
    clock_->set_offset_ms(offset);
    const Hlc bound = MakeHlc(static_cast<uint64_t>(std::max<int64_t>(server_time_ms, 0)) +
                                  max_drift_ms, 0);
    if (max_drift_ms > 0 && clock_->last() > bound) {
      clock_->Rewind(bound);
      clock_rewound_ = true;
    }
    // Stored when it moved by a second or more: not a write per connection.
    if (stored_offset_ms_ && std::llabs(*stored_offset_ms_ - offset) < 1000) return Status::OK();
  }
  CAIRN_RETURN_IF_ERROR(
      UpdateSyncPosition([&](store::SyncPosition* pos) { pos->clock_offset_ms = offset; }));
  Locked lock(this);
  stored_offset_ms_ = offset;
  return Status::OK();
}

}  // namespace cairn
