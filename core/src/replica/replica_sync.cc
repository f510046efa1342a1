// cairn::SyncAccess: what the sync engine reaches of a Replica (docs/protocol.md "Exchange"):
// server batches, the outbox and its acknowledgement, refusals and their undo, snapshots, the
// clock correction.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "base/coding.h"
#include "base/killpoint.h"
#include "base/strings.h"
#include "oplog/admission.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/replica.h"
#include "replica/replica_locked.h"
#include "replica/sync_access.h"

namespace cairn {

// ---------------------------------------------------------------------------------------------
// Sync support (docs/protocol.md, "Exchange")

Result<store::SyncPosition> SyncAccess::GetSyncPosition() {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  return r_->store_->GetSyncPosition();
}

Result<SyncAccess::OwnHead> SyncAccess::GetOwnHead() {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  CAIRN_RETURN_IF_ERROR(r_->store_->Refresh());
  OwnHead head;
  head.last_seq = r_->store_->last_seq();
  if (head.last_seq > 0) {
    CAIRN_ASSIGN_OR_RETURN(head.hlc, r_->store_->OutboxHlcAt(head.last_seq));
  }
  return head;
}

Result<ServerBatchStats> SyncAccess::ApplyServerBatch(const wire::OpBatch& batch, uint64_t cursor,
                                                      const ReplicaId& server) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  if (r_->read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(r_->store_->Begin());
  store::RollbackUnlessCommitted guard(r_->store_.get());
  ServerBatchStats stats;
  Hlc max_hlc = 0;
  // Per origin, its ops as the batch brings them: in order from the watermark, or in the range
  // the server declares for them (ops skipped for this client: docs/protocol.md "Partial sync").
  std::map<ReplicaId, admission::OriginSeq> seqs;
  auto seq_of = [&](const ReplicaId& origin) -> admission::OriginSeq& {
    auto it = seqs.find(origin);
    if (it == seqs.end()) {
      it = seqs.emplace(origin, admission::OriginSeq(origin, r_->store_->Through(origin))).first;
    }
    return it->second;
  };
  Status st;
  if (batch.covers()) {
    for (const wire::Coverage* c : *batch.covers()) {
      // (Its own origin too: a restored file gets back its own ops it lacks.)
      admission::OriginSeq& seq = seq_of(protocol::FromWire(c->origin()));
      st = seq.Declare(c->from_seq(), c->through_seq());
      if (st.ok() && !seq.assumption_met()) {
        st = Status::Corrupt("the server skipped ops this replica lacks (a gap): its coverage "
                             "starts at seq " + std::to_string(c->from_seq()) + ", this replica has " +
                             std::to_string(seq.through()));
      }
      if (!st.ok()) {
        st = st.WithContext("server batch");
        break;
      }
    }
  }
  if (st.ok()) st = protocol::DecodeBatch(batch, {}, [&](const Op& op) -> Status {
    stats.ops++;
    auto seq = seq_of(op.id.origin).Next(op.id.seq);
    if (!seq.ok()) return seq.status().WithContext("server batch");
    if (*seq == admission::Seq::kDuplicate) {
      stats.duplicates++;
      return Status::OK();
    }
    max_hlc = std::max(max_hlc, op.id.hlc);
    stats.applied++;
    return r_->store_->Apply(op, /*local=*/false);
  });
  for (const auto& [origin, seq] : seqs) {
    if (!st.ok()) break;
    if (seq.through_after() > seq.through())
      st = r_->store_->SetThrough(origin, seq.through_after());
  }
  // docs/sync-rules.md "Reading": documents that left the view are removed (not deleted);
  // those that entered it come as the server's state, of which the ops the receipts count
  // now are kept (the later ones come in later batches).
  if (st.ok() && batch.leave() != nullptr) {
    std::set<std::pair<std::string, std::string>> left;
    for (const wire::DocRef* d : *batch.leave()) {
      const flatbuffers::String* collection = d != nullptr ? d->collection() : nullptr;
      const flatbuffers::String* key = d != nullptr ? d->key() : nullptr;
      if (collection == nullptr || key == nullptr) {
        st = Status::Corrupt("server batch: a leaving document without its name");
      } else {
        st = ValidateCollectionName(collection->string_view());
        if (st.ok()) st = ValidateKey(key->string_view());
        if (st.ok()) left.emplace(collection->string_view(), key->string_view());
      }
      if (!st.ok()) break;
    }
    // What the server knew when it sent the leave goes: every op but this replica's own it
    // had not judged: those past its receipt then (leave_through; a push retried after a
    // lost Ack was judged before its Ack comes) and not acknowledged (an Ack is sent before
    // any later batch). Those stay, are judged as usual, and one accepted that brings the
    // document back into the view brings its state with it.
    Result<uint64_t> unacked = st.ok() ? r_->store_->FirstUnacked() : Result<uint64_t>(st);
    if (!unacked.ok()) {
      st = unacked.status();
    } else {
      const uint64_t from = std::max(*unacked, batch.leave_through() + 1);
      st = RemoveFromView(left,
                          [&](const OpId& id) { return id.origin != r_->id_ || id.seq < from; });
    }
  }
  if (st.ok() && batch.enter() != nullptr) {
    st = protocol::DecodeBatch(*batch.enter(), {}, [&](const Op& op) -> Status {
      if (op.id.origin == r_->id_ ? op.id.seq > r_->store_->last_seq()
                                  : op.id.seq > r_->store_->Through(op.id.origin)) {
        return Status::OK();
      }
      max_hlc = std::max(max_hlc, op.id.hlc);
      stats.applied++;
      return r_->store_->ApplyIdempotent(op);
    });
  }
  if (st.ok()) {
    auto pos = r_->store_->GetSyncPosition();
    if (!pos.ok()) {
      st = pos.status();
    } else {
      pos->cursor = cursor;
      pos->server_id = server;
      st = r_->store_->SetSyncPosition(*pos);
    }
  }
  if (st.ok()) st = r_->store_->DrainPending();
  if (!st.ok()) {
    r_->store_->Rollback();
    return st;
  }
  r_->clock_->Observe(max_hlc);
  KillPoint("replica.apply.before_commit");
  CAIRN_RETURN_IF_ERROR(r_->store_->Commit(r_->clock_->last()));
  return stats;
}

Status Replica::InWriteTxn(const std::function<Status()>& body) {
  Locked lock(this);
  CAIRN_RETURN_IF_ERROR(CheckOpen());
  if (read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  CAIRN_RETURN_IF_ERROR(body());
  return store_->Commit(clock_->last());
}

Status SyncAccess::UpdateSyncPosition(const std::function<void(store::SyncPosition*)>& change) {
  return r_->InWriteTxn([&]() -> Status {
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, r_->store_->GetSyncPosition());
    change(&pos);
    return r_->store_->SetSyncPosition(pos);
  });
}

Status SyncAccess::SetSyncPosition(uint64_t cursor, const ReplicaId& server,
                                   std::optional<int64_t> synced_ms) {
  return UpdateSyncPosition([&](store::SyncPosition* pos) {
    pos->cursor = cursor;
    pos->server_id = server;
    if (synced_ms) pos->last_sync_ms = synced_ms;
  });
}

Result<uint64_t> SyncAccess::ReadOutbox(uint64_t after_seq, size_t max_ops, size_t max_bytes,
                                        protocol::BatchEncoder* enc) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  CAIRN_RETURN_IF_ERROR(r_->store_->Refresh());
  uint64_t last = after_seq;
  // Rows are whole transactions, each an OpBatch frame; one goes in while the batch stays within
  // the budget with protocol::MergeBytesBound of the row added. Rows are read a few at a time,
  // so a huge outbox is never in memory at once.
  bool full = false;
  while (!full) {
    bool more = false;
    CAIRN_RETURN_IF_ERROR(r_->store_->ForEachOutboxAfter(
        last, 16, [&](uint64_t first, uint64_t through, std::string_view blob) -> Status {
          if (full) return Status::OK();
          if (first <= last || through < first) {
            return Status::Corrupt("outbox rows overlap at seq " + std::to_string(first));
          }
          auto fits = [&](const wire::OpBatch& row) -> Status {
            if (enc->CanMerge(row, max_ops, max_bytes)) return Status::OK();
            full = true;
            return Status(Code::kEBUSY, "batch full");
          };
          Status st = DecodeOutboxOps(blob, fits, [&](const Op& op) {
            enc->Add(op);
            return Status::OK();
          });
          if (full) return Status::OK();
          CAIRN_RETURN_IF_ERROR(st);
          last = through;
          more = true;
          return Status::OK();
        }));
    if (!more) break;
  }
  return last;
}

