#include "server/sync_server.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "auth/jwt.h"
#include "base/killpoint.h"
#include "net/tls.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "server/session_hub.h"
#include "server/stream_tables.h"
#ifdef CAIRN_HAVE_POSTGRESQL
#include "server/pg_stream_tables.h"
#endif

namespace cairn::server {

namespace {

using protocol::FinishFrame;

const char* BodyName(wire::Body b) { return wire::EnumNameBody(b); }

// The largest frame a peer may send before its Hello is accepted (a Hello with a token and a
// partial client's holdings fits many times over): an unauthenticated peer cannot make the
// server buffer a large frame (docs/protocol.md, "Limits").
constexpr uint32_t kMaxHelloFrameBytes = 256u << 10;

}  // namespace

class Session;

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
  bool catch_up_failing = false;     // said once until it works again
  bool maintain_failing = false;     // the same
  // Sessions whose snapshot yielded (a scan budget spent): pumped again at the next turn.
  std::set<uint64_t> repump_sessions;

  void Log(const std::string& msg) {
    if (options.log) {
      options.log(msg);
    } else {
      std::fprintf(stderr, "cairn-server: %s\n", msg.c_str());
    }
  }
  void Repump(Session* s);
  void PumpAll();
  // SQLite (--streams, default DB.streams), or with a PostgreSQL store that database.
  Result<StreamSink*> Streams() {
    if (!streams) {
      if (!options.store.url.empty()) {
#ifdef CAIRN_HAVE_POSTGRESQL
        CAIRN_ASSIGN_OR_RETURN(streams, OpenPgStreamTables(options.store.url));
#else
        return Status::Invalid("built without PostgreSQL support");
#endif
      } else {
        const std::string path = options.streams_db_path.empty() ? options.db_path + ".streams"
                                                                 : options.streams_db_path;
        CAIRN_ASSIGN_OR_RETURN(streams, StreamTables::Open(path));
      }
    }
    return streams.get();
  }
};

// The libuv transport: a listener, TCP (or TLS) connections handed to the hub, and the loop.
struct SyncServer::Impl {
  std::unique_ptr<SessionHub> hub;
  ServerOptions options;
  std::unique_ptr<net::TlsConfig> tls;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop_async;
  uv_signal_t sigterm, sigint;
  uv_idle_t repump;  // runs the hub's turn
  // Several nodes (a PostgreSQL store): its notifications wake the hub to catch up, and so
  // does a timer, for what a lost notification did not say.
  // Polls a duplicate of the store's notify_socket(): libpq may close its own descriptor (a
  // broken connection) while the poll is active, and its number may come back for the next
  // connection; the duplicate stays ours until the poll handle is closed.
  struct NotifyPoll {
    uv_poll_t handle;
    int fd = -1;
  };
  NotifyPoll* notify_poll = nullptr;
  uv_timer_t catch_up_timer;
  bool catch_up_timer_on = false;
  bool loop_ready = false;  // the loop and its handles are initialized (Create got that far)
  bool stopping = false;

  static void OnConnection(uv_stream_t* server, int status);
  void StopNow();
  // Starts watching the store's notification socket, when it has one and none is watched.
  void WatchNotifications();
  void CloseNotifyPoll();
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
  void OnClosed(net::Link*, const Status& why) override {
    if (counted_) {
      auto it = server_->per_address.find(address_);
      if (it != server_->per_address.end() && --it->second == 0) {
        server_->per_address.erase(it);
        server_->at_limit_logged.erase(address_);
      }
    }
    if (server_->sessions.size() <= server_->options.max_connections) {
      server_->total_limit_logged = false;
    }
    if (!refused_ && (live_ || !why.ok())) {
      server_->Log("session " + (live_ ? replica_.Hex() : std::string("(no hello)")) + " from " +
                   conn->peer() + " closed: " + (why.ok() ? "by the server" : why.ToString()));
    }
    server_->sessions.erase(serial_);
    server_->repump_sessions.erase(serial_);
    delete this;
  }

 private:
  void OnHello(const wire::Hello& hello);
  void OnBatch(const wire::OpBatch& batch);
  void OnStreamBatch(const wire::StreamBatch& batch);
  // Whether the client gets `collection`'s ops from the log entry at `cursor`.
  bool Wants(const std::string& collection, uint64_t cursor) const {
    if (!all_collections_ && subscriptions_.count(collection) == 0) return false;
    if (holds_.empty()) return true;
    auto it = holds_.find(collection);
    if (it == holds_.end()) it = holds_.find("*");
    return it == holds_.end() || cursor > it->second;
  }
  bool Reads(const std::string& collection) const {
    return all_collections_ ? !claims_ || claims_->MayRead(collection)
                            : subscriptions_.count(collection) > 0;
  }
  // Decides whether the client needs a snapshot (docs/protocol.md "Snapshots").
  Status PlanSnapshot(const wire::Hello& hello, bool same_server, uint64_t cursor);
  // The state of every collection the client reads, at the log's head.
  struct Snapshot;
  Snapshot RebaseSnapshot();
  // Sends the snapshot's frames while the write queue has room; true when it is complete.
  bool PumpSnapshot();

