#include "server/server_store.h"

#include <cstring>
#include <map>

#include "base/killpoint.h"
#include "base/strings.h"
#include "oplog/admission.h"
#include "oplog/validate.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "server/stream_tables.h"
#ifdef CAIRN_HAVE_POSTGRESQL
#include "server/pg/pg_server_store.h"
#include "server/pg/pg_stream_tables.h"
#endif

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
INSERT OR IGNORE INTO cairn_server_meta(id, floor) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS cairn_server_refused(
  origin BLOB NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
  code INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
  PRIMARY KEY (origin, first_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cairn_server_replicas(
  replica_id BLOB PRIMARY KEY, subject TEXT NOT NULL, first_seen_ms INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cairn_server_views(
  replica_id BLOB PRIMARY KEY, record TEXT NOT NULL, at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cairn_server_idempotency(
  subject TEXT NOT NULL, key TEXT NOT NULL, request BLOB NOT NULL, cursor INTEGER NOT NULL,
  code INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
  PRIMARY KEY (subject, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cairn_server_idempotency_at ON cairn_server_idempotency(at_ms);
)sql";

using store::I;
using store::U;


}  // namespace

Status SortPush(const ReplicaId& origin, const wire::OpBatch& batch, uint64_t before,
                const PushLimits& limits, const AdmitFn& admit, TxnJudge* judge,
                const TxnFn& on_txn, PushSort* sort) {
  *sort = PushSort();
  sort->before = before;
  const size_t bytes = protocol::BatchWireBytes(batch);
  if (bytes > limits.max_bytes) {
    return Status::Invalid("a push of " + std::to_string(bytes) + " bytes exceeds the limit of " +
                           std::to_string(limits.max_bytes) + " (docs/protocol.md \"Limits\")");
  }
  size_t ops = 0, txns = 0;
  // Transactions are applied or refused whole: one is collected, then decided. The first `n`
  // slots of `txn` hold it; they are assigned over, not reallocated, from one to the next.
  std::vector<Op> txn;
  size_t n = 0;
  Status verdict;
  auto finish_txn = [&]() -> Status {
    if (n == 0) return Status::OK();
    if (verdict.ok() && judge != nullptr) CAIRN_RETURN_IF_ERROR(judge->Judge(txn, n, &verdict));
    CAIRN_RETURN_IF_ERROR(on_txn(txn, n, verdict));
    if (verdict.ok()) {
      for (size_t i = 0; i < n; i++) sort->max_hlc = std::max(sort->max_hlc, txn[i].id.hlc);
      sort->applied += n;
    }
    n = 0;
    verdict = Status::OK();
    return Status::OK();
  };
  admission::OriginSeq seqs(origin, before);
  protocol::DecodeLimits decode;
  decode.values = protocol::ValueCheck::kByCaller;  // a bad value refuses its transaction only
  CAIRN_RETURN_IF_ERROR(protocol::DecodeBatch(batch, decode, [&](const Op& op) -> Status {
    if (op.id.origin != origin) {
      return Status::Invalid("op of origin " + op.id.origin.Hex() +
                             " pushed by replica " + origin.Hex() +
                             ": a replica pushes only its own ops");
    }
    if (!op.continues_txn) txns++;
    if (++ops > limits.max_ops && txns > 1) {
      return Status::Invalid("a push of more than " + std::to_string(limits.max_ops) +
                             " ops holds more than one transaction (docs/protocol.md \"Limits\")");
    }
    if (!op.continues_txn) CAIRN_RETURN_IF_ERROR(finish_txn());
    CAIRN_ASSIGN_OR_RETURN(admission::Seq seq, seqs.Next(op.id.seq));
    if (seq == admission::Seq::kDuplicate) {
      if (sort->duplicates++ == 0) sort->dup_low = op.id.seq;
      if (op.id.seq >= sort->dup_high) sort->dup_high_hlc = op.id.hlc;
      sort->dup_high = std::max(sort->dup_high, op.id.seq);
      return Status::OK();
    }
    if (verdict.ok()) {
      verdict = ValidateValue(op.value);
      if (verdict.ok()) verdict = admit(op);  // (first: a write the token may not make is EPERM)
      if (verdict.ok() && op.id.hlc < limits.horizon) {
        // Below it the state is folded: the op cannot be merged by the rules any more.
        verdict = Status(Code::kEEXPIRED, "op stamped " + std::to_string(HlcPhysical(op.id.hlc)) +
                                              " ms, before the server's history horizon (" +
                                              std::to_string(HlcPhysical(limits.horizon)) +
                                              " ms): docs/crdt-semantics.md \"History horizon\"");
      }
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
  sort->through = seqs.through_after();  // the last seq accepted or refused, else `before`
  return Status::OK();
}

Status FinishPush(
    const ReplicaId& origin, const PushSort& sort,
    const std::function<Result<std::optional<Hlc>>(uint64_t seq)>& op_hlc,
    const std::function<Status(uint64_t low, uint64_t high, std::vector<Refused>* out)>& refused_in,
    PushResult* result) {
  result->applied = sort.applied;
  result->duplicates = sort.duplicates;
  result->through = sort.through;
  if (sort.duplicates == 0) return Status::OK();
  // Checked while the log holds the op (docs/protocol.md "Restored replicas").
  CAIRN_ASSIGN_OR_RETURN(std::optional<Hlc> ours, op_hlc(sort.dup_high));
  CAIRN_RETURN_IF_ERROR(CheckFork(origin, sort, ours));
  // A retry after a lost Ack: what was refused then is reported again, up to the receipt
  // before this push (not only up to the last duplicate: the Ack's receipt tells the client
  // that every seq up to it was taken but those reported refused).
  std::vector<Refused> earlier;
  CAIRN_RETURN_IF_ERROR(refused_in(sort.dup_low, sort.before, &earlier));
  result->repeated = earlier.size();
  result->refused.insert(result->refused.begin(), std::make_move_iterator(earlier.begin()),
                         std::make_move_iterator(earlier.end()));
  return Status::OK();
}

Refused RefusalOf(const std::vector<Op>& txn, size_t n, const Status& verdict) {
  // Bounded: a reason names a document (its key) and channels (from its values), and an Ack
  // lists many (SplitAck).
  std::string reason(Utf8Prefix(verdict.message(), kMaxReasonBytes));
  return Refused{txn.front().id.seq, txn[n - 1].id.seq, verdict.code(), std::move(reason)};
}

std::vector<AckPart> SplitAck(const std::vector<Refused>& refused, uint64_t through,
                              size_t budget) {
  std::vector<AckPart> parts;
  size_t begin = 0;
  do {
    size_t end = begin, bytes = 0;
    while (end < refused.size()) {
      const size_t more = refused[end].reason.size() + 48;  // seqs, code, tables' overhead
      if (end > begin && bytes + more > budget) break;
      bytes += more;
      end++;
    }
    parts.push_back(
        AckPart{end < refused.size() ? refused[end].first_seq - 1 : through, begin, end});
    begin = end;
  } while (begin < refused.size());
  return parts;
}

Status CheckFork(const ReplicaId& origin, const PushSort& sort, std::optional<Hlc> ours) {
  if (sort.duplicates == 0) return Status::OK();
  return admission::CheckFork(origin, sort.dup_high, sort.dup_high_hlc, ours);
}

Result<std::optional<Hlc>> FindOpHlc(std::string_view batch_frame, const ReplicaId& origin,
                                     uint64_t seq) {
  std::optional<Hlc> hlc;
  CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(batch_frame, "log entry", [&](const Op& op) {
    if (op.id.origin == origin && op.id.seq == seq) hlc = op.id.hlc;
    return Status::OK();
  }));
  return hlc;
}

bool IsPostgresUrl(std::string_view s) {
  return s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0;
}

namespace {

// Which backend `options` names: false for SQLite (no URL), true for PostgreSQL; EINVAL for
// another URL, or a PostgreSQL one when this build has no libpq. The one place the choice is
// made, for the server store and the telemetry tables alike.
Result<bool> UsesPostgres(const ServerStoreOptions& options) {
  if (options.url.empty()) return false;
  if (!IsPostgresUrl(options.url)) {
    return Status::Invalid("the store '" + options.url +
                           "' is not a PostgreSQL URL (postgresql://...)");
  }
#ifdef CAIRN_HAVE_POSTGRESQL
  return true;
#else
  return Status::Invalid("this cairn-server was built without PostgreSQL support (libpq)");
#endif
}

}  // namespace

Result<std::unique_ptr<ServerStore>> ServerStore::Open(const std::string& path,
                                                       const ServerStoreOptions& options) {
  CAIRN_ASSIGN_OR_RETURN(bool postgres, UsesPostgres(options));
#ifdef CAIRN_HAVE_POSTGRESQL
  if (postgres) return OpenPgServerStore(path, options);
#endif
  (void)postgres;
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<SqliteServerStore> s,
                         SqliteServerStore::Open(path, options));
  return std::unique_ptr<ServerStore>(std::move(s));
}

Result<std::unique_ptr<StreamSink>> OpenStreamSink(const ServerStoreOptions& options,
                                                   const std::string& sqlite_path) {
  CAIRN_ASSIGN_OR_RETURN(bool postgres, UsesPostgres(options));
#ifdef CAIRN_HAVE_POSTGRESQL
  if (postgres) return OpenPgStreamTables(options.url);
#endif
  (void)postgres;
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<StreamTables> t, StreamTables::Open(sqlite_path));
  return std::unique_ptr<StreamSink>(std::move(t));
}

Result<std::unique_ptr<SqliteServerStore>> SqliteServerStore::Open(
    const std::string& path, const ServerStoreOptions& options, const ReplicaId* id) {
  std::unique_ptr<SqliteServerStore> s(new SqliteServerStore());
  s->options_ = options;
  s->clock_source_ = options.clock ? options.clock : Clock::System();
  s->clock_ = std::make_unique<HybridClock>(s->clock_source_);
  ReplicaId new_id;
  if (id != nullptr) {
    new_id = *id;
  } else {
    CAIRN_RETURN_IF_ERROR(port::SecureRandom(new_id.bytes.data(), new_id.bytes.size()));
  }
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
  {
    // (Added with the history horizon: a file of an earlier version gets the column here.)
    CAIRN_ASSIGN_OR_RETURN(
        store::Stmt has,
        db->Prepare(
            "SELECT 1 FROM pragma_table_info('cairn_server_meta') WHERE name = 'horizon_cursor'"));
    CAIRN_ASSIGN_OR_RETURN(bool has_column, has.Step());
    if (!has_column) {
      CAIRN_RETURN_IF_ERROR(db->Exec(
          "BEGIN IMMEDIATE;"
          "ALTER TABLE cairn_server_meta ADD COLUMN horizon_cursor INTEGER NOT NULL DEFAULT 0;"
          "ALTER TABLE cairn_server_meta ADD COLUMN folded INTEGER NOT NULL DEFAULT 0;"
          "COMMIT;"));
    }
    CAIRN_ASSIGN_OR_RETURN(store::Stmt st,
                           db->Prepare("SELECT horizon_cursor, folded FROM cairn_server_meta"));
    CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) {
      s->horizon_cursor_ = U(st.Int(0));
      s->folded_ = st.Int(1) != 0;
    }
  }
  CAIRN_ASSIGN_OR_RETURN(s->put_log_, db->Prepare(
      "INSERT INTO cairn_server_log(cursor, origin, first_seq, last_seq, op_count, batch) "
      "VALUES (?,?,?,?,?,?)"));
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

Result<PushResult> SqliteServerStore::ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                                                const PushLimits& limits, const AdmitFn& admit,
                                                TxnJudge* judge, const PushExtras* extras) {
  const WriteKey* key = extras != nullptr && extras->key ? &*extras->key : nullptr;
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  PushResult result;
  const uint64_t before = store_->Through(origin);
  protocol::BatchEncoder accepted;
  PushSort sort;
  PushLimits within = limits;
  within.horizon = std::max(limits.horizon, store_->horizon());
  CAIRN_RETURN_IF_ERROR(SortPush(
      origin, batch, before, within, admit, judge,
      [&](const std::vector<Op>& txn, size_t n, const Status& verdict) -> Status {
        if (!verdict.ok()) {
          Refused r = RefusalOf(txn, n, verdict);
          put_refused_.BindBlob(1, origin.Bytes());
          put_refused_.BindInt(2, I(r.first_seq));
          put_refused_.BindInt(3, I(r.last_seq));
          put_refused_.BindInt(4, static_cast<int64_t>(r.code));
          put_refused_.BindText(5, r.reason);
          put_refused_.BindInt(6, clock_source_->NowMs());
          CAIRN_RETURN_IF_ERROR(put_refused_.Run());
          result.refused.push_back(std::move(r));
          return Status::OK();
        }
        for (size_t i = 0; i < n; i++) {
          accepted.Add(txn[i]);
          CAIRN_RETURN_IF_ERROR(store_->Apply(txn[i], /*local=*/false));
        }
        return Status::OK();
      },
      &sort));
  CAIRN_RETURN_IF_ERROR(FinishPush(
      origin, sort, [&](uint64_t seq) { return OpHlc(origin, seq); },
      [&](uint64_t low, uint64_t high, std::vector<Refused>* out) {
        find_refused_.BindBlob(1, origin.Bytes());
        find_refused_.BindInt(2, I(low));
        find_refused_.BindInt(3, I(high));
        return find_refused_.ForEachRow([&] {
          out->push_back(Refused{U(find_refused_.Int(0)), U(find_refused_.Int(1)),
                                 static_cast<Code>(find_refused_.Int(2)),
                                 std::string(find_refused_.Text(3))});
          return Status::OK();
        });
      },
      &result));
  if (sort.through > before) {
    // The log entry accounts for every seq received, refused ones included (they are absent
    // from its batch: receivers get them as covered, docs/protocol.md "Coverage").
    CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, sort.through));
    if (judge != nullptr) accepted.SetMoves(judge->Moves());
    flatbuffers::FlatBufferBuilder fbb(accepted.ops_bytes() + 1024);
    accepted.Finish(&fbb);
    CAIRN_RETURN_IF_ERROR(LogStaged(
        0, origin, before + 1, sort.through, sort.applied,
        std::string_view(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()),
        sort.max_hlc));
    if (key != nullptr) {
      result.cursor = staged_.cursor;
      CAIRN_RETURN_IF_ERROR(KeepWriteKey(*key, result));
    }
    CAIRN_RETURN_IF_ERROR(CommitStaged());
  } else {
    store_->Rollback();  // nothing new: a retry after a lost Ack
  }
  result.cursor = head_;
  return result;
}

Status SqliteServerStore::KeepWriteKey(const WriteKey& key, const PushResult& result) {
  const int64_t now = clock_source_->NowMs();
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt prune,
      store_->db()->Prepare("DELETE FROM cairn_server_idempotency WHERE at_ms < ?"));
  prune.BindInt(1, now - kWriteKeyWindowMs);
  CAIRN_RETURN_IF_ERROR(prune.Run());
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt put,
      store_->db()->Prepare(
          "INSERT OR IGNORE INTO cairn_server_idempotency VALUES (?,?,?,?,?,?,?)"));
  const Refused* refused = result.refused.empty() ? nullptr : &result.refused.front();
  put.BindText(1, key.subject);
  put.BindText(2, key.key);
  put.BindBlob(3, key.request);
  put.BindInt(4, I(result.cursor));
  put.BindInt(5, refused ? static_cast<int64_t>(refused->code) : 0);
  put.BindText(6, refused ? refused->reason : std::string());
  put.BindInt(7, now);
  CAIRN_RETURN_IF_ERROR(put.Run());
  if (store_->db()->Changes() == 0) {
    return Status(Code::kEBUSY, "the Idempotency-Key is kept already");
  }
  return Status::OK();
}

