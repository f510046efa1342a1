// Inside SessionHub (server/session_hub.h): SessionHub::Impl, what the sessions share (the
// store, the telemetry tables, the connection counts, the order they are served in), and
// Session, one client's exchange from the server's side (docs/protocol.md "Exchange"). Internal
// to core/src/server: session_hub.cc (the hub), session.cc (Hello, pushes, telemetry, the log
// pump), session_snapshot.cc (snapshots).
#ifndef CAIRN_SERVER_SESSION_H_
#define CAIRN_SERVER_SESSION_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "auth/jwt.h"
#include "net/conn.h"
#include "server/fan_out.h"
#include "server/metrics.h"
#include "server/server_store.h"
#include "server/server_writer.h"
#include "server/session_hub.h"
#include "server/stream_tables.h"
#include "server/sync_server.h"
#include "server/write_judge.h"

namespace cairn::server {

// The largest frame a peer may send before its Hello is accepted (a Hello with a token and a
// partial client's holdings fits many times over): an unauthenticated peer cannot make the
// server buffer a large frame (docs/protocol.md, "Limits").
constexpr uint32_t kMaxHelloFrameBytes = 256u << 10;

class Session;
class HttpApi;  // server/http_api.h (with the HTTP API)

struct SessionHub::Impl {
  ServerOptions options;
  std::unique_ptr<ServerStore> store;
  std::unique_ptr<StreamSink> streams;  // opened at the first stream batch
  std::function<void()> request_turn;
  // Open sessions by serial (the order they were accepted in): served in that order, the
  // same in every run (a simulation replays exactly).
  std::map<uint64_t, Session*> sessions;
  uint64_t next_serial = 1;
  // Open sessions by peer IP (ServerOptions::max_connections_per_address), and the addresses
  // already said to be at their limit (said once until their count falls to zero).
  std::unordered_map<std::string, size_t> per_address;
  std::unordered_set<std::string> at_limit_logged;
  bool total_limit_logged = false;  // said once until the count falls to the limit
  // The HTTP port (docs/backend.md): its open connections (sessions: the sync port's), and
  // the API that serves their requests (made at the first).
  std::set<net::Link*> http_links;
  std::shared_ptr<HttpApi> http_api;
  // What the HTTP request bodies being received hold together (as much as connections before
  // Hello may: ServerOptions::max_unauthenticated_bytes).
  net::ReadBudget http_bodies;
  std::function<void(uint64_t ms)> set_wake_timer;  // SessionHub::SetWakeTimer
  bool catch_up_failing = false;     // said once until it works again
  bool maintain_failing = false;     // the same
  // Sessions whose snapshot yielded (a scan budget spent): pumped again at the next turn.
  std::set<uint64_t> repump_sessions;
  // What connections that have not said Hello hold (ServerOptions::max_unauthenticated_bytes).
  net::ReadBudget unauthenticated;
  // With sync rules: who the new log entries concern (docs/sync-rules.md "Fan-out").
  FanOut fan_out;
  ServerMetrics metrics;  // GET /metrics (docs/backend.md "Metrics")
  std::unique_ptr<ServerWriter> writer;  // the server's own writes (HTTP API, SQL inbox)

  // The SQL inbox (docs/backend.md "Writing through SQL"): the rows waiting, claimed and
  // pushed as the server's own writes, each applied once; bad ones refused. PostgreSQL only.
  void DrainInbox();

  // Counts a stored push in `metrics`: its ops, and the refusals it made.
  void CountPush(const PushResult& r) {
    metrics.pushes++;
    metrics.ops_in += r.applied;
    metrics.duplicates += r.duplicates;
    for (size_t i = r.repeated; i < r.refused.size(); i++) {
      metrics.refused[CodeName(r.refused[i].code)]++;
    }
  }
  // The gauges of /metrics, read now.
  MetricGauges Gauges() const;

