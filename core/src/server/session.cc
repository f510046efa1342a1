#include "server/session.h"

#include <algorithm>
#include <cstring>

#include "base/killpoint.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"

namespace cairn::server {

namespace {

using protocol::FinishFrame;

const char* BodyName(wire::Body b) { return wire::EnumNameBody(b); }

}  // namespace

bool Session::Admit() {
  const ServerOptions& o = server_->options;
  Result<std::string> key = server_->Admit(conn->peer_ip(), server_->open_connections());
  if (!key.ok()) {
    refused_ = true;
    conn->Close(key.status());
    return false;
  }
  address_ = std::move(key.value());
  counted_ = true;
  conn->SetFrameLimit(std::min(kMaxHelloFrameBytes, o.conn.limits.max_frame_bytes),
                      "before Hello");
  conn->SetDeadline(o.handshake_timeout_ms, "waiting for the handshake and Hello");
  conn->SetReadBudget(&server_->unauthenticated);
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
    case wire::Body::Renew:
      OnRenew(*frame.body_as_Renew());
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

Result<auth::Claims> Session::VerifiedClaims(const std::string& token) const {
  if (token.empty()) return Status(Code::kEPERM, "this server requires a token");
  auto claims = auth::VerifyToken(token, server_->options.tokens(), server_->store->NowMs() / 1000);
  if (!claims.ok()) {
    return Status(claims.status().code() == Code::kETOKEN ? Code::kETOKEN : Code::kEPERM,
                  claims.status().message());
  }
  if (claims->replica_id && *claims->replica_id != replica_.Hex()) {
    return Status(Code::kEPERM, "the token is for replica " + *claims->replica_id);
  }
  return claims;
}

int64_t Session::TokenExpiresMs() const {
  return claims_ ? std::max<int64_t>(claims_->expires_s, 0) * 1000 : 0;
}

// docs/protocol.md "Token renewal": the renewed token is checked as Hello's was (a server that
// checks no tokens takes any) and must be for the same subject; it must allow reading what the
// session syncs (its channels, or its collections), else the session ends with the error a Hello
// with it would get, or EPERM.
void Session::OnRenew(const wire::Renew& renew) {
  flatbuffers::FlatBufferBuilder fbb(64);
  if (!claims_) {  // a server that checks no tokens: nothing changes
    conn->Send(FinishFrame(&fbb, wire::Body::Renewed, wire::CreateRenewed(fbb, 0)));
    caught_up_sent_ = false;  // a CaughtUp follows every Renewed (the client waits for it)
    Pump();
    return;
  }
  auto claims = VerifiedClaims(renew.token() ? renew.token()->str() : std::string());
  if (!claims.ok()) {
    conn->SendErrorAndClose(claims.status().code(),
                            "the renewed token: " + claims.status().message());
    return;
  }
  if (claims->subject != claims_->subject) {
    conn->SendErrorAndClose(
        Code::kEPERM, "a renewed token must be for the same subject ('" + claims_->subject + "')");
    return;
  }
  std::optional<rules::Grants> grants;
  if (const rules::Rules* rules = server_->options.rules.get()) {
    auto g = rules->GrantsFor(*claims);
    if (!g.ok()) {
      conn->SendErrorAndClose(g.status().code(), g.status().message());
      return;
    }
    for (const std::string& c : channels_) {
      if (!g->admin && g->read.count(c) == 0) {
        conn->SendErrorAndClose(Code::kEPERM, "the renewed token does not allow reading channel '" +
                                                  c + "', which this session syncs");
        return;
      }
    }
    grants = std::move(g.value());
  } else {
    const std::set<std::string> star = {"*"};
    for (const std::string& n : all_collections_ ? star : subscriptions_) {
      if (claims_->MayRead(n) && !claims->MayRead(n)) {
        conn->SendErrorAndClose(Code::kEPERM, "the renewed token does not allow reading '" + n +
                                                  "', which this session syncs");
        return;
      }
    }
  }
  claims_ = std::move(claims.value());
  grants_ = std::move(grants);
  conn->Send(FinishFrame(&fbb, wire::Body::Renewed, wire::CreateRenewed(fbb, TokenExpiresMs())));
  server_->Log("session " + replica_.Hex() + " renewed its token (" + claims_->subject +
               ", expires " + std::to_string(claims_->expires_s) + ")");
  if (grants_) {
    // Other grants: documents leave and enter the view (docs/sync-rules.md "Changes of view").
    const rules::View before = view_;
    view_ = rules::View::Of(*grants_, channels_);
    IndexView();
    if (view_ != before) {
      // Past the record's cursor the client held `before`: what it may have held at or before
      // that cursor stays apart (rules::ViewRecord::Then).
      Status changed = KeepViewRecord(record_.Then(view_, sent_));
      if (changed.ok()) changed = ChangeView(before, before);
      if (!changed.ok()) {
        server_->Log("session " + replica_.Hex() +
                     ": changing its view failed: " + changed.ToString());
        conn->SendErrorAndClose(Code::kEINTERNAL, "server error changing the view");
        return;
      }
    }
  }
  // The client is idle again only once a CaughtUp follows its renewal (after the documents
  // that leave and enter its view, when it changed).
  caught_up_sent_ = false;
  Pump();
}

void Session::OnTick(net::Link* c, uint64_t) {
  if (!live_ || c->closing()) return;
  if (idle_ && sent_ < server_->store->head() &&
      server_->store->NowMs() - idle_since_ms_ >= server_->options.idle_cursor_ms) {
    Pump();  // docs/sync-rules.md "Fan-out": the entries it skipped go as coverage
    if (c->closing()) return;
  }
  if (!claims_) return;
  if (server_->store->NowMs() / 1000 < claims_->expires_s + auth::kClockLeewayS) return;
  c->SendErrorAndClose(Code::kETOKEN,
                       "the token expired: renew it (docs/protocol.md \"Token renewal\")");
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
  features_ = hello.features() & protocol::kFeatures;
  ServerStore* store = server_->store.get();
  // Before anything else is read: ops under such an id would be taken for the server's own.
  if (IsReservedReplicaId(replica_) || replica_ == store->state()->replica_id()) {
    conn->SendErrorAndClose(Code::kEINVAL, "replica id " + replica_.Hex() +
                                               " is reserved: the server's own, all zero or "
                                               "all 0xff bytes (docs/protocol.md \"Replica ids\")");
    return;
  }
  if (server_->options.tokens().enabled()) {
    auto claims = VerifiedClaims(hello.token() ? hello.token()->str() : std::string());
    if (!claims.ok()) {
      conn->SendErrorAndClose(claims.status().code(), claims.status().message());
      return;
    }
    Status bound = store->BindReplica(replica_, claims->subject);
    if (!bound.ok()) {
      conn->SendErrorAndClose(bound.code(), bound.message());
      return;
    }
    claims_ = std::move(claims.value());
  }
  // Sync rules: the grants of the token's claims, and the channels subscribed to, each one the
  // token may read. (A server with rules checks tokens, SessionHub::Open: claims_ is set.)
  if (const rules::Rules* rules = server_->options.rules.get()) {
    auto grants = rules->GrantsFor(*claims_);
    if (!grants.ok()) {
      conn->SendErrorAndClose(grants.status().code(), grants.status().message());
      return;
    }
    grants_ = std::move(grants.value());
    if (const auto* channels = hello.channels()) {
      for (const auto* name : *channels) {
        std::string c = name->str();
        if (!grants_->admin && grants_->read.count(c) == 0) {
          conn->SendErrorAndClose(Code::kEPERM,
                                  "the token does not allow reading channel '" + c + "'");
          return;
        }
        channels_.insert(std::move(c));
      }
    }
    view_ = rules::View::Of(*grants_, channels_);
    IndexView();
  } else if (hello.channels() != nullptr && hello.channels()->size() > 0) {
    conn->SendErrorAndClose(
        Code::kEINVAL, "this server has no sync rules: subscribe to collections, not channels");
    return;
  }
  // Subscriptions: the collections named, or all the token allows.
  const auto* subscriptions = hello.subscriptions();
  if (subscriptions != nullptr && subscriptions->size() > 0) {
    all_collections_ = false;
    for (const auto* name : *subscriptions) {
      std::string n = name->str();
      if (claims_ && !grants_ && !claims_->MayRead(n)) {
        conn->SendErrorAndClose(Code::kEPERM, "the token does not allow reading '" + n + "'");
        return;
      }
      subscriptions_.insert(n);
    }
  } else if (claims_ && !grants_ && !claims_->MayRead("*")) {
    all_collections_ = false;
    subscriptions_.insert(claims_->read.begin(), claims_->read.end());
  }
  // Several nodes on one database: what the others committed first, so that the checks below
  // and the client's cursor see all of it; the node's other sessions get it too.
  const uint64_t head_before = store->head();
  Status caught_up = store->CatchUp();
  if (!caught_up.ok()) {
    SessionHub::Impl* hub = server_;  // (closing may end this session)
    hub->Log("catching up with the database failed: " + caught_up.ToString());
    conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its database");
    if (store->head() != head_before) hub->Committed(head_before, nullptr);  // the others
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
  if (snapshot_ && store->history_folded() && !snapshot_->replace) {
    if (hello.cursor() != 0 || hello.partial()) {
      // docs/crdt-semantics.md "History horizon": the folded state cannot be merged into
      // history a client holds unless it replaces that history, which an older client
      // cannot; a new replica of it (nothing received yet) takes the snapshot as it is.
      conn->SendErrorAndClose(
          Code::kEEXPIRED,
          "this server folded its history older than its horizon and this client's copy must be "
          "replaced, which its version cannot do: upgrade it (or sync a new replica)");
      return;
    }
  }
  if (snapshot_ && snapshot_->rebase) cursor = snapshot_->cursor;
  sent_ = cursor;
  if (grants_) {
    Status viewed = StartView();
    if (!viewed.ok()) {
      server_->Log("session " + replica_.Hex() + ": reading its view failed: " + viewed.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its view");
      return;
    }
  }
  live_ = true;
  live_since_ms_ = store->NowMs();
  conn->SetReadBudget(nullptr);
  conn->SetDeadline(0, "");
  conn->SetFrameLimit(server_->options.conn.limits.max_frame_bytes, "");
  flatbuffers::FlatBufferBuilder fbb(256);
  wire::ReplicaId sid = protocol::ToWire(store->id());
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>> read_only;
  if (grants_ && !grants_->admin) {
    read_only = fbb.CreateVectorOfStrings(server_->options.rules->ReadOnlyCollections());
  }
  auto welcome = wire::CreateWelcome(
      fbb, protocol::kProtocolVersion, &sid, store->NowMs(),
      server_->options.conn.limits.max_frame_bytes, server_->options.max_batch_ops,
      server_->options.window_batches, server_->options.max_drift_ms, read_only, TokenExpiresMs(),
      features_, store->horizon(), store->horizon_cursor());
  conn->Send(FinishFrame(&fbb, wire::Body::Welcome, welcome));
  server_->Log("session " + replica_.Hex() + " from " + conn->peer() + " at cursor " +
               std::to_string(cursor) + (claims_ ? " as " + claims_->subject : std::string()) +
               (snapshot_ ? (snapshot_->rebase ? ", snapshot" : ", snapshot of added collections") +
                                std::string(snapshot_->resumed ? " (resumed)" : "")
                          : std::string()));
  if (head_moved) {
    server_->Committed(head_before, this);  // and the others the catch-up's entries concern
  } else {
    Pump();
  }
}

void Session::OnBatch(const wire::OpBatch& batch) {
  ScopedTimer timed(&server_->metrics.push_seconds);
  ServerStore* store = server_->store.get();
  const int64_t now = store->NowMs();
  const int64_t max_drift = server_->options.max_drift_ms;
  auto admit = [&](const Op& op) -> Status {
    if (claims_ && !grants_ && !claims_->MayWrite(op.collection)) {
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
  PushLimits limits;  // what the Welcome advertised
  limits.max_ops = server_->options.max_batch_ops;
  limits.max_bytes = protocol::BatchBudget(server_->options.conn.limits.max_frame_bytes);
  // Sync rules: each transaction judged on its documents' channels (docs/sync-rules.md
  // "Writing").
  std::optional<WriteJudge> judge;
  if (grants_) judge.emplace(server_->options.rules.get(), &*grants_, store->state());
  const uint64_t head_before = store->head();
  auto pushed = [&] {
    ScopedTimer store_timed(&server_->metrics.store_seconds["apply_push"]);
    return store->ApplyPush(replica_, batch, limits, admit, judge ? &*judge : nullptr,
                            /*key=*/nullptr);
  }();
  if (!pushed.ok()) {
    SessionHub::Impl* hub = server_;  // (closing may end this session)
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
    // (What the store took in from other nodes first still goes to the sessions it concerns.)
    if (store->head() != head_before) hub->Committed(head_before, nullptr);
    return;
  }
  KillPoint("server.push.committed");
  server_->CountPush(*pushed);
  if (own_seq_) own_seq_ = std::max(*own_seq_, pushed->through);  // (not sent back to it)
  // Many refusals (a retry repeats earlier ones) go in several Acks, each acknowledging up to
  // the first refusal of the next (docs/protocol.md "Refused ops").
  const std::vector<Refused>& all = pushed->refused;
  for (const AckPart& part : SplitAck(all, pushed->through, server_->options.max_ack_bytes)) {
    flatbuffers::FlatBufferBuilder fbb(128);
    std::vector<flatbuffers::Offset<wire::Refusal>> refused;
    for (size_t i = part.begin; i < part.end; i++) {
      const Refused& r = all[i];
      refused.push_back(wire::CreateRefusal(
          fbb, r.first_seq, r.last_seq, static_cast<int32_t>(r.code), fbb.CreateString(r.reason)));
      server_->Log("session " + replica_.Hex() + ": refused seqs " + std::to_string(r.first_seq) +
                   ".." + std::to_string(r.last_seq) + ": " + r.reason);
    }
    wire::AckEntry entry(protocol::ToWire(replica_), part.through);
    auto ack = wire::CreateAck(fbb, fbb.CreateVectorOfStructs(&entry, 1), batch.batch_id(),
                               refused.empty() ? 0 : fbb.CreateVector(refused));
    conn->Send(FinishFrame(&fbb, wire::Body::Ack, ack));
  }
  caught_up_sent_ = false;  // the client learns the exchange completed by the next CaughtUp
  server_->Committed(head_before, this);
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

bool Session::InView(const std::string& collection, const std::string& key) {
  if (!grants_ || view_.all) return true;
  auto fields = server_->store->state()->GetDoc(collection, key);
  if (!fields.ok()) {
    // Not known to be in the view: not sent (the session goes on; logged).
    server_->Log("reading " + collection + "/" + key + " failed: " + fields.status().ToString());
    return false;
  }
  return InChannels(
      server_->options.rules->Channels(collection, key, fields->has_value() ? **fields : Fields()));
}

Status Session::StartView() {
  ServerStore* store = server_->store.get();
  if (snapshot_ && !snapshot_->rebase) {
    fresh_.insert(snapshot_->collections.begin(), snapshot_->collections.end());
  }
  CAIRN_ASSIGN_OR_RETURN(std::string text, store->ReplicaView(replica_));
  if (text.empty() || (snapshot_ && snapshot_->rebase)) {
    // A replica new to sync rules holds the view it is given. (A rebase snapshot brings the
    // view; what it does not bring is not removed yet: docs/sync-rules.md "Status".)
    return KeepViewRecord(rules::ViewRecord::Held(view_, sent_, ""));
  }
  CAIRN_ASSIGN_OR_RETURN(record_, rules::ViewRecord::Parse(text));
  // Past the record's cursor, the client holds its `to`; at or before it, any of its views
  // (of the earlier change's tier when it is at or before that one's cursor).
  const auto [maybe, surely] = record_.At(sent_);
  CAIRN_RETURN_IF_ERROR(KeepViewRecord(
      rules::ViewRecord{view_, maybe.Union(view_), surely.Intersection(view_), sent_, "", {}}));
  return ChangeView(maybe, surely);
}

Status Session::KeepViewRecord(rules::ViewRecord next) {
  next.rules = RulesDigest();
  if (next.certain()) {
    // Certain: a record that says so already stays (its cursor does not matter then).
    if (record_.certain() && record_.to == view_ && record_.rules == next.rules) {
      return Status::OK();
    }
    next = rules::ViewRecord::Held(view_, sent_, next.rules);
  }
  if (next == record_) return Status::OK();
  CAIRN_RETURN_IF_ERROR(server_->store->SetReplicaView(replica_, next.ToJson()));
  record_ = std::move(next);
  return Status::OK();
}

Status Session::ChangeView(const rules::View& maybe, const rules::View& surely) {
  if (maybe == view_ && surely == view_) return Status::OK();
  if (!change_ && !snapshot_) return PlanViewChange(maybe, surely);
  // Once the snapshot being sent is done (it brings documents under the view of the moment
  // each is read: either one), or after the change still waiting for it.
  rules::View m = change_ ? change_->first.Union(maybe) : maybe;
  rules::View s = change_ ? change_->second.Intersection(surely) : surely;
  if (snapshot_) {
    m = m.Union(view_);
    s = s.Intersection(view_);
  }
  change_.emplace(std::move(m), std::move(s));
  return Status::OK();
}

Status Session::PlanViewChange(const rules::View& maybe, const rules::View& surely) {
  ServerStore* store = server_->store.get();
  const rules::Rules& rules = *server_->options.rules;
  // Each document's channels at the session's cursor: before its first move after it, else its
  // channels now.
  std::map<DocRef, std::vector<std::string>> then;
  for (uint64_t at = sent_; at < store->head();) {
    uint64_t next = at;
    CAIRN_RETURN_IF_ERROR(store->ReadLog(at, 256, [&](const LogEntry& e) -> Status {
      CAIRN_ASSIGN_OR_RETURN(auto moves, protocol::DecodeMovesFrame(e.batch));
      for (protocol::ChannelMove& m : moves) {
        then.emplace(DocRef(std::move(m.collection), std::move(m.key)), std::move(m.before));
      }
      next = e.cursor;
      return Status::OK();
    }));
    if (next == at) break;
    at = next;
  }
  store::ReplicaStore* state = store->state();
  for (const std::string& c : state->CollectionNames()) {
    if (!Reads(c) || !Wants(c, sent_ + 1) || fresh_.count(c) > 0) continue;
    CAIRN_RETURN_IF_ERROR(state->ForEachDocFields(c, [&](const std::string& key, const Fields& f) {
      DocRef ref(c, key);
      const std::vector<std::string> now = rules.Channels(c, key, f);
      auto moved = then.find(ref);
      const std::vector<std::string>& at_cursor = moved != then.end() ? moved->second : now;
      auto h = held_.find(ref);
      const bool may_hold = h != held_.end() ? h->second : maybe.Holds(at_cursor);
      const bool holds = h != held_.end() ? h->second : surely.Holds(at_cursor);
      const bool in_view = view_.Holds(at_cursor);
      bool held = holds && in_view;
      if (may_hold && (!in_view || (!holds && !view_.Holds(now)))) {
        // Out of the view (or, perhaps held, out of it at the head: it goes now).
        leaving_.push_back(ref);
        entering_.erase(ref);
        held = false;
      } else if (in_view && !holds && view_.Holds(now)) {
        entering_.insert(ref);  // its state (sent again if it was held after all: harmless)
        held = true;
      }
      if (h != held_.end() || moved != then.end()) held_[ref] = held;
      return Status::OK();
    }));
  }
  return Status::OK();
}

bool Session::HoldsBefore(const DocRef& ref, const protocol::ChannelMove& m) const {
  auto it = held_.find(ref);
  // Its first move since the session's cursor: the client holds it as its channels before the
  // move say (the invariant held there).
  return it != held_.end() ? it->second : InChannels(m.before);
}

bool Session::MayEnter(const protocol::ChannelMove& m, uint64_t cursor) const {
  return Wants(m.collection, cursor) && InChannels(m.after) &&
         !HoldsBefore(DocRef(m.collection, m.key), m);
}

bool Session::MarkEntering(const std::vector<protocol::ChannelMove>& moves, uint64_t cursor) {
  bool any = false;
  for (const protocol::ChannelMove& m : moves) {
    if (!MayEnter(m, cursor)) continue;
    DocRef ref(m.collection, m.key);
    if (!InView(ref.first, ref.second)) continue;
    held_[ref] = true;
    entering_.insert(std::move(ref));
    any = true;
  }
  return any;
}

void Session::LeaveOwnWrites(const std::set<DocRef>& written,
                             const std::vector<protocol::ChannelMove>& moves, uint64_t cursor,
                             protocol::BatchEncoder* enc) {
  std::set<DocRef> moved;
  for (const protocol::ChannelMove& m : moves) moved.emplace(m.collection, m.key);
  for (const DocRef& ref : written) {
    if (moved.count(ref) || !Wants(ref.first, cursor) || InView(ref.first, ref.second)) continue;
    // Out of the view at the head: the client holds its own ops of it (and the rest, if it
    // held it at this entry: a later move would take it out; it goes now instead).
    enc->AddLeave(ref.first, ref.second);
    entering_.erase(ref);
    held_[ref] = false;
  }
}

void Session::TrackMoves(std::vector<protocol::ChannelMove> moves, uint64_t cursor, bool own,
                         protocol::BatchEncoder* enc) {
  for (protocol::ChannelMove& m : moves) {
    if (!Wants(m.collection, cursor)) continue;
    DocRef ref(std::move(m.collection), std::move(m.key));
    const bool held = HoldsBefore(ref, m);
    if (own && !held) {
      // The client's own push wrote a document the session takes as not held (one it created,
      // or wrote out of its view; a push whose Ack was lost comes back this way): it holds its
      // own ops of it, and the document is not in the view at the head, else MarkEntering
      // would have sent its state. It leaves now, so that nothing of it stays on the client.
      enc->AddLeave(ref.first, ref.second);
      entering_.erase(ref);
      held_[std::move(ref)] = false;
      continue;
    }
    bool holds = held;
    // (Entering, MarkEntering's, was done before the entry: its state sent first.)
    if (!InChannels(m.after) && held) {
      enc->AddLeave(ref.first, ref.second);
      entering_.erase(ref);
      holds = false;
    }
    held_[std::move(ref)] = holds;
  }
}

Status Session::AddEntering(size_t budget, protocol::BatchEncoder* enc) {
  std::vector<Op> ops, doc_ops;
  size_t bytes = 0;
  while (!entering_.empty()) {
    const DocRef ref = *entering_.begin();
    // Still in the view at the head (a later move out of it, not yet streamed, would say
    // so only then): else its state is not the client's to see.
    if (!InView(ref.first, ref.second)) {
      held_[ref] = false;
      entering_.erase(entering_.begin());
      continue;
    }
    CAIRN_ASSIGN_OR_RETURN(crdt::DocState state,
                           server_->store->state()->CopyDoc(ref.first, ref.second));
    doc_ops.clear();
    crdt::StateOps(ref.first, ref.second, state, &doc_ops);
    size_t doc_bytes = 0;
    for (const Op& op : doc_ops) doc_bytes += protocol::OpBytesBound(op);
    if (!ops.empty() && bytes + doc_bytes > budget) break;  // the next batch takes it
    bytes += doc_bytes;
    ops.insert(ops.end(), doc_ops.begin(), doc_ops.end());
    entering_.erase(entering_.begin());
  }
  // The encoding wants each origin's ops in seq order.
  std::sort(ops.begin(), ops.end(), [](const Op& a, const Op& b) {
    return a.id.origin < b.id.origin || (a.id.origin == b.id.origin && a.id.seq < b.id.seq);
  });
  for (Op& op : ops) {
    op.continues_txn = false;
    enc->enter()->Add(op);
  }
  return Status::OK();
}

bool Session::Skips(const EntryReach& r) const {
  if (!grants_ || view_.all || r.origin == replica_ || view_.Holds(r.channels)) return false;
  for (const DocRef& ref : r.moved) {
    auto h = held_.find(ref);
    if (h != held_.end() && h->second) return false;
  }
  return true;
}

void Session::Pump() {
  if (!live_ || conn->closing()) return;
  if (idle_) {
    server_->fan_out.SetIdle(serial_, std::nullopt);
    idle_ = false;
  }
  for (;;) {
    // Entries trimmed from the log that the kept reach says the client gets nothing of go as
    // coverage (docs/sync-rules.md "Fan-out"); a snapshot only when one it gets was trimmed.
    uint64_t skippable = sent_;
    for (const EntryReach* r;
         skippable < server_->store->floor() && (r = NextSkipped(skippable)) != nullptr;) {
      skippable = r->cursor;
    }
    // With sync rules, documents entering the view while the session is behind the cursor of
    // the last fold are the same (rebase_for_fold_, set below).
    const bool behind_fold = rebase_for_fold_;
    rebase_for_fold_ = false;
    if (!snapshot_ && (skippable < server_->store->floor() || behind_fold)) {
      // The log was trimmed past this session while it waited (a slow client, or one receiving
      // a snapshot): what it lacks is no longer in the log. A snapshot again, then the log.
      snapshot_ = RebaseSnapshot();
      sent_ = snapshot_->cursor;
      server_->Log("session " + replica_.Hex() + " fell behind the kept log: snapshot");
      if (server_->store->history_folded() && !snapshot_->replace) {
        // (As at Hello: a client that cannot replace its copy cannot take a folded state.)
        conn->SendErrorAndClose(Code::kEEXPIRED,
                                "this server folded its history older than its horizon and this "
                                "client's copy must be replaced, which its version cannot do: "
                                "upgrade it");
        return;
      }
    }
    if (!snapshot_) break;
    if (!PumpSnapshot()) return;
  }
  if (change_) {  // a change of view that waited for the snapshot
    const auto [maybe, surely] = std::move(*change_);
    change_.reset();
    Status planned = PlanViewChange(maybe, surely);
    if (!planned.ok()) {
      server_->Log("session " + replica_.Hex() +
                   ": changing its view failed: " + planned.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error changing the view");
      return;
    }
  }
  ServerStore* store = server_->store.get();
  const size_t max_queued = server_->options.max_queued_bytes;
  const uint32_t max_ops = server_->options.max_batch_ops;
  const size_t max_bytes = protocol::BatchBudget(server_->options.conn.limits.max_frame_bytes);
  while (conn->queued_bytes() < max_queued &&
         (sent_ < store->head() || !entering_.empty() || !leaving_.empty())) {
    if (!leaving_.empty()) {
      // Documents a change of view took out of it: in batches of their own at the session's
      // cursor, before anything else.
      protocol::BatchEncoder enc;
      size_t n = 0, bytes = 0;
      for (; n < leaving_.size() && (n == 0 || bytes < max_bytes / 2); n++) {
        bytes += leaving_[n].first.size() + leaving_[n].second.size() + 32;
        enc.AddLeave(leaving_[n].first, leaving_[n].second);
      }
      leaving_.erase(leaving_.begin(), leaving_.begin() + static_cast<ptrdiff_t>(n));
      enc.SetLeaveThrough(store->state()->Through(replica_));
      std::string frame;
      server_->metrics.ops_out += enc.op_count();
      enc.FinishFrame(&frame, sent_);
      conn->Send(std::move(frame));
      caught_up_sent_ = false;
      continue;
    }
    if (!entering_.empty()) {
      if (store->history_folded() && sent_ < store->horizon_cursor()) {
        // docs/crdt-semantics.md "History horizon": their folded states may sum increments
        // the log after the session's cursor brings again. The whole view at the head instead.
        entering_.clear();
        rebase_for_fold_ = true;
        Pump();
        return;
      }
      // docs/sync-rules.md "Reading": the states of documents entering the view go before the
      // entry that moved them in, at the session's cursor, so that the client's cursor never
      // passes that entry while a state is missing (a cut connection would lose it).
      protocol::BatchEncoder enc;
      Status st = AddEntering(max_bytes, &enc);
      if (!st.ok()) {
        server_->Log("reading the state failed: " + st.ToString());
        conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its state");
        return;
      }
      if (enc.has_view_changes()) {
        std::string frame;
        server_->metrics.ops_out += enc.op_count();
        enc.FinishFrame(&frame, sent_);
        conn->Send(std::move(frame));
        caught_up_sent_ = false;
      }
      continue;
    }
    protocol::BatchEncoder enc;
    uint64_t last = sent_;
    // Per origin, the seqs this batch accounts for; which origins had ops skipped.
    std::map<ReplicaId, std::pair<uint64_t, uint64_t>> covered;
    std::set<ReplicaId> skipped_origins;
    bool full = false;
    // The client must learn that the seqs it did not get were skipped, not lost: the range of
    // each origin's seqs the batch accounts for, declared for those with any skipped.
    auto cover = [&](const ReplicaId& origin, uint64_t first_seq, uint64_t last_seq, bool skipped) {
      auto& range = covered[origin];
      if (range.first == 0 && range.second == 0) range.first = first_seq - 1;
      range.second = last_seq;
      if (skipped) skipped_origins.insert(origin);
    };
    // An entry that moves documents into the view ends the batch before it; their states
    // go first (above), then the entry (its documents held now).
    auto enters = [&](const std::vector<protocol::ChannelMove>& moves, uint64_t cursor) {
      if (last != sent_) {
        // (Whether it is in the view at the head is checked when the entry comes first.)
        return std::any_of(moves.begin(), moves.end(),
                           [&](const protocol::ChannelMove& m) { return MayEnter(m, cursor); });
      }
      return MarkEntering(moves, cursor);
    };
    // docs/sync-rules.md "Fan-out": entries the client gets nothing of, as the hub's kept reach
    // says, go as coverage unread (at most half a batch of it).
    for (const EntryReach* r; last < store->head() && (r = NextSkipped(last)) != nullptr;) {
      if (skipped_origins.count(r->origin) == 0 &&
          protocol::kCoverWireBytes * (skipped_origins.size() + 1) > max_bytes / 2) {
        full = true;
        break;
      }
      cover(r->origin, r->first_seq, r->last_seq, /*skipped=*/true);
      last = r->cursor;
    }
    // (Below the log's floor only the kept reach tells what the client skips: the next batch
    // goes on from there. At the head, nothing is left to read.)
    Status st;
    if (!full && last >= store->floor() && last < store->head()) {
      st = store->ReadLog(last, 64, [&](const LogEntry& e) -> Status {
        // A client gets back only its own ops it lacks (a restored file).
        const bool own = e.origin == replica_;
        if (own && (!own_seq_ || e.last_seq <= *own_seq_)) {
          // Its own push may still have moved documents out of (or into) its view.
          if (grants_) {
            std::vector<protocol::ChannelMove> moves;
            std::set<DocRef> written;
            CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(
                e.batch, "log entry",
                [&](const wire::OpBatch& b) -> Status {
                  CAIRN_ASSIGN_OR_RETURN(moves, protocol::DecodeMoves(b));
                  if (enters(moves, e.cursor)) {
                    full = true;
                    return Status(Code::kEBUSY, "documents enter the view");
                  }
                  return Status::OK();
                },
                [&](const Op& op) {
                  written.emplace(op.collection, op.key);
                  return Status::OK();
                }));
            LeaveOwnWrites(written, moves, e.cursor, &enc);
            TrackMoves(std::move(moves), e.cursor, /*own=*/true, &enc);
          }
          last = e.cursor;
          return Status::OK();
        }
        // docs/protocol.md "Limits": entries go whole while the batch stays within the ops and
        // bytes a push may have (the coverage still to be added counted); the first goes
        // whatever its size (it was a push within them).
        auto fits = [&](const wire::OpBatch& b) -> Status {
          const size_t covers = protocol::kCoverWireBytes * skipped_origins.size();
          if (!enc.CanMerge(b, max_ops, max_bytes, covers)) {
            full = true;
            return Status(Code::kEBUSY, "batch full");  // stop before it
          }
          return Status::OK();
        };
        // With sync rules, the entry's channel moves, read from the frame decoded once.
        std::vector<protocol::ChannelMove> moves;
        auto first = [&](const wire::OpBatch& b) -> Status {
          CAIRN_RETURN_IF_ERROR(fits(b));
          if (grants_) {
            CAIRN_ASSIGN_OR_RETURN(moves, protocol::DecodeMoves(b));
            if (enters(moves, e.cursor)) {
              full = true;
              return Status(Code::kEBUSY, "documents enter the view");
            }
          }
          return Status::OK();
        };
        uint64_t sent = 0;
        CAIRN_RETURN_IF_ERROR(
            protocol::DecodeBatchFrame(e.batch, "log entry", first, [&](const Op& op) {
              if (Wants(op.collection, e.cursor) && InView(op.collection, op.key)) {
                enc.Add(op);
                sent++;
              }
              return Status::OK();
            }));
        if (grants_) TrackMoves(std::move(moves), e.cursor, own, &enc);
        last = e.cursor;
        if (own) own_seq_ = e.last_seq;
        // Skipped: ops of collections it does not get, and refused seqs (not in the batch).
        cover(e.origin, e.first_seq, e.last_seq, sent != e.last_seq - e.first_seq + 1);
        return Status::OK();
      });
    }
    if (!st.ok() && !full) {
      server_->Log("reading the log failed: " + st.ToString());
      conn->SendErrorAndClose(Code::kEINTERNAL, "server error reading its log");
      return;
    }
    if (last == sent_) {
      if (!entering_.empty()) continue;  // their states, then the entry
      break;
    }
    for (const ReplicaId& origin : skipped_origins) {
      enc.Cover(origin, covered[origin].first, covered[origin].second);
    }
    if (!enc.empty() || enc.has_covers() || enc.has_view_changes()) {
      // Leaves take the client's own ops the server judged (all it holds now: one judged
      // after the entry that moves the document back in brings its state then).
      enc.SetLeaveThrough(store->state()->Through(replica_));
      std::string frame;
      server_->metrics.ops_out += enc.op_count();
      enc.FinishFrame(&frame, last);
      conn->Send(std::move(frame));
      KillPoint("server.log.sent");
    }
    // The cursor moved: said by a batch, else (its own ops, pushed through another session of
    // the replica) by the next CaughtUp, so the client's cursor does not stay behind them.
    caught_up_sent_ = false;
    sent_ = last;
  }
  if (sent_ >= store->head() && entering_.empty() && leaving_.empty() && !caught_up_sent_ &&
      conn->queued_bytes() < max_queued) {
    flatbuffers::FlatBufferBuilder fbb(64);
    auto cu = wire::CreateCaughtUp(fbb, sent_, store->NowMs());
    conn->Send(FinishFrame(&fbb, wire::Body::CaughtUp, cu));
    caught_up_sent_ = true;
  }
  if (server_->options.rules && caught_up_sent_ && sent_ >= store->head() && entering_.empty() &&
      leaving_.empty() && !conn->closing()) {
    // Idle: pumped again when an entry concerns it, when it is far behind, or after a quiet
    // spell (OnTick).
    idle_ = true;
    idle_since_ms_ = store->NowMs();
    server_->fan_out.SetIdle(serial_, sent_);
  }
}

}  // namespace cairn::server