Result<std::optional<KeptWrite>> SqliteServerStore::FindWrite(const std::string& subject,
                                                              const std::string& key) {
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt find,
      store_->db()->Prepare("SELECT request, cursor, code, reason FROM cairn_server_idempotency "
                            "WHERE subject = ? AND key = ? AND at_ms >= ?"));
  find.BindText(1, subject);
  find.BindText(2, key);
  find.BindInt(3, clock_source_->NowMs() - kWriteKeyWindowMs);
  CAIRN_ASSIGN_OR_RETURN(bool row, find.Step());
  if (!row) return std::optional<KeptWrite>();
  KeptWrite kept;
  kept.request = std::string(find.Blob(0));
  kept.cursor = U(find.Int(1));
  kept.code = CodeFromInt(static_cast<int>(find.Int(2)));
  kept.reason = std::string(find.Text(3));
  return std::optional<KeptWrite>(std::move(kept));
}

Status SqliteServerStore::ReadRefused(uint64_t after, uint64_t upto, size_t max_rows,
                                      const std::function<Status(const RefusalEntry&)>& fn) {
  // From the log's entries (the cursor), each refusal of its origin within its seqs: an
  // index lookup per entry.
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt st,
      store_->db()->Prepare(
          "SELECT l.cursor, l.origin, r.first_seq, r.last_seq, r.code, r.reason, r.at_ms, "
          "p.subject "
          "FROM cairn_server_log l JOIN cairn_server_refused r ON r.origin = l.origin "
          "AND r.first_seq >= l.first_seq AND r.first_seq <= l.last_seq "
          "LEFT JOIN cairn_server_replicas p ON p.replica_id = l.origin "
          "WHERE l.cursor > ? AND l.cursor <= ? ORDER BY l.cursor, r.first_seq LIMIT ?"));
  st.BindInt(1, I(after));
  st.BindInt(2, I(upto));
  st.BindInt(3, static_cast<int64_t>(std::min<uint64_t>(max_rows, INT64_MAX)));
  return st.ForEachRow([&] {
    RefusalEntry e;
    e.cursor = U(st.Int(0));
    std::string_view origin = st.Blob(1);
    ReplicaId::FromBytes(origin.data(), origin.size(), &e.origin);
    e.refused = Refused{U(st.Int(2)), U(st.Int(3)), CodeFromInt(static_cast<int>(st.Int(4))),
                        std::string(st.Text(5))};
    e.at_ms = st.Int(6);
    if (!st.IsNull(7)) e.subject = std::string(st.Text(7));
    return fn(e);
  });
}