  // A snapshot being sent.
  struct Snapshot {
    bool begun = false, rebase = false, resumed = false;
    uint64_t cursor = 0;
    std::vector<std::string> announced;   // SnapshotBegin.collections
    std::vector<std::string> collections;  // the collections read, sorted
    size_t next = 0;                       // index into collections
    std::string after_key;                 // in collections[next]
    std::map<ReplicaId, uint64_t> watermarks;
  };

  SessionHub::Impl* server_;
  const uint64_t serial_;
  std::string address_;          // the peer's address key (AddressKey)
  bool counted_ = false;         // counted in per_address[address_]
  bool refused_ = false;         // closed at accept by a connection limit
  bool live_ = false;            // Hello accepted
  ReplicaId replica_;
  uint64_t sent_ = 0;            // every log entry up to this cursor was sent or skipped
  bool caught_up_sent_ = false;
  bool all_collections_ = true;
  std::set<std::string> subscriptions_;  // when !all_collections_
  // A partial client: collection -> the cursor after which it needs that collection's ops
  // ("*": every other collection). Empty: it gets every collection it reads in full.
  std::map<std::string, uint64_t> holds_;
  std::optional<Snapshot> snapshot_;
  std::optional<auth::Claims> claims_;   // when the server has a secret
  // The replica's own ops it has (Hello's own_seq): its later ones in the log (a file restored
  // from a backup lacks them) are sent back to it. nullopt: an older client, never sent back.
  std::optional<uint64_t> own_seq_;
};

std::string AddressKey(const std::string& ip) {
  in6_addr a6;
  if (ip.find(':') == std::string::npos || inet_pton(AF_INET6, ip.c_str(), &a6) != 1) return ip;
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[64];
  if (std::memcmp(a6.s6_addr, kMapped, sizeof(kMapped)) == 0) {
    return inet_ntop(AF_INET, a6.s6_addr + 12, text, sizeof(text)) ? text : ip;
  }
  std::memset(a6.s6_addr + 8, 0, 8);
  return inet_ntop(AF_INET6, &a6, text, sizeof(text)) ? std::string(text) + "/64" : ip;
}

bool Session::Admit() {
  const ServerOptions& o = server_->options;
  const std::string key = AddressKey(conn->peer_ip());
  auto it = server_->per_address.find(key);
  const size_t from_key = it == server_->per_address.end() ? 0 : it->second;
  std::string refusal;
  bool first = false;  // the first refusal of its kind since the limit was last reached
  if (server_->sessions.size() > o.max_connections) {
    refusal = "too many connections (limit " + std::to_string(o.max_connections) + ")";
    first = !server_->total_limit_logged;
    server_->total_limit_logged = true;
  } else if (from_key >= o.max_connections_per_address) {
    refusal = "too many connections from " + key + " (limit " +
              std::to_string(o.max_connections_per_address) + ")";
    first = server_->at_limit_logged.insert(key).second;
  }
  if (!refusal.empty()) {
    refused_ = true;
    if (first) server_->Log("refusing connections: " + refusal);
    conn->Close(Status(Code::kEBUSY, refusal));
    return false;
  }
  server_->per_address[key] = from_key + 1;
  address_ = key;
  counted_ = true;
  conn->SetFrameLimit(std::min(kMaxHelloFrameBytes, o.conn.limits.max_frame_bytes),
                      "before Hello");
  conn->SetDeadline(o.handshake_timeout_ms, "waiting for the handshake and Hello");
  return true;
}

void Session::OnFrame(net::Link* c, const wire::Frame& frame) {
  const wire::Body type = frame.body_type();
  if (!live_ && type != wire::Body::Hello) {
    c->SendErrorAndClose(Code::kEINVAL, std::string("expected Hello, got ") + BodyName(type));
    return;
  }
  switch (type) {
    case wire::Body::Hello:
      if (live_) {
        c->SendErrorAndClose(Code::kEINVAL, "Hello sent twice");
        return;
      }
      OnHello(*frame.body_as_Hello());
      return;
    case wire::Body::OpBatch:
      OnBatch(*frame.body_as_OpBatch());
      return;
    case wire::Body::StreamBatch:
      OnStreamBatch(*frame.body_as_StreamBatch());
      return;
    case wire::Body::Ping: {
      flatbuffers::FlatBufferBuilder fbb(64);
      auto pong = wire::CreatePong(fbb, server_->store->NowMs());
      c->Send(FinishFrame(&fbb, wire::Body::Pong, pong));
      return;
    }
    case wire::Body::Pong:
      return;
    case wire::Body::Error:
      c->Close(protocol::ErrorFromWire(frame.body_as_Error(), "client reported an error"));
      return;
    default:
      c->SendErrorAndClose(Code::kEINVAL,
                           std::string("unexpected message from a client: ") + BodyName(type));
  }
}

