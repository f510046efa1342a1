// ServerStore: what cairn-server keeps (docs/storage-format.md "Server file"). The server is a
// replica built from the same core: a ReplicaStore (its own SQLite file, merged with the same
// rules as every client) plus
//   - the global log: every accepted batch with its cursor (the global sequence), kept up to a
//     configurable number of ops so clients can resume from their cursor; older entries are
//     trimmed (a client behind the trimmed part gets a snapshot of the state instead);
//   - receipts: the per-origin watermarks of the replica store (every op of an origin up to
//     `through` is applied), so a retried push is never applied twice.
// Two implementations: SqliteServerStore (below: one file holds it all) and the PostgreSQL store
// of several nodes (server/pg/pg_server_store.h: the log and receipts in PostgreSQL, each node a
// SqliteServerStore copy of them). Both sort pushes with SortPush, so the rules are one.
// Not thread-safe: the server's loop thread only.
#ifndef CAIRN_SERVER_SERVER_STORE_H_
#define CAIRN_SERVER_SERVER_STORE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "cairn_generated.h"
#include "clock/hlc.h"
#include "oplog/op.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "store/replica_store.h"

namespace cairn::server {

struct ServerStoreOptions {
  uint64_t keep_log_ops = 1000000;  // ops kept in the global log (at least the newest batch)
  Clock* clock = nullptr;           // nullptr: the system clock
  // Where the server's data lives: empty, the SQLite file given to Open; a PostgreSQL URL
  // ("postgresql://..."), that database, shared by every node given it, the file being this
  // node's copy (server/pg/pg_server_store.h).
  std::string url;
  // With a PostgreSQL store: turn the documents' SQL tables (docs/backend.md "SQL tables") on
  // or off for the database, every node; nullopt: as the database has it (on when new).
  std::optional<bool> sql_tables;
  // docs/crdt-semantics.md "History horizon": history older than this is folded (Maintain
  // raises the horizon as the clock moves, an hour's worth at a time for 30 days); 0: kept
  // forever. SQLite store only for now.
  int64_t history_horizon_ms = 0;
};

// A PostgreSQL URL ("postgresql://..." or "postgres://..."): what ServerStoreOptions::url and
// cairn-server --store take.
bool IsPostgresUrl(std::string_view s);

// A transaction of a push the server refused (kept, so a retry after a lost Ack learns it too).
struct Refused {
  uint64_t first_seq = 0, last_seq = 0;
  Code code = Code::kOK;
  std::string reason;
};

struct PushResult {
  uint64_t through = 0;    // the origin's watermark after the push (what the Ack reports)
  uint64_t cursor = 0;     // the log's head after the push
  uint64_t applied = 0;
  uint64_t duplicates = 0;
  std::vector<Refused> refused;  // refused now, or earlier within the duplicates
  size_t repeated = 0;           // how many of `refused` (the first) were refused earlier
};

// docs/backend.md "Idempotency": an HTTP write's Idempotency-Key, kept by the store with what
// became of the push that carried it, in that push's transaction, for kWriteKeyWindowMs.
constexpr int64_t kWriteKeyWindowMs = int64_t{24} * 3600 * 1000;
// An SQL inbox row's claim (ServerStore::ClaimInbox) lapses after this long: a node that died
// holding it leaves it to the others.
constexpr int64_t kInboxClaimMs = 30000;
struct WriteKey {
  std::string subject;  // the caller's ("" on a server that checks no tokens): keys are per subject
  std::string key;
  std::string request;  // a digest of the request that came with it
};
struct KeptWrite {
  std::string request;    // WriteKey::request
  uint64_t cursor = 0;    // the log's head after the push
  Code code = Code::kOK;  // kOK: applied; else refused for `reason`
  std::string reason;
};

// What a push of the server's own writes (server/server_writer.h) carries besides its ops.
struct PushExtras {
  std::optional<WriteKey> key;  // an HTTP write's Idempotency-Key
  // SQL inbox rows (docs/backend.md "Writing through SQL"; PostgreSQL only), one transaction
  // of the push each: (row id, its transaction's first seq). Marked applied (or refused, with
  // their transaction) in the push's transaction if `inbox_claimer` still holds their claim;
  // EBUSY (nothing applied) when it no longer holds one.
  std::vector<std::pair<int64_t, uint64_t>> inbox;
  std::string inbox_claimer;
};

// A row of the SQL inbox, claimed for a push.
struct InboxRow {
  int64_t id = 0;
  std::string op, collection, key;
  std::optional<std::string> fields, field;  // fields: JSON text
  std::optional<int64_t> delta;
};

// A refused transaction as the HTTP API lists it (docs/backend.md "Refused ops"): where it was
// recorded and whose it was.
struct RefusalEntry {
  uint64_t cursor = 0;  // the log entry of the push that carried it
  ReplicaId origin;
  std::optional<std::string> subject;  // the origin is bound to (none: an HTTP write's)
  Refused refused;
  int64_t at_ms = 0;
};

// Whether the server takes an op of a push: OK, or why not (EPERM, ECLOCK, ...).
using AdmitFn = std::function<Status(const Op&)>;
// Judges the transactions of a push beyond the data model (sync rules: server/write_judge.h)
// and says what the accepted ones did to the documents' channels. No judge: every
// transaction AdmitFn took is taken, and nothing moves.
class TxnJudge {
 public:
  virtual ~TxnJudge() = default;
  // Whether the server takes txn[0..n), whose every op AdmitFn took: sets `verdict`; an
  // accepted transaction counts for the push's later ones. An error (the store's trouble)
  // ends the push.
  virtual Status Judge(const std::vector<Op>& txn, size_t n, Status* verdict) = 0;
  // The documents whose channels the accepted transactions changed, for the push's log entry
  // (OpBatch.moves, docs/sync-rules.md "Reading").
  virtual std::vector<protocol::ChannelMove> Moves() const = 0;
};

// The shape of a push the server takes (docs/protocol.md "Limits"), what its Welcome advertises:
// at most `max_ops` ops unless it holds one transaction, and at most `max_bytes`
// (protocol::BatchWireBytes), so that its log entry always fits a batch to readers.
struct PushLimits {
  uint32_t max_ops = 8192;
  size_t max_bytes = protocol::BatchBudget(protocol::kDefaultMaxFrameBytes);
  // The store's history horizon: a transaction with an op stamped below it is refused whole
  // (EEXPIRED; docs/crdt-semantics.md "History horizon"). Each store sets its own.
  Hlc horizon = 0;
};

// One entry of the global log: a batch pushed by `origin`, its ops first_seq..last_seq.
struct LogEntry {
  uint64_t cursor = 0;
  ReplicaId origin;
  uint64_t first_seq = 0, last_seq = 0;
  std::string_view batch;  // an OpBatch frame; valid during the callback only
};

// The rules of a push, the same whichever store keeps it (docs/protocol.md "Pushes"): what the
// batch of `origin` holds past its receipt `before`, sorted into duplicates and transactions,
// each accepted or refused whole.
struct PushSort {
  uint64_t before = 0;              // the receipt before the push
  uint64_t through = 0;             // the receipt after the push
  uint64_t applied = 0;             // ops accepted
  uint64_t duplicates = 0;          // ops at or below `before`
  uint64_t dup_low = 0, dup_high = 0;
  Hlc dup_high_hlc = 0;             // the stamp of the highest duplicate as pushed now
  Hlc max_hlc = 0;                  // the highest stamp accepted
};
// Gets each transaction past the receipt in order: its ops txn[0..n), and OK or why it is
// refused (ValidateValue: the decoder checked names and keys; then `admit`, then for the whole
// transaction `judge`). Ops above the
// receipt the push already brought, and gaps, are ECORRUPT (oplog/admission.h).
using TxnFn = std::function<Status(const std::vector<Op>& txn, size_t n, const Status& verdict)>;
// EINVAL for an op of another origin or a push beyond `limits`, ECORRUPT for a gap; `on_txn`'s
// errors end it.
Status SortPush(const ReplicaId& origin, const wire::OpBatch& batch, uint64_t before,
                const PushLimits& limits, const AdmitFn& admit, TxnJudge* judge,
                const TxnFn& on_txn, PushSort* sort);
// EFORKED when the highest duplicate is not the op the store received under that seq (`ours`,
// its stamp while the log holds it): the replica's history forked (docs/protocol.md "Restored
// replicas").
Status CheckFork(const ReplicaId& origin, const PushSort& sort, std::optional<Hlc> ours);
// What every store does with a push once sorted: the counts and the receipt into `result`; for a
// push that repeated ops the server holds, the fork check (`op_hlc`: the stamp the log holds
// for one of the origin's seqs, CheckFork) and the refusals within the repeated range
// (`refused_in`, in seq order), reported again first: a retry after a lost Ack learns them.
Status FinishPush(
    const ReplicaId& origin, const PushSort& sort,
    const std::function<Result<std::optional<Hlc>>(uint64_t seq)>& op_hlc,
    const std::function<Status(uint64_t low, uint64_t high, std::vector<Refused>* out)>& refused_in,
    PushResult* result);
// A refusal of the transaction txn[0..n) for `verdict`, its reason cut to kMaxReasonBytes.
constexpr size_t kMaxReasonBytes = 1024;
Refused RefusalOf(const std::vector<Op>& txn, size_t n, const Status& verdict);
// docs/protocol.md "Refused ops": a push's Ack as several, each listing refusals (in seq order)
// of at most about `budget` bytes (one at least): each acknowledges up to the seq before the
// first refusal of the next, the last one the whole receipt `through`.
struct AckPart {
  uint64_t through;
  size_t begin, end;  // refused[begin..end)
};
std::vector<AckPart> SplitAck(const std::vector<Refused>& refused, uint64_t through, size_t budget);
// The stamp of op `seq` of `origin` in a log entry's batch (an OpBatch frame), if it holds it.
Result<std::optional<Hlc>> FindOpHlc(std::string_view batch_frame, const ReplicaId& origin,
                                     uint64_t seq);

class StreamSink;  // server/stream_tables.h
// Where the server stores telemetry: the tables in `options`' PostgreSQL database, or without a
// URL the SQLite file at `sqlite_path`. The backend is chosen where ServerStore::Open chooses it.
Result<std::unique_ptr<StreamSink>> OpenStreamSink(const ServerStoreOptions& options,
                                                   const std::string& sqlite_path);

class ServerStore {
 public:
  // Opens the store `options` names (SQLite at `path`, or PostgreSQL with `path` as this
  // node's copy).
  static Result<std::unique_ptr<ServerStore>> Open(const std::string& path,
                                                   const ServerStoreOptions& options);
  virtual ~ServerStore() = default;
  virtual const ReplicaId& id() const = 0;
  // The newest cursor this store serves (ReadLog reaches it; state() includes it).
  virtual uint64_t head() const = 0;
  // Cursors up to floor() were trimmed from the log.
  virtual uint64_t floor() const = 0;
  virtual int64_t NowMs() = 0;
  // At least the highest stamp of any op merged here (the server's own writes are stamped
  // after it: docs/backend.md "Writing").
  virtual Hlc MaxHlc() const = 0;