  void Log(const std::string& msg) {
    if (options.log) {
      options.log(msg);
    } else {
      std::fprintf(stderr, "cairn-server: %s\n", msg.c_str());
    }
  }
  void Repump(Session* s);
  void PumpAll();
  // The sync and HTTP ports share the connection limits (ServerOptions::max_connections,
  // max_connections_per_address): counts a new connection from `ip` (`open`: the connections
  // open, this one included) and returns its address key, or EBUSY (said in the log once until
  // the limit is no longer reached). Release gives it back when it closes.
  Result<std::string> Admit(const std::string& ip, size_t open);
  void Release(const std::string& key);
  size_t open_connections() const { return sessions.size() + http_links.size(); }
  // The log grew past cursor `from` (a push, or what other nodes committed): pumps the
  // sessions it concerns (all of them without sync rules; with them, those whose view the new
  // entries touch, and idle ones far behind: docs/sync-rules.md "Fan-out"), and `also`.
  void Committed(uint64_t from, Session* also);
  // SQLite (--streams, default DB.streams), or with a PostgreSQL store that database.
  Result<StreamSink*> Streams() {
    if (!streams) {
      const std::string path = options.streams_db_path.empty() ? options.db_path + ".streams"
                                                               : options.streams_db_path;
      CAIRN_ASSIGN_OR_RETURN(streams, OpenStreamSink(options.store, path));
    }
    return streams.get();
  }
};

// One client connection: the exchange of docs/protocol.md from the server's side.
class Session : public net::Link::Delegate {
 public:
  Session(SessionHub::Impl* server, uint64_t serial) : server_(server), serial_(serial) {}
  uint64_t serial() const { return serial_; }
  net::Link* conn = nullptr;
  void Pump();

  // Called at accept, before TLS or any read (the peer's address known): closes the
  // connection when the server or the peer's address has too many (false), else counts it and
  // arms the pre-Hello limits (time and frame size).
  bool Admit();
  void OnFrame(net::Link* c, const wire::Frame& frame) override;
  void OnDrained(net::Link*) override { Pump(); }
  // Ends a session whose token expired (ETOKEN) unless a Renew came first; moves on the cursor
  // of one idle behind the head for ServerOptions::idle_cursor_ms.
  void OnTick(net::Link* c, uint64_t now_ms) override;
  void OnClosed(net::Link*, const Status& why) override {
    server_->metrics.bytes_in_closed += conn->wire_bytes_in();
    server_->metrics.bytes_out_closed += conn->wire_bytes_out();
    server_->sessions.erase(serial_);
    if (counted_) server_->Release(address_);
    if (!refused_ && (live_ || !why.ok())) {
      server_->Log("session " + (live_ ? replica_.Hex() : std::string("(no hello)")) + " from " +
                   conn->peer() + " closed: " + (why.ok() ? "by the server" : why.ToString()));
    }
    server_->repump_sessions.erase(serial_);
    server_->fan_out.Forget(serial_);
    delete this;
  }

  // What GET /v1/clients says of it (docs/backend.md "Clients"); nullopt before its Hello.
  struct Info {
    ReplicaId replica;
    std::optional<std::string> subject;  // (none on a server that checks no tokens)
    std::string peer;
    uint64_t cursor = 0;  // every log entry up to it was sent or skipped
    int64_t since_ms = 0;
  };
  std::optional<Info> info() const {
    if (!live_) return std::nullopt;
    return Info{replica_, claims_ ? std::optional<std::string>(claims_->subject) : std::nullopt,
                conn->peer(), sent_, live_since_ms_};
  }

