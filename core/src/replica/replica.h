// cairn::Replica: the C++ API of a local replica (docs/crdt-semantics.md, docs/storage-format.md).
// One replica is one SQLite file.
//
// Every write is atomic and durable when the call returns OK (WAL, synchronous=FULL). Reads see
// the last committed state. Export and Import move ops between replicas as protocol frames, so a
// file can carry a sync. A Replica may be shared between threads: calls are serialized by an
// internal mutex (the C API documents the same).
#ifndef CAIRN_REPLICA_REPLICA_H_
#define CAIRN_REPLICA_REPLICA_H_

#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "clock/hlc.h"
#include "oplog/json_codec.h"
#include "oplog/op.h"
#include "oplog/record.h"
#include "oplog/validate.h"

namespace cairn {


struct ReplicaOptions {
  Clock* clock = nullptr;         // physical time source; nullptr: the system clock
  bool create = true;             // create the file when it does not exist
  bool read_only = false;         // open for reading only (no writes, no import)
  uint32_t busy_timeout_ms = 5000;
  // The id given to the replica when the file is created (tests that replay a history exactly);
  // nullopt: a random one. Ignored when the file exists.
  std::optional<ReplicaId> new_id;
};

// A list of changes applied atomically by Replica::Write (like leveldb's WriteBatch). Reads do
// not see a batch until it is written. Entries are kept encoded (about 10 bytes plus names and
// value per entry), so a batch of 100,000 changes stays small.
class WriteBatch {
 public:
  WriteBatch& Set(std::string_view collection, std::string_view key, std::string_view field,
                  const Value& value);
  WriteBatch& Increment(std::string_view collection, std::string_view key,
                        std::string_view field, int64_t delta);
  WriteBatch& Delete(std::string_view collection, std::string_view key);
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  void Clear() {
    rep_.clear();
    count_ = 0;
  }

  struct Entry {
    OpKind kind;
    std::string_view collection, key, field;
    Value value;
    int64_t delta;
  };
  // Calls fn for each entry in order (views valid during the call).
  Status ForEach(const std::function<Status(const Entry&)>& fn) const;

 private:
  // Appends an entry's kind, collection and key; the caller appends the rest.
  void AddEntry(OpKind kind, std::string_view collection, std::string_view key);
  std::string rep_;
  size_t count_ = 0;
};

// Records appended atomically to one stream by Replica::Append. Each record is validated and
// encoded when added (about its field names and values in size), so a batch of 100,000 records
// stays compact.
class RecordBatch {
 public:
  // Adds a record: EINVAL (nothing added) for no fields, a bad field name or value, or a record
  // larger than kMaxRecordBytes (oplog/record.h). `ts_ms`: the device timestamp; nullopt: the
  // replica's time when the batch is appended.
  Status Add(const Fields& fields, std::optional<int64_t> ts_ms = std::nullopt);
  size_t size() const { return records_.size(); }
  bool empty() const { return records_.empty(); }
  void Clear() { records_.clear(); }
  const std::vector<NewRecord>& records() const { return records_; }

 private:
  std::vector<NewRecord> records_;
};

// For each origin, every op with seq <= the number is accounted for.
using VersionVector = std::map<ReplicaId, uint64_t>;

struct ReplicaStatus {
  ReplicaId id;
  uint64_t last_seq = 0;       // ops this replica has made
  int64_t pending_ops = 0;     // local ops not yet acknowledged by a server (the outbox)
  int64_t held_back_ops = 0;   // received ops waiting for a gap to be filled
  int64_t rejected_ops = 0;
  Hlc hlc = 0;
  VersionVector known;
  uint64_t cursor = 0;                  // the sync server's cursor this replica has reached
  std::optional<int64_t> last_sync_ms;  // last completed exchange with the server
  std::vector<StreamInfo> streams;      // by name
  int64_t now_ms = 0;                   // the replica's time when read (stream ages)
  // {"cursor":..,"held_back_ops":..,"known":{"<origin hex>":through},"last_sync_ms":..|null,
  //  "pending_ops":..,"rejected_ops":..,"replica_id":"..","seq":..,"streams":{name: StreamJson}}
  Json ToJson() const;
};

struct ExportStats {
  uint64_t ops = 0;
  uint64_t batches = 0;
  uint64_t bytes = 0;
};

struct ImportStats {
  uint64_t ops = 0;        // ops in the file
  uint64_t applied = 0;    // merged into the state
  uint64_t duplicates = 0; // already accounted for, skipped
  uint64_t held_back = 0;  // staged until a gap is filled
};

// A stream's settings and counters as JSON (cairn status): {"bytes","dropped","last_seq",
// "max_age_ms","max_bytes","oldest_age_ms" (null when empty),"policy","priority","records",
// "rejected","uploaded"}.
Json StreamJson(const StreamInfo& s, int64_t now_ms);

namespace store {
class ReplicaStore;
}

class Replica {
 public:
  // Opens the replica at `path`, creating it when missing (unless !options.create).
  // Errors: ENOTREPLICA (not a Cairn file), EVERSION (newer format), EIO, EBUSY.
  static Result<std::unique_ptr<Replica>> Open(const std::string& path,
                                               const ReplicaOptions& options = {});
  ~Replica();
  // Closes the file; later calls fail with ECLOSED.
  Status Close();

