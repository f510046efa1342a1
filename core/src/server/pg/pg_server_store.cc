#include "server/pg/pg_server_store.h"

#include <algorithm>
#include <vector>

#include "base/strings.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "server/pg/pg.h"
#include "server/pg/pg_data_tables.h"

namespace cairn::server {

namespace {

// docs/storage-format.md, "PostgreSQL server store". Created under an advisory lock so that
// nodes starting together do not race.
const char* const kSchema = R"sql(
BEGIN;
SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1);
CREATE TABLE IF NOT EXISTS cairn_meta(
  id integer PRIMARY KEY CHECK (id = 1), server_id bytea NOT NULL, head bigint NOT NULL,
  format integer NOT NULL, floor bigint NOT NULL DEFAULT 0, log_ops bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cairn_checkpoints(cursor bigint PRIMARY KEY, made_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS cairn_checkpoint_ops(
  cursor bigint NOT NULL, part bigint NOT NULL, batch bytea NOT NULL, PRIMARY KEY (cursor, part));
CREATE TABLE IF NOT EXISTS cairn_checkpoint_receipts(
  cursor bigint NOT NULL, origin bytea NOT NULL, through bigint NOT NULL,
  PRIMARY KEY (cursor, origin));
CREATE TABLE IF NOT EXISTS cairn_log(
  cursor bigint PRIMARY KEY, origin bytea NOT NULL, first_seq bigint NOT NULL,
  last_seq bigint NOT NULL, op_count bigint NOT NULL, batch bytea NOT NULL);
CREATE INDEX IF NOT EXISTS cairn_log_origin ON cairn_log(origin, last_seq);
CREATE TABLE IF NOT EXISTS cairn_receipts(origin bytea PRIMARY KEY, through bigint NOT NULL);
CREATE TABLE IF NOT EXISTS cairn_refused(
  origin bytea NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL,
  code bigint NOT NULL, reason bytea NOT NULL, at_ms bigint NOT NULL,
  PRIMARY KEY (origin, first_seq));
CREATE TABLE IF NOT EXISTS cairn_replicas(
  replica_id bytea PRIMARY KEY, subject text NOT NULL, first_seen_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS cairn_views(
  replica_id bytea PRIMARY KEY, record text NOT NULL, at_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS cairn_idempotency(
  subject text NOT NULL, key text NOT NULL, request bytea NOT NULL, cursor bigint NOT NULL,
  code bigint NOT NULL, reason bytea NOT NULL, at_ms bigint NOT NULL,
  PRIMARY KEY (subject, key));
CREATE INDEX IF NOT EXISTS cairn_idempotency_at ON cairn_idempotency(at_ms);
CREATE TABLE IF NOT EXISTS cairn_inbox(
  id bigserial PRIMARY KEY, op text NOT NULL, collection text NOT NULL, key text NOT NULL,
  fields jsonb, field text, delta bigint,
  created_ms bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
  claimed_by bytea, claimed_ms bigint, applied_cursor bigint, refused text, done_ms bigint);
CREATE INDEX IF NOT EXISTS cairn_inbox_todo ON cairn_inbox(id)
  WHERE applied_cursor IS NULL AND refused IS NULL;
-- format 1 databases: the columns of format 2
ALTER TABLE cairn_meta ADD COLUMN IF NOT EXISTS floor bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS log_ops bigint NOT NULL DEFAULT 0;
-- the SQL tables of the documents (pg_data_tables.h) show the state at this cursor
ALTER TABLE cairn_meta ADD COLUMN IF NOT EXISTS data_cursor bigint NOT NULL DEFAULT 0;
-- whether there are SQL tables (cairn-server --sql-tables: every node follows it)
ALTER TABLE cairn_meta ADD COLUMN IF NOT EXISTS data_tables boolean NOT NULL DEFAULT true;
UPDATE cairn_meta SET format = 2,
  log_ops = (SELECT coalesce(sum(op_count), 0) FROM cairn_log) WHERE format < 2;
COMMIT;
)sql";

// 1: the log, receipts, refusals, bindings; 2: checkpoints, cairn_meta.floor and log_ops.
constexpr int kFormat = 2;
// A part of a checkpoint: at most this many ops, and about this many bytes (a part is one
// frame, read back with the default frame limit).
constexpr size_t kCheckpointPartOps = 4096;
constexpr size_t kCheckpointPartBytes = 4u << 20;
constexpr int kCatchUpRows = 32;  // log entries read per query while catching up (each up to
                                  // a batch of 8,192 ops)

using store::U;

// A failure of the server's own (its copy, its database) met during a push, which the client
// must not take for a fault of its push (EINVAL, ECORRUPT are that): EINTERNAL.
Status AsServerError(const Status& s) {
  if (s.code() != Code::kEINVAL && s.code() != Code::kECORRUPT) return s;
  return Status::Internal(s.message());
}

ReplicaId IdFrom(std::string_view bytes) {
  ReplicaId id;
  ReplicaId::FromBytes(bytes.data(), bytes.size(), &id);
  return id;
}

class PgServerStore final : public ServerStore {
 public:
  static Result<std::unique_ptr<ServerStore>> Open(const std::string& path,
                                                   const ServerStoreOptions& options);
  const ReplicaId& id() const override { return copy_->id(); }
  uint64_t head() const override { return copy_->head(); }
  uint64_t floor() const override { return copy_->floor(); }
  int64_t NowMs() override { return copy_->NowMs(); }
  Hlc MaxHlc() const override { return copy_->MaxHlc(); }
  Result<PushResult> ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                               const PushLimits& limits, const AdmitFn& admit, TxnJudge* judge,
                               const PushExtras* extras) override;
  Result<std::vector<InboxRow>> ClaimInbox(const std::string& claimer, size_t max) override;
  Status RefuseInbox(int64_t id, const std::string& claimer, const std::string& reason) override;
  Result<std::optional<KeptWrite>> FindWrite(const std::string& subject,
                                             const std::string& key) override;
  Status ReadRefused(uint64_t after, uint64_t upto, size_t max_rows,
                     const std::function<Status(const RefusalEntry&)>& fn) override;
  Status ReadLog(uint64_t after, size_t max_rows,
                 const std::function<Status(const LogEntry&)>& fn) override {
    return copy_->ReadLog(after, max_rows, fn);
  }
  Result<std::optional<Hlc>> OpHlc(const ReplicaId& origin, uint64_t seq) override;
  store::ReplicaStore* state() override { return copy_->state(); }
  Status BindReplica(const ReplicaId& replica, const std::string& subject) override;
  Result<std::string> ReplicaView(const ReplicaId& replica) override;
  Status SetReplicaView(const ReplicaId& replica, const std::string& record) override;
  Status CatchUp() override;
  Status Maintain() override;
  int notify_socket() const override { return listen_ && listen_->ok() ? listen_->socket() : -1; }
  Result<bool> TakeNotifications() override;
  Status Relisten() override;

 private:
  // The connection for statements, reconnected (and checked) when it broke.
  Result<pg::Conn*> Db();
  // EINVAL unless the database is the one this node's copy was taken from, at or past it.
  Status CheckDatabase(pg::Conn* db);
  // Takes the log entries after the copy's head, up to cursor `upto`, into the copy.
  Status TakeIn(pg::Conn* db, uint64_t upto, bool in_push = false);
  // Writes a checkpoint of the copy's state at its head (unless one as new exists) and trims
  // the log to --keep-log ops, never past the newest checkpoint; one node at a time.
  Status Checkpoint();
  // Installs the newest checkpoint into the copy when the log no longer reaches its head.
  Status LoadCheckpoint(pg::Conn* db);
  Result<std::optional<Hlc>> OpHlcIn(pg::Conn* db, const ReplicaId& origin, uint64_t seq);

  ServerStoreOptions options_;
  std::unique_ptr<pg::Conn> db_, listen_;
  std::string channel_;  // NOTIFY channel: "cairn_" + the server id in hex
  std::unique_ptr<SqliteServerStore> copy_;
  std::string path_;             // of the copy
  // Brings the SQL tables of the documents (data_) up to the log's head when they are behind
  // it (a database of an earlier version, or entries of a node of one), under the head's lock.
  Status SyncData();
  // At Open: cairn-server --sql-tables (docs/backend.md "SQL tables"), the database's setting,
  // which every node follows, changed when `set` (off drops the tables, on has SyncData write
  // them whole); their schema made when they are on.
  Status PrepareSqlTables(std::optional<bool> set);
  Status RefuseInboxIn(pg::Conn* db, int64_t id, const std::string& claimer,
                       const std::string& reason);

  bool checkpoint_due_ = false;  // a push of this node took the log past the mark
  std::unique_ptr<pg::DataTables> data_;
  bool data_due_ = true;         // the SQL tables may be behind the log (SyncData)
  int64_t keys_pruned_ms_ = 0;   // when Maintain last forgot the expired write keys
};

Result<std::unique_ptr<ServerStore>> PgServerStore::Open(const std::string& path,
                                                         const ServerStoreOptions& options) {
  std::unique_ptr<PgServerStore> s(new PgServerStore());
  s->options_ = options;
  CAIRN_ASSIGN_OR_RETURN(s->db_, pg::Conn::Connect(options.url));
  // The tables, when missing (making them needs CREATE on the schema; using them does not).
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows made,
      s->db_->Exec("SELECT (to_regclass('cairn_inbox') IS NOT NULL AND EXISTS (SELECT 1 "
                   "FROM information_schema.columns WHERE table_schema = current_schema() "
                   "AND table_name = 'cairn_meta' AND column_name = 'data_tables'))::int::bigint"));
  if (made.size() != 1 || made.Int(0, 0) == 0) {
    CAIRN_RETURN_IF_ERROR(s->db_->ExecScript(kSchema));
  }
  ReplicaId new_id;
  CAIRN_RETURN_IF_ERROR(port::SecureRandom(new_id.bytes.data(), new_id.bytes.size()));
  CAIRN_RETURN_IF_ERROR(
      s->db_
          ->Exec("INSERT INTO cairn_meta(id, server_id, head, format) VALUES (1, $1, 0, $2) "
                 "ON CONFLICT (id) DO NOTHING",
                 {pg::Param::Bytes(new_id.Bytes()), pg::Param(int64_t{kFormat})})
          .status());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows meta,
                         s->db_->Exec("SELECT server_id, head, format::bigint FROM cairn_meta"));
  if (meta.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
  if (meta.Int(0, 2) > kFormat) {
    return Status(Code::kEVERSION, "PostgreSQL: the database's format " +
                                       std::to_string(meta.Int(0, 2)) + " is newer than " +
                                       std::to_string(kFormat));
  }
  const ReplicaId server_id = IdFrom(meta.Bytes(0, 0));
  ServerStoreOptions copy_options = options;
  copy_options.url.clear();
  CAIRN_ASSIGN_OR_RETURN(s->copy_, SqliteServerStore::Open(path, copy_options, &server_id));
  s->path_ = path;
  CAIRN_RETURN_IF_ERROR(s->CheckDatabase(s->db_.get()));
  s->channel_ = "cairn_" + server_id.Hex();
  CAIRN_RETURN_IF_ERROR(s->Relisten());
  CAIRN_RETURN_IF_ERROR(s->CatchUp());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows schema, s->db_->Exec("SELECT current_schema()::text"));
  if (schema.size() != 1 || schema.IsNull(0, 0)) {
    return Status::Invalid("PostgreSQL: no current schema (search_path)");
  }
  const std::string store_schema(schema.Bytes(0, 0));
  const std::string data_schema = pg::DataTables::SchemaFor(store_schema);
  if (data_schema.size() > 63 || (store_schema != "public" && data_schema == "cairn_data")) {
    return Status::Invalid("PostgreSQL: the store's schema '" + store_schema +
                           "' cannot have its SQL tables in '" + data_schema +
                           "' (over 63 bytes, or public's): pick another schema name");
  }
  s->data_ = std::make_unique<pg::DataTables>(data_schema);
  CAIRN_RETURN_IF_ERROR(s->PrepareSqlTables(options.sql_tables));
  CAIRN_RETURN_IF_ERROR(s->SyncData());
  return std::unique_ptr<ServerStore>(std::move(s));
}

Status PgServerStore::Relisten() {
  listen_.reset();
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<pg::Conn> conn, pg::Conn::Connect(options_.url));
  CAIRN_RETURN_IF_ERROR(conn->ExecScript(("LISTEN " + QuoteIdent(channel_)).c_str()));
  listen_ = std::move(conn);
  return Status::OK();
}

