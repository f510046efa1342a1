#include "server/server_store.h"

#include <cstring>
#include <map>

#include "base/killpoint.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/replica.h"

namespace cairn::server {

namespace {

// The server's tables, beside the replica tables of its file (docs/storage-format.md,
// "Server file").
const char* const kServerSchema = R"sql(
CREATE TABLE IF NOT EXISTS cairn_server_log(
  cursor INTEGER PRIMARY KEY AUTOINCREMENT, origin BLOB NOT NULL, first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, op_count INTEGER NOT NULL, batch BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS cairn_server_log_origin ON cairn_server_log(origin, last_seq);
CREATE TABLE IF NOT EXISTS cairn_server_meta(
  id INTEGER PRIMARY KEY CHECK (id = 1), floor INTEGER NOT NULL);
INSERT OR IGNORE INTO cairn_server_meta VALUES (1, 0);
CREATE TABLE IF NOT EXISTS cairn_server_refused(
  origin BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  code INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
  PRIMARY KEY (origin, first_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cairn_server_replicas(
  replica_id BLOB PRIMARY KEY, subject TEXT NOT NULL, first_seen_ms INTEGER NOT NULL)
  WITHOUT ROWID;
)sql";

int64_t I(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t U(int64_t v) { return static_cast<uint64_t>(v); }

}  // namespace

Result<std::unique_ptr<ServerStore>> ServerStore::Open(const std::string& path,
                                                       const ServerStoreOptions& options) {
  std::unique_ptr<ServerStore> s(new ServerStore());
  s->options_ = options;
  s->clock_source_ = options.clock ? options.clock : Clock::System();
  s->clock_ = std::make_unique<HybridClock>(s->clock_source_);
  ReplicaId new_id;
  CAIRN_RETURN_IF_ERROR(port::SecureRandom(new_id.bytes.data(), new_id.bytes.size()));
  CAIRN_ASSIGN_OR_RETURN(s->store_, store::ReplicaStore::Open(path, store::StoreOptions(), new_id,
                                                              s->clock_source_->NowMs()));
  s->clock_->Restore(s->store_->stored_hlc());
  store::Db* db = s->store_->db();
  CAIRN_RETURN_IF_ERROR(db->Exec(kServerSchema));
  {
    CAIRN_ASSIGN_OR_RETURN(store::Stmt st, db->Prepare(
        "SELECT (SELECT floor FROM cairn_server_meta), "
        "(SELECT coalesce(max(cursor), 0) FROM cairn_server_log), "
        "(SELECT coalesce(sum(op_count), 0) FROM cairn_server_log), "
        "(SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'cairn_server_log')"));
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Corrupt("server metadata missing");
    s->floor_ = U(st.Int(0));
    // AUTOINCREMENT never reuses a cursor, even when the log is empty after a trim.
    s->head_ = std::max({U(st.Int(1)), U(st.Int(3)), s->floor_});
    s->log_ops_ = U(st.Int(2));
  }
  CAIRN_ASSIGN_OR_RETURN(s->put_log_, db->Prepare(
      "INSERT INTO cairn_server_log(origin, first_seq, last_seq, op_count, batch) "
      "VALUES (?,?,?,?,?)"));
  CAIRN_ASSIGN_OR_RETURN(s->read_log_, db->Prepare(
      "SELECT cursor, origin, first_seq, last_seq, batch FROM cairn_server_log "
      "WHERE cursor > ? ORDER BY cursor LIMIT ?"));
  CAIRN_ASSIGN_OR_RETURN(s->put_refused_, db->Prepare(
      "INSERT INTO cairn_server_refused VALUES (?,?,?,?,?,?)"));
  CAIRN_ASSIGN_OR_RETURN(s->find_refused_, db->Prepare(
      "SELECT first_seq, last_seq, code, reason FROM cairn_server_refused "
      "WHERE origin = ? AND last_seq >= ? AND first_seq <= ? ORDER BY first_seq"));
  return s;
}

Result<PushResult> ServerStore::ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                                          const AdmitFn& admit) {
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  struct Guard {
    store::ReplicaStore* s;
    ~Guard() {
      if (s->in_transaction()) s->Rollback();
    }
  } guard{store_.get()};
  PushResult result;
  const uint64_t before = store_->Through(origin);
  uint64_t through = before;
  uint64_t dup_low = 0, dup_high = 0;  // the duplicates' seqs, to report earlier refusals
  Hlc dup_high_hlc = 0;                // the highest duplicate's stamp, to compare with ours
  Hlc max_hlc = 0;
  protocol::BatchEncoder accepted;
  // Transactions are applied or refused whole: one is collected, then decided. The first `n`
  // slots of `txn` hold it; they are assigned over, not reallocated, from one to the next.
  std::vector<Op> txn;
  size_t n = 0;
  Status verdict;
  auto finish_txn = [&]() -> Status {
    if (n == 0) return Status::OK();
    const uint64_t first = txn.front().id.seq, last = txn[n - 1].id.seq;
    if (!verdict.ok()) {
      Refused r{first, last, verdict.code(), verdict.message()};
      put_refused_.BindBlob(1, origin.Bytes());
      put_refused_.BindInt(2, I(first));
      put_refused_.BindInt(3, I(last));
      put_refused_.BindInt(4, static_cast<int64_t>(r.code));
      put_refused_.BindText(5, r.reason);
      put_refused_.BindInt(6, clock_source_->NowMs());
      CAIRN_RETURN_IF_ERROR(put_refused_.Run());
      result.refused.push_back(std::move(r));
    } else {
      for (size_t i = 0; i < n; i++) {
        max_hlc = std::max(max_hlc, txn[i].id.hlc);
        accepted.Add(txn[i]);
        CAIRN_RETURN_IF_ERROR(store_->Apply(txn[i], /*local=*/false));
      }
      result.applied += n;
    }
    through = last;
    n = 0;
    verdict = Status::OK();
    return Status::OK();
  };
  CAIRN_RETURN_IF_ERROR(protocol::DecodeBatch(batch, {}, [&](const Op& op) -> Status {
    if (op.id.origin != origin) {
      return Status::Invalid("op of origin " + op.id.origin.Hex() +
                             " pushed by replica " + origin.Hex() +
                             ": a replica pushes only its own ops");
    }
    if (!op.continues_txn) CAIRN_RETURN_IF_ERROR(finish_txn());
    if (op.id.seq <= through) {
      if (result.duplicates++ == 0) dup_low = op.id.seq;
      if (op.id.seq >= dup_high) dup_high_hlc = op.id.hlc;
      dup_high = std::max(dup_high, op.id.seq);
      return Status::OK();
    }
    const uint64_t expected = (n == 0 ? through : txn[n - 1].id.seq) + 1;
    if (op.id.seq != expected) {
      return Status::Corrupt("op " + origin.Hex() + ":" + std::to_string(op.id.seq) +
                             " follows seq " + std::to_string(expected - 1) + " (a gap)");
    }
    if (verdict.ok()) {
      verdict = ValidateOp(op);
      if (verdict.ok()) verdict = admit(op);
    }
    if (n == txn.size()) {
      txn.push_back(op);
    } else {
      txn[n] = op;
    }
    n++;
    return Status::OK();
  }));
  CAIRN_RETURN_IF_ERROR(finish_txn());
  // A "duplicate" that is not the op received under that seq: the replica's history forked
  // (a restored or copied file wrote new ops under seqs it had already used); taking it for a
  // duplicate would drop it (docs/protocol.md "Restored replicas"). Checked while the log
  // holds the op.
  if (result.duplicates > 0) {
    CAIRN_ASSIGN_OR_RETURN(std::optional<Hlc> ours, OpHlc(origin, dup_high));
    if (ours && *ours != dup_high_hlc) {
      return Status(Code::kEFORKED,
                    "op " + std::to_string(dup_high) + " of replica " + origin.Hex() +
                        " differs from the one received under that seq: the replica's history "
                        "forked (a file restored from a backup or copied from another device)");
    }
  }
  // A retry after a lost Ack: what was refused then is reported again.
  if (result.duplicates > 0) {
    find_refused_.BindBlob(1, origin.Bytes());
    find_refused_.BindInt(2, I(dup_low));
    find_refused_.BindInt(3, I(dup_high));
    std::vector<Refused> earlier;
    CAIRN_RETURN_IF_ERROR(find_refused_.ForEachRow([&] {
      earlier.push_back(Refused{U(find_refused_.Int(0)), U(find_refused_.Int(1)),
                                static_cast<Code>(find_refused_.Int(2)),
                                std::string(find_refused_.Text(3))});
      return Status::OK();
    }));
    result.refused.insert(result.refused.begin(), earlier.begin(), earlier.end());
  }
  result.through = through;
  if (through > before) {
    // The log entry accounts for every seq received, refused ones included (they are absent
    // from its batch: receivers get them as covered, docs/protocol.md "Coverage").
    CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, through));
    flatbuffers::FlatBufferBuilder fbb(accepted.ops_bytes() + 1024);
    accepted.Finish(&fbb);
    put_log_.BindBlob(1, origin.Bytes());
    put_log_.BindInt(2, I(before + 1));
    put_log_.BindInt(3, I(through));
    put_log_.BindInt(4, I(result.applied));
    put_log_.BindStaticBlob(
        5, std::string_view(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()));
    CAIRN_RETURN_IF_ERROR(put_log_.Run());
    const uint64_t cursor = U(sqlite3_last_insert_rowid(store_->db()->raw()));
    uint64_t new_floor = floor_, log_ops = log_ops_ + result.applied;
    CAIRN_RETURN_IF_ERROR(TrimLog(&new_floor, &log_ops));
    clock_->Observe(max_hlc);  // accepted ops only: a refused clock does not drag the server's
    KillPoint("server.push.before_commit");
    CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
    head_ = cursor;
    floor_ = new_floor;
    log_ops_ = log_ops;
  } else {
    store_->Rollback();  // nothing new: a retry after a lost Ack
  }
  result.cursor = head_;
  return result;
}

Status ServerStore::TrimLog(uint64_t* floor, uint64_t* log_ops) {
  if (*log_ops <= options_.keep_log_ops) return Status::OK();
  // Oldest entries first, keeping at least the newest one.
  CAIRN_ASSIGN_OR_RETURN(store::Stmt st, store_->db()->Prepare(
      "SELECT cursor, op_count FROM cairn_server_log ORDER BY cursor"));
  uint64_t remaining = *log_ops, new_floor = *floor;
  for (;;) {
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row || remaining <= options_.keep_log_ops) break;
    if (remaining == U(st.Int(1))) break;  // the newest entry stays
    new_floor = U(st.Int(0));
    remaining -= U(st.Int(1));
  }
  st = store::Stmt();
  if (new_floor == *floor) return Status::OK();
  CAIRN_ASSIGN_OR_RETURN(store::Stmt del,
                         store_->db()->Prepare("DELETE FROM cairn_server_log WHERE cursor <= ?"));
  del.BindInt(1, I(new_floor));
  CAIRN_RETURN_IF_ERROR(del.Run());
  CAIRN_ASSIGN_OR_RETURN(store::Stmt meta,
                         store_->db()->Prepare("UPDATE cairn_server_meta SET floor = ?"));
  meta.BindInt(1, I(new_floor));
  CAIRN_RETURN_IF_ERROR(meta.Run());
  *floor = new_floor;
  *log_ops = remaining;
  return Status::OK();
}