  // Applies a batch pushed by `origin` (the authenticated replica) atomically. Every op must be
  // the origin's own (EINVAL otherwise, nothing applied); ops already received are
  // skipped; an op past a gap ends the push (ECORRUPT). A transaction with an op that breaks
  // the rules or that `admit` refuses, or that `judge` refuses, is refused whole: not
  // applied, recorded, reported in
  // PushResult::refused; its seqs count as received. The batch gets the next cursor; its log
  // entry covers the refused seqs too (docs/protocol.md, "Refused ops"). EFORKED (nothing
  // applied) when a skipped op is not the one received under its seq while the log holds that
  // one (docs/protocol.md, "Restored replicas"). EINVAL (nothing applied) for a push beyond
  // `limits`. With `extras` (the server's own writes; nullptr for devices): an Idempotency-Key
  // is kept with the push's outcome, atomically, EBUSY (nothing applied) when it is already
  // kept (another node took it meanwhile: FindWrite tells what became of it); inbox rows as
  // PushExtras says.
  virtual Result<PushResult> ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                                       const PushLimits& limits, const AdmitFn& admit,
                                       TxnJudge* judge, const PushExtras* extras) = 0;
  // The write kept under `subject`'s `key` within the last kWriteKeyWindowMs, if any.
  virtual Result<std::optional<KeptWrite>> FindWrite(const std::string& subject,
                                                     const std::string& key) = 0;
  // The refusals recorded by the log entries with after < cursor <= upto (those the log still
  // holds), in cursor and seq order, at most max_rows.
  virtual Status ReadRefused(uint64_t after, uint64_t upto, size_t max_rows,
                             const std::function<Status(const RefusalEntry&)>& fn) = 0;

