// ReplicaStore: everything a replica keeps in its SQLite file, and the only code that knows the
// storage format (docs/storage-format.md). It applies ops through the merge rules of
// crdt/doc_state.h, keeps the per-collection materialized tables in step, and records local ops
// in the outbox.
//
// Writes happen inside Begin()/Commit(). Within a transaction, documents are loaded once into a
// write-back cache, merged in memory and written back at Commit (or when the cache grows past
// its limit), so a batch that touches a document many times writes it once.
// Not thread-safe: one thread at a time (cairn::Replica holds the lock).
#ifndef CAIRN_STORE_REPLICA_STORE_H_
#define CAIRN_STORE_REPLICA_STORE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "base/strings.h"
#include "crdt/doc_state.h"
#include "oplog/op.h"
#include "store/sqlite.h"
#include "store/stream_store.h"

namespace cairn::store {

// Storage format version (PRAGMA user_version). A file with a larger number is refused.
constexpr int kFormatVersion = 8;
// PRAGMA application_id of a Cairn replica: "CRN1" as a big-endian 32-bit integer.
constexpr int32_t kApplicationId = 0x43524E31;

// Binds the materialized (SQL-visible) form of `v` at parameter `i`: bools as 0/1, strings and
// bytes without a copy (they must outlive the statement's next Step/Reset).
void BindSqlValue(Stmt* s, int i, const Value& v);

struct StoreOptions {
  bool create = true;        // create the file when missing
  bool read_only = false;
  uint32_t busy_timeout_ms = 5000;
  size_t cache_docs = 16384;  // documents kept in the write-back cache of a transaction
};

struct OriginInfo {
  ReplicaId id;
  uint64_t through = 0;  // every op of this origin with seq <= through is accounted for
};

// Where this replica stands with its sync server (format 2, table cairn_sync).
struct SyncPosition {
  std::optional<ReplicaId> server_id;          // the server the cursor belongs to
  uint64_t cursor = 0;                         // every server op up to here was received
  std::optional<std::string> subscriptions;    // collections the cursor covers; nullopt: all
  std::optional<int64_t> last_sync_ms;         // last completed exchange
  std::optional<int64_t> clock_offset_ms;      // server time - own clock, last learnt (format 4)
  // The collections the server's sync rules keep one-way (server -> devices), lower-case, as
  // its last Welcome named them; local writes to them fail with EPERM (format 6;
  // docs/sync-rules.md).
  std::set<std::string> read_only;
  // The digest of the sync rules the cursor was received under ("": none; format 7;
  // docs/sync-rules.md "Rules that change"), stored with the rebase snapshot that took it.
  std::string rules_digest;
};

// A snapshot being received from the sync server (format 3, table cairn_snapshot). Its ops are
// staged as held-back unit kSnapshotUnit until the whole snapshot arrived (docs/protocol.md,
// "Snapshots").
struct SnapshotState {
  ReplicaId server_id;
  uint64_t cursor = 0;                       // the server cursor the snapshot was started at
  bool rebase = false;                       // replaces the cursor (else: adds collections)
  std::string wanted;                        // the subscription request it answers
  std::map<ReplicaId, uint64_t> watermarks;  // the server's per-origin receipts at `cursor`
  std::string after_collection, after_key;   // the last document staged
};
constexpr int64_t kSnapshotUnit = 0;

class ReplicaStore {
 public:
  // Opens (and creates, migrates or refuses) the replica at `path`. `new_id` is the id given to
  // a newly created replica.
  static Result<std::unique_ptr<ReplicaStore>> Open(const std::string& path,
                                                    const StoreOptions& options,
                                                    const ReplicaId& new_id, int64_t now_ms);
  ~ReplicaStore();
  Status Close();

  const ReplicaId& replica_id() const { return replica_id_; }
  Hlc stored_hlc() const { return hlc_; }
  uint64_t last_seq() const { return last_seq_; }

  // Re-reads the registry (names, origins, clock, seq) when another connection committed to the
  // file since it was read (PRAGMA data_version), e.g. the `cairn` tool while an app has it open.
  // Begin() does it under the write lock; readers call it first.
  Status Refresh();