Result<pg::Conn*> PgServerStore::Db() {
  if (db_ && db_->ok()) return db_.get();
  // A new connection: perhaps to a standby promoted since (a failover), which may lack the
  // last commits this node's copy has taken in. Checked before anything is served from it.
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, pg::Reconnected(&db_, options_.url));
  Status st = CheckDatabase(db);
  if (!st.ok()) {
    db_.reset();
    return st;
  }
  return db;
}

Status PgServerStore::CheckDatabase(pg::Conn* db) {
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows meta,
      db->Exec("SELECT server_id, head, (SELECT origin FROM cairn_log WHERE cursor = $1), "
               "(SELECT last_seq FROM cairn_log WHERE cursor = $1), floor FROM cairn_meta",
               {pg::Param(copy_->head())}));
  if (meta.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
  if (IdFrom(meta.Bytes(0, 0)) != copy_->id()) {
    return Status::Invalid("the file " + path_ + " belongs to server " + copy_->id().Hex() +
                           ", not to this database's server " + IdFrom(meta.Bytes(0, 0)).Hex() +
                           ": give each node a file of its own");
  }
  // The entry at the copy's head must be the database's (same origin, same seqs).
  bool same = copy_->head() == 0;
  if (!same && !meta.IsNull(0, 2)) {
    CAIRN_RETURN_IF_ERROR(copy_->ReadLog(copy_->head() - 1, 1, [&](const LogEntry& e) {
      same = e.cursor == copy_->head() && e.origin == IdFrom(meta.Bytes(0, 2)) &&
             e.last_seq == U(meta.Int(0, 3));
      return Status::OK();
    }));
    if (copy_->head() <= copy_->floor()) same = true;  // trimmed from the copy: not comparable
  }
  // Trimmed from the database (the node was down while the log moved on): not comparable; the
  // catch-up starts it from the newest checkpoint.
  if (copy_->head() <= U(meta.Int(0, 4))) same = true;
  if (copy_->head() > U(meta.Int(0, 1)) || !same) {
    return Status::Invalid(
        "the file " + path_ + " is at cursor " + std::to_string(copy_->head()) +
        ", which the database (at " + std::to_string(meta.Int(0, 1)) +
        ") does not have as this node does (restored from an older backup, or a standby that "
        "lacked the last commits promoted?): stop the node, move the file (and its -wal and "
        "-shm files) away, start it again: it rebuilds the file from the database");
  }
  return Status::OK();
}