Status SyncAccess::AckOutbox(uint64_t through, const std::vector<RefusedTxn>& refused) {
  return r_->InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(UndoRefused(refused));
    if (r_->clock_rewound_) r_->store_->RewindHlc(r_->clock_->last());
    return r_->store_->AckOutbox(through);
  });
}

Status SyncAccess::UndoRefused(const std::vector<RefusedTxn>& refused) {
  if (refused.empty()) return Status::OK();
  // Refused now, or by an earlier Ack (an op of a refused transaction that a later one, still
  // pending then, had superseded).
  Status lookup;
  auto is_refused = [&](const OpId& id) {
    if (id.origin != r_->id_) return false;
    for (const RefusedTxn& r : refused) {
      if (id.seq >= r.first_seq && id.seq <= r.last_seq) return true;
    }
    auto earlier = r_->store_->IsRejected(id);
    if (!earlier.ok()) lookup = earlier.status();
    return earlier.ok() && earlier.value();
  };
  // Per document touched: the ops the refused transactions superseded there (when written) or
  // outranked (received later).
  std::map<std::pair<std::string, std::string>, std::vector<Op>> docs;
  const int64_t now = r_->clock_source_->NowMs();
  for (const RefusedTxn& r : refused) {
    // Rows already gone: this refusal was handled before (an Ack repeated after a lost one).
    CAIRN_RETURN_IF_ERROR(r_->store_->TakeOutbox(
        r.first_seq, r.last_seq,
        [&](std::string_view batch, std::string_view superseded) -> Status {
          CAIRN_RETURN_IF_ERROR(DecodeOutboxOps(batch, [&](const Op& op) -> Status {
            docs[{op.collection, op.key}];
            // Refused for the history horizon: written again once this replica has every op
            // below it (ReapplyExpired), as a transaction of its own again.
            return r_->store_->RecordRejected(op, static_cast<int>(r.code), r.reason, now,
                                              r.code == Code::kEEXPIRED ? r.first_seq : 0);
          }));
          if (superseded.empty()) return Status::OK();
          return DecodeOutboxOps(superseded, [&](const Op& op) -> Status {
            docs[{op.collection, op.key}].push_back(op);
            return Status::OK();
          });
        }));
    // And the ops received later that they outranked.
    CAIRN_RETURN_IF_ERROR(r_->store_->TakeOutranked(r.first_seq, r.last_seq, [&](const Op& op) {
      docs[{op.collection, op.key}].push_back(op);
      return Status::OK();
    }));
  }
  for (const auto& [doc, extra] : docs) {
    // A document with no ops left the view (docs/sync-rules.md "Reading"): what the refused
    // write superseded there does not come back.
    CAIRN_ASSIGN_OR_RETURN(bool has_ops, r_->store_->HasOps(doc.first, doc.second));
    if (!has_ops) continue;
    CAIRN_RETURN_IF_ERROR(r_->store_->RebuildDoc(doc.first, doc.second, is_refused, extra));
    CAIRN_RETURN_IF_ERROR(lookup);
  }
  return Status::OK();
}