void Session::OnHello(const wire::Hello& hello) {
  if (hello.protocol_version() != protocol::kProtocolVersion) {
    conn->SendErrorAndClose(Code::kEVERSION,
                            "protocol version " + std::to_string(hello.protocol_version()) +
                                " is not supported (this server speaks " +
                                std::to_string(protocol::kProtocolVersion) + ")");
    return;
  }
  if (hello.replica_id() == nullptr) {
    conn->SendErrorAndClose(Code::kEINVAL, "Hello without a replica id");
    return;
  }
  replica_ = protocol::FromWire(*hello.replica_id());
  ServerStore* store = server_->store.get();
  const std::string& secret = server_->options.token_secret;
  if (!secret.empty()) {
    const std::string token = hello.token() ? hello.token()->str() : std::string();
    if (token.empty()) {
      conn->SendErrorAndClose(Code::kEPERM, "this server requires a token");
      return;
    }
    auto claims = auth::VerifyToken(token, secret, store->NowMs() / 1000);
    if (!claims.ok()) {
      conn->SendErrorAndClose(Code::kEPERM, claims.status().message());
      return;
    }
    if (claims->replica_id && *claims->replica_id != replica_.Hex()) {
      conn->SendErrorAndClose(Code::kEPERM, "the token is for replica " + *claims->replica_id);
      return;
    }
    Status bound = store->BindReplica(replica_, claims->subject);
    if (!bound.ok()) {
      conn->SendErrorAndClose(bound.code(), bound.message());
      return;
    }
    claims_ = std::move(claims.value());
  }
  // Subscriptions: the collections named, or all the token allows.
  if (hello.subscriptions() && hello.subscriptions()->size() > 0) {
    all_collections_ = false;
    for (const auto* name : *hello.subscriptions()) {
      std::string n = name->str();
      if (claims_ && !claims_->MayRead(n)) {
        conn->SendErrorAndClose(Code::kEPERM, "the token does not allow reading '" + n + "'");
        return;
      }
      subscriptions_.insert(n);
    }
  } else if (claims_ && !claims_->MayRead("*")) {
    all_collections_ = false;
    subscriptions_.insert(claims_->read.begin(), claims_->read.end());
  }
  // Several nodes on one database: what the others committed first, so that the checks below
  // and the client's cursor see all of it; the node's other sessions get it too.
  const uint64_t head_before = store->head();
  Status caught_up = store->CatchUp();
  if (!caught_up.ok()) {
    server_->Log("catching up with the database failed: " + caught_up.ToString());
    conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its database");
    return;
  }
  const bool head_moved = store->head() != head_before;
  // A restored or copied replica file (docs/protocol.md "Restored replicas"): its last op must
  // be the one the server has under that seq, else its history forked and what it pushes
  // would be taken for duplicates (and dropped): refused, its ops stay queued.
  if (hello.own_seq()) {
    const uint64_t own = *hello.own_seq();
    if (hello.own_hlc() && own > 0 && own <= store->state()->Through(replica_)) {
      auto theirs = store->OpHlc(replica_, own);
      if (!theirs.ok()) {
        server_->Log("reading the log failed: " + theirs.status().ToString());
        conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its log");
        return;
      }
      if (theirs->has_value() && **theirs != *hello.own_hlc()) {
        server_->Log("session " + replica_.Hex() + " from " + conn->peer() +
                     ": history forked at seq " + std::to_string(own));
        conn->SendErrorAndClose(
            Code::kEFORKED,
            "the server has another op " + std::to_string(own) + " from replica " +
                replica_.Hex() + ": this file's history forked from the server's (restored "
                "from a backup after it had synced newer ops, or copied from another device); "
                "its unsent ops cannot be pushed under this replica id");
        return;
      }
    }
    own_seq_ = own;
  }
  // The cursor counts only on the server that issued it: any node of it (several nodes on one
  // PostgreSQL database), once this one has taken in what the others committed.
  uint64_t cursor = hello.cursor();
  const bool same_server = hello.server_id() != nullptr &&
                           protocol::FromWire(*hello.server_id()) == store->id() &&
                           cursor <= store->head();
  if (!same_server) cursor = 0;
  Status planned = PlanSnapshot(hello, same_server, cursor);
  if (!planned.ok()) {
    conn->SendErrorAndClose(planned.code(), planned.message());
    return;
  }
  if (snapshot_ && snapshot_->rebase) cursor = snapshot_->cursor;
  sent_ = cursor;
  live_ = true;
  conn->SetDeadline(0, "");
  conn->SetFrameLimit(server_->options.conn.limits.max_frame_bytes, "");
  flatbuffers::FlatBufferBuilder fbb(256);
  wire::ReplicaId sid = protocol::ToWire(store->id());
  auto welcome = wire::CreateWelcome(fbb, protocol::kProtocolVersion, &sid, store->NowMs(),
                                     server_->options.conn.limits.max_frame_bytes,
                                     server_->options.max_batch_ops,
                                     server_->options.window_batches,
                                     server_->options.max_drift_ms);
  conn->Send(FinishFrame(&fbb, wire::Body::Welcome, welcome));
  server_->Log("session " + replica_.Hex() + " from " + conn->peer() + " at cursor " +
               std::to_string(cursor) + (claims_ ? " as " + claims_->subject : std::string()) +
               (snapshot_ ? (snapshot_->rebase ? ", snapshot" : ", snapshot of added collections") +
                                std::string(snapshot_->resumed ? " (resumed)" : "")
                          : std::string()));
  if (head_moved) {
    server_->PumpAll();  // this session and the others: the entries the catch-up took in
  } else {
    Pump();
  }
}