Status SqliteServerStore::LogStaged(uint64_t cursor, const ReplicaId& origin,
                                    uint64_t first_seq, uint64_t last_seq, uint64_t op_count,
                                    std::string_view batch, Hlc max_hlc) {
  if (cursor == 0) {
    put_log_.BindNull(1);
  } else {
    put_log_.BindInt(1, I(cursor));
  }
  put_log_.BindBlob(2, origin.Bytes());
  put_log_.BindInt(3, I(first_seq));
  put_log_.BindInt(4, I(last_seq));
  put_log_.BindInt(5, I(op_count));
  put_log_.BindStaticBlob(6, batch);
  CAIRN_RETURN_IF_ERROR(put_log_.Run());
  staged_.cursor = U(store_->db()->LastInsertRowid());
  staged_.floor = floor_;
  staged_.log_ops = log_ops_ + op_count;
  CAIRN_RETURN_IF_ERROR(TrimLog(&staged_.floor, &staged_.log_ops));
  clock_->Observe(max_hlc);  // accepted ops only: a refused clock does not drag the server's
  return Status::OK();
}

Status SqliteServerStore::CommitStaged() {
  KillPoint("server.push.before_commit");
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  head_ = staged_.cursor;
  floor_ = staged_.floor;
  log_ops_ = staged_.log_ops;
  return Status::OK();
}

