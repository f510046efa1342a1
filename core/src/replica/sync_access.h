// What the sync engine (sync::Exchange, sync::SyncClient) reaches of a Replica: its sync
// position, the outbox and its acknowledgement, server batches, snapshots, the clock correction
// and the telemetry queues (docs/protocol.md "Exchange"). The app's API, replica/replica.h,
// shows none of it: this is the one narrow door from the sync layer into the replica's storage,
// and the only header of `replica/` that names `store::` and `wire::` types.
//
// A SyncAccess is a view: cheap to make, valid while its Replica is. Every call takes the
// replica's lock like the app's calls do.
#ifndef CAIRN_REPLICA_SYNC_ACCESS_H_
#define CAIRN_REPLICA_SYNC_ACCESS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "clock/hlc.h"
#include "oplog/op.h"
#include "replica/replica.h"
#include "store/replica_store.h"

namespace cairn {

namespace protocol {
class BatchEncoder;
class StreamEncoder;
}  // namespace protocol
namespace wire {
struct OpBatch;
}  // namespace wire

struct ServerBatchStats {
  uint64_t ops = 0;
  uint64_t applied = 0;
  uint64_t duplicates = 0;
};

// A local transaction (seqs first_seq..last_seq) a server refused, and why.
struct RefusedTxn {
  uint64_t first_seq = 0, last_seq = 0;
  Code code = Code::kERROR;
  std::string reason;
};

class SyncAccess {
 public:
  explicit SyncAccess(Replica& replica) : r_(&replica) {}