Status ServerStore::ReadLog(uint64_t after, size_t max_rows,
                            const std::function<Status(const LogEntry&)>& fn) {
  read_log_.BindInt(1, I(after));
  read_log_.BindInt(2, static_cast<int64_t>(max_rows));
  return read_log_.ForEachRow([&] {
    LogEntry e;
    e.cursor = U(read_log_.Int(0));
    std::string_view origin = read_log_.Blob(1);
    if (origin.size() != e.origin.bytes.size()) {
      return Status::Corrupt("log entry " + std::to_string(e.cursor) + " has a bad origin");
    }
    std::memcpy(e.origin.bytes.data(), origin.data(), origin.size());
    e.first_seq = U(read_log_.Int(2));
    e.last_seq = U(read_log_.Int(3));
    e.batch = read_log_.Blob(4);
    return fn(e);
  });
}

Result<std::optional<Hlc>> ServerStore::OpHlc(const ReplicaId& origin, uint64_t seq) {
  CAIRN_ASSIGN_OR_RETURN(store::Stmt st, store_->db()->Prepare(
      "SELECT batch FROM cairn_server_log WHERE origin = ? AND last_seq >= ? AND first_seq <= ? "
      "ORDER BY last_seq LIMIT 1"));
  st.BindBlob(1, origin.Bytes());
  st.BindInt(2, I(seq));
  st.BindInt(3, I(seq));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  std::optional<Hlc> hlc;
  if (!row) return hlc;
  std::string payload(st.Blob(0));
  CAIRN_ASSIGN_OR_RETURN(const wire::Frame* frame, protocol::VerifyFrame(payload, {}));
  const wire::OpBatch* batch = frame->body_as_OpBatch();
  if (batch == nullptr) return Status::Corrupt("log entry is not a batch");
  CAIRN_RETURN_IF_ERROR(protocol::DecodeBatch(*batch, {}, [&](const Op& op) -> Status {
    if (op.id.origin == origin && op.id.seq == seq) hlc = op.id.hlc;
    return Status::OK();
  }));
  return hlc;
}

Status ServerStore::BindReplica(const ReplicaId& replica, const std::string& subject) {
  CAIRN_ASSIGN_OR_RETURN(store::Stmt find, store_->db()->Prepare(
      "SELECT subject FROM cairn_server_replicas WHERE replica_id = ?"));
  find.BindBlob(1, replica.Bytes());
  CAIRN_ASSIGN_OR_RETURN(bool row, find.Step());
  if (row) {
    if (find.Text(0) == subject) return Status::OK();
    return Status(Code::kEPERM, "replica " + replica.Hex() + " belongs to another subject");
  }
  find = store::Stmt();
  CAIRN_ASSIGN_OR_RETURN(store::Stmt put, store_->db()->Prepare(
      "INSERT INTO cairn_server_replicas VALUES (?,?,?)"));
  put.BindBlob(1, replica.Bytes());
  put.BindText(2, subject);
  put.BindInt(3, clock_source_->NowMs());
  return put.Run();
}

}  // namespace cairn::server
