// ServerStore: what cairn-server keeps (SPEC §5). The server is a replica built from the same
// core: a ReplicaStore (its own SQLite file, merged with the same rules as every client) plus
//   - the global log: every accepted batch with its cursor (the global sequence), kept up to a
//     configurable number of ops so clients can resume from their cursor; older entries are
//     trimmed (a client behind the trimmed part gets a snapshot of the state instead);
//   - receipts: the per-origin watermarks of the replica store (every op of an origin up to
//     `through` is applied), so a retried push is never applied twice.
// Not thread-safe: the server's loop thread only.
#ifndef CAIRN_SERVER_SERVER_STORE_H_
#define CAIRN_SERVER_SERVER_STORE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "clock/hlc.h"
#include "cairn_generated.h"
#include "oplog/op.h"
#include "store/replica_store.h"

namespace cairn::server {

struct ServerStoreOptions {
  uint64_t keep_log_ops = 1000000;  // ops kept in the global log (at least the newest batch)
  Clock* clock = nullptr;           // nullptr: the system clock
};

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
};

// Whether the server takes an op of a push: OK, or why not (EPERM, ECLOCK, ...).
using AdmitFn = std::function<Status(const Op&)>;

// One entry of the global log: a batch pushed by `origin`, its ops first_seq..last_seq.
struct LogEntry {
  uint64_t cursor = 0;
  ReplicaId origin;
  uint64_t first_seq = 0, last_seq = 0;
  std::string_view batch;  // an OpBatch frame; valid during the callback only
};

class ServerStore {
 public:
  static Result<std::unique_ptr<ServerStore>> Open(const std::string& path,
                                                   const ServerStoreOptions& options);
  const ReplicaId& id() const { return store_->replica_id(); }
  uint64_t head() const { return head_; }
  // Cursors up to floor() were trimmed from the log.
  uint64_t floor() const { return floor_; }
  int64_t NowMs() { return clock_source_->NowMs(); }

  // Applies a batch pushed by `origin` (the authenticated replica) atomically. Every op must be
  // the origin's own (EINVAL otherwise, nothing applied); ops already received are
  // skipped; an op past a gap ends the push (ECORRUPT). A transaction with an op that breaks
  // the rules or that `admit` refuses is refused whole: not applied, recorded, reported in
  // PushResult::refused; its seqs count as received. The batch gets the next cursor; its log
  // entry covers the refused seqs too (docs/protocol.md, "Refused ops"). EFORKED (nothing
  // applied) when a skipped op is not the one received under its seq while the log holds that
  // one (docs/protocol.md, "Restored replicas").
  Result<PushResult> ApplyPush(const ReplicaId& origin, const wire::OpBatch& batch,
                               const AdmitFn& admit);

  // Log entries with cursor > after, oldest first, at most max_rows.
  Status ReadLog(uint64_t after, size_t max_rows,
                 const std::function<Status(const LogEntry&)>& fn);
  // The HLC of `origin`'s op `seq` as merged here, from the log; nullopt when the log no longer
  // has it (trimmed) or never had it (refused).
  Result<std::optional<Hlc>> OpHlc(const ReplicaId& origin, uint64_t seq);
  // The server's state, for snapshots (store::ReplicaStore).
  store::ReplicaStore* state() { return store_.get(); }
  // Binds a replica id to the subject that first synced it; EPERM when another subject
  // presents it (a device cannot push as another's replica).
  Status BindReplica(const ReplicaId& replica, const std::string& subject);

 private:
  ServerStore() = default;
  // Drops the oldest log entries beyond keep_log_ops (inside the push's transaction).
  Status TrimLog(uint64_t* floor, uint64_t* log_ops);

  ServerStoreOptions options_;
  Clock* clock_source_ = nullptr;
  std::unique_ptr<HybridClock> clock_;
  std::unique_ptr<store::ReplicaStore> store_;
  uint64_t head_ = 0, floor_ = 0, log_ops_ = 0;
  store::Stmt put_log_, read_log_, put_refused_, find_refused_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SERVER_STORE_H_
