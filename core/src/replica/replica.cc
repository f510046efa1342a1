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

namespace {

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

  // The frame (size 0 for no ops). What was held is freed on the way: the largest transactions
  // end here, beside a full document cache.
  Result<flatbuffers::DetachedBuffer> Encode() {
    if (refs_.empty()) return flatbuffers::DetachedBuffer();
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
    std::string().swap(rep_);
    std::vector<Ref>().swap(refs_);
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    enc.Finish(&fbb);
    return fbb.Release();
  }

 private:
  struct Ref {
    size_t offset;    // of the op's hlc in rep_
    uint64_t seq;
    uint32_t origin;  // index in origins_
  };
  std::string rep_;
  std::vector<Ref> refs_;
  std::vector<ReplicaId> origins_;
  uint32_t last_origin_ = 0;
};

}  // namespace

Result<std::unique_ptr<Replica>> Replica::Open(const std::string& path,
                                               const ReplicaOptions& options) {
  std::unique_ptr<Replica> r(new Replica());
  r->clock_source_ = options.clock ? options.clock : Clock::System();
  r->clock_ = std::make_unique<HybridClock>(r->clock_source_);
  r->read_only_ = options.read_only;
  ReplicaId new_id;
  if (options.new_id) {
    new_id = *options.new_id;
    if (IsReservedReplicaId(new_id)) {
      return Status::Invalid("replica id " + new_id.Hex() + " is reserved (docs/protocol.md)");
    }
  } else {
    do {
      CAIRN_RETURN_IF_ERROR(port::SecureRandom(new_id.bytes.data(), new_id.bytes.size()));
    } while (IsReservedReplicaId(new_id));
  }
  store::StoreOptions so;
  so.create = options.create;
  so.read_only = options.read_only;
  so.busy_timeout_ms = options.busy_timeout_ms;
  CAIRN_ASSIGN_OR_RETURN(r->store_,
                         store::ReplicaStore::Open(path, so, new_id, r->clock_source_->NowMs()));
  r->id_ = r->store_->replica_id();
  CAIRN_ASSIGN_OR_RETURN(r->server_file_, r->store_->IsServerFile());
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

Status Replica::CheckWritable() const {
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  if (server_file_) {
    // Such a write would never reach the server's clients: they and the server would
    // disagree from then on (docs/backend.md).
    return Status(Code::kEPERM,
                  "this is a cairn-server's file: it may be read, not written; write through "
                  "the server: its HTTP API (cairn-server --http, docs/backend.md) or a replica "
                  "that syncs with it");
  }
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
      if (store_->DeviceReadOnly(name)) {
        return Status(Code::kEPERM, "collection '" + name +
                                        "' is read-only on devices (the server's sync rules "
                                        "send it one way, docs/sync-rules.md)");
      }
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

Result<uint64_t> Replica::WriteLocked(const WriteBatch& batch) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(CheckWritable());
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  CAIRN_RETURN_IF_ERROR(WriteInTxn(batch, 0));
  const uint64_t last_seq = store_->last_seq();
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  return last_seq;
}

Status Replica::WriteInTxn(const WriteBatch& batch, Hlc stamp_from) {
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
  Hlc max_hlc = 0;
  Status st = batch.ForEach([&](const WriteBatch::Entry& e) -> Status {
    op.id.hlc = stamp_from != 0 ? stamp_from++ : clock_->Now();
    max_hlc = std::max(max_hlc, op.id.hlc);
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
  // The transaction travels in one batch: it must fit every server's batch budget
  // (docs/protocol.md "Limits"), measured as the server measures a push.
  if (st.ok() && outbox.wire_bytes() > kMaxTransactionBytes) {
    store_->Rollback();
    return Status::Invalid("transaction of " + std::to_string(outbox.wire_bytes()) +
                           " bytes encoded exceeds the limit of " +
                           std::to_string(kMaxTransactionBytes) + ": split it");
  }
  if (st.ok()) {
    flatbuffers::FlatBufferBuilder fbb(outbox.ops_bytes() + 1024);
    outbox.Finish(&fbb);
    auto kept_frame = kept.Encode();
    st = kept_frame.status();
    if (st.ok()) {
      st = store_->AppendOutbox(
          first_seq, store_->last_seq(), max_hlc,
          std::string_view(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()),
          std::string_view(reinterpret_cast<const char*>(kept_frame->data()), kept_frame->size()));
    }
  }
  if (!st.ok()) store_->Rollback();
  return st;
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

Result<uint64_t> Replica::Write(const WriteBatch& batch) {
  CAIRN_ASSIGN_OR_RETURN(const uint64_t seq, WriteLocked(batch));
  NotifyWritten();
  return seq;
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

Result<uint64_t> Replica::Put(const std::string& collection, const std::string& key,
                              const Fields& fields) {
  WriteBatch b;
  for (const auto& [name, value] : fields) b.Set(collection, key, name, value);
  return Write(b);
}

Result<uint64_t> Replica::Increment(const std::string& collection, const std::string& key,
                                    const std::string& field, int64_t delta) {
  WriteBatch b;
  b.Increment(collection, key, field, delta);
  return Write(b);
}

Result<uint64_t> Replica::Delete(const std::string& collection, const std::string& key) {
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

Status Replica::Log(const std::function<Status(const Op&)>& fn) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  CAIRN_RETURN_IF_ERROR(store_->Refresh());
  // The unacknowledged local transactions, whole, then the other ops the state depends on.
  uint64_t outbox_first = 0;
  CAIRN_RETURN_IF_ERROR(store_->ForEachOutbox(
      [&](uint64_t first, uint64_t, std::string_view batch) -> Status {
        if (outbox_first == 0) outbox_first = first;
        return DecodeOutboxOps(batch, fn);
      }));
  return store_->ForEachSurvivor([&](const Op& op) -> Status {
    if (op.id.origin == id_ && outbox_first != 0 && op.id.seq >= outbox_first) {
      return Status::OK();  // listed above with its transaction
    }
    return fn(op);
  });
}

Status Replica::Rejected(const std::function<Status(const RejectedOp&)>& fn) {
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

}  // namespace cairn