 private:
  void OnHello(const wire::Hello& hello);
  void OnBatch(const wire::OpBatch& batch);
  void OnStreamBatch(const wire::StreamBatch& batch);
  void OnRenew(const wire::Renew& renew);
  // The claims of `token` if the server takes it for this replica: EPERM, or ETOKEN when it
  // expired.
  Result<auth::Claims> VerifiedClaims(const std::string& token) const;
  int64_t TokenExpiresMs() const;  // Welcome/Renewed.token_expires_ms
  // Whether the client gets `collection`'s ops from the log entry at `cursor`.
  bool Wants(const std::string& collection, uint64_t cursor) const {
    if (!all_collections_ && subscriptions_.count(collection) == 0) return false;
    if (holds_.empty()) return true;
    auto it = holds_.find(collection);
    if (it == holds_.end()) it = holds_.find("*");
    return it == holds_.end() || cursor > it->second;
  }
  bool Reads(const std::string& collection) const {
    return all_collections_ ? !claims_ || grants_ || claims_->MayRead(collection)
                            : subscriptions_.count(collection) > 0;
  }
  // With sync rules: whether the document is in the client's view now (docs/sync-rules.md
  // "Reading"); a document that cannot be read is not.
  bool InView(const std::string& collection, const std::string& key);
  // docs/sync-rules.md "Fan-out": whether the client gets nothing of the entry `r` tells of
  // (with sync rules: its channels are out of the view, it is not the client's own, and none
  // of the documents it moves is held); such entries go as coverage, unread.
  bool Skips(const EntryReach& r) const;
  // The kept entry right after cursor `after` if the client skips it, else nullptr (read the
  // log, or nothing is left).
  const EntryReach* NextSkipped(uint64_t after) const {
    const EntryReach* r = server_->fan_out.Next(after);
    return r != nullptr && Skips(*r) ? r : nullptr;
  }
  // The view changed (or was set): the hub's index of who views what follows it.
  void IndexView() { server_->fan_out.SetView(serial_, grants_ ? &view_ : nullptr); }
  // Whether a document in `channels` is in the client's view (with sync rules).
  bool InChannels(const std::vector<std::string>& channels) const { return view_.Holds(channels); }
  // docs/sync-rules.md "Changes of view": stores `next`, the replica's view record for a
  // change to view_ at the session's cursor (record_), before the change's first frame.
  Status KeepViewRecord(rules::ViewRecord next);
  // At Hello: the replica's view record read, the change from what it may hold planned.
  Status StartView();
  // Plans the change: at once, or once the snapshot being sent is done.
  Status ChangeView(const rules::View& maybe, const rules::View& surely);
  // The plan: every document the client may hold (in `maybe` at its cursor, or per held_) and
  // that is not in view_ goes into leaving_; every one in view_ that it does not surely hold
  // (`surely`, or held_) into entering_ (if in view_ at the head too).
  Status PlanViewChange(const rules::View& maybe, const rules::View& surely);
  using DocRef = std::pair<std::string, std::string>;  // collection, key
  // docs/sync-rules.md "Reading". Whether the client holds the document of move `m` just
  // before it.
  bool HoldsBefore(const DocRef& ref, const protocol::ChannelMove& m) const;
  // Whether move `m` of the entry at `cursor` brings a document the client gets into its view
  // that it does not hold (not yet asking whether it is in the view at the head).
  bool MayEnter(const protocol::ChannelMove& m, uint64_t cursor) const;
  // Before the log entry at `cursor` is sent: the documents its moves bring into the view (and
  // that are in it at the head) go into entering_, held from now on; true if any did.
  bool MarkEntering(const std::vector<protocol::ChannelMove>& moves, uint64_t cursor);
  // With the entry: documents its moves take out of the view go into `enc` (OpBatch.leave).
  // `own`: the entry is the client's own push (it holds its own ops of each document the push
  // wrote: one the session takes as not held leaves at once).
  void TrackMoves(std::vector<protocol::ChannelMove> moves, uint64_t cursor, bool own,
                  protocol::BatchEncoder* enc);
  // docs/sync-rules.md "Channel moves in the log": an entry of the client's own push wrote
  // the documents `written`, of which it moves those of `moves`; each of the others out of the
  // view at the head goes into `enc` (OpBatch.leave), so that the client keeps none of its own
  // ops of it.
  void LeaveOwnWrites(const std::set<DocRef>& written,
                      const std::vector<protocol::ChannelMove>& moves, uint64_t cursor,
                      protocol::BatchEncoder* enc);
  // Moves documents of entering_ into `enc` (OpBatch.enter: their state at the head, those
  // still in the view) while their ops stay within `budget` bytes (at least one document).
  Status AddEntering(size_t budget, protocol::BatchEncoder* enc);
  // The digest of the sync rules served ("": none).
  std::string RulesDigest() const {
    return server_->options.rules ? server_->options.rules->digest() : std::string();
  }
  // Decides whether the client needs a snapshot (docs/protocol.md "Snapshots").
  Status PlanSnapshot(const wire::Hello& hello, bool same_server, uint64_t cursor);
  // The state of every collection the client reads, at the log's head.
  struct Snapshot;
  Snapshot RebaseSnapshot();
  // Sends the snapshot's frames while the write queue has room; true when it is complete.
  bool PumpSnapshot();
  // Whether a snapshot replaces what the client holds: the history is folded and the client
  // can (docs/crdt-semantics.md "History horizon").
  bool Replaces() const;