void SqliteServerStore::AbortStaged() {
  if (store_->in_transaction()) store_->Rollback();
}

Status SqliteServerStore::AppendEntry(const LogEntry& e) {
  CAIRN_RETURN_IF_ERROR(StageEntry(e));
  return CommitStaged();
}

Status SqliteServerStore::InstallCheckpoint(
    uint64_t cursor, const std::map<ReplicaId, uint64_t>& receipts,
    const std::function<Status(const std::function<Status(const Op&)>&)>& for_each_op) {
  if (cursor <= head_) {
    return Status::Corrupt("checkpoint at cursor " + std::to_string(cursor) +
                           " is not past the head " + std::to_string(head_));
  }
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  Hlc max_hlc = 0;
  CAIRN_RETURN_IF_ERROR(for_each_op([&](const Op& op) -> Status {
    max_hlc = std::max(max_hlc, op.id.hlc);
    return store_->ApplyIdempotent(op);
  }));
  for (const auto& [origin, through] : receipts) {
    if (through > store_->Through(origin)) {
      CAIRN_RETURN_IF_ERROR(store_->SetThrough(origin, through));
    }
  }
  CAIRN_ASSIGN_OR_RETURN(store::Stmt clear, store_->db()->Prepare(
      "DELETE FROM cairn_server_log"));
  CAIRN_RETURN_IF_ERROR(clear.Run());
  CAIRN_ASSIGN_OR_RETURN(store::Stmt meta,
                         store_->db()->Prepare("UPDATE cairn_server_meta SET floor = ?"));
  meta.BindInt(1, I(cursor));
  CAIRN_RETURN_IF_ERROR(meta.Run());
  clock_->Observe(max_hlc);
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  head_ = floor_ = cursor;
  log_ops_ = 0;
  return Status::OK();
}