Result<bool> PgServerStore::TakeNotifications() {
  if (!listen_ || !listen_->ok()) {
    return Status(Code::kENETWORK, "PostgreSQL: the notification connection is closed");
  }
  CAIRN_ASSIGN_OR_RETURN(int n, listen_->TakeNotifications());
  return n > 0;
}

Status PgServerStore::CatchUp() {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  Status st = TakeIn(db, static_cast<uint64_t>(INT64_MAX));
  if (st.code() == Code::kENETWORK && !db->ok()) {
    // The connection had broken since the last call (the database restarted, say): once more
    // on a new one (TakeIn goes on from what the copy has).
    CAIRN_ASSIGN_OR_RETURN(db, Db());
    st = TakeIn(db, static_cast<uint64_t>(INT64_MAX));
  }
  return st;
}

Result<std::vector<InboxRow>> PgServerStore::ClaimInbox(const std::string& claimer, size_t max) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  const int64_t now = NowMs();
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows rows,
      db->Exec("UPDATE cairn_inbox SET claimed_by = $1, claimed_ms = $2 WHERE id IN ("
               "SELECT id FROM cairn_inbox WHERE applied_cursor IS NULL AND refused IS NULL "
               "AND (claimed_ms IS NULL OR claimed_ms < $3) ORDER BY id LIMIT $4 "
               "FOR UPDATE SKIP LOCKED) "
               "RETURNING id, op, collection, key, fields::text, field, delta",
               {pg::Param::Bytes(claimer), pg::Param(now), pg::Param(now - kInboxClaimMs),
                pg::Param(static_cast<int64_t>(max))}));
  std::vector<InboxRow> out;
  for (int i = 0; i < rows.size(); i++) {
    InboxRow r;
    r.id = rows.Int(i, 0);
    r.op = std::string(rows.Bytes(i, 1));
    r.collection = std::string(rows.Bytes(i, 2));
    r.key = std::string(rows.Bytes(i, 3));
    if (!rows.IsNull(i, 4)) r.fields = std::string(rows.Bytes(i, 4));
    if (!rows.IsNull(i, 5)) r.field = std::string(rows.Bytes(i, 5));
    if (!rows.IsNull(i, 6)) r.delta = rows.Int(i, 6);
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(),
            [](const InboxRow& a, const InboxRow& b) { return a.id < b.id; });
  return out;
}

Status PgServerStore::RefuseInboxIn(pg::Conn* db, int64_t id, const std::string& claimer,
                                    const std::string& reason) {
  return db
      ->Exec(
          "UPDATE cairn_inbox SET refused = $2, done_ms = $3 WHERE id = $1 AND claimed_by = $4 "
          "AND applied_cursor IS NULL AND refused IS NULL",
          {pg::Param(id), pg::Param::Text(reason), pg::Param(NowMs()), pg::Param::Bytes(claimer)})
      .status();
}

Status PgServerStore::RefuseInbox(int64_t id, const std::string& claimer,
                                  const std::string& reason) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  return RefuseInboxIn(db, id, claimer, reason);
}

