// sync::Exchange: a replica's side of one sync session (docs/protocol.md "Exchange"), driven
// by the events of a net::Link: OnOpen sends Hello, OnFrame runs the exchange (push, acks,
// batches, snapshots, streams), OnTick pings, OnClosed ends the session. It knows nothing of
// sockets, timers or threads: SyncClient drives it over libuv connections with reconnects and
// backoff (sync_client.cc); the deterministic simulation (tests/sim) over in-memory links on a
// virtual clock.
//
// One Exchange serves its replica's sessions one after the other (Begin starts each); its
// status and callbacks outlive them. The status members are guarded by `mu` (another thread
// may read them); the rest belongs to the thread that drives the links.
#ifndef CAIRN_SYNC_EXCHANGE_H_
#define CAIRN_SYNC_EXCHANGE_H_

#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/conn.h"
#include "replica/replica.h"
#include "sync/sync_client.h"

namespace cairn::sync {

// What a replica holds of the server's collections (SyncPosition::subscriptions): everything
// it reads, or (partial) collection -> the cursor after which it needs that collection's ops,
// "*" = every collection not named (docs/protocol.md "Partial sync").
struct Coverage {
  bool partial = false;
  std::map<std::string, uint64_t> holds;  // when partial
  bool operator==(const Coverage& o) const { return partial == o.partial && holds == o.holds; }
  // What a replica asking for `only` holds when it starts from scratch (or a rebase).
  static Coverage Fresh(const std::vector<std::string>& only);
};

struct Exchange : net::Link::Delegate {
  // What the driver hears of a session (on the driving thread).
  class Owner {
   public:
    virtual ~Owner() = default;
    // The server accepted the Hello.
    virtual void OnWelcomed() = 0;
    // A once-exchange is complete (`result`: OK, or the refusal of a stream's batch).
    virtual void OnIdle(const Status& result) = 0;
    // The session's link closed (the status says so already); `why` is never OK.
    virtual void OnLinkClosed(const Status& why) = 0;
  };

  Exchange(Replica* replica, SyncOptions options, Owner* owner);

  // Reads the stored position and the pending counts into the status.
  void LoadStatus();
  // A new session (its state reset) on `link`, which is connecting (OnOpen sends Hello);
  // nullptr while the driver is still making it (it sets link_ then). `once`: the session ends
  // when idle, and stream records appended after Welcome wait for the next one.
  void Begin(net::Link* link, bool once);
  // Sends what is new (local writes, records) if the session is up.
  void Push();

  // Status (thread-safe).
  void SetState(SyncState s);
  void SetStateAndError(SyncState s, const std::string& e);  // one notification for both
  // Tells the status callback when the state, the pending count or the error changed.
  void NotifyStatus();
  // Recounts the local ops and records not yet acknowledged.
  void RefreshPending();
  // Token renewal (docs/protocol.md "Token renewal"): SetToken (any thread) keeps `t` for
  // every later Hello; SendRenewal (the driving thread) hands it to the live session.
  void SetToken(std::string t);
  void SendRenewal();

  // net::Link::Delegate
  void OnOpen(net::Link* c) override;
  void OnFrame(net::Link* c, const wire::Frame& frame) override;
  void OnTick(net::Link* c, uint64_t now) override;
  void OnClosed(net::Link* c, const Status& why) override;

  Replica* replica;
  SyncOptions options;
  Owner* owner;

  // guards st, durable_cb, refused_cb, status_cb, notified, token, token_renewed
  mutable std::mutex mu;
  SyncStatus st;
  std::string token;           // the newest token (options.token until SetToken)
  bool token_renewed = false;  // set since the session last sent it
  DurableCallback durable_cb;
  RefusedCallback refused_cb;
  StatusCallback status_cb;
  std::string notified;  // what status_cb was last told (state, pending, error)