void Session::OnBatch(const wire::OpBatch& batch) {
  ServerStore* store = server_->store.get();
  const int64_t now = store->NowMs();
  const int64_t max_drift = server_->options.max_drift_ms;
  auto admit = [&](const Op& op) -> Status {
    if (claims_ && !claims_->MayWrite(op.collection)) {
      return Status(Code::kEPERM, "the token does not allow writing '" + op.collection + "'");
    }
    const int64_t ahead = static_cast<int64_t>(HlcPhysical(op.id.hlc)) - now;
    if (ahead > max_drift) {
      return Status(Code::kECLOCK, "op stamped " + std::to_string(ahead) +
                                       " ms ahead of the server's clock (at most " +
                                       std::to_string(max_drift) + " ms)");
    }
    return Status::OK();
  };
  auto pushed = store->ApplyPush(replica_, batch, admit);
  if (!pushed.ok()) {
    const Code code = pushed.status().code();
    if (code == Code::kEINVAL || code == Code::kECORRUPT || code == Code::kEFORKED) {
      // The push itself is at fault: the client learns why.
      conn->SendErrorAndClose(code, "push refused: " + pushed.status().message());
    } else {
      // The server's own trouble (its disk, its database): logged here, not told to the
      // client; the push was not taken and the client sends it again.
      server_->Log("session " + replica_.Hex() + ": storing a push failed: " +
                   pushed.status().ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error storing the push");
    }
    return;
  }
  KillPoint("server.push.committed");
  if (own_seq_) own_seq_ = std::max(*own_seq_, pushed->through);  // (not sent back to it)
  flatbuffers::FlatBufferBuilder fbb(128);
  std::vector<flatbuffers::Offset<wire::Refusal>> refused;
  for (const Refused& r : pushed->refused) {
    refused.push_back(wire::CreateRefusal(fbb, r.first_seq, r.last_seq,
                                          static_cast<int32_t>(r.code),
                                          fbb.CreateString(r.reason)));
    server_->Log("session " + replica_.Hex() + ": refused seqs " + std::to_string(r.first_seq) +
                 ".." + std::to_string(r.last_seq) + ": " + r.reason);
  }
  wire::AckEntry entry(protocol::ToWire(replica_), pushed->through);
  auto ack = wire::CreateAck(fbb, fbb.CreateVectorOfStructs(&entry, 1), batch.batch_id(),
                             refused.empty() ? 0 : fbb.CreateVector(refused));
  conn->Send(FinishFrame(&fbb, wire::Body::Ack, ack));
  caught_up_sent_ = false;  // the client learns the exchange completed by the next CaughtUp
  server_->PumpAll();
}

// Telemetry (docs/protocol.md "Streams"): stored, then acknowledged; a refused batch (the
// token may not write the stream, or it breaks the rules) gets a StreamAck with the reason
// and nothing stored, and the session goes on.
void Session::OnStreamBatch(const wire::StreamBatch& batch) {
  const std::string stream = batch.stream() ? batch.stream()->str() : std::string();
  Status verdict;
  StreamStoreResult stored;
  if (claims_ && !claims_->MayWrite(stream)) {
    verdict = Status(Code::kEPERM, "the token does not allow writing stream '" + stream + "'");
  } else {
    auto tables = server_->Streams();
    Result<StreamStoreResult> r = tables.ok()
        ? tables.value()->Store(replica_, batch, server_->store->NowMs(),
                                server_->options.max_batch_ops)
        : Result<StreamStoreResult>(tables.status());
    if (r.ok()) {
      stored = *r;
    } else {
      verdict = r.status();
    }
  }
  if (verdict.ok()) KillPoint("server.stream.committed");
  if (!verdict.ok()) {
    server_->Log("session " + replica_.Hex() + ": refused a batch of stream '" + stream +
                 "': " + verdict.ToString());
    if (verdict.code() != Code::kEPERM && verdict.code() != Code::kEINVAL &&
        verdict.code() != Code::kECORRUPT) {
      // The server's own trouble (I/O, a full disk): the client keeps its records and retries.
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error storing stream records");
      return;
    }
  }
  flatbuffers::FlatBufferBuilder fbb(128);
  auto ack = wire::CreateStreamAck(fbb, fbb.CreateString(stream), stored.through,
                                   static_cast<int32_t>(verdict.code()),
                                   verdict.ok() ? 0 : fbb.CreateString(verdict.message()));
  conn->Send(FinishFrame(&fbb, wire::Body::StreamAck, ack));
}

Status Session::PlanSnapshot(const wire::Hello& hello, bool same_server, uint64_t cursor) {
  ServerStore* store = server_->store.get();
  // What the client holds: everything it reads (from its cursor), or the collections listed.
  holds_.clear();
  const bool partial = hello.partial() && same_server;
  if (partial && hello.holds()) {
    for (const wire::Holding* h : *hello.holds()) {
      if (h->collection() == nullptr) return Status::Invalid("a holding without a collection");
      holds_[h->collection()->str()] = h->since();
    }
  }
  Snapshot snap;
  snap.cursor = store->head();
  if (cursor < store->floor() || (hello.partial() && !same_server)) {
    // Behind the kept log, or a partial replica new to this server (its receipts count ops it
    // skipped elsewhere): the state of every collection it reads, then the log from there.
    snap = RebaseSnapshot();
  } else if (partial) {
    // Collections it asks for and does not hold: their state, then their ops after its cursor
    // (the client keeps only the snapshot's ops its receipts already count: the log from its
    // cursor brings the others, once).
    std::vector<std::string> existing = store->state()->CollectionNames();
    if (all_collections_) {
      if (holds_.count("*") == 0) {
        snap.announced = {"*"};
        for (const std::string& c : existing) {
          if (Reads(c) && holds_.count(c) == 0) snap.collections.push_back(c);
        }
      }
    } else {
      for (const std::string& c : subscriptions_) {
        if (holds_.count(c) == 0 && holds_.count("*") == 0) {
          snap.announced.push_back(c);
          if (std::binary_search(existing.begin(), existing.end(), c)) {
            snap.collections.push_back(c);
          }
        }
      }
    }
    if (snap.announced.empty()) return Status::OK();
    for (const auto& o : store->state()->Origins()) snap.watermarks[o.id] = o.through;
    for (const std::string& c : snap.announced) holds_[c] = cursor;
  } else {
    return Status::OK();
  }
  // A snapshot of the same kind cut earlier resumes where it stopped, if the log still covers
  // its cursor.
  const wire::SnapshotResume* resume = hello.resume();
  if (resume && same_server && resume->rebase() == snap.rebase &&
      resume->cursor() >= store->floor() && resume->cursor() <= store->head()) {
    snap.resumed = true;
    snap.cursor = resume->cursor();
    const std::string after = resume->after_collection() ? resume->after_collection()->str() : "";
    while (snap.next < snap.collections.size() && snap.collections[snap.next] < after) snap.next++;
    if (snap.next < snap.collections.size() && snap.collections[snap.next] == after) {
      snap.after_key = resume->after_key() ? resume->after_key()->str() : "";
    }
  }
  snapshot_ = std::move(snap);
  return Status::OK();
}

Session::Snapshot Session::RebaseSnapshot() {
  ServerStore* store = server_->store.get();
  Snapshot snap;
  snap.rebase = true;
  snap.cursor = store->head();
  holds_.clear();
  for (const std::string& c : store->state()->CollectionNames()) {
    if (Reads(c)) snap.collections.push_back(c);
  }
  for (const auto& o : store->state()->Origins()) snap.watermarks[o.id] = o.through;
  return snap;
}

bool Session::PumpSnapshot() {
  Snapshot& snap = *snapshot_;
  const size_t max_queued = server_->options.max_queued_bytes;
  const uint32_t max_ops = server_->options.max_batch_ops;
  if (!snap.begun) {
    flatbuffers::FlatBufferBuilder fbb(1024);
    std::vector<wire::AckEntry> marks;
    for (const auto& [origin, through] : snap.watermarks) {
      marks.emplace_back(protocol::ToWire(origin), through);
    }
    auto colls = fbb.CreateVectorOfStrings(snap.rebase ? snap.collections : snap.announced);
    auto begin = wire::CreateSnapshotBegin(fbb, snap.cursor, snap.rebase, colls,
                                           fbb.CreateVectorOfStructs(marks), snap.resumed);
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotBegin, begin));
    snap.begun = true;
  }
  store::ReplicaStore* state = server_->store->state();
  std::vector<Op> chunk;
  size_t scanned = 0;  // documents read in this call: other sessions wait meanwhile
  while (conn->queued_bytes() < max_queued && snap.next < snap.collections.size()) {
    if (scanned >= server_->options.snapshot_docs_per_turn) {
      server_->Repump(this);
      return false;
    }
    const std::string& coll = snap.collections[snap.next];
    chunk.clear();
    std::string last_key;
    size_t docs = 0;
    const size_t max_docs = std::min<size_t>(256, server_->options.snapshot_docs_per_turn);
    Status st = state->ForEachDocSurvivors(
        coll, snap.after_key, max_docs, [&](const std::string& key, std::vector<Op>* ops) {
          docs++;
          scanned++;
          last_key = key;
          for (Op& op : *ops) {
            // Not the client's own ops it has; nothing past the snapshot's receipts (the log
            // has them).
            auto w = snap.watermarks.find(op.id.origin);
            const bool has = op.id.origin == replica_ && (!own_seq_ || op.id.seq <= *own_seq_);
            if (has || w == snap.watermarks.end() || op.id.seq > w->second) {
              continue;
            }
            chunk.push_back(std::move(op));
          }
          return chunk.size() >= max_ops ? Status(Code::kEBUSY, "chunk full") : Status::OK();
        });
    if (!st.ok() && st.code() != Code::kEBUSY) {
      server_->Log("reading a snapshot failed: " + st.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its state");
      return false;
    }
    if (docs == 0 || (docs < max_docs && st.ok())) {
      snap.next++;  // this collection is done
      snap.after_key.clear();
    } else {
      snap.after_key = last_key;
    }
    if (chunk.empty()) continue;
    // The encoding wants each origin's ops in seq order.
    std::sort(chunk.begin(), chunk.end(), [](const Op& a, const Op& b) {
      return a.id.origin < b.id.origin || (a.id.origin == b.id.origin && a.id.seq < b.id.seq);
    });
    protocol::BatchEncoder enc;
    for (const Op& op : chunk) enc.Add(op);
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    auto batch = enc.Build(&fbb);
    auto c = wire::CreateSnapshotChunk(fbb, batch, fbb.CreateString(coll),
                                       fbb.CreateString(last_key));
    conn->Send(FinishFrame(&fbb, wire::Body::SnapshotChunk, c));
    KillPoint("server.snapshot.sent");
  }
  if (snap.next < snap.collections.size() || conn->queued_bytes() >= max_queued) return false;
  flatbuffers::FlatBufferBuilder fbb(64);
  conn->Send(FinishFrame(&fbb, wire::Body::SnapshotEnd, wire::CreateSnapshotEnd(fbb, snap.cursor)));
  snapshot_.reset();
  return true;
}