Status SyncAccess::RemoveFromView(const std::set<std::pair<std::string, std::string>>& docs,
                                  const std::function<bool(const OpId&)>& gone) {
  if (docs.empty()) return Status::OK();
  for (const auto& [collection, key] : docs) {
    CAIRN_RETURN_IF_ERROR(r_->store_->RebuildDoc(collection, key, gone, {}));
  }
  CAIRN_RETURN_IF_ERROR(r_->store_->ForgetOutranked(docs));
  return r_->store_->RewriteSuperseded(
      [&](std::string_view frame) -> Result<std::optional<std::string>> {
        protocol::BatchEncoder enc;
        bool dropped = false;
        CAIRN_RETURN_IF_ERROR(DecodeOutboxOps(frame, [&](const Op& op) -> Status {
          if (docs.count({op.collection, op.key}) != 0 && gone(op.id)) {
            dropped = true;
          } else {
            enc.Add(op);
          }
          return Status::OK();
        }));
        if (!dropped) return std::optional<std::string>();
        if (enc.empty()) return std::optional<std::string>(std::string());
        flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
        enc.Finish(&fbb);
        return std::optional<std::string>(
            std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()));
      });
}

Status SyncAccess::SetCoverage(const std::optional<std::string>& coverage) {
  return UpdateSyncPosition([&](store::SyncPosition* pos) { pos->subscriptions = coverage; });
}

