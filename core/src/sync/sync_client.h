// SyncClient: a replica's side of the exchange (docs/protocol.md "The exchange (network)").
//
//   Hello(cursor) -> Welcome(server time)      the clock offset is applied to the replica's HLC
//   push: the outbox in batches, at most `window` unacknowledged; an op counts as durable on the
//         server only when its Ack arrives (then it leaves the outbox; the refused callback is
//         told of each refused transaction, then the durable callback of the new watermark:
//         docs/c-api.md "Write receipts"); after a lost Ack the same ops are pushed again and
//         the server skips them
//   pull: every batch the server sends is applied atomically with its cursor
//   streams: after the outbox, each telemetry stream's queued records in seq order, highest
//         priority first, at most `window` batches unacknowledged; a record leaves the replica
//         only when its StreamAck arrives (docs/protocol.md "Streams")
//   idle: everything local acknowledged (ops and records) and a CaughtUp received after the
//         last Ack and the last batch
//
// SyncOnce() runs one exchange on the calling thread and returns when idle (or on the first
// error). Start() keeps a background thread syncing (live), reconnecting after failures with
// exponential backoff and jitter; NetworkChanged() reconnects at once. Thread-safe.
#ifndef CAIRN_SYNC_SYNC_CLIENT_H_
#define CAIRN_SYNC_SYNC_CLIENT_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "net/conn.h"
#include "replica/replica.h"

namespace cairn::sync {

struct SyncOptions {
  std::string server;           // HOST:PORT
  std::string token;            // bearer token for the server (JWT)
  bool tls = false;
  std::string ca_file;          // trusted CAs (PEM); empty: the system's bundle
  std::string server_name;      // name the certificate must carry; empty: the host of `server`
  std::vector<std::string> only;  // collections to sync; empty: all the token may read
  // With a server's sync rules (docs/sync-rules.md): the channels to sync, among those the
  // token may read; empty: all of them.
  std::vector<std::string> channels;
  uint32_t max_batch_ops = 8192;  // ops per pushed batch (whole transactions)
  uint32_t window = 8;            // unacknowledged batches in flight
  net::ConnOptions conn;
  uint32_t connect_timeout_ms = 10000;
  uint32_t handshake_timeout_ms = 10000;
  uint32_t backoff_min_ms = 250;
  uint32_t backoff_max_ms = 30000;
  uint32_t poll_ms = 500;         // live mode: how often the outbox is checked for writes made
                                  // by other processes (writes through this Replica wake it)
};

// "tasks,notes" -> {"tasks", "notes"} (SyncOptions::only); "" -> {}. EINVAL for a name that
// breaks docs/crdt-semantics.md "Data model".
Result<std::vector<std::string>> ParseCollectionList(const std::string& list);
// "user:alice,public" -> {"user:alice", "public"} (SyncOptions::channels); "" -> {}. EINVAL for
// an empty name ("a,,b").
Result<std::vector<std::string>> ParseChannelList(const std::string& list);

enum class SyncState { kOffline, kConnecting, kSyncing, kIdle };
const char* SyncStateName(SyncState s);

struct SyncStatus {
  SyncState state = SyncState::kOffline;
  int64_t pending_ops = 0;               // local ops not yet acknowledged
  uint64_t pending_records = 0;          // stream records not yet acknowledged
  std::string last_error;                // "" when the last attempt did not fail
  std::optional<int64_t> last_sync_ms;   // last completed exchange
  uint64_t cursor = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;  // on the wire, this client's lifetime
  uint64_t ops_pushed = 0, ops_received = 0;
  uint64_t records_uploaded = 0;  // stream records the server acknowledged
  uint64_t txns_refused = 0;  // refused by the server (their ops: the rejected-ops table)
  uint32_t reconnects = 0;
  // When the session's token expires (ms since the Unix epoch), as the server last said
  // (Welcome, Renewed); 0: unknown or no token. Renew before it (SyncClient::SetToken).
  int64_t token_expires_ms = 0;
  std::string ToJson() const;
};

// Called on the sync thread when the server made the local ops up to `through_seq` durable
// (docs/c-api.md "Write receipts"): every local transaction up to it, but those the refused
// callback reported before this call (they are in the replica's rejected-ops table). Never
// called for an acknowledgement that covers refused transactions alone.
using DurableCallback = std::function<void(uint64_t through_seq)>;
// Called on the sync thread for each local transaction the server refused (its seqs, the
// server's code and reason), before the durable callback whose watermark covers it.
using RefusedCallback = std::function<void(uint64_t first_seq, uint64_t last_seq, Code code,
                                           const std::string& reason)>;
// Called on the sync thread when the state, the count of pending ops or the last error changed.
using StatusCallback = std::function<void(const SyncStatus& status)>;

class SyncClient {
 public:
  // `replica` must outlive the client.
  SyncClient(Replica* replica, SyncOptions options);
  ~SyncClient();
  SyncClient(const SyncClient&) = delete;
  SyncClient& operator=(const SyncClient&) = delete;

  // One exchange: connect, push everything, pull everything, return once idle. timeout_ms = 0:
  // no limit. Errors: ENETWORK (connection failed or lost), ETIMEDOUT, EPERM (refused by the
  // server), ECORRUPT (a bad frame), or the server's code; also the code of a stream batch the
  // server refused (its records stay queued), once everything else is done.
  Status SyncOnce(uint32_t timeout_ms = 0);
  // Live sync on a background thread until Stop().
  Status Start();
  void Stop();
  // The network came back: reconnect now instead of waiting for the backoff.
  void NetworkChanged();
  // A renewed token (docs/protocol.md "Token renewal"): the live session takes it without
  // reconnecting, and every later connection uses it. A session that ended with ETOKEN (its
  // token expired) waits for this call instead of retrying, then reconnects at once. A token
  // the server refuses ends the session with the server's error, as at connect.
  void SetToken(std::string token);
  SyncStatus status() const;
  void SetDurableCallback(DurableCallback cb);
  void SetRefusedCallback(RefusedCallback cb);
  void SetStatusCallback(StatusCallback cb);

  struct Engine;

 private:
  std::unique_ptr<Engine> engine_;
};

}  // namespace cairn::sync

#endif  // CAIRN_SYNC_SYNC_CLIENT_H_