void Session::Pump() {
  if (!live_ || conn->closing()) return;
  for (;;) {
    if (!snapshot_ && sent_ < server_->store->floor()) {
      // The log was trimmed past this session while it waited (a slow client, or one receiving
      // a snapshot): what it lacks is no longer in the log. A snapshot again, then the log.
      snapshot_ = RebaseSnapshot();
      sent_ = snapshot_->cursor;
      server_->Log("session " + replica_.Hex() + " fell behind the kept log: snapshot");
    }
    if (!snapshot_) break;
    if (!PumpSnapshot()) return;
  }
  ServerStore* store = server_->store.get();
  const size_t max_queued = server_->options.max_queued_bytes;
  const uint32_t max_ops = server_->options.max_batch_ops;
  while (conn->queued_bytes() < max_queued && sent_ < store->head()) {
    protocol::BatchEncoder enc;
    uint64_t last = sent_;
    // Per origin, the seqs this batch accounts for; which origins had ops skipped.
    std::map<ReplicaId, std::pair<uint64_t, uint64_t>> covered;
    std::set<ReplicaId> skipped_origins;
    Status st = store->ReadLog(sent_, 64, [&](const LogEntry& e) -> Status {
      if (enc.op_count() >= max_ops) return Status(Code::kEBUSY, "batch full");  // stop here
      last = e.cursor;
      // A client gets back only its own ops it lacks (a restored file).
      if (e.origin == replica_ && (!own_seq_ || e.last_seq <= *own_seq_)) return Status::OK();
      if (e.origin == replica_) own_seq_ = e.last_seq;
      uint64_t sent = 0;
      CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(e.batch, "log entry", [&](const Op& op) {
        if (Wants(op.collection, e.cursor)) {
          enc.Add(op);
          sent++;
        }
        return Status::OK();
      }));
      // Skipped: ops of collections it does not get, and refused seqs (not in the batch).
      const bool skipped = sent != e.last_seq - e.first_seq + 1;
      // The client must learn that the seqs it did not get were skipped, not lost.
      auto& range = covered[e.origin];
      if (range.first == 0 && range.second == 0) range.first = e.first_seq - 1;
      range.second = e.last_seq;
      if (skipped) skipped_origins.insert(e.origin);
      return Status::OK();
    });
    if (!st.ok() && st.code() != Code::kEBUSY) {
      server_->Log("reading the log failed: " + st.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its log");
      return;
    }
    if (last == sent_) break;
    for (const ReplicaId& origin : skipped_origins) {
      enc.Cover(origin, covered[origin].first, covered[origin].second);
    }
    if (!enc.empty() || enc.has_covers()) {
      std::string frame;
      enc.FinishFrame(&frame, last);
      conn->Send(std::move(frame));
      KillPoint("server.log.sent");
    }
    // The cursor moved: said by a batch, else (its own ops, pushed through another session of
    // the replica) by the next CaughtUp, so the client's cursor does not stay behind them.
    caught_up_sent_ = false;
    sent_ = last;
  }
  if (sent_ >= store->head() && !caught_up_sent_ && conn->queued_bytes() < max_queued) {
    flatbuffers::FlatBufferBuilder fbb(64);
    auto cu = wire::CreateCaughtUp(fbb, sent_, store->NowMs());
    conn->Send(FinishFrame(&fbb, wire::Body::CaughtUp, cu));
    caught_up_sent_ = true;
  }
}

