// ReplicaStore: the sync side of the file. The outbox and its acknowledgement, the sync
// position, refused (rejected) ops and what a refused transaction needs to be undone (the ops
// it superseded or outranked), and the op rows the pending and outranked tables share.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "base/coding.h"
#include "base/strings.h"
#include "oplog/value_codec.h"
#include "store/replica_store.h"
#include "store/replica_store_rows.h"

namespace cairn::store {

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
  // A format 1 file opened read-only: never synced.
  if (!has_sync_table_) return SyncPosition();
  SyncPosition pos;
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st,
      db_.Prepare(std::string("SELECT server_id, cursor, subscriptions, last_sync_ms, ") +
                  (has_format4_ ? "clock_offset_ms" : "NULL") + ", " +
                  (has_format6_ ? "read_only" : "NULL") + ", " +
                  (has_format7_ ? "rules_digest" : "NULL") + " FROM cairn_sync WHERE id = 1"));
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
  if (!st.IsNull(5)) {
    nlohmann::json names = nlohmann::json::parse(st.Text(5), nullptr, /*allow_exceptions=*/false);
    if (!names.is_array()) return Status::Corrupt("cairn_sync.read_only is not a JSON array");
    for (const auto& n : names) {
      if (n.is_string()) pos.read_only.insert(n.get<std::string>());
    }
  }
  if (!st.IsNull(6)) pos.rules_digest = std::string(st.Text(6));
  return pos;
}

Status ReplicaStore::SetSyncPosition(const SyncPosition& pos) {
  if (!in_txn_) return Status::Internal("SetSyncPosition outside a transaction");
  if (!set_sync_.valid()) {
    CAIRN_ASSIGN_OR_RETURN(
        set_sync_,
        db_.Prepare(
            "UPDATE cairn_sync SET server_id = ?, cursor = ?, subscriptions = ?, last_sync_ms = ?, "
            "clock_offset_ms = ?, read_only = ?, rules_digest = ? WHERE id = 1"));
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
  if (pos.read_only.empty()) {
    set_sync_.BindNull(6);
  } else {
    set_sync_.BindText(6, nlohmann::json(pos.read_only).dump());
  }
  if (pos.rules_digest.empty()) {
    set_sync_.BindNull(7);
  } else {
    set_sync_.BindText(7, pos.rules_digest);
  }
  CAIRN_RETURN_IF_ERROR(set_sync_.Run());
  read_only_ = pos.read_only;  // (a rollback reads it again: LoadRegistry)
  return Status::OK();
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

Status ReplicaStore::RewriteSuperseded(
    const std::function<Result<std::optional<std::string>>(std::string_view)>& fn) {
  if (!in_txn_) return Status::Internal("RewriteSuperseded outside a transaction");
  std::vector<std::pair<int64_t, std::string>> changed;  // first_seq, new frame
  {
    CAIRN_ASSIGN_OR_RETURN(
        Stmt st,
        db_.Prepare("SELECT first_seq, superseded FROM cairn_outbox WHERE superseded IS NOT NULL"));
    for (;;) {
      CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> now, fn(st.Blob(1)));
      if (now) changed.emplace_back(st.Int(0), std::move(*now));
    }
  }
  if (changed.empty()) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(Stmt up,
                         db_.Prepare("UPDATE cairn_outbox SET superseded = ? WHERE first_seq = ?"));
  for (const auto& [first_seq, frame] : changed) {
    if (frame.empty()) {
      up.BindNull(1);
    } else {
      up.BindStaticBlob(1, frame);
    }
    up.BindInt(2, first_seq);
    CAIRN_RETURN_IF_ERROR(up.Run());
  }
  return Status::OK();
}

Status ReplicaStore::ForgetOutranked(const std::set<std::pair<std::string, std::string>>& docs) {
  if (!in_txn_) return Status::Internal("ForgetOutranked outside a transaction");
  if (docs.empty()) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(
      Stmt del, db_.Prepare("DELETE FROM cairn_superseded WHERE collection = ? AND key = ?"));
  for (const auto& [collection, key] : docs) {
    del.BindText(1, collection);
    del.BindText(2, key);
    CAIRN_RETURN_IF_ERROR(del.Run());
  }
  return Status::OK();
}

Status ReplicaStore::RecordRejected(const Op& op, int code, const std::string& reason,
                                    int64_t now_ms, uint64_t reapply_txn) {
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st,
      db_.Prepare("INSERT INTO cairn_rejected(origin, seq, hlc, kind, collection, key, field, "
                  "vtype, value, "
                  "delta, code, reason, at_ms, reapply) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
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
    rows::BindValue(&st, 8, op.value);
  } else {
    st.BindNull(8);
    st.BindNull(9);
  }
  st.BindInt(10, op.delta);
  st.BindInt(11, code);
  st.BindText(12, reason);
  st.BindInt(13, now_ms);
  st.BindInt(14, I(reapply_txn));
  return st.Run();
}

// The op of a cairn_rejected row selected as (id, origin, seq, hlc, kind, collection, key,
// field, vtype, value, delta, ...).
static Op RejectedRowOp(const Stmt& st) {
  Op op;
  ReplicaId::FromBytes(st.Blob(1).data(), st.Blob(1).size(), &op.id.origin);
  op.id.seq = U(st.Int(2));
  op.id.hlc = U(st.Int(3));
  op.kind = static_cast<OpKind>(st.Int(4));
  op.collection = std::string(st.Text(5));
  op.key = std::string(st.Text(6));
  op.field = std::string(st.Text(7));
  if (op.kind == OpKind::kSet) op.value = rows::ReadValue(st, 8);
  op.delta = st.Int(10);
  return op;
}

Status ReplicaStore::ForEachToReapply(
    const std::function<Status(int64_t, uint64_t, const Op&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st, db_.Prepare("SELECT id, origin, seq, hlc, kind, collection, key, field, vtype, "
                           "value, delta, reapply FROM cairn_rejected WHERE reapply != 0 "
                           "ORDER BY seq"));
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CAIRN_RETURN_IF_ERROR(fn(st.Int(0), U(st.Int(11)), RejectedRowOp(st)));
  }
  return Status::OK();
}

Status ReplicaStore::SettleRejected(int64_t id, const std::string& note) {
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st,
      db_.Prepare("UPDATE cairn_rejected SET reapply = 0, reason = reason || ? WHERE id = ?"));
  st.BindText(1, note);
  st.BindInt(2, id);
  return st.Run();
}

Result<Hlc> ReplicaStore::OldestToReapply() {
  if (!has_format8_) return Hlc{0};
  CAIRN_ASSIGN_OR_RETURN(
      Stmt st, db_.Prepare("SELECT coalesce(min(hlc), 0) FROM cairn_rejected WHERE reapply != 0"));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? U(st.Int(0)) : Hlc{0};
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
    r.op = RejectedRowOp(st);
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
  if (op.kind == OpKind::kSet) op.value = rows::ReadValue(st, 7);
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

}  // namespace cairn::store