  // --- Writing (REQUIRES: inside Begin/Commit) ---
  Status Begin();
  // Flushes, persists the clock and seq when the outbox does not already imply them, commits.
  // On failure the transaction is rolled back.
  Status Commit(Hlc hlc);
  void Rollback();
  bool in_transaction() const { return in_txn_; }

  // Change tracking for change listeners: when on, each committed transaction records the
  // documents whose visible state it changed (a field's value, a counter, a delete), grouped by
  // collection; TakeChanges hands them over, oldest transaction first.
  using ChangeSet = cairn::ChangeSet;  // oplog/op.h
  void set_track_changes(bool on) { track_changes_ = on; }
  bool has_changes() const { return !committed_changes_.empty(); }
  uint64_t commit_count() const { return commits_; }  // transactions committed by this handle
  std::vector<ChangeSet> TakeChanges();

  // Applies a validated op through the merge rules. A local op (made by this replica) advances
  // the local seq (REQUIRES: op.id.seq == last_seq() + 1); the caller records it in the outbox.
  // With `superseded`, appends the ops this one removes from the state (so that it can be
  // undone: RebuildDoc).
  Status Apply(const Op& op, bool local, std::vector<Op>* superseded = nullptr);
  // Writes every changed document back to the file and empties the cache (a large transaction
  // calls it before building its outbox frame, so both are never in memory at once).
  Status WriteBack();
  // Records one local transaction (ops first_seq..last_seq) as an encoded OpBatch frame, with
  // the ops it superseded (an OpBatch frame, or empty).
  Status AppendOutbox(uint64_t first_seq, uint64_t last_seq, Hlc max_hlc, std::string_view batch,
                      std::string_view superseded);
  // Removes the outbox transactions within first_seq..last_seq, passing each one's batch and
  // superseded frames (the latter empty when none) to `fn` first.
  Status TakeOutbox(uint64_t first_seq, uint64_t last_seq,
                    const std::function<Status(std::string_view, std::string_view)>& fn);
  // Removes the received ops kept because a local op with seq in first_seq..last_seq outranked
  // them (cairn_superseded), passing each to `fn` first.
  Status TakeOutranked(uint64_t first_seq, uint64_t last_seq,
                       const std::function<Status(const Op&)>& fn);
  // Passes the superseded frame of each outbox transaction that has one to `fn`, which returns
  // a replacement ("": none left) or nothing to keep it (docs/sync-rules.md "Rules that change":
  // what a removed document's ops were superseded by stays out of a later undo).
  Status RewriteSuperseded(
      const std::function<Result<std::optional<std::string>>(std::string_view)>& fn);
  // Removes the received ops kept as outranked (cairn_superseded) of these documents.
  Status ForgetOutranked(const std::set<std::pair<std::string, std::string>>& docs);
  // Recomputes a document from its current ops and `extra`, leaving out those `drop` names
  // (undoing refused local ops: the state is a function of the op set; removing a document
  // that left the view, docs/sync-rules.md "Reading": not a delete, nothing is logged or
  // pushed). A document it does not have and no `extra`: nothing to do.
  Status RebuildDoc(const std::string& collection, const std::string& key,
                    const std::function<bool(const OpId&)>& drop, const std::vector<Op>& extra);
  // This replica's lowest seq the outbox still holds (not acknowledged by a server), or
  // last_seq() + 1 when it holds none.
  Result<uint64_t> FirstUnacked();
  // Whether the state holds any op of the document (false for one that left the view).
  Result<bool> HasOps(const std::string& collection, const std::string& key);
  uint64_t Through(const ReplicaId& origin);
  Status SetThrough(const ReplicaId& origin, uint64_t through);
  // Case-insensitive clash of a new name with an existing, different one ("" if none).
  std::string CollectionClash(const std::string& name) const;
  // Whether the server's sync rules keep `collection` one-way (SyncPosition::read_only, as
  // last stored).
  bool DeviceReadOnly(const std::string& collection) const {
    return !read_only_.empty() && read_only_.count(AsciiLower(collection)) > 0;
  }
  std::string FieldClash(const std::string& name) const;
  // Gap handling (docs/crdt-semantics.md "Gaps are held back"). A held-back unit is one received
  // file (or batch) kept whole: its ops, and per origin the range (from, through] it covers,
  // where `from` is what the sender assumed this replica already has.
  Result<int64_t> NewPendingUnit();
  Status StagePending(int64_t unit, const Op& op);
  Status StagePendingRange(int64_t unit, const ReplicaId& origin, uint64_t from, uint64_t through);
  // Applies, whole, every held-back unit whose assumptions this replica now meets.
  Status DrainPending();
  // The ops of a held-back unit, ordered by origin then seq.
  Status ForEachPendingOp(int64_t unit, const std::function<Status(const Op&)>& fn);
  // Applies a remote op whose identity may already be represented here (a snapshot's ops):
  // sets and deletes are idempotent by the merge rules; an increment already stored (or below
  // the document's delete) is skipped (REQUIRES: inside Begin/Commit).
  Status ApplyIdempotent(const Op& op);
  Result<std::optional<SnapshotState>> GetSnapshot();
  Status SetSnapshot(const SnapshotState& snap);  // REQUIRES: inside Begin/Commit
  // History horizon (docs/crdt-semantics.md "History horizon"). The state is folded at
  // horizon(): no new op stamped below it is merged (Apply skips a received one). FoldHistory
  // raises it to `horizon` (nothing when not above it): per document, increments of a field below
  // it become one entry and a delete below it is forgotten (a deleted document's row goes); what
  // the replica shows does not change. Sound only when every op below `horizon` this replica will
  // ever merge is merged, and none of its own ops below it can still be undone (REQUIRES: inside
  // Begin/Commit).
  Hlc horizon() const { return horizon_; }
  struct FoldStats {
    int64_t docs = 0;             // documents whose increments were folded
    int64_t increments = 0;       // increment rows removed
    int64_t tombstones = 0;       // deleted documents' rows removed
    int64_t deletes_cleared = 0;  // deletes forgotten in documents written since
  };
  Result<FoldStats> FoldHistory(Hlc horizon);
  // Records the last document staged; EINVAL when no snapshot is being received (REQUIRES:
  // inside Begin/Commit).
  Status SetSnapshotPosition(const std::string& after_collection, const std::string& after_key);
  // Forgets the snapshot being received and its staged ops (REQUIRES: inside Begin/Commit).
  Status ClearSnapshot();