void SessionHub::Impl::Repump(Session* s) {
  if (repump_sessions.empty()) request_turn();
  repump_sessions.insert(s->serial());
}

void SessionHub::Impl::PumpAll() {
  // A session may close (and leave the map) while pumping: iterate over a copy.
  std::vector<uint64_t> all;
  for (const auto& entry : sessions) all.push_back(entry.first);
  for (uint64_t serial : all) {
    auto it = sessions.find(serial);
    if (it != sessions.end()) it->second->Pump();
  }
}

SessionHub::SessionHub() : impl_(std::make_unique<Impl>()) {}
SessionHub::~SessionHub() = default;

Result<std::unique_ptr<SessionHub>> SessionHub::Open(const ServerOptions& options,
                                                     std::function<void()> request_turn) {
  if (options.max_connections == 0 || options.max_connections_per_address == 0) {
    return Status::Invalid("connection limits must be at least 1");
  }
  if (options.handshake_timeout_ms == 0) {
    return Status::Invalid("the handshake timeout must be at least 1 ms");
  }
  std::unique_ptr<SessionHub> hub(new SessionHub());
  hub->impl_->options = options;
  hub->impl_->request_turn = std::move(request_turn);
  CAIRN_ASSIGN_OR_RETURN(hub->impl_->store, ServerStore::Open(options.db_path, options.store));
  return hub;
}