  Result<store::SyncPosition> GetSyncPosition();
  // This replica's last local seq and, while that op is unacknowledged, its HLC (what a
  // client's Hello says of its own history: docs/protocol.md "Restored replicas").
  struct OwnHead {
    uint64_t last_seq = 0;
    std::optional<Hlc> hlc;
  };
  Result<OwnHead> GetOwnHead();
  // Applies one batch the server sent, atomically, and stores `cursor` (and the server's id) in
  // the same transaction. Ops already accounted for are skipped; an op past a gap in its
  // origin's seqs is refused (ECORRUPT, nothing applied): the server sends each origin in order.
  Result<ServerBatchStats> ApplyServerBatch(const wire::OpBatch& batch, uint64_t cursor,
                                            const ReplicaId& server);
  // Records the cursor the server reported with CaughtUp and, when `synced_ms` is set, the time
  // of a completed exchange.
  Status SetSyncPosition(uint64_t cursor, const ReplicaId& server,
                         std::optional<int64_t> synced_ms);
  // Adds the outbox's transactions after local seq `after_seq` to `enc`, whole, in order, while
  // the batch stays within `max_ops` ops and `max_bytes` (protocol::BatchWireBytes); the first
  // one goes in whatever its size (a transaction is never split: docs/protocol.md "Limits").
  // Returns the last local seq added (after_seq when none).
  Result<uint64_t> ReadOutbox(uint64_t after_seq, size_t max_ops, size_t max_bytes,
                              protocol::BatchEncoder* enc);
  // The server made every local op up to `through` durable: they leave the outbox. The
  // transactions in `refused` were not taken (docs/protocol.md "Refused ops"): in the same
  // transaction their ops go to the rejected-ops table with the reason and are undone here
  // (each document they touched is recomputed without them, from its ops and those they
  // superseded).
  Status AckOutbox(uint64_t through, const std::vector<RefusedTxn>& refused = {});
  // Folds this replica's history at `horizon` (docs/crdt-semantics.md "History horizon"), or
  // below the oldest of its own unacknowledged ops when that is lower (a refusal may still undo
  // it); one transaction. REQUIRES: every op below `horizon` this replica will ever merge is
  // merged (its cursor is at or past the one its server declared the horizon at).
  Result<store::ReplicaStore::FoldStats> FoldHistory(Hlc horizon);
  // Writes again, as one new local transaction stamped from `horizon` on, the ops of its
  // transactions a server refused for its history horizon (EEXPIRED), but those a delete made
  // after them covers (they stay refused, with why); each refused op's reason says which.
  // Returns how many were written. REQUIRES: as FoldHistory (a delete after them has arrived).
  Result<uint64_t> ReapplyExpired(Hlc horizon);
  // Stores what this replica holds of the server's collections (SyncPosition::subscriptions:
  // nullopt = every collection; else a JSON object collection -> since-cursor, "*" = the rest).
  Status SetCoverage(const std::optional<std::string>& coverage);
  // Stores the collections the server's sync rules keep one-way, as its Welcome names them
  // (SyncPosition::read_only; names are lower-cased): local writes to them fail with EPERM
  // from now on (docs/sync-rules.md). Writes nothing when they did not change.
  Status SetReadOnlyCollections(const std::vector<std::string>& names);
  // Snapshots (docs/protocol.md "Snapshots"): a snapshot is staged chunk by chunk (each chunk
  // committed with its position, so a cut connection resumes) and applied whole at the end.
  Result<std::optional<store::SnapshotState>> GetSnapshot();
  // Starts a new snapshot: forgets an earlier one and what it staged.
  Status BeginSnapshot(const store::SnapshotState& snap);
  // Forgets a staged snapshot (the server went on without it: it is stale).
  Status DiscardSnapshot();
  // Stages one chunk (validated, not applied) and records its last document.
  Status StageSnapshotChunk(const wire::OpBatch& batch, const std::string& after_collection,
                            const std::string& after_key);
  // Applies the staged snapshot in one transaction, idempotently (a snapshot may repeat ops
  // this replica has). A rebase applies the ops up to the snapshot's watermarks, raises this
  // replica's watermarks to them and stores the snapshot's cursor; a snapshot that adds
  // collections applies only the ops up to this replica's own watermarks (the log from its
  // cursor brings the rest), so its state stays exactly what its watermarks count. Ops above
  // the limit are left to the log. `coverage` is stored. Returns the ops applied.
  // `evict` (sync rules, SnapshotBegin.evict): the documents of these collections (empty: of
  // every collection) that the snapshot did not bring are removed in the same transaction
  // (not deleted; unsent writes to them stay in the outbox: docs/sync-rules.md "Rules that
  // change"). A rebase stores `rules_digest` (the server's sync rules) with its cursor.
  // `replace` (SnapshotBegin.replace: the server's history is folded): what this replica has of
  // these collections (exactly these) is replaced by what the snapshot brings,
  // but its own ops past the snapshot's receipt for it (the server has not judged them)
  // (docs/crdt-semantics.md "History horizon").
  Result<uint64_t> FinishSnapshot(const std::optional<std::string>& coverage,
                                  const std::vector<std::string>* evict = nullptr,
                                  const std::string& rules_digest = "",
                                  const std::vector<std::string>* replace = nullptr);
  // The collections this replica has, sorted.
  Result<std::vector<std::string>> CollectionNames();
  // docs/crdt-semantics.md "Clock safety": from now on the HLC's physical time follows the server's
  // clock (`server_time_ms`, as the server reported it) instead of this replica's clock source; the
  // correction is stored, so it holds offline after a restart. A clock that already ran more than
  // `max_drift_ms` ahead of the server (0: unknown) is wound back to that bound: the server refuses
  // the ops stamped beyond it, and new ones must not be.
  Status CorrectClock(int64_t server_time_ms, uint32_t max_drift_ms);
  // Telemetry streams: adds `stream`'s queued records with seq > after_seq to `enc` (at most
  // max_records, and max_bytes of bodies past the first); AckStream drops the records a server
  // made durable, up to `through`; QueuedRecords counts every stream's queue.
  Status ReadStream(const std::string& stream, uint64_t after_seq, size_t max_records,
                    size_t max_bytes, protocol::StreamEncoder* enc);
  Result<uint64_t> AckStream(const std::string& stream, uint64_t through);
  Result<uint64_t> QueuedRecords();

 private:
  Status UpdateSyncPosition(const std::function<void(store::SyncPosition*)>& change);
  Status UndoRefused(const std::vector<RefusedTxn>& refused);
  // Removes from these documents the ops `gone` names, and forgets them as what this replica's
  // unacknowledged writes superseded or outranked there, so that undoing a refused one brings
  // none of them back (docs/sync-rules.md "Reading" and "Rules that change").
  Status RemoveFromView(const std::set<std::pair<std::string, std::string>>& docs,
                        const std::function<bool(const OpId&)>& gone);

  Replica* r_;
};

}  // namespace cairn

#endif  // CAIRN_REPLICA_SYNC_ACCESS_H_