Status SqliteServerStore::StageEntry(const LogEntry& e) {
  if (e.cursor <= head_) {
    return Status::Corrupt("log entry " + std::to_string(e.cursor) + " is not past the head " +
                           std::to_string(head_));
  }
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  Status st = [&]() -> Status {
    const std::string entry = "log entry " + std::to_string(e.cursor);
    // An entry declares the seqs first_seq..last_seq of its origin (the refused ones absent) and
    // continues exactly where this node's copy of the origin ends.
    admission::OriginSeq seqs(e.origin, store_->Through(e.origin));
    if (e.first_seq == 0 || e.last_seq < e.first_seq ||
        !seqs.Declare(e.first_seq - 1, e.last_seq).ok() ||
        seqs.declared_from() != seqs.through()) {
      return Status::Corrupt(entry + " covers seqs " + std::to_string(e.first_seq) + ".." +
                             std::to_string(e.last_seq) + " of " + e.origin.Hex() +
                             ", which has " + std::to_string(seqs.through()));
    }
    uint64_t ops = 0;
    Hlc max_hlc = 0;
    CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(e.batch, "log entry", [&](const Op& op) {
      if (op.id.origin != e.origin) return Status::Corrupt(entry + " holds a foreign op");
      CAIRN_RETURN_IF_ERROR(seqs.Next(op.id.seq).status().WithContext(entry));
      ops++;
      max_hlc = std::max(max_hlc, op.id.hlc);
      return store_->Apply(op, /*local=*/false);
    }));
    CAIRN_RETURN_IF_ERROR(store_->SetThrough(e.origin, e.last_seq));
    return LogStaged(e.cursor, e.origin, e.first_seq, e.last_seq, ops, e.batch, max_hlc);
  }();
  if (!st.ok()) AbortStaged();
  return st;
}