Result<std::optional<KeptWrite>> PgServerStore::FindWrite(const std::string& subject,
                                                          const std::string& key) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows rows,
                         db->Exec("SELECT request, cursor, code, reason FROM cairn_idempotency "
                                  "WHERE subject = $1 AND key = $2 AND at_ms >= $3",
                                  {pg::Param::Text(subject), pg::Param::Text(key),
                                   pg::Param(NowMs() - kWriteKeyWindowMs)}));
  if (rows.size() == 0) return std::optional<KeptWrite>();
  KeptWrite kept;
  kept.request = std::string(rows.Bytes(0, 0));
  kept.cursor = U(rows.Int(0, 1));
  kept.code = CodeFromInt(static_cast<int>(rows.Int(0, 2)));
  kept.reason = std::string(rows.Bytes(0, 3));
  return std::optional<KeptWrite>(std::move(kept));
}

Status PgServerStore::ReadRefused(uint64_t after, uint64_t upto, size_t max_rows,
                                  const std::function<Status(const RefusalEntry&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows rows,
      db->Exec("SELECT l.cursor, l.origin, r.first_seq, r.last_seq, r.code, r.reason, r.at_ms, "
               "p.subject "
               "FROM cairn_log l JOIN cairn_refused r ON r.origin = l.origin "
               "AND r.first_seq >= l.first_seq AND r.first_seq <= l.last_seq "
               "LEFT JOIN cairn_replicas p ON p.replica_id = l.origin "
               "WHERE l.cursor > $1 AND l.cursor <= $2 ORDER BY l.cursor, r.first_seq LIMIT $3",
               {pg::Param(after), pg::Param(upto),
                pg::Param(static_cast<int64_t>(std::min<uint64_t>(max_rows, INT64_MAX)))}));
  for (int i = 0; i < rows.size(); i++) {
    RefusalEntry e;
    e.cursor = U(rows.Int(i, 0));
    e.origin = IdFrom(rows.Bytes(i, 1));
    e.refused =
        Refused{U(rows.Int(i, 2)), U(rows.Int(i, 3)), CodeFromInt(static_cast<int>(rows.Int(i, 4))),
                std::string(rows.Bytes(i, 5))};
    e.at_ms = rows.Int(i, 6);
    if (!rows.IsNull(i, 7)) e.subject = std::string(rows.Bytes(i, 7));
    CAIRN_RETURN_IF_ERROR(fn(e));
  }
  return Status::OK();
}

Status PgServerStore::Maintain() {
  // The expired write keys, once a minute (FindWrite ignores them meanwhile).
  constexpr int64_t kPruneEveryMs = 60 * 1000;
  const int64_t now = NowMs();
  if (now - keys_pruned_ms_ >= kPruneEveryMs) {
    CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
    CAIRN_RETURN_IF_ERROR(db->Exec("DELETE FROM cairn_idempotency WHERE at_ms < $1",
                                   {pg::Param(now - kWriteKeyWindowMs)})
                              .status());
    keys_pruned_ms_ = now;
  }
  if (data_due_) CAIRN_RETURN_IF_ERROR(SyncData());
  if (!checkpoint_due_) return Status::OK();
  CAIRN_RETURN_IF_ERROR(Checkpoint());  // (still due after a failure: the next tick retries)
  checkpoint_due_ = false;
  return Status::OK();
}