  const ReplicaId& id() const { return id_; }

  // Applies the batch atomically. EINVAL (nothing written) for an empty batch, a bad name, key or
  // value. Each entry becomes one op; together they form one transaction. Returns its receipt
  // (docs/c-api.md "Write receipts"): the seq of its last op, which the server's durable
  // watermark reaches once it made the transaction durable (unless it refused it).
  Result<uint64_t> Write(const WriteBatch& batch);
  Result<uint64_t> Put(const std::string& collection, const std::string& key, const Fields& fields);
  Result<uint64_t> Increment(const std::string& collection, const std::string& key,
                             const std::string& field, int64_t delta);
  Result<uint64_t> Delete(const std::string& collection, const std::string& key);

  // The visible fields of a document, or nullopt when it is not visible.
  Result<std::optional<Fields>> Get(const std::string& collection, const std::string& key);
  // Canonical JSON of all visible data, {"collection":{"key":{"field":value}}}, in pieces.
  Status Dump(const std::function<void(std::string_view)>& sink);
  Result<std::string> DumpString();
  // SHA-256 (hex) of the canonical dump; replicas that saw the same ops have the same digest.
  Result<std::string> Digest();
  // Per collection: SHA-256 (hex) of the canonical JSON of that collection's documents.
  Result<std::map<std::string, std::string>> CollectionDigests();
  // Runs one read-only SQL statement; `row` gets each row as a canonical JSON object.
  // EREADONLY for a statement that would write; EINVAL for more than one statement.
  Status Query(const std::string& sql, const std::function<Status(const std::string&)>& row) {
    return Query(sql, {}, row);
  }
  // The same with `params` bound to the statement's parameters (?, ?NNN, :name) in order:
  // EINVAL when their count differs from the statement's.
  Status Query(const std::string& sql, const std::vector<Value>& params,
               const std::function<Status(const std::string&)>& row);
  // The op log: the ops the state depends on plus the unacknowledged local ops.
  Status Log(const std::function<Status(const Op&)>& fn);
  Status Rejected(const std::function<Status(const RejectedOp&)>& fn);

  // Writes every op this replica has (after compaction: those the state depends on) to `path` as
  // protocol frames. With `since`, leaves out what a replica at that version already has.
  Result<ExportStats> Export(const std::string& path, const VersionVector* since = nullptr);
  // Applies an export file atomically: all of it or, on any error, nothing. ECORRUPT for a
  // truncated or damaged file, EVERSION for a file from a newer format.
  Result<ImportStats> Import(const std::string& path);

  Result<ReplicaStatus> GetStatus();
  // Local ops not yet acknowledged by a server (GetStatus().pending_ops, cheaper).
  Result<int64_t> PendingOps();
  VersionVector Known();

  // `fn` runs after each committed local write (on the writer's thread, outside the lock), so a
  // sync client can push at once. One listener; nullptr removes it.
  void SetWriteListener(std::function<void()> fn);

