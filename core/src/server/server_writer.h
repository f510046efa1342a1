// ServerWriter: the writes the server makes itself (docs/backend.md "Writing"): the HTTP
// API's, and with a PostgreSQL store the SQL inbox's. They are transactions of the process's
// own write origin (a random replica id made at its first write, so nodes of one database never
// share seqs), stamped after every op the server holds, pushed through
// ServerStore::ApplyPush like a device's batch: the same checks, merge, log entry, and the
// sessions told at once.
//
// Internal to core/src/server: the hub owns one (SessionHub::Impl::writer). Not thread-safe.
#ifndef CAIRN_SERVER_SERVER_WRITER_H_
#define CAIRN_SERVER_SERVER_WRITER_H_

#include <optional>
#include <vector>

#include "base/result.h"
#include "clock/hlc.h"
#include "oplog/op.h"
#include "server/server_store.h"
#include "server/session_hub.h"

namespace cairn::server {

class ServerWriter {
 public:
  explicit ServerWriter(SessionHub::Impl* hub);

  // The write origin, made at the first call.
  Result<ReplicaId> Origin();
  // Pushes `txns` (each a transaction of ops without identity) in one batch: `admit` and
  // `judge` as ApplyPush takes them, and `extras`, whose inbox rows (one per transaction, in
  // order) get their transactions' first seqs here. EINVAL before anything is done for a
  // transaction beyond the limits (docs/crdt-semantics.md "Size of a change") or a batch
  // beyond a push's; the store's errors (EBUSY: retry).
  Result<PushResult> Write(std::vector<std::vector<Op>> txns, const AdmitFn& admit, TxnJudge* judge,
                           PushExtras* extras);

 private:
  // The server's time, for the write origin's clock.
  class StoreClock : public Clock {
   public:
    explicit StoreClock(SessionHub::Impl* hub) : hub_(hub) {}
    int64_t NowMs() override;

   private:
    SessionHub::Impl* hub_;
  };

  SessionHub::Impl* hub_;
  std::optional<ReplicaId> origin_;
  StoreClock clock_source_;
  HybridClock clock_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SERVER_WRITER_H_