bool SessionHub::Attach(net::Link* link) {
  auto* session = new Session(impl_.get(), impl_->next_serial++);
  session->conn = link;
  link->set_delegate(session);
  impl_->sessions.emplace(session->serial(), session);
  return session->Admit();
}

void SessionHub::CatchUp() {
  const uint64_t head = impl_->store->head();
  Status st = impl_->store->CatchUp();
  if (!st.ok()) {
    if (!impl_->catch_up_failing) impl_->Log("catching up with the database failed: " + st.ToString());
    impl_->catch_up_failing = true;
    return;
  }
  if (impl_->catch_up_failing) impl_->Log("caught up with the database again");
  impl_->catch_up_failing = false;
  if (impl_->store->head() != head) impl_->PumpAll();
}

void SessionHub::Maintain() {
  Status st = impl_->store->Maintain();
  if (!st.ok() && !impl_->maintain_failing) impl_->Log("maintenance failed: " + st.ToString());
  if (st.ok() && impl_->maintain_failing) impl_->Log("maintenance works again");
  impl_->maintain_failing = !st.ok();
}

void SessionHub::RunTurn() {
  std::vector<uint64_t> due(impl_->repump_sessions.begin(), impl_->repump_sessions.end());
  impl_->repump_sessions.clear();
  for (uint64_t serial : due) {
    auto it = impl_->sessions.find(serial);
    if (it != impl_->sessions.end()) it->second->Pump();
  }
}

void SessionHub::CloseAll() {
  std::vector<Session*> all;
  for (const auto& entry : impl_->sessions) all.push_back(entry.second);
  for (Session* s : all) s->conn->Close(Status::OK());
}

size_t SessionHub::session_count() const { return impl_->sessions.size(); }
ServerStore* SessionHub::store() { return impl_->store.get(); }
void SessionHub::Log(const std::string& message) { impl_->Log(message); }

void SyncServer::Impl::OnConnection(uv_stream_t* listener, int status) {
  auto* impl = static_cast<Impl*>(listener->data);
  if (status != 0) {
    impl->hub->Log(std::string("accept failed: ") + uv_strerror(status));
    return;
  }
  auto* conn = new net::Conn(&impl->loop, nullptr, impl->options.conn);
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(conn->tcp())) != 0) {
    conn->Close(Status(Code::kENETWORK, "accept failed"));  // no session: closes silently
    return;
  }
  // The limits first: a refused peer costs no TLS session and no read.
  conn->ReadPeer();
  if (!impl->hub->Attach(conn)) return;
  std::unique_ptr<net::TlsSession> tls;
  if (impl->tls) {
    auto t = net::TlsSession::Create(impl->tls.get(), "");
    if (!t.ok()) {
      conn->Close(t.status());
      return;
    }
    tls = std::move(t.value());
  }
  conn->Start(std::move(tls));
}

void SyncServer::Impl::CloseNotifyPoll() {
  if (notify_poll == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&notify_poll->handle), [](uv_handle_t* h) {
    auto* p = reinterpret_cast<NotifyPoll*>(h);  // (handle is the first member)
    close(p->fd);
    delete p;
  });
  notify_poll = nullptr;
}

void SyncServer::Impl::WatchNotifications() {
  if (notify_poll != nullptr) return;
  const int socket = hub->store()->notify_socket();
  if (socket < 0) return;
  auto* p = new NotifyPoll;
  p->fd = dup(socket);
  if (p->fd < 0 || uv_poll_init_socket(&loop, &p->handle, p->fd) != 0) {
    if (p->fd >= 0) close(p->fd);
    delete p;
    hub->Log("cannot watch the database's notifications: catching up every " +
             std::to_string(options.catch_up_ms) + " ms only");
    return;
  }
  notify_poll = p;
  p->handle.data = this;
  uv_poll_start(&p->handle, UV_READABLE, [](uv_poll_t* h, int status, int) {
    auto* impl = static_cast<Impl*>(h->data);
    Result<bool> woken = status == 0 ? impl->hub->store()->TakeNotifications()
                                     : Result<bool>(Status(Code::kENETWORK, uv_strerror(status)));
    if (!woken.ok()) {
      // The timer listens again (a new connection, a new poll) and catches up meanwhile.
      impl->hub->Log("database notifications: " + woken.status().ToString() +
                     "; listening again");
      impl->CloseNotifyPoll();
      impl->hub->CatchUp();
      return;
    }
    if (*woken) impl->hub->CatchUp();
  });
}