  // --- Reading ---
  // The visible fields of a document; nullopt when not visible.
  Result<std::optional<Fields>> GetDoc(const std::string& collection, const std::string& key);
  // A copy of a document's merged state, unwritten changes included, its increments loaded (so
  // that any op can be applied to it): for judging a write before it is applied
  // (server/write_judge.h). An empty state for a document or collection never written.
  Result<crdt::DocState> CopyDoc(const std::string& collection, const std::string& key);
  // Visible documents in canonical order (collection name, then key, bytewise).
  Status ForEachVisibleDoc(
      const std::function<Status(const std::string&, const std::string&, const Fields&)>& fn);
  // Every document of `collection` with its visible fields (deleted ones too, with none), in
  // key order.
  Status ForEachDocFields(const std::string& collection,
                          const std::function<Status(const std::string&, const Fields&)>& fn);
  // The same from the first key after `after_key` (all: ""), at most `max_docs` documents.
  Status ForEachDocFields(const std::string& collection, const std::string& after_key,
                          size_t max_docs,
                          const std::function<Status(const std::string&, const Fields&)>& fn);
  // The ops the state still depends on (the compacted log), ordered by origin then seq.
  Status ForEachSurvivor(const std::function<Status(const Op&)>& fn);
  // The same per document: the documents of `collection` with key > after_key in key order
  // (at most max_docs), each with the ops its state depends on, in no particular order.
  Status ForEachDocSurvivors(const std::string& collection, const std::string& after_key,
                             size_t max_docs,
                             const std::function<Status(const std::string&, std::vector<Op>*)>& fn);
  std::vector<std::string> CollectionNames() const;  // sorted
  // The outbox, oldest transaction first: (first seq, last seq, encoded OpBatch frame).
  Status ForEachOutbox(
      const std::function<Status(uint64_t, uint64_t, std::string_view)>& fn);
  // Outbox rows whose last seq is above `after_seq`, oldest first, at most `max_rows`.
  Status ForEachOutboxAfter(uint64_t after_seq, size_t max_rows,
                            const std::function<Status(uint64_t, uint64_t, std::string_view)>& fn);
  // The server made every local op up to `through` durable: drops those outbox rows, after
  // persisting the clock and seq they implied (REQUIRES: inside Begin/Commit).
  Status AckOutbox(uint64_t through);
  // Lowers the clock this file stores to `hlc` (the replica's clock was wound back,
  // docs/crdt-semantics.md "Clock safety"; REQUIRES: inside Begin/Commit; AckOutbox, called next,
  // persists it).
  void RewindHlc(Hlc hlc) { hlc_ = std::min(hlc_, hlc); }
  // The HLC of the local op `seq` when it ends an outbox transaction (unacknowledged), else
  // nullopt (a transaction's last op carries its highest HLC: local stamps only grow).
  Result<std::optional<Hlc>> OutboxHlcAt(uint64_t seq);
  // Whether the file is a cairn-server's (it holds the server's global log, server/
  // server_store.cc): written only by the server (docs/backend.md).
  Result<bool> IsServerFile();
  Result<SyncPosition> GetSyncPosition();
  Status SetSyncPosition(const SyncPosition& pos);  // REQUIRES: inside Begin/Commit
  Status ForEachRejected(const std::function<Status(const RejectedOp&)>& fn);
  // `reapply_txn`: refused for the history horizon, to be written again (ForEachToReapply), as
  // part of the refused transaction that starts at that seq (0: not to be written again).
  Status RecordRejected(const Op& op, int code, const std::string& reason, int64_t now_ms,
                        uint64_t reapply_txn = 0);
  // The rejected ops to be written again, in seq order, with their row ids and transactions;
  // SettleRejected marks one done, adding `note` to its reason; OldestToReapply: their lowest
  // stamp (0: none).
  Status ForEachToReapply(const std::function<Status(int64_t, uint64_t, const Op&)>& fn);
  Status SettleRejected(int64_t id, const std::string& note);
  Result<Hlc> OldestToReapply();
  std::vector<OriginInfo> Origins() const;
  Result<int64_t> OutboxCount();
  Result<int64_t> RejectedCount();
  Result<bool> IsRejected(const OpId& id);  // in cairn_rejected (a server refused it)
  Result<int64_t> PendingCount();
  Db* db() { return &db_; }
  // The file's telemetry streams (format 5; store/stream_store.h).
  StreamStore* streams() { return streams_.get(); }