  // Log entries with cursor > after (up to head()), oldest first, at most max_rows.
  virtual Status ReadLog(uint64_t after, size_t max_rows,
                         const std::function<Status(const LogEntry&)>& fn) = 0;
  // The HLC of `origin`'s op `seq` as merged here, from the log; nullopt when the log no longer
  // has it (trimmed) or never had it (refused).
  virtual Result<std::optional<Hlc>> OpHlc(const ReplicaId& origin, uint64_t seq) = 0;
  // The server's state as of head(), for snapshots (store::ReplicaStore).
  virtual store::ReplicaStore* state() = 0;
  // Binds a replica id to the subject that first synced it; EPERM when another subject
  // presents it (a device cannot push as another's replica).
  virtual Status BindReplica(const ReplicaId& replica, const std::string& subject) = 0;
  // With sync rules: the replica's view record (rules::ViewRecord's JSON; empty when none), and
  // its replacement (docs/sync-rules.md "Changes of view").
  virtual Result<std::string> ReplicaView(const ReplicaId& replica) = 0;
  virtual Status SetReplicaView(const ReplicaId& replica, const std::string& record) = 0;

  // The SQL inbox (PostgreSQL; none for SQLite): claims up to `max` rows not applied, refused
  // or claimed by another within the last kInboxClaimMs, oldest first, for `claimer`; and a
  // row refused before any push (a bad op), if `claimer` still holds it.
  virtual Result<std::vector<InboxRow>> ClaimInbox(const std::string& /*claimer*/, size_t /*max*/) {
    return std::vector<InboxRow>();
  }
  virtual Status RefuseInbox(int64_t /*id*/, const std::string& /*claimer*/,
                             const std::string& /*reason*/) {
    return Status::OK();
  }