Status SyncAccess::SetReadOnlyCollections(const std::vector<std::string>& names) {
  std::set<std::string> lower;
  for (const auto& n : names) lower.insert(AsciiLower(n));
  {
    Replica::Locked lock(r_);
    CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, r_->store_->GetSyncPosition());
    if (pos.read_only == lower) return Status::OK();
  }
  return UpdateSyncPosition([&](store::SyncPosition* pos) { pos->read_only = lower; });
}

Result<std::optional<store::SnapshotState>> SyncAccess::GetSnapshot() {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  return r_->store_->GetSnapshot();
}

Status SyncAccess::BeginSnapshot(const store::SnapshotState& snap) {
  return r_->InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(r_->store_->ClearSnapshot());
    CAIRN_RETURN_IF_ERROR(r_->store_->SetSnapshot(snap));
    // The cursor belongs to this server from now on (a cut snapshot resumes only with it).
    CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, r_->store_->GetSyncPosition());
    if (pos.server_id == snap.server_id) return Status::OK();
    pos.server_id = snap.server_id;
    pos.cursor = 0;
    return r_->store_->SetSyncPosition(pos);
  });
}

Status SyncAccess::DiscardSnapshot() {
  return r_->InWriteTxn([&] { return r_->store_->ClearSnapshot(); });
}

Status SyncAccess::StageSnapshotChunk(const wire::OpBatch& batch,
                                      const std::string& after_collection,
                                      const std::string& after_key) {
  return r_->InWriteTxn([&]() -> Status {
    CAIRN_RETURN_IF_ERROR(r_->store_->SetSnapshotPosition(after_collection, after_key));
    return protocol::DecodeBatch(batch, {}, [&](const Op& op) -> Status {
      return r_->store_->StagePending(store::kSnapshotUnit, op);
    });
  });
}

Result<std::vector<std::string>> SyncAccess::CollectionNames() {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  CAIRN_RETURN_IF_ERROR(r_->store_->Refresh());
  return r_->store_->CollectionNames();
}

