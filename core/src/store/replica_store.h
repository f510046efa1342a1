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
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "crdt/doc_state.h"
#include "oplog/op.h"
#include "store/sqlite.h"

namespace cairn::store {

// Storage format version (PRAGMA user_version). A file with a larger number is refused.
constexpr int kFormatVersion = 1;
// PRAGMA application_id of a Cairn replica: "CRN1" as a big-endian 32-bit integer.
constexpr int32_t kApplicationId = 0x43524E31;

struct StoreOptions {
  bool create = true;        // create the file when missing
  bool read_only = false;
  uint32_t busy_timeout_ms = 5000;
  size_t cache_docs = 4096;  // write-back cache size before an intermediate flush
};

struct OriginInfo {
  ReplicaId id;
  uint64_t through = 0;  // every op of this origin with seq <= through is accounted for
};

using Fields = std::map<std::string, Value>;

struct RejectedOp {
  int64_t id = 0;
  Op op;
  std::string reason;
  int code = 0;
  int64_t at_ms = 0;
};

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

  // --- Writing (REQUIRES: inside Begin/Commit) ---
  Status Begin();
  // Flushes, persists `hlc` and the local seq, commits. On failure the transaction is rolled back.
  Status Commit(Hlc hlc);
  void Rollback();
  bool in_transaction() const { return txn_ != nullptr; }

  // Applies a validated op through the merge rules. A local op (origin == replica_id()) also goes
  // to the outbox and advances the local seq (REQUIRES: op.id.seq == last_seq() + 1).
  Status Apply(const Op& op, bool local);
  uint64_t Through(const ReplicaId& origin);
  Status SetThrough(const ReplicaId& origin, uint64_t through);
  // Case-insensitive clash of a new name with an existing, different one ("" if none).
  std::string CollectionClash(const std::string& name) const;
  std::string FieldClash(const std::string& name) const;
  // Gap handling (SPEC §2: a gap is held back until filled).
  Status StagePending(const Op& op);
  Status StagePendingRange(const ReplicaId& origin, uint64_t from, uint64_t through);
  // Applies every staged range that now connects to its origin's watermark.
  Status DrainPending();

  // --- Reading ---
  // The visible fields of a document; nullopt when not visible.
  Result<std::optional<Fields>> GetDoc(const std::string& collection, const std::string& key);
  // Visible documents in canonical order (collection name, then key, bytewise).
  Status ForEachVisibleDoc(
      const std::function<Status(const std::string&, const std::string&, const Fields&)>& fn);
  // The ops the state still depends on (the compacted log), ordered by origin then seq.
  Status ForEachSurvivor(const std::function<Status(const Op&)>& fn);
  // Survivors plus the unacknowledged local ops (outbox), ordered by origin then seq.
  Status ForEachLoggedOp(const std::function<Status(const Op&)>& fn);
  Status ForEachRejected(const std::function<Status(const RejectedOp&)>& fn);
  Status RecordRejected(const Op& op, int code, const std::string& reason, int64_t now_ms);
  std::vector<OriginInfo> Origins() const;
  Result<int64_t> OutboxCount();
  Result<int64_t> RejectedCount();
  Result<int64_t> PendingCount();
  Db* db() { return &db_; }

 private:
  struct CachedDoc {
    int64_t doc_id = 0;  // 0: not in the file yet
    int64_t coll = 0;
    std::string collection, key;
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
  Result<CachedDoc*> LoadDoc(const std::string& collection, const std::string& key);
  Status LoadIncs(CachedDoc* doc);
  Status FlushDoc(CachedDoc* doc);
  Status FlushAll();
  Status AppendOutbox(const Op& op, int64_t coll, int64_t field);
  Result<Stmt*> MaterializeStmt(int64_t coll, int64_t field);
  const std::string& FieldName(int64_t idx) const { return field_names_.at(idx); }
  Status ScanOps(Stmt* stmt, const std::function<Status(const Op&)>& fn);

  Db db_;
  StoreOptions options_;
  std::unique_ptr<Txn> txn_;
  ReplicaId replica_id_;
  int64_t local_origin_ = 0;
  Hlc hlc_ = 0;
  uint64_t last_seq_ = 0;
  int64_t next_doc_ = 1;

  std::unordered_map<std::string, Collection> collections_;  // by exact name
  std::unordered_map<std::string, std::string> collections_lower_;
  std::unordered_map<std::string, int64_t> fields_;
  std::unordered_map<std::string, std::string> fields_lower_;
  std::unordered_map<int64_t, std::string> field_names_;
  std::map<std::pair<int64_t, int64_t>, bool> columns_;  // (coll, field) -> materialized
  std::map<ReplicaId, int64_t> origin_index_;
  std::unordered_map<int64_t, OriginInfo> origins_;
  std::map<std::pair<int64_t, int64_t>, Stmt> materialize_;

  std::unordered_map<std::string, CachedDoc> cache_;

  Stmt find_doc_, load_cells_, load_incs_, insert_doc_, update_doc_, put_cell_, del_cell_,
      put_inc_, del_inc_, del_incs_, put_outbox_, save_state_, set_through_, stage_op_;
};

}  // namespace cairn::store

#endif  // CAIRN_STORE_REPLICA_STORE_H_