void SyncServer::Impl::StopNow() {
  if (stopping) return;
  stopping = true;
  hub->Log("stopping");
  CloseNotifyPoll();
  if (catch_up_timer_on) uv_close(reinterpret_cast<uv_handle_t*>(&catch_up_timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&repump), nullptr);
  if (options.handle_signals) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
  }
  hub->CloseAll();
}

SyncServer::SyncServer() : impl_(std::make_unique<Impl>()) {}

SyncServer::~SyncServer() {
  if (impl_ && impl_->loop_ready) {
    if (!impl_->stopping) {
      impl_->StopNow();
      uv_run(&impl_->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&impl_->loop);
  }
}

Result<std::unique_ptr<SyncServer>> SyncServer::Create(const ServerOptions& options) {
  std::unique_ptr<SyncServer> s(new SyncServer());
  Impl* i = s->impl_.get();
  i->options = options;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Status::Invalid("TLS needs both a certificate and a key");
  }
  if (!options.tls_cert_file.empty()) {
    CAIRN_ASSIGN_OR_RETURN(i->tls,
                           net::TlsConfig::Server(options.tls_cert_file, options.tls_key_file));
  }
  CAIRN_ASSIGN_OR_RETURN(i->hub, SessionHub::Open(options, [i] {
    uv_idle_start(&i->repump, [](uv_idle_t* idle) {
      uv_idle_stop(idle);
      static_cast<Impl*>(idle->data)->hub->RunTurn();
    });
  }));
  uv_loop_init(&i->loop);
  i->loop_ready = true;
  uv_tcp_init(&i->loop, &i->listener);
  i->listener.data = i;
  uv_idle_init(&i->loop, &i->repump);
  i->repump.data = i;
  uv_async_init(&i->loop, &i->stop_async, [](uv_async_t* a) {
    static_cast<Impl*>(a->data)->StopNow();
  });
  i->stop_async.data = i;
  if (i->hub->store()->notify_socket() >= 0) {
    i->WatchNotifications();
    uv_timer_init(&i->loop, &i->catch_up_timer);
    i->catch_up_timer.data = i;
    i->catch_up_timer_on = true;
    const uint64_t every = std::max<uint32_t>(options.catch_up_ms, 1);
    uv_timer_start(&i->catch_up_timer, [](uv_timer_t* t) {
      auto* impl = static_cast<Impl*>(t->data);
      if (impl->notify_poll == nullptr && impl->hub->store()->Relisten().ok()) {
        impl->WatchNotifications();
      }
      impl->hub->CatchUp();
      impl->hub->Maintain();
    }, every, every);
  }
  if (options.handle_signals) {
    for (uv_signal_t* sig : {&i->sigterm, &i->sigint}) {
      uv_signal_init(&i->loop, sig);
      sig->data = i;
    }
    auto on_signal = [](uv_signal_t* sig, int signum) {
      auto* impl = static_cast<Impl*>(sig->data);
      impl->hub->Log(std::string("received ") + (signum == SIGTERM ? "SIGTERM" : "SIGINT"));
      impl->StopNow();
    };
    uv_signal_start(&i->sigterm, on_signal, SIGTERM);
    uv_signal_start(&i->sigint, on_signal, SIGINT);
  }
  return s;
}

const ReplicaId& SyncServer::id() const { return impl_->hub->store()->id(); }

size_t SyncServer::session_count() const { return impl_->hub->session_count(); }

Status SyncServer::Listen() {
  Impl* i = impl_.get();
  sockaddr_storage addr;
  int rc = uv_ip4_addr(i->options.host.c_str(), i->options.port,
                       reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) {
    rc = uv_ip6_addr(i->options.host.c_str(), i->options.port,
                     reinterpret_cast<sockaddr_in6*>(&addr));
  }
  if (rc != 0) return Status::Invalid("listen address '" + i->options.host + "' is not an IP");
  rc = uv_tcp_bind(&i->listener, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&i->listener), 1024, Impl::OnConnection);
  }
  if (rc != 0) {
    return Status(Code::kENETWORK, "cannot listen on " + i->options.host + ":" +
                                  std::to_string(i->options.port) + ": " + uv_strerror(rc));
  }
  int len = sizeof(addr);
  uv_tcp_getsockname(&i->listener, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  i->hub->Log("listening on " + i->options.host + ":" + std::to_string(port_) +
         (i->tls ? " (TLS)" : " (plain TCP, no TLS)") + ", server id " + i->hub->store()->id().Hex());
  if (i->options.token_secret.empty()) {
    i->hub->Log("WARNING: no token secret: the server is OPEN, anyone who can connect may read and "
           "write everything. Use --token-secret FILE outside development.");
  }
  return Status::OK();
}

Status SyncServer::Run() {
  net::ScopedSigpipeBlock no_sigpipe;
  uv_run(&impl_->loop, UV_RUN_DEFAULT);
  return Status::OK();
}

void SyncServer::Stop() { uv_async_send(&impl_->stop_async); }

}  // namespace cairn::server