 private:
  struct CachedDoc {
    bool in_file = false;  // has a cairn_docs row
    int64_t coll = 0;
    std::string key;
    bool was_visible = false;  // visible as last written to the file
    uint64_t last_used = 0;
    crdt::DocState state;
  };
  struct Collection {
    int64_t idx;
    std::string name;
    bool materialized;
  };

  ReplicaStore() = default;
  Status InitSchema(const ReplicaId& new_id, int64_t now_ms);
  Status LoadRegistry();
  Status Prepare();
  Result<int64_t> EnsureCollection(const std::string& name);
  Result<int64_t> EnsureField(const std::string& name);
  Status EnsureColumn(int64_t coll, int64_t field);
  Result<int64_t> EnsureOrigin(const ReplicaId& id);
  Result<CachedDoc*> LoadDoc(int64_t coll, const std::string& key);
  Status LoadIncs(CachedDoc* doc);
  Status KeepIfOutranked(const crdt::DocState& state, const Op& op);
  Status Merge(const Op& op, bool local, std::vector<Op>* superseded);  // Apply, unchecked
  // At commit: the transaction's changed documents join committed_changes_.
  void RecordChanges();
  Op ReadOpRow(const Stmt& st) const;
  Status ForEachOpRow(Stmt* st, const std::function<Status(const Op&)>& fn);
  Status FlushDoc(CachedDoc* doc);
  Status FlushAll();
  Status TrimCache();
  void ClearCache();
  Result<Stmt*> MaterializeStmt(int64_t coll, const std::vector<int64_t>& fields);
  Result<Stmt*> DeleteRowStmt(int64_t coll);
  const std::string& FieldName(int64_t idx) const { return field_names_.at(idx); }
  const Collection& CollectionByIndex(int64_t idx) const;
  std::string EncodeCells(const crdt::DocState& state) const;
  bool DecodeCells(std::string_view blob, crdt::CellMap* cells) const;
  OpId MakeOpId(int64_t hlc, int64_t origin, int64_t seq) const;