Result<uint64_t> SyncAccess::FinishSnapshot(const std::optional<std::string>& coverage,
                                            const std::vector<std::string>* evict,
                                            const std::string& rules_digest,
                                            const std::vector<std::string>* replace) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  if (r_->read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(r_->store_->Begin());
  store::RollbackUnlessCommitted guard(r_->store_.get());
  CAIRN_ASSIGN_OR_RETURN(std::optional<store::SnapshotState> snap, r_->store_->GetSnapshot());
  if (!snap) return Status::Invalid("no snapshot to finish");
  // What the server had judged of this replica's own ops when it planned the snapshot; and the
  // documents of `collections` that `keep` does not keep (replace and evict, below).
  uint64_t own_known = 0;
  if (auto w = snap->watermarks.find(r_->id_); w != snap->watermarks.end()) own_known = w->second;
  const auto own_judged = [&](const OpId& id) {
    return id.origin != r_->id_ || id.seq <= own_known;
  };
  const auto docs_of =
      [&](const std::vector<std::string>& collections,
          const std::function<bool(const std::pair<std::string, std::string>&)>& keep,
          std::set<std::pair<std::string, std::string>>* out) -> Status {
    for (const std::string& c : collections) {
      CAIRN_RETURN_IF_ERROR(
          r_->store_->ForEachDocFields(c, [&](const std::string& key, const Fields&) -> Status {
            auto ref = std::make_pair(c, key);
            if (!keep(ref)) out->insert(std::move(ref));
            return Status::OK();
          }));
    }
    return Status::OK();
  };
  if (replace) {
    // docs/crdt-semantics.md "History horizon": the folded state cannot be merged into history
    // this replica holds (a folded increment may be one it has, under another's identity): what
    // it has of these collections goes, but its own ops the server has not judged, and the
    // snapshot, which brings its own judged ops too, takes its place.
    std::set<std::pair<std::string, std::string>> held;
    CAIRN_RETURN_IF_ERROR(docs_of(
        *replace, [](const auto&) { return false; }, &held));
    CAIRN_RETURN_IF_ERROR(RemoveFromView(held, own_judged));
  }
  const bool replacing = replace != nullptr;
  uint64_t applied = 0;
  Hlc max_hlc = 0;
  std::set<std::pair<std::string, std::string>> brought;  // with `evict`: its documents
  CAIRN_RETURN_IF_ERROR(
      r_->store_->ForEachPendingOp(store::kSnapshotUnit, [&](const Op& op) -> Status {
        if (evict) brought.emplace(op.collection, op.key);
        // Its own ops it has; a restored file gets back those it lacks (docs/protocol.md
        // "Restored replicas"). Evicting (sync rules), it may lack some of a document that
        // left its view and is back: those come again (merged as entering states are).
        if (op.id.origin == r_->id_ && op.id.seq <= r_->store_->last_seq()) {
          return evict || replacing ? r_->store_->ApplyIdempotent(op) : Status::OK();
        }
        // Ops above the limit come from the log that follows (a resumed snapshot reads a later
        // state): applying them here too would count an increment twice.
        uint64_t limit = 0;
        if (snap->rebase) {
          auto w = snap->watermarks.find(op.id.origin);
          if (w != snap->watermarks.end()) limit = w->second;
        } else {
          limit = r_->store_->Through(op.id.origin);
        }
        if (op.id.seq > limit) return Status::OK();
        max_hlc = std::max(max_hlc, op.id.hlc);
        applied++;
        return r_->store_->ApplyIdempotent(op);
      }));
  if (evict) {
    // docs/sync-rules.md "Rules that change": of a document the snapshot did not bring, what
    // the server knew when it planned the snapshot (every op but this replica's own past its
    // watermark) is outside the view: removed, not deleted. Its later writes stay (the server
    // had not judged them: pushed and judged as usual, one refused brings nothing back).
    std::set<std::pair<std::string, std::string>> outside;
    CAIRN_RETURN_IF_ERROR(docs_of(
        evict->empty() ? r_->store_->CollectionNames() : *evict,
        [&](const auto& ref) { return brought.count(ref) != 0; }, &outside));
    CAIRN_RETURN_IF_ERROR(RemoveFromView(outside, own_judged));
  }
  CAIRN_ASSIGN_OR_RETURN(store::SyncPosition pos, r_->store_->GetSyncPosition());
  if (snap->rebase) {
    for (const auto& [origin, through] : snap->watermarks) {
      if (through > r_->store_->Through(origin)) {  // its own too: never reuse a seq
        CAIRN_RETURN_IF_ERROR(r_->store_->SetThrough(origin, through));
      }
    }
    pos.cursor = snap->cursor;
    pos.rules_digest = rules_digest;
  }
  pos.subscriptions = coverage;  // (BeginSnapshot stored the server's id)
  CAIRN_RETURN_IF_ERROR(r_->store_->SetSyncPosition(pos));
  CAIRN_RETURN_IF_ERROR(r_->store_->ClearSnapshot());
  CAIRN_RETURN_IF_ERROR(r_->store_->DrainPending());
  r_->clock_->Observe(max_hlc);
  CAIRN_RETURN_IF_ERROR(r_->store_->Commit(r_->clock_->last()));
  return applied;
}

Result<store::ReplicaStore::FoldStats> SyncAccess::FoldHistory(Hlc horizon) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  if (r_->read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  CAIRN_RETURN_IF_ERROR(r_->store_->Begin());
  store::RollbackUnlessCommitted guard(r_->store_.get());
  // Not past an op of its own the server may still refuse: its undo needs what lies below;
  // nor past one to be written again: whether a delete came after it must still show.
  CAIRN_ASSIGN_OR_RETURN(Hlc reapply, r_->store_->OldestToReapply());
  if (reapply != 0) horizon = std::min(horizon, reapply);
  CAIRN_RETURN_IF_ERROR(
      r_->store_->ForEachOutbox([&](uint64_t, uint64_t, std::string_view batch) -> Status {
        return protocol::DecodeBatchFrame(batch, "outbox row", [&](const Op& op) {
          horizon = std::min(horizon, op.id.hlc);
          return Status::OK();
        });
      }));
  CAIRN_ASSIGN_OR_RETURN(auto stats, r_->store_->FoldHistory(horizon));
  CAIRN_RETURN_IF_ERROR(r_->store_->Commit(r_->clock_->last()));
  return stats;
}