  // The session (the driving thread only).
  net::Link* link_ = nullptr;
  bool once = false;
  bool welcomed = false;
  ReplicaId server_id;
  std::optional<ReplicaId> known_server;
  uint64_t pushed_through = 0;    // highest local seq sent in this session
  uint64_t durable_through = 0;   // highest receipt the durable callback reported
  // Refused transactions above durable_through, as runs of seqs (first -> last, adjacent ones
  // merged): the watermark steps below them, and a refusal already told is not told again
  // (OnAck).
  std::map<uint64_t, uint64_t> refused_above;
  std::deque<uint64_t> inflight;  // last seq of each unacknowledged batch
  bool caught_up = false;         // a CaughtUp came after the last batch received or op pushed
  int renewals_unanswered = 0;    // Renew frames sent that no Renewed answered yet
  // Streams: per stream the highest seq sent in this session; the unacknowledged batches in
  // order (stream, last seq); the streams the server refused in this session (their records
  // stay queued and are not sent again until the next session).
  std::map<std::string, uint64_t> stream_sent;
  std::deque<std::pair<std::string, uint64_t>> stream_inflight;
  std::map<std::string, Status> stream_refused;
  // Once: each stream's last seq when the session began; records appended later wait for the
  // next exchange (else an app appending faster than a round trip would keep it from ever
  // finishing).
  std::map<std::string, uint64_t> stream_target;
  size_t stream_batch_bytes;      // bodies per batch, below the frame limit
  size_t push_batch_bytes;        // protocol::BatchWireBytes of a push, below the frame limit
  uint64_t cursor = 0;
  uint64_t stored_cursor = 0;
  Coverage coverage;              // as stored
  std::string wanted;             // options.only as a canonical JSON array
  // A snapshot being received (SnapshotBegin .. SnapshotEnd).
  bool in_snapshot = false;
  bool stale_snapshot = false;    // a staged snapshot this session has not (yet) continued
  bool snapshot_rebase = false;
  bool snapshot_evict = false;        // SnapshotBegin.evict
  bool snapshot_replace = false;      // SnapshotBegin.replace (with kFeatureHistory)
  // From the Welcome: the features the session uses (protocol::kFeature*), and the server's
  // history horizon and the cursor from which every op it accepted is at or above it
  // (docs/crdt-semantics.md "History horizon").
  uint64_t features = 0;
  Hlc history_horizon = 0;
  uint64_t horizon_cursor = 0;
  Hlc folded_horizon = 0;             // folded at in this session
  std::string snapshot_rules_digest;  // SnapshotBegin.rules_digest
  std::string rules_digest;           // the stored position's (Hello.rules_digest)
  uint64_t snapshot_cursor = 0;
  std::vector<std::string> snapshot_collections;

 private:
  void OnWelcome(const wire::Welcome& w);
  // The streams with records not sent in this session (and not refused in it), highest
  // priority first, then by name; last_seq is the last one to send in this session.
  Result<std::vector<StreamInfo>> UnsentStreams();
  void PushStreams();
  void OnStreamAck(const wire::StreamAck& ack);
  void OnAck(const wire::Ack& ack);
  // Whether the refused transaction starting at `first_seq` was told already (refused_above).
  bool RefusalKnown(uint64_t first_seq) const;
  // Adds a refused transaction's seqs to refused_above, merging adjacent runs.
  void AddRefused(uint64_t first, uint64_t last);
  bool SessionGoesOn(const char* what);
  void OnBatch(const wire::OpBatch& batch);
  void OnSnapshotBegin(const wire::SnapshotBegin& b);
  void OnSnapshotChunk(const wire::SnapshotChunk& chunk);
  void OnSnapshotEnd(const wire::SnapshotEnd& end);
  void OnCaughtUp(const wire::CaughtUp& cu);
  // Folds this replica's history at the server's horizon once its cursor reached the horizon's
  // (it then has every op below it the server took).
  void FoldHistory();
  void CheckIdle();
};

}  // namespace cairn::sync

#endif  // CAIRN_SYNC_EXCHANGE_H_