Status PgServerStore::PrepareSqlTables(std::optional<bool> set) {
  pg::Conn* db = db_.get();
  pg::Txn txn(db);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  // (The head's lock: no push of another node writes the tables meanwhile, and each reads the
  // setting under it.)
  CAIRN_ASSIGN_OR_RETURN(pg::Rows meta,
                         db->Exec("SELECT data_tables::int::bigint FROM cairn_meta FOR UPDATE"));
  if (meta.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
  const bool was = meta.Int(0, 0) != 0, on = set.value_or(was);
  if (on) CAIRN_RETURN_IF_ERROR(data_->EnsureSchema(db));
  if (on == was) return txn.Commit();
  if (!on) {
    // Off: the tables go (they would show a state that no longer moves); the schema stays,
    // which an administrator may have made. A reader's lock is waited for 10 s at most.
    CAIRN_RETURN_IF_ERROR(db->ExecScript("SET LOCAL lock_timeout = '10s'"));
    CAIRN_ASSIGN_OR_RETURN(pg::Rows names,
                           db->Exec("SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
                                    {pg::Param::Text(data_->schema())}));
    for (int i = 0; i < names.size(); i++) {
      const std::string drop = "DROP TABLE " + QuoteIdent(data_->schema()) + "." +
                               QuoteIdent(std::string(names.Bytes(i, 0)));
      Status st = db->ExecScript(drop.c_str());
      if (!st.ok()) {
        return Status(st.code(), "PostgreSQL: turning the SQL tables off: " + st.message());
      }
    }
  }
  // On: data_cursor 0 makes SyncData write them whole.
  CAIRN_RETURN_IF_ERROR(
      db->Exec("UPDATE cairn_meta SET data_tables = $1::text::boolean, data_cursor = 0",
               {pg::Param::Text(on ? "true" : "false")})
          .status());
  return txn.Commit();
}

Status PgServerStore::SyncData() {
  CAIRN_RETURN_IF_ERROR(CatchUp());
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  pg::Txn txn(db);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows meta,
                         db->Exec("SELECT head, data_cursor, data_tables::int::bigint "
                                  "FROM cairn_meta FOR UPDATE"));
  if (meta.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
  const uint64_t head = U(meta.Int(0, 0)), shown = U(meta.Int(0, 1));
  // (With the tables on, their schema exists: the node that turned them on, or any node
  // starting while they are on, made it in PrepareSqlTables.)
  if (meta.Int(0, 2) != 0 && shown < head) {
    CAIRN_RETURN_IF_ERROR(TakeIn(db, head, /*in_push=*/true));
    if (copy_->head() != head) return Status(Code::kEBUSY, "the copy is behind the log");
    if (shown >= copy_->floor()) {
      // The documents of the entries after `shown`, each at the last entry that changed it.
      std::map<std::pair<std::string, std::string>, uint64_t> last;
      CAIRN_RETURN_IF_ERROR(copy_->ReadLog(shown, SIZE_MAX, [&](const LogEntry& e) {
        return protocol::DecodeBatchFrame(e.batch, "log entry", [&](const Op& op) {
          last[{op.collection, op.key}] = e.cursor;
          return Status::OK();
        });
      }));
      std::map<uint64_t, pg::DocRefs> by_cursor;
      for (auto& [doc, cursor] : last) by_cursor[cursor].insert(doc);
      for (const auto& [cursor, docs] : by_cursor) {
        CAIRN_RETURN_IF_ERROR(data_->Write(db, copy_->state(), docs, cursor));
      }
    } else {
      // What changed since is no longer in the log: every table rewritten.
      CAIRN_RETURN_IF_ERROR(data_->Rebuild(db, copy_->state(), head));
    }
    CAIRN_RETURN_IF_ERROR(
        db->Exec("UPDATE cairn_meta SET data_cursor = $1", {pg::Param(head)}).status());
  }
  CAIRN_RETURN_IF_ERROR(txn.Commit());
  data_due_ = false;
  return Status::OK();
}

Status PgServerStore::TakeIn(pg::Conn* db, uint64_t upto, bool in_push) {
  while (copy_->head() < upto) {
    CAIRN_ASSIGN_OR_RETURN(
        pg::Rows rows,
        db->Exec("SELECT cursor, origin, first_seq, last_seq, batch FROM cairn_log "
                 "WHERE cursor > $1 AND cursor <= $2 ORDER BY cursor LIMIT $3",
                 {pg::Param(copy_->head()), pg::Param(upto), pg::Param(int64_t{kCatchUpRows})}));
    if (rows.size() > 0 && U(rows.Int(0, 0)) != copy_->head() + 1) {
      // The entries after the copy's head were trimmed (a node down long, a new one): from the
      // newest checkpoint, outside any transaction (not in a push's: the push fails, EBUSY,
      // and its client retries once the catch-up did it).
      if (in_push) {
        return Status(Code::kEBUSY, "this node is catching up from a checkpoint");
      }
      const uint64_t before = copy_->head();
      CAIRN_RETURN_IF_ERROR(LoadCheckpoint(db));
      if (copy_->head() == before) {
        return Status::Corrupt("PostgreSQL: the log jumps from cursor " + std::to_string(before) +
                               " to " + std::to_string(rows.Int(0, 0)));
      }
      continue;
    }
    for (int i = 0; i < rows.size(); i++) {
      LogEntry e;
      e.cursor = U(rows.Int(i, 0));
      if (e.cursor != copy_->head() + 1) {
        return Status::Corrupt("PostgreSQL: the log jumps from cursor " +
                               std::to_string(copy_->head()) + " to " + std::to_string(e.cursor));
      }
      e.origin = IdFrom(rows.Bytes(i, 1));
      e.first_seq = U(rows.Int(i, 2));
      e.last_seq = U(rows.Int(i, 3));
      e.batch = rows.Bytes(i, 4);
      CAIRN_RETURN_IF_ERROR(copy_->AppendEntry(e));
    }
    if (rows.size() < kCatchUpRows) break;
  }
  return Status::OK();
}

Result<PushResult> PgServerStore::ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                                            const PushLimits& limits, const AdmitFn& admit,
                                            TxnJudge* judge, const PushExtras* extras) {
  const WriteKey* key = extras != nullptr && extras->key ? &*extras->key : nullptr;
  // What others committed, taken in before the log's lock is held (a node behind by much, or
  // from a checkpoint, does not make every node's pushes wait for it).
  Status caught_up = CatchUp();
  if (!caught_up.ok()) return AsServerError(caught_up);
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  const std::string o = origin.Bytes();
  pg::Txn txn(db);
  Status begun = txn.Begin();  // READ COMMITTED (pg::Txn), whatever the default
  if (begun.code() == Code::kENETWORK && !db->ok()) {
    // The connection had broken since the last call (nothing done yet): a new one.
    CAIRN_ASSIGN_OR_RETURN(db, Db());
    txn.Rebind(db);
    begun = txn.Begin();
  }
  CAIRN_RETURN_IF_ERROR(begun);
  const int64_t now = NowMs();
  if (key != nullptr) {
    // The key first (the locks' order: key, receipt, head): a push of another node with the
    // same key waits here until this one ended, then finds it kept (or takes it, when this
    // one rolled back). An expired row is taken over.
    CAIRN_ASSIGN_OR_RETURN(
        pg::Rows taken,
        db->Exec(
            "INSERT INTO cairn_idempotency VALUES ($1, $2, $3, 0, 0, '', $4) "
            "ON CONFLICT (subject, key) DO UPDATE SET request = EXCLUDED.request, "
            "cursor = 0, code = 0, reason = '', at_ms = EXCLUDED.at_ms "
            "WHERE cairn_idempotency.at_ms < $5 RETURNING 1",
            {pg::Param::Text(key->subject), pg::Param::Text(key->key),
             pg::Param::Bytes(key->request), pg::Param(now), pg::Param(now - kWriteKeyWindowMs)}));
    if (taken.size() == 0) return Status(Code::kEBUSY, "the Idempotency-Key is kept already");
  }
  // The origin's receipt, locked: a second session of the replica (on this node or another)
  // waits here until this push committed, then sees its receipt.
  CAIRN_RETURN_IF_ERROR(
      db->Exec("INSERT INTO cairn_receipts VALUES ($1, 0) ON CONFLICT (origin) DO NOTHING",
               {pg::Param::Bytes(o)})
          .status());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows receipt,
                         db->Exec("SELECT through FROM cairn_receipts WHERE origin = $1 FOR UPDATE",
                                  {pg::Param::Bytes(o)}));
  if (receipt.size() != 1) return Status::Internal("PostgreSQL: the receipt row vanished");
  const uint64_t before = U(receipt.Int(0, 0));
  if (judge != nullptr) {
    // Sync rules judge each transaction on the merged state (docs/sync-rules.md "Writing"):
    // the log's head locked now (held to COMMIT, the order the head is always locked in: after
    // the receipt) and taken in, so that no entry another node commits meanwhile goes unseen.
    CAIRN_ASSIGN_OR_RETURN(pg::Rows locked, db->Exec("SELECT head FROM cairn_meta FOR UPDATE"));
    if (locked.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
    Status taken = TakeIn(db, U(locked.Int(0, 0)), /*in_push=*/true);
    if (!taken.ok()) return AsServerError(taken);
  }
  PushResult result;
  protocol::BatchEncoder accepted;
  pg::DocRefs touched;  // by the accepted ops: their rows in the SQL tables
  PushSort sort;
  CAIRN_RETURN_IF_ERROR(SortPush(
      origin, batch, before, limits, admit, judge,
      [&](const std::vector<Op>& ops, size_t n, const Status& verdict) -> Status {
        if (!verdict.ok()) {
          Refused r = RefusalOf(ops, n, verdict);
          CAIRN_RETURN_IF_ERROR(
              db->Exec("INSERT INTO cairn_refused VALUES ($1, $2, $3, $4, $5, $6)",
                       {pg::Param::Bytes(o), pg::Param(r.first_seq), pg::Param(r.last_seq),
                        pg::Param(static_cast<int64_t>(r.code)), pg::Param::Bytes(r.reason),
                        pg::Param(now)})
                  .status());
          result.refused.push_back(std::move(r));
          return Status::OK();
        }
        for (size_t i = 0; i < n; i++) {
          accepted.Add(ops[i]);
          touched.emplace(ops[i].collection, ops[i].key);
        }
        return Status::OK();
      },
      &sort));
  CAIRN_RETURN_IF_ERROR(FinishPush(
      origin, sort, [&](uint64_t seq) { return OpHlcIn(db, origin, seq); },
      [&](uint64_t low, uint64_t high, std::vector<Refused>* out) -> Status {
        CAIRN_ASSIGN_OR_RETURN(
            pg::Rows earlier,
            db->Exec("SELECT first_seq, last_seq, code, reason FROM cairn_refused "
                     "WHERE origin = $1 AND last_seq >= $2 AND first_seq <= $3 ORDER BY first_seq",
                     {pg::Param::Bytes(o), pg::Param(low), pg::Param(high)}));
        for (int i = 0; i < earlier.size(); i++) {
          out->push_back(Refused{U(earlier.Int(i, 0)), U(earlier.Int(i, 1)),
                                 static_cast<Code>(earlier.Int(i, 2)),
                                 std::string(earlier.Bytes(i, 3))});
        }
        return Status::OK();
      },
      &result));
  if (sort.through > before) {
    if (judge != nullptr) accepted.SetMoves(judge->Moves());
    flatbuffers::FlatBufferBuilder fbb(accepted.ops_bytes() + 1024);
    accepted.Finish(&fbb);
    const std::string_view frame(reinterpret_cast<const char*>(fbb.GetBufferPointer()),
                                 fbb.GetSize());
    CAIRN_RETURN_IF_ERROR(db->Exec("UPDATE cairn_receipts SET through = $2 WHERE origin = $1",
                                   {pg::Param::Bytes(o), pg::Param(sort.through)})
                              .status());
    // The cursor, last: the head row stays locked until COMMIT, so cursors follow commit
    // order (the header comment).
    CAIRN_ASSIGN_OR_RETURN(pg::Rows head,
                           db->Exec("UPDATE cairn_meta SET head = head + 1, log_ops = log_ops + $1 "
                                    "RETURNING head, log_ops, data_tables::int::bigint",
                                    {pg::Param(sort.applied)}));
    if (head.size() != 1) return Status::Corrupt("PostgreSQL: cairn_meta has no row");
    LogEntry entry;
    entry.cursor = U(head.Int(0, 0));
    entry.origin = origin;
    entry.first_seq = before + 1;
    entry.last_seq = sort.through;
    entry.batch = frame;
    // Before it is committed, this node's copy takes in the entries below it (all committed:
    // the lock) and then this one, in a transaction left open: an entry that cannot be merged
    // (a limit of the copy's SQLite, say) is refused here instead of reaching the log, where
    // every node would stop at it.
    Status taken = TakeIn(db, entry.cursor - 1, /*in_push=*/true);
    if (!taken.ok()) return AsServerError(taken);
    if (key != nullptr) {
      const Refused* refused = result.refused.empty() ? nullptr : &result.refused.front();
      CAIRN_RETURN_IF_ERROR(
          db->Exec(
                "UPDATE cairn_idempotency SET cursor = $3, code = $4, reason = $5 "
                "WHERE subject = $1 AND key = $2",
                {pg::Param::Text(key->subject), pg::Param::Text(key->key), pg::Param(entry.cursor),
                 pg::Param(refused ? static_cast<int64_t>(refused->code) : int64_t{0}),
                 pg::Param::Bytes(refused ? refused->reason : std::string())})
              .status());
    }
    CAIRN_RETURN_IF_ERROR(copy_->StageEntry(entry));
    // The documents' rows, as the copy holds them with this entry (docs/backend.md "SQL
    // tables"), and the cursor they show, when they showed the one before; unless the
    // database has no SQL tables (read under the head's lock, as PrepareSqlTables changes it).
    const bool tables = head.Int(0, 2) != 0;
    Status st = tables ? data_->Write(db, copy_->state(), touched, entry.cursor) : Status::OK();
    if (st.ok() && tables) {
      Result<pg::Rows> moved =
          db->Exec("UPDATE cairn_meta SET data_cursor = $1 WHERE data_cursor = $2 RETURNING 1",
                   {pg::Param(entry.cursor), pg::Param(entry.cursor - 1)});
      st = moved.status();
      if (st.ok() && moved->size() == 0) data_due_ = true;
    }
    // SQL inbox rows: applied with this entry, or refused with their transaction, exactly once
    // (still claimed by this process, not done by another since).
    if (st.ok() && extras != nullptr && !extras->inbox.empty()) {
      std::string applied = "{";
      for (const auto& [id, first_seq] : extras->inbox) {
        auto r = std::find_if(result.refused.begin(), result.refused.end(), [&](const Refused& x) {
          return x.first_seq <= first_seq && first_seq <= x.last_seq;
        });
        if (r == result.refused.end()) {
          applied += (applied.size() > 1 ? "," : "") + std::to_string(id);
          continue;
        }
        if (st.ok()) st = RefuseInboxIn(db, id, extras->inbox_claimer, r->reason);
      }
      if (st.ok() && applied.size() > 1) {
        Result<pg::Rows> marked = db->Exec(
            "UPDATE cairn_inbox SET applied_cursor = $1, done_ms = $2 WHERE id = ANY($3::bigint[]) "
            "AND claimed_by = $4 AND applied_cursor IS NULL AND refused IS NULL RETURNING 1",
            {pg::Param(entry.cursor), pg::Param(now), pg::Param::Text(applied + "}"),
             pg::Param::Bytes(extras->inbox_claimer)});
        st = marked.status();
        if (st.ok() &&
            static_cast<size_t>(marked->size()) !=
                static_cast<size_t>(std::count(applied.begin(), applied.end(), ',')) + 1) {
          st = Status(Code::kEBUSY, "an SQL inbox row was claimed by another node meanwhile");
        }
      }
    }
    if (!st.ok()) {
      copy_->AbortStaged();
      return st;
    }
    st = db->Exec("INSERT INTO cairn_log VALUES ($1, $2, $3, $4, $5, $6)",
                  {pg::Param(entry.cursor), pg::Param::Bytes(o), pg::Param(before + 1),
                   pg::Param(sort.through), pg::Param(sort.applied), pg::Param::Bytes(frame)})
             .status();
    if (st.ok()) {
      st = db->Exec("SELECT pg_notify($1, '')", {pg::Param::Text(channel_)}).status();
    }
    if (st.ok()) st = txn.Commit();
    if (!st.ok()) {
      // Not committed (or not known to be: then the next catch-up finds it in the log).
      copy_->AbortStaged();
      return st;
    }
    // Durable from here: the Ack goes out whatever follows. Should the copy's commit fail, the
    // next catch-up takes the entry in again from the log.
    (void)copy_->CommitStaged();
    // The log past --keep-log and a half: a checkpoint, then the oldest entries go, at the
    // server's next maintenance tick (not on the way of this push's Ack, nor of a Hello).
    const uint64_t keep = options_.keep_log_ops;
    if (U(head.Int(0, 1)) > keep + keep / 2) checkpoint_due_ = true;
  }
  result.cursor = head();
  return result;
}

