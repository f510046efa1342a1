// ReplicaStore: what is received but not applied yet. Held-back units (a file or batch whose
// assumptions are not met: docs/crdt-semantics.md "Gaps") and the staging of a snapshot
// (docs/protocol.md "Snapshots").
#include "store/replica_store.h"

#include <algorithm>
#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/admission.h"
#include "oplog/value_codec.h"
#include "store/replica_store_rows.h"

namespace cairn::store {

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
  rows::BindOpRow(&stage_op_, unit, origin, op);
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
        if (!admission::AssumptionMet(U(ranges.Int(2)), origins_[origin].through)) {
          blocked.insert(unit);
        }
        units[unit].emplace_back(origin, U(ranges.Int(3)));
      }
    }
    for (const auto& [unit, ranges] : units) {
      if (blocked.count(unit)) continue;
      CAIRN_RETURN_IF_ERROR(ForEachPendingOp(unit, [&](const Op& op) -> Status {
        // Accounted for meanwhile (another unit, a server batch): never applied twice.
        if (admission::Has(Through(op.id.origin), op.id.seq)) return Status::OK();
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

}  // namespace cairn::store