  // Several nodes on one database (PostgreSQL; no-ops for SQLite): CatchUp takes in what other
  // nodes committed, moving head(); notify_socket() (-1: none) becomes readable when one did,
  // and TakeNotifications consumes that (true: something was committed; catch up), ENETWORK
  // when the notification connection broke: Relisten makes a new one (a new socket).
  virtual Status CatchUp() { return Status::OK(); }
  virtual int notify_socket() const { return -1; }
  virtual Result<bool> TakeNotifications() { return false; }
  virtual Status Relisten() { return Status::OK(); }
  // Housekeeping the server runs on its timer, off the way of pushes and Hellos (PostgreSQL:
  // a checkpoint and the log's trim, when due).
  virtual Status Maintain() { return Status::OK(); }
  // The history horizon (docs/crdt-semantics.md "History horizon"): the state is folded below
  // horizon() (0: never), and every op accepted after log entry horizon_cursor() is stamped at
  // or above it.
  virtual Hlc horizon() const { return 0; }
  virtual uint64_t horizon_cursor() const { return 0; }
  // Whether a fold changed the state (an increment or a delete was folded): from then on its
  // snapshots replace what a client holds (docs/protocol.md "Snapshots").
  virtual bool history_folded() const { return false; }
};

// The SQLite store: one file holds the state, the log and the receipts, a push commits all of
// them in one transaction.
class SqliteServerStore final : public ServerStore {
 public:
  // `id`: the id of a new file (nullptr: a random one).
  static Result<std::unique_ptr<SqliteServerStore>> Open(const std::string& path,
                                                         const ServerStoreOptions& options,
                                                         const ReplicaId* id = nullptr);
  const ReplicaId& id() const override { return store_->replica_id(); }
  uint64_t head() const override { return head_; }
  uint64_t floor() const override { return floor_; }
  int64_t NowMs() override { return clock_source_->NowMs(); }
  Hlc MaxHlc() const override { return clock_->last(); }
  Result<PushResult> ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                               const PushLimits& limits, const AdmitFn& admit, TxnJudge* judge,
                               const PushExtras* extras) override;
  Result<std::optional<KeptWrite>> FindWrite(const std::string& subject,
                                             const std::string& key) override;
  Status ReadRefused(uint64_t after, uint64_t upto, size_t max_rows,
                     const std::function<Status(const RefusalEntry&)>& fn) override;
  Status ReadLog(uint64_t after, size_t max_rows,
                 const std::function<Status(const LogEntry&)>& fn) override;
  Result<std::optional<Hlc>> OpHlc(const ReplicaId& origin, uint64_t seq) override;
  store::ReplicaStore* state() override { return store_.get(); }
  Status BindReplica(const ReplicaId& replica, const std::string& subject) override;
  Result<std::string> ReplicaView(const ReplicaId& replica) override;
  Status SetReplicaView(const ReplicaId& replica, const std::string& record) override;
  // Raises the horizon when options' history_horizon_ms says it is due.
  Status Maintain() override;
  Hlc horizon() const override { return store_->horizon(); }
  uint64_t horizon_cursor() const override { return horizon_cursor_; }
  bool history_folded() const override { return folded_; }
  // Folds the state at `horizon` (nothing when not above the current one) and records head()
  // as horizon_cursor(), atomically; from then on a push with an op stamped below it is
  // refused (EEXPIRED).
  Status FoldHistory(Hlc horizon);

  // Takes in a log entry committed elsewhere (a PostgreSQL node's copy): its ops merged, the
  // origin's receipt raised to its last seq, the entry logged under its cursor, atomically.
  // ECORRUPT unless e.cursor > head() and e.first_seq follows the origin's receipt.
  Status AppendEntry(const LogEntry& e);
  // The same in two steps: StageEntry does it all in a transaction left open (nothing done on
  // failure); CommitStaged commits it (head() becomes e.cursor), AbortStaged rolls it back.
  Status StageEntry(const LogEntry& e);
  Status CommitStaged();
  void AbortStaged();
  // Takes in a checkpoint of the state at `cursor` (> head(), the log past head() trimmed
  // elsewhere): the ops `for_each_op` gives (the survivors of that state) merged, idempotently,
  // into what this file has, the receipts raised to `receipts`, the log emptied; head() and
  // floor() become `cursor`. Atomic.
  Status InstallCheckpoint(
      uint64_t cursor, const std::map<ReplicaId, uint64_t>& receipts,
      const std::function<Status(const std::function<Status(const Op&)>&)>& for_each_op);

 private:
  SqliteServerStore() = default;
  // Logs a batch (inside the push's transaction) under `cursor` (0: the next one) and trims;
  // CommitStaged then commits it.
  Status LogStaged(uint64_t cursor, const ReplicaId& origin, uint64_t first_seq,
                   uint64_t last_seq, uint64_t op_count, std::string_view batch, Hlc max_hlc);
  // Drops the oldest log entries beyond keep_log_ops (inside the push's transaction).
  Status TrimLog(uint64_t* floor, uint64_t* log_ops);

  ServerStoreOptions options_;
  Clock* clock_source_ = nullptr;
  std::unique_ptr<HybridClock> clock_;
  std::unique_ptr<store::ReplicaStore> store_;
  uint64_t head_ = 0, floor_ = 0, log_ops_ = 0;
  uint64_t horizon_cursor_ = 0;  // cairn_server_meta.horizon_cursor
  bool folded_ = false;          // cairn_server_meta.folded
  struct {
    uint64_t cursor = 0, floor = 0, log_ops = 0;
  } staged_;  // head_, floor_, log_ops_ once the staged transaction commits
  // Keeps `key` with the outcome of the push whose log entry is staged (inside its
  // transaction), and forgets the keys past the window; EBUSY when the key is kept already.
  Status KeepWriteKey(const WriteKey& key, const PushResult& result);

  store::Stmt put_log_, read_log_, put_refused_, find_refused_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SERVER_STORE_H_