Result<uint64_t> SyncAccess::ReapplyExpired(Hlc horizon) {
  Replica::Locked lock(r_);
  CAIRN_RETURN_IF_ERROR(r_->CheckOpen());
  if (r_->read_only_) return Status(Code::kEREADONLY, "replica is open read-only");
  // A read first: most calls (one per CaughtUp) find nothing, and take no write lock.
  CAIRN_RETURN_IF_ERROR(r_->store_->Refresh());
  CAIRN_ASSIGN_OR_RETURN(Hlc oldest, r_->store_->OldestToReapply());
  if (oldest == 0 || oldest >= horizon) return uint64_t{0};
  CAIRN_RETURN_IF_ERROR(r_->store_->Begin());
  store::RollbackUnlessCommitted guard(r_->store_.get());
  // The refused ops, per refused transaction (its first seq), in seq order; those stamped at or
  // above `horizon` were refused for a later horizon than this session knows: the next one.
  std::map<uint64_t, std::vector<std::pair<int64_t, Op>>> txns;
  CAIRN_RETURN_IF_ERROR(r_->store_->ForEachToReapply([&](int64_t id, uint64_t txn, const Op& op) {
    if (op.id.hlc < horizon) txns[txn].emplace_back(id, op);
    return Status::OK();
  }));
  if (txns.empty()) {
    r_->store_->Rollback();
    return uint64_t{0};
  }
  // docs/crdt-semantics.md "History horizon": each op again where it would still have won:
  // not under a delete made after it, not a set of a field written after it, not a delete of a
  // document written after it (it would wipe what others wrote since, now stamped below it).
  uint64_t n = 0;
  for (const auto& [txn, rows] : txns) {
    WriteBatch again;
    std::vector<int64_t> written;
    for (const auto& [id, op] : rows) {
      CAIRN_ASSIGN_OR_RETURN(crdt::DocState doc, r_->store_->CopyDoc(op.collection, op.key));
      const char* why = nullptr;
      if (op.id < doc.del) {
        why = "the document was deleted after it";
      } else if (op.kind == OpKind::kSet) {
        auto cell = doc.cells.find(op.field);
        if (cell != doc.cells.end() && op.id < cell->second.Deciding()) {
          why = "the field was written after it";
        }
      } else if (op.kind == OpKind::kDelete && op.id < doc.MaxOp()) {
        why = "the document was written after it";
      }
      if (why != nullptr) {
        CAIRN_RETURN_IF_ERROR(
            r_->store_->SettleRejected(id, std::string("; not written again: ") + why));
        continue;
      }
      switch (op.kind) {
        case OpKind::kSet:
          again.Set(op.collection, op.key, op.field, op.value);
          break;
        case OpKind::kIncrement:
          again.Increment(op.collection, op.key, op.field, op.delta);
          break;
        case OpKind::kDelete:
          again.Delete(op.collection, op.key);
          break;
      }
      written.push_back(id);
    }
    if (written.empty()) continue;
    // One transaction again for each refused one, stamped from the horizon: taken by the
    // server, and below every op made within it, so what came later still wins.
    const uint64_t first = r_->store_->last_seq() + 1;
    Status st = r_->WriteInTxn(again, horizon);
    std::string note;
    if (st.ok()) {
      note = "; written again as seqs " + std::to_string(first) + ".." +
             std::to_string(r_->store_->last_seq()) + ", stamped at the server's history horizon";
      n += written.size();
    } else if (st.code() == Code::kEINVAL || st.code() == Code::kEPERM) {
      // (Checked before anything was written: a name now clashing, a collection now one-way.)
      note = "; not written again: " + st.ToString();
    } else {
      return st;
    }
    for (int64_t id : written) CAIRN_RETURN_IF_ERROR(r_->store_->SettleRejected(id, note));
  }
  CAIRN_RETURN_IF_ERROR(r_->store_->Commit(r_->clock_->last()));
  return n;
}

Status SyncAccess::CorrectClock(int64_t server_time_ms, uint32_t max_drift_ms) {
  const int64_t offset = server_time_ms - r_->clock_source_->NowMs();
  {
    Replica::Locked lock(r_);
    r_->clock_->set_offset_ms(offset);
    const Hlc bound = MakeHlc(static_cast<uint64_t>(std::max<int64_t>(server_time_ms, 0)) +
                                  max_drift_ms, 0);
    if (max_drift_ms > 0 && r_->clock_->last() > bound) {
      r_->clock_->Rewind(bound);
      r_->clock_rewound_ = true;
    }
    // Stored when it moved by a second or more: not a write per connection.
    if (r_->stored_offset_ms_ && std::llabs(*r_->stored_offset_ms_ - offset) < 1000)
      return Status::OK();
  }
  CAIRN_RETURN_IF_ERROR(
      UpdateSyncPosition([&](store::SyncPosition* pos) { pos->clock_offset_ms = offset; }));
  Replica::Locked lock(r_);
  r_->stored_offset_ms_ = offset;
  return Status::OK();
}

}  // namespace cairn