  // --- Telemetry streams (docs/storage-format.md "Streams") ---
  // Creates `stream` or changes its settings. EINVAL for a bad name or a negative max_age_ms.
  Status ConfigureStream(const std::string& stream, const StreamConfig& config);
  // Appends one record (stamped now) or a batch (one transaction), creating the stream with
  // default settings when it does not exist. When the call returns OK the records are durable.
  // Errors (nothing appended): EINVAL (a bad name, fields or an empty batch), EFULL (the stream
  // is full under the reject policy, or a record is larger than its max_bytes: its rejected
  // count grows), EREADONLY.
  Result<AppendResult> Append(const std::string& stream, const Fields& fields);
  Result<AppendResult> Append(const std::string& stream, const RecordBatch& batch);
  // Every stream with its settings and counters, by name.
  Result<std::vector<StreamInfo>> Streams();
  // The replica's time: its clock source, corrected by the server's (what stamps records).
  int64_t NowMs() const;
  // --- Change listeners ---
  // Documents of one collection whose visible state a committed transaction changed (a field's
  // value, a counter, a delete or a revival); `local`: written through this replica (else
  // received: sync, snapshot, import, a refused write undone).
  using ChangeSet = cairn::ChangeSet;  // oplog/op.h
  using ChangeListener = std::function<void(const ChangeSet&)>;
  // Adds a listener; returns its id (never 0). Listeners run after the transaction committed,
  // outside the replica's lock, one call at a time per replica and in commit order: on the
  // thread that committed (the writer's for local writes, the sync thread for received ops),
  // or on another thread of this replica that committed and is delivering at that moment
  // (never on a thread that only read). A listener may read and write the replica (its own
  // writes are delivered after it returns); it must not throw. A document may be reported
  // whose visible state ends up the same (a delete of a deleted document, a document
  // recomputed after a refused write). Changes committed but not yet delivered when the
  // replica closes are not delivered.
  uint64_t AddChangeListener(ChangeListener fn);
  // Removes a listener (false: no such id). It is not called for anything after this returns,
  // except a call another thread is starting at that moment; a running call finishes, and the
  // listener is destroyed after it.
  bool RemoveChangeListener(uint64_t id);

 private:
  friend class SyncAccess;  // replica/sync_access.h: what the sync engine reaches
  Replica() = default;
  Status CheckOpen() const;
  // EREADONLY when opened read-only; EPERM for a cairn-server's own file (server_file_).
  Status CheckWritable() const;
  Status ValidateBatch(const WriteBatch& batch);
  Result<uint64_t> WriteLocked(const WriteBatch& batch);
  // The body of a local write, inside a transaction the caller opened: the batch's ops stamped
  // by the clock, or from `stamp_from` on (not 0: writes made again below the clock,
  // SyncAccess::ReapplyExpired); rolled back on failure.
  Status WriteInTxn(const WriteBatch& batch, Hlc stamp_from);
  Result<ImportStats> ImportLocked(std::FILE* in);
  // Runs `body` in one write transaction under the lock; commits when it succeeds, else rolls
  // back.
  Status InWriteTxn(const std::function<Status()>& body);
  // Tells the write listener (a sync client) that something was written.
  void NotifyWritten();

  // Holds mu_; on release, delivers the changes committed meanwhile (DeliverChanges).
  class Locked;
  void DeliverChanges() noexcept;
  bool MoreChanges();
  void TrackChangesIfListened();

  mutable std::mutex mu_;
  std::mutex listener_mu_;  // guards write_listener_, change_listeners_, next_listener_
  std::function<void()> write_listener_;
  struct Listener {
    explicit Listener(ChangeListener f) : fn(std::move(f)) {}
    ChangeListener fn;
    std::atomic<bool> removed{false};
  };
  std::map<uint64_t, std::shared_ptr<Listener>> change_listeners_;
  uint64_t next_listener_ = 1;
  std::atomic<bool> delivering_{false};  // a thread is calling change listeners
  std::unique_ptr<store::ReplicaStore> store_;
  std::unique_ptr<HybridClock> clock_;
  Clock* clock_source_ = nullptr;
  ReplicaId id_;
  bool read_only_ = false;
  bool server_file_ = false;    // a cairn-server's file: read, never written (CheckWritable)
  bool clock_rewound_ = false;  // CorrectClock wound the clock back: persist it at the next ack
  std::optional<int64_t> stored_offset_ms_;  // the clock correction in the file
};

}  // namespace cairn

#endif  // CAIRN_REPLICA_REPLICA_H_