Status PgServerStore::Checkpoint() {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  pg::Txn txn(db);
  CAIRN_RETURN_IF_ERROR(txn.Begin());
  // One node at a time; the others skip (the next push past the mark tries again).
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows locked,
      db->Exec("SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), 3)::int::bigint"));
  if (locked.size() != 1 || locked.Int(0, 0) == 0) return Status::OK();
  // Reading the copy's whole state sends PostgreSQL nothing for a while: not "idle".
  CAIRN_RETURN_IF_ERROR(db->ExecScript(
      "SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL statement_timeout = 0"));
  CAIRN_ASSIGN_OR_RETURN(pg::Rows newest, db->Exec("SELECT coalesce(max(cursor), 0), (SELECT floor "
                                                   "FROM cairn_meta) FROM cairn_checkpoints"));
  uint64_t checkpoint = U(newest.Int(0, 0));
  const uint64_t floor = U(newest.Int(0, 1));
  const uint64_t at = copy_->head();
  if (checkpoint < at) {
    // The state of this node's copy at its head: its surviving ops, in parts, and receipts.
    protocol::BatchEncoder enc;
    int64_t part = 0;
    auto flush = [&]() -> Status {
      flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
      enc.Finish(&fbb);
      return db
          ->Exec("INSERT INTO cairn_checkpoint_ops VALUES ($1, $2, $3)",
                 {pg::Param(at), pg::Param(part++),
                  pg::Param::Bytes(std::string_view(
                      reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize()))})
          .status();
    };
    CAIRN_RETURN_IF_ERROR(copy_->state()->ForEachSurvivor([&](const Op& op) -> Status {
      enc.Add(op);
      return enc.op_count() >= kCheckpointPartOps || enc.ops_bytes() >= kCheckpointPartBytes
                 ? flush()
                 : Status::OK();
    }));
    if (!enc.empty() || part == 0) CAIRN_RETURN_IF_ERROR(flush());
    for (const store::OriginInfo& o : copy_->state()->Origins()) {
      CAIRN_RETURN_IF_ERROR(
          db->Exec("INSERT INTO cairn_checkpoint_receipts VALUES ($1, $2, $3)",
                   {pg::Param(at), pg::Param::Bytes(o.id.Bytes()), pg::Param(o.through)})
              .status());
    }
    CAIRN_RETURN_IF_ERROR(db->Exec("INSERT INTO cairn_checkpoints VALUES ($1, $2)",
                                   {pg::Param(at), pg::Param(NowMs())})
                              .status());
    for (const char* older : {"DELETE FROM cairn_checkpoint_ops WHERE cursor < $1",
                              "DELETE FROM cairn_checkpoint_receipts WHERE cursor < $1",
                              "DELETE FROM cairn_checkpoints WHERE cursor < $1"}) {
      CAIRN_RETURN_IF_ERROR(db->Exec(older, {pg::Param(at)}).status());
    }
    checkpoint = at;
  }
  // The log keeps its newest --keep-log ops (and its newest entry), and never loses what the
  // newest checkpoint does not hold.
  CAIRN_ASSIGN_OR_RETURN(pg::Rows bound,
                         db->Exec("SELECT coalesce(max(cursor), 0) FROM (SELECT cursor, "
                                  "sum(op_count) OVER (ORDER BY cursor "
                                  "DESC) AS newer, max(cursor) OVER () AS newest FROM cairn_log) t "
                                  "WHERE newer > $1 AND cursor < newest",
                                  {pg::Param(options_.keep_log_ops)}));
  const uint64_t new_floor = std::min(U(bound.Int(0, 0)), checkpoint);
  if (new_floor > floor) {
    CAIRN_ASSIGN_OR_RETURN(
        pg::Rows gone,
        db->Exec("WITH d AS (DELETE FROM cairn_log WHERE cursor <= $1 RETURNING op_count) "
                 "SELECT coalesce(sum(op_count), 0)::bigint FROM d",
                 {pg::Param(new_floor)}));
    // Last: the head row's lock, which pushes wait for, is held only until COMMIT.
    CAIRN_RETURN_IF_ERROR(db->Exec("UPDATE cairn_meta SET floor = $1, log_ops = log_ops - $2",
                                   {pg::Param(new_floor), pg::Param(gone.Int(0, 0))})
                              .status());
  }
  return txn.Commit();
}