  Db db_;
  StoreOptions options_;
  bool in_txn_ = false;
  bool track_changes_ = false;
  bool txn_local_ = false;                                // a local op was applied in it
  std::vector<std::pair<int64_t, std::string>> txn_changed_;  // (collection, key), this txn
  std::vector<ChangeSet> committed_changes_;
  uint64_t commits_ = 0;
  ReplicaId replica_id_;
  int64_t local_origin_ = 0;
  Hlc hlc_ = 0;
  uint64_t last_seq_ = 0;
  // What the file already implies: the state row, and the newest outbox transaction.
  Hlc persisted_hlc_ = 0;
  uint64_t persisted_seq_ = 0;
  // What this transaction's outbox rows imply, once committed.
  Hlc outbox_hlc_ = 0;
  uint64_t outbox_seq_ = 0;
  uint64_t tick_ = 0;

  std::unordered_map<std::string, Collection> collections_;  // by exact name
  std::unordered_map<int64_t, std::string> collection_names_;
  std::unordered_map<std::string, std::string> collections_lower_;
  std::unordered_map<std::string, int64_t> fields_;
  std::unordered_map<std::string, std::string> fields_lower_;
  std::unordered_map<int64_t, std::string> field_names_;
  std::map<std::pair<int64_t, int64_t>, bool> columns_;  // (coll, field) -> materialized
  std::set<std::pair<int64_t, std::string>> columns_lower_;  // materialized (coll, lower(field))
  int64_t data_version_ = -1;
  Stmt data_version_stmt_;
  std::map<ReplicaId, int64_t> origin_index_;
  std::unordered_map<int64_t, OriginInfo> origins_;
  std::map<std::pair<int64_t, std::vector<int64_t>>, Stmt> materialize_;
  std::map<int64_t, Stmt> delete_row_;

  // The write-back cache of the open transaction: collection index -> key -> document.
  std::unordered_map<int64_t, std::unordered_map<std::string, CachedDoc>> cache_;
  size_t cache_count_ = 0;
  // The names of the previous op, resolved (most ops of a batch share them).
  std::string last_collection_, last_field_;
  int64_t last_coll_idx_ = -1, last_field_idx_ = -1;

  bool has_sync_table_ = true;
  bool has_snapshot_table_ = true;
  bool has_format4_ = true;
  bool has_format6_ = true;
  bool has_format7_ = true;
  bool has_format8_ = true;
  Hlc horizon_ = 0;                  // cairn_state.horizon (format 8)
  std::set<std::string> read_only_;  // SyncPosition::read_only, as last read or written
  std::unique_ptr<StreamStore> streams_;
  // The first local seq not acknowledged (0: not known in this transaction).
  uint64_t unacked_from_ = 0;
  Stmt keep_outranked_;
  Stmt get_doc_;  // GetDoc's, prepared at its first call
  Stmt outbox_after_, set_sync_;
  Stmt begin_, commit_, rollback_, find_doc_, load_incs_, insert_doc_, update_doc_, put_inc_,
      del_inc_, del_incs_, put_outbox_, save_state_, set_through_, stage_op_;
};

// Rolls the store's open transaction back when the scope leaves without committing (an error
// return, or an exception such as bad_alloc), so a replica never stays locked in a half-done
// transaction. A no-op once committed or rolled back.
class RollbackUnlessCommitted {
 public:
  explicit RollbackUnlessCommitted(ReplicaStore* store) : store_(store) {}
  RollbackUnlessCommitted(const RollbackUnlessCommitted&) = delete;
  RollbackUnlessCommitted& operator=(const RollbackUnlessCommitted&) = delete;
  ~RollbackUnlessCommitted() {
    try {
      if (store_->in_transaction()) store_->Rollback();
    } catch (...) {
    }
  }

 private:
  ReplicaStore* store_;
};

}  // namespace cairn::store

#endif  // CAIRN_STORE_REPLICA_STORE_H_