  // A snapshot being sent.
  struct Snapshot {
    bool begun = false, rebase = false, resumed = false;
    // The server's history is folded: the client replaces what it holds of the collections
    // brought, and gets its own ops too (SnapshotBegin.replace).
    bool replace = false;
    Hlc horizon = 0;  // the server's history horizon when it was planned (a fold ends it)
    uint64_t cursor = 0;
    std::vector<std::string> announced;   // SnapshotBegin.collections
    std::vector<std::string> collections;  // the collections read, sorted
    size_t next = 0;                       // index into collections
    std::string after_key;                 // in collections[next]: scanned up to it
    std::string sent_key;                  // ... and the last document sent whole (chunks
                                           // name it: never a document outside the view)
    // A document too large for one chunk (docs/protocol.md "Limits"): the ops of it not sent
    // yet, and its key (after_key once they are).
    std::vector<Op> carry;
    std::string carry_key;
    std::map<ReplicaId, uint64_t> watermarks;
  };

  SessionHub::Impl* server_;
  const uint64_t serial_;
  std::string address_;          // the peer's address key (AddressKey)
  bool counted_ = false;         // counted in per_address[address_]
  bool refused_ = false;         // closed at accept by a connection limit
  bool live_ = false;            // Hello accepted
  int64_t live_since_ms_ = 0;    // ... then (the store's clock)
  ReplicaId replica_;
  uint64_t sent_ = 0;            // every log entry up to this cursor was sent or skipped
  bool caught_up_sent_ = false;
  // Idle at sent_ when last pumped (FanOut::SetIdle), since idle_since_ms_ (the store's clock).
  bool idle_ = false;
  int64_t idle_since_ms_ = 0;
  bool all_collections_ = true;
  std::set<std::string> subscriptions_;  // when !all_collections_
  // A partial client: collection -> the cursor after which it needs that collection's ops
  // ("*": every other collection). Empty: it gets every collection it reads in full.
  std::map<std::string, uint64_t> holds_;
  std::optional<Snapshot> snapshot_;
  std::optional<auth::Claims> claims_;   // when the server has a secret
  // With sync rules: what the token may read and write, and the channels subscribed to (empty:
  // every channel it may read).
  std::optional<rules::Grants> grants_;
  std::set<std::string> channels_;
  // Documents whose channels moved while this session streamed: whether the client holds each
  // (docs/sync-rules.md "Reading"; the others it holds exactly while they are in its view).
  std::map<DocRef, bool> held_;
  // Documents entering the view whose state is still to be sent: sent before the log entry
  // that moved them in (the client's cursor does not pass it without them).
  std::set<DocRef> entering_;
  // With sync rules: the view the session serves, the replica's view record as stored, a
  // change of view still to plan (when a snapshot is done: the views the client may hold and
  // surely holds), the documents it takes out of the view still to send, and the collections an
  // added-collections snapshot brings (whole, in view_: no change concerns them).
  rules::View view_;
  rules::ViewRecord record_;
  std::optional<std::pair<rules::View, rules::View>> change_;
  std::vector<DocRef> leaving_;
  std::set<std::string> fresh_;
  // The replica's own ops it has (Hello's own_seq): its later ones in the log (a file restored
  // from a backup lacks them) are sent back to it. nullopt: an older client, never sent back.
  std::optional<uint64_t> own_seq_;
  uint64_t features_ = 0;  // negotiated (protocol::kFeature*)
  // Documents entered the view while the session was behind the last fold: a rebase snapshot
  // instead of their states (Pump).
  bool rebase_for_fold_ = false;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SESSION_H_