Status SqliteServerStore::FoldHistory(Hlc horizon) {
  if (horizon <= store_->horizon()) return Status::OK();
  CAIRN_RETURN_IF_ERROR(store_->Begin());
  store::RollbackUnlessCommitted guard(store_.get());
  CAIRN_ASSIGN_OR_RETURN(store::ReplicaStore::FoldStats stats, store_->FoldHistory(horizon));
  const bool folded =
      folded_ || stats.increments > 0 || stats.tombstones > 0 || stats.deletes_cleared > 0;
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt st,
      store_->db()->Prepare("UPDATE cairn_server_meta SET horizon_cursor = ?, folded = ?"));
  st.BindInt(1, I(head_));
  st.BindInt(2, folded ? 1 : 0);
  CAIRN_RETURN_IF_ERROR(st.Run());
  CAIRN_RETURN_IF_ERROR(store_->Commit(clock_->last()));
  horizon_cursor_ = head_;
  folded_ = folded;
  return Status::OK();
}

Status SqliteServerStore::Maintain() {
  const int64_t keep = options_.history_horizon_ms;
  if (keep <= 0) return Status::OK();
  const int64_t at = clock_source_->NowMs() - keep;
  if (at <= 0) return Status::OK();
  // Raised a step at a time (1/720 of the horizon: an hour for 30 days), not at every tick:
  // each fold scans the state.
  const int64_t step = std::max<int64_t>(keep / 720, 1000);
  const Hlc now_horizon = MakeHlc(static_cast<uint64_t>(at), 0);
  const Hlc current = store_->horizon();
  if (current != 0 && now_horizon < current + MakeHlc(static_cast<uint64_t>(step), 0)) {
    return Status::OK();
  }
  return FoldHistory(now_horizon);
}