Status PgServerStore::LoadCheckpoint(pg::Conn* db) {
  // One snapshot of the database for the whole read: a newer checkpoint replacing this one
  // meanwhile does not tear it.
  pg::Txn txn(db);
  CAIRN_RETURN_IF_ERROR(txn.Begin(/*repeatable_read=*/true));
  CAIRN_ASSIGN_OR_RETURN(pg::Rows newest, db->Exec("SELECT coalesce(max(cursor), 0), (SELECT floor "
                                                   "FROM cairn_meta) FROM cairn_checkpoints"));
  const uint64_t at = U(newest.Int(0, 0));
  if (copy_->head() >= U(newest.Int(0, 1))) return Status::OK();  // (not needed after all)
  if (at <= copy_->head()) {
    return Status::Corrupt("PostgreSQL: the log is trimmed to cursor " +
                           std::to_string(newest.Int(0, 1)) + " and no checkpoint is past " +
                           std::to_string(copy_->head()));
  }
  std::map<ReplicaId, uint64_t> receipts;
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows rows,
      db->Exec("SELECT origin, through FROM cairn_checkpoint_receipts WHERE cursor = $1",
               {pg::Param(at)}));
  for (int i = 0; i < rows.size(); i++) receipts[IdFrom(rows.Bytes(i, 0))] = U(rows.Int(i, 1));
  CAIRN_RETURN_IF_ERROR(copy_->InstallCheckpoint(
      at, receipts, [&](const std::function<Status(const Op&)>& fn) -> Status {
        for (int64_t part = 0;; part++) {
          CAIRN_ASSIGN_OR_RETURN(
              pg::Rows p,
              db->Exec("SELECT batch FROM cairn_checkpoint_ops WHERE cursor = $1 AND part = $2",
                       {pg::Param(at), pg::Param(part)}));
          if (p.size() == 0) return Status::OK();
          CAIRN_RETURN_IF_ERROR(
              protocol::DecodeBatchFrame(p.Bytes(0, 0), "PostgreSQL: a checkpoint part", fn));
        }
      }));
  return txn.Commit();
}