Status SqliteServerStore::TrimLog(uint64_t* floor, uint64_t* log_ops) {
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

Status SqliteServerStore::ReadLog(uint64_t after, size_t max_rows,
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

Result<std::optional<Hlc>> SqliteServerStore::OpHlc(const ReplicaId& origin, uint64_t seq) {
  CAIRN_ASSIGN_OR_RETURN(store::Stmt st, store_->db()->Prepare(
      "SELECT batch FROM cairn_server_log WHERE origin = ? AND last_seq >= ? AND first_seq <= ? "
      "ORDER BY last_seq LIMIT 1"));
  st.BindBlob(1, origin.Bytes());
  st.BindInt(2, I(seq));
  st.BindInt(3, I(seq));
  CAIRN_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<Hlc>();
  return FindOpHlc(st.Blob(0), origin, seq);
}

Status SqliteServerStore::BindReplica(const ReplicaId& replica, const std::string& subject) {
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

Result<std::string> SqliteServerStore::ReplicaView(const ReplicaId& replica) {
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt find,
      store_->db()->Prepare("SELECT record FROM cairn_server_views WHERE replica_id = ?"));
  find.BindBlob(1, replica.Bytes());
  CAIRN_ASSIGN_OR_RETURN(bool row, find.Step());
  return row ? std::string(find.Text(0)) : std::string();
}

Status SqliteServerStore::SetReplicaView(const ReplicaId& replica, const std::string& record) {
  CAIRN_ASSIGN_OR_RETURN(
      store::Stmt put,
      store_->db()->Prepare("INSERT OR REPLACE INTO cairn_server_views VALUES (?,?,?)"));
  put.BindBlob(1, replica.Bytes());
  put.BindText(2, record);
  put.BindInt(3, clock_source_->NowMs());
  return put.Run();
}

}  // namespace cairn::server