Result<std::optional<Hlc>> PgServerStore::OpHlc(const ReplicaId& origin, uint64_t seq) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  return OpHlcIn(db, origin, seq);
}

Result<std::optional<Hlc>> PgServerStore::OpHlcIn(pg::Conn* db, const ReplicaId& origin,
                                                  uint64_t seq) {
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows rows,
      db->Exec(
          "SELECT batch FROM cairn_log WHERE origin = $1 AND last_seq >= $2 AND first_seq <= $2 "
          "ORDER BY last_seq LIMIT 1",
          {pg::Param::Bytes(origin.Bytes()), pg::Param(seq)}));
  if (rows.size() == 0) return std::optional<Hlc>();
  return FindOpHlc(rows.Bytes(0, 0), origin, seq);
}

Status PgServerStore::BindReplica(const ReplicaId& replica, const std::string& subject) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  const std::string r = replica.Bytes();
  CAIRN_RETURN_IF_ERROR(
      db->Exec("INSERT INTO cairn_replicas VALUES ($1, $2, $3) ON CONFLICT (replica_id) DO NOTHING",
               {pg::Param::Bytes(r), pg::Param::Text(subject), pg::Param(NowMs())})
          .status());
  CAIRN_ASSIGN_OR_RETURN(
      pg::Rows bound,
      db->Exec("SELECT subject FROM cairn_replicas WHERE replica_id = $1", {pg::Param::Bytes(r)}));
  if (bound.size() == 1 && bound.Bytes(0, 0) == subject) return Status::OK();
  return Status(Code::kEPERM, "replica " + replica.Hex() + " belongs to another subject");
}

Result<std::string> PgServerStore::ReplicaView(const ReplicaId& replica) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  CAIRN_ASSIGN_OR_RETURN(pg::Rows rows,
                         db->Exec("SELECT record FROM cairn_views WHERE replica_id = $1",
                                  {pg::Param::Bytes(replica.Bytes())}));
  return rows.size() == 1 ? std::string(rows.Bytes(0, 0)) : std::string();
}

Status PgServerStore::SetReplicaView(const ReplicaId& replica, const std::string& record) {
  CAIRN_ASSIGN_OR_RETURN(pg::Conn * db, Db());
  return db
      ->Exec(
          "INSERT INTO cairn_views VALUES ($1, $2, $3) ON CONFLICT (replica_id) DO UPDATE "
          "SET record = EXCLUDED.record, at_ms = EXCLUDED.at_ms",
          {pg::Param::Bytes(replica.Bytes()), pg::Param::Text(record), pg::Param(NowMs())})
      .status();
}

}  // namespace

Result<std::unique_ptr<ServerStore>> OpenPgServerStore(const std::string& path,
                                                       const ServerStoreOptions& options) {
  return PgServerStore::Open(path, options);
}

}  // namespace cairn::server
