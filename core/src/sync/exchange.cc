#include "sync/exchange.h"

#include <algorithm>

#include "base/killpoint.h"
#include "base/log.h"
#include "base/strings.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "replica/sync_access.h"

namespace cairn::sync {

namespace {

using protocol::FinishFrame;

// Record bodies per stream batch (past the first record): frames stay far below the limit.
constexpr size_t kMaxStreamBatchBytes = 4u << 20;

Coverage ParseCoverage(const std::optional<std::string>& text) {
  Coverage c;
  if (!text) return c;
  c.partial = true;
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    for (const auto& [name, since] : j.items()) {
      if (since.is_number_unsigned()) c.holds[name] = since.get<uint64_t>();
    }
  }
  return c;
}

std::optional<std::string> CoverageText(const Coverage& c) {
  if (!c.partial) return std::nullopt;
  Json j = Json::object();
  for (const auto& [name, since] : c.holds) j[name] = since;
  return CanonicalJson(j);
}

}  // namespace

Coverage Coverage::Fresh(const std::vector<std::string>& only) {
  Coverage c;
  c.partial = !only.empty();
  for (const auto& name : only) c.holds[name] = 0;
  return c;
}

Exchange::Exchange(Replica* r, SyncOptions o, Owner* w)
    : replica(r),
      options(std::move(o)),
      owner(w),
      token(options.token),
      stream_batch_bytes(kMaxStreamBatchBytes),
      push_batch_bytes(protocol::BatchBudget(protocol::kDefaultMaxFrameBytes)) {}

void Exchange::LoadStatus() {
  auto pos = SyncAccess(*replica).GetSyncPosition();
  if (pos.ok()) {
    std::lock_guard<std::mutex> lock(mu);
    st.cursor = pos->cursor;
    st.last_sync_ms = pos->last_sync_ms;
  }
  RefreshPending();
}

void Exchange::Begin(net::Link* link, bool run_once) {
  link_ = link;
  once = run_once;
  welcomed = false;
  inflight.clear();
  pushed_through = 0;
  caught_up = false;
  renewals_unanswered = 0;
  stream_sent.clear();
  stream_inflight.clear();
  stream_refused.clear();
  stream_target.clear();
}

void Exchange::SetState(SyncState s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    st.state = s;
  }
  NotifyStatus();
}

void Exchange::SetStateAndError(SyncState s, const std::string& e) {  // one notification for both
  {
    std::lock_guard<std::mutex> lock(mu);
    st.state = s;
    st.last_error = e;
  }
  NotifyStatus();
}

// Tells the status callback when the state, the pending count or the error changed.
void Exchange::NotifyStatus() {
  SyncStatus now;
  StatusCallback cb;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!status_cb) return;
    std::string key = std::string(SyncStateName(st.state)) + "/" +
                      std::to_string(st.pending_ops) + "/" +
                      std::to_string(st.pending_records) + "/" + st.last_error;
    if (key == notified) return;
    notified = std::move(key);
    now = st;
    cb = status_cb;
  }
  cb(now);
}

// Recounts the local ops and records not yet acknowledged (they change with local writes
// and acks).
void Exchange::RefreshPending() {
  auto pending = replica->PendingOps();
  auto records = SyncAccess(*replica).QueuedRecords();
  std::lock_guard<std::mutex> lock(mu);
  if (pending.ok()) st.pending_ops = pending.value();
  if (records.ok()) st.pending_records = records.value();
}

void Exchange::OnOpen(net::Link* c) {
  auto pos = SyncAccess(*replica).GetSyncPosition();
  if (!pos.ok()) {
    c->Close(pos.status());
    return;
  }
  cursor = stored_cursor = pos->cursor;
  known_server = pos->server_id;
  rules_digest = pos->rules_digest;
  coverage = ParseCoverage(pos->subscriptions);
  std::vector<std::string> only = options.only;
  std::sort(only.begin(), only.end());
  only.erase(std::unique(only.begin(), only.end()), only.end());
  wanted = CanonicalJson(Json(only));
  in_snapshot = false;
  auto snap = SyncAccess(*replica).GetSnapshot();
  if (!snap.ok()) {
    c->Close(snap.status());
    return;
  }
  auto own = SyncAccess(*replica).GetOwnHead();
  if (!own.ok()) {
    c->Close(own.status());
    return;
  }
  flatbuffers::FlatBufferBuilder fbb(512);
  wire::ReplicaId rid = protocol::ToWire(replica->id());
  std::vector<flatbuffers::Offset<flatbuffers::String>> subs;
  for (const auto& s : only) subs.push_back(fbb.CreateString(s));
  flatbuffers::Offset<flatbuffers::String> token_str;
  {
    std::lock_guard<std::mutex> lock(mu);
    token_str = fbb.CreateString(token);
    token_renewed = false;  // Hello carries the newest
  }
  auto subs_vec = fbb.CreateVector(subs);
  auto channels_vec = fbb.CreateVectorOfStrings(options.channels);
  auto digest_str = fbb.CreateString(rules_digest);
  std::vector<flatbuffers::Offset<wire::Holding>> holds;
  if (coverage.partial) {
    for (const auto& [name, since] : coverage.holds) {
      holds.push_back(wire::CreateHolding(fbb, fbb.CreateString(name), since));
    }
  }
  auto holds_vec = fbb.CreateVector(holds);
  flatbuffers::Offset<wire::SnapshotResume> resume;
  const store::SnapshotState* staged = snap->has_value() ? &snap->value() : nullptr;
  stale_snapshot = staged != nullptr;
  if (staged && known_server && staged->server_id == *known_server && staged->wanted == wanted) {
    resume = wire::CreateSnapshotResume(fbb, staged->cursor,
                                        fbb.CreateString(staged->after_collection),
                                        fbb.CreateString(staged->after_key), staged->rebase);
  }
  wire::HelloBuilder hello(fbb);
  hello.add_partial(coverage.partial);
  hello.add_holds(holds_vec);
  if (!resume.IsNull()) hello.add_resume(resume);
  hello.add_protocol_version(protocol::kProtocolVersion);
  hello.add_replica_id(&rid);
  hello.add_token(token_str);
  hello.add_cursor(cursor);
  hello.add_subscriptions(subs_vec);
  hello.add_channels(channels_vec);
  hello.add_rules_digest(digest_str);
  hello.add_features(protocol::kFeatures);
  hello.add_client_time_ms(port::WallClockMs());
  hello.add_own_seq(own->last_seq);
  if (own->hlc) hello.add_own_hlc(*own->hlc);
  wire::ReplicaId sid;
  if (known_server) {
    sid = protocol::ToWire(*known_server);
    hello.add_server_id(&sid);
  }
  c->Send(FinishFrame(&fbb, wire::Body::Hello, hello.Finish()));
}

void Exchange::OnFrame(net::Link* c, const wire::Frame& frame) {
  if (!welcomed && frame.body_type() != wire::Body::Welcome &&
      frame.body_type() != wire::Body::Error) {
    c->SendErrorAndClose(Code::kEINVAL, std::string("expected Welcome, got ") +
                                            wire::EnumNameBody(frame.body_type()));
    return;
  }
  switch (frame.body_type()) {
    case wire::Body::Welcome:
      OnWelcome(*frame.body_as_Welcome());
      return;
    case wire::Body::Ack:
      OnAck(*frame.body_as_Ack());
      return;
    case wire::Body::OpBatch:
      OnBatch(*frame.body_as_OpBatch());
      return;
    case wire::Body::CaughtUp:
      OnCaughtUp(*frame.body_as_CaughtUp());
      return;
    case wire::Body::StreamAck:
      OnStreamAck(*frame.body_as_StreamAck());
      return;
    case wire::Body::SnapshotBegin:
      OnSnapshotBegin(*frame.body_as_SnapshotBegin());
      return;
    case wire::Body::SnapshotChunk:
      OnSnapshotChunk(*frame.body_as_SnapshotChunk());
      return;
    case wire::Body::SnapshotEnd:
      OnSnapshotEnd(*frame.body_as_SnapshotEnd());
      return;
    case wire::Body::Renewed: {
      const wire::Renewed* renewed = frame.body_as_Renewed();
      if (renewals_unanswered > 0) renewals_unanswered--;
      caught_up = false;  // the CaughtUp that follows it says the view is in place
      std::lock_guard<std::mutex> lock(mu);
      st.token_expires_ms = renewed != nullptr ? renewed->token_expires_ms() : 0;
      return;
    }
    case wire::Body::Pong:
      return;
    case wire::Body::Ping: {
      flatbuffers::FlatBufferBuilder fbb(64);
      c->Send(FinishFrame(&fbb, wire::Body::Pong, wire::CreatePong(fbb, port::WallClockMs())));
      return;
    }
    case wire::Body::Error:
      c->Close(protocol::ErrorFromWire(frame.body_as_Error(), "server"));
      return;
    default:
      c->SendErrorAndClose(Code::kEINVAL, std::string("unexpected message from the server: ") +
                                              wire::EnumNameBody(frame.body_type()));
  }
}

void Exchange::OnWelcome(const wire::Welcome& w) {
  if (w.server_id() == nullptr) {
    link_->SendErrorAndClose(Code::kEINVAL, "Welcome without a server id");
    return;
  }
  welcomed = true;
  server_id = protocol::FromWire(*w.server_id());
  features = w.features() & protocol::kFeatures;
  history_horizon = w.history_horizon();
  horizon_cursor = w.horizon_cursor();
  if (known_server && *known_server != server_id) cursor = 0;  // another server: start over
  // What this replica holds from now on: only the collections it asks for. (Those it asks
  // for and lacks come in a snapshot and are added when it completes.)
  Coverage held = coverage;
  if (!known_server || *known_server != server_id) {
    held = Coverage::Fresh(options.only);
  } else if (!options.only.empty()) {
    held = Coverage{true, {}};
    for (const auto& c : options.only) {
      auto it = coverage.holds.find(c);
      if (it == coverage.holds.end()) it = coverage.holds.find("*");
      if (!coverage.partial) {
        held.holds[c] = 0;
      } else if (it != coverage.holds.end()) {
        held.holds[c] = it->second;
      }
    }
  }
  if (!(held == coverage)) {
    Status s = SyncAccess(*replica).SetCoverage(CoverageText(held));
    if (!s.ok()) {
      link_->Close(s);
      return;
    }
    coverage = held;
  }
  // docs/crdt-semantics.md "Clock safety": the HLC's physical source follows the server's time.
  Status clock = SyncAccess(*replica).CorrectClock(w.server_time_ms(), w.max_drift_ms());
  if (!clock.ok()) {
    link_->Close(clock);
    return;
  }
  // docs/sync-rules.md: the collections the server's rules keep one-way; local writes to them
  // fail at once from now on (also offline, until a server says otherwise).
  std::vector<std::string> one_way;
  if (w.read_only() != nullptr) {
    for (const auto* name : *w.read_only()) one_way.push_back(name->str());
  }
  Status kept = SyncAccess(*replica).SetReadOnlyCollections(one_way);
  if (!kept.ok()) {
    link_->Close(kept);
    return;
  }
  if (once) {
    auto streams = replica->Streams();
    if (!streams.ok()) {
      link_->Close(streams.status());
      return;
    }
    for (const StreamInfo& s : *streams) stream_target[s.name] = s.last_seq;
  }
  if (w.max_frame_bytes() > 0) {
    // docs/protocol.md "Limits": pushes stay within the server's limit less its reserve, and
    // the server's batches may be as large as its limit (at most protocol::kMaxMaxFrameBytes).
    const uint32_t limit = std::min(w.max_frame_bytes(), protocol::kMaxMaxFrameBytes);
    stream_batch_bytes = std::min<size_t>(kMaxStreamBatchBytes, limit / 2);
    push_batch_bytes = protocol::BatchBudget(limit);
    link_->SetFrameLimit(std::max(limit, protocol::kDefaultMaxFrameBytes), "");
  }
  if (w.window_batches() > 0) options.window = std::min(options.window, w.window_batches());
  if (w.max_batch_ops() > 0) {
    options.max_batch_ops = std::min(options.max_batch_ops, w.max_batch_ops());
  }
  log::Write(log::Level::kInfo, "sync: connected to " + options.server + " (server " +
                                    server_id.Hex() + ")");
  {
    std::lock_guard<std::mutex> lock(mu);
    st.token_expires_ms = w.token_expires_ms();
  }
  SetStateAndError(SyncState::kSyncing, "");
  owner->OnWelcomed();
  SendRenewal();  // a token set while the Hello was on its way
  Push();
}

void Exchange::SetToken(std::string t) {
  std::lock_guard<std::mutex> lock(mu);
  token = std::move(t);
  token_renewed = true;
}

void Exchange::SendRenewal() {
  if (link_ == nullptr || !welcomed || link_->closing()) return;
  flatbuffers::FlatBufferBuilder fbb(512);
  flatbuffers::Offset<wire::Renew> renew;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!token_renewed) return;
    token_renewed = false;
    renew = wire::CreateRenew(fbb, fbb.CreateString(token));
  }
  link_->Send(FinishFrame(&fbb, wire::Body::Renew, renew));
  // Not idle until a CaughtUp comes after the server's answer (a change of view brings and
  // removes documents first: docs/protocol.md "Token renewal"); one it sent before it saw
  // the renewal does not count.
  renewals_unanswered++;
  caught_up = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    st.state = SyncState::kSyncing;  // (the status says so too)
  }
  NotifyStatus();
}

void Exchange::Push() {
  if (link_ == nullptr || !welcomed || link_->closing()) return;
  while (inflight.size() < options.window) {
    protocol::BatchEncoder enc;
    auto last = SyncAccess(*replica).ReadOutbox(pushed_through, options.max_batch_ops,
                                                push_batch_bytes, &enc);
    if (!last.ok()) {
      link_->Close(last.status());
      return;
    }
    if (enc.empty()) break;
    std::string frame;
    const size_t n = enc.op_count();
    enc.FinishFrame(&frame, 0, *last);
    KillPoint("client.push.before_send");
    link_->Send(std::move(frame));
    KillPoint("client.push.sent");
    inflight.push_back(*last);
    pushed_through = *last;
    caught_up = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      st.ops_pushed += n;
      st.state = SyncState::kSyncing;
    }
    NotifyStatus();
  }
  PushStreams();
}

// The streams with records not sent in this session (and not refused in it), highest
// priority first, then by name; last_seq is the last one to send in this session.
Result<std::vector<StreamInfo>> Exchange::UnsentStreams() {
  CAIRN_ASSIGN_OR_RETURN(std::vector<StreamInfo> all, replica->Streams());
  std::vector<StreamInfo> out;
  for (StreamInfo& s : all) {
    if (s.records == 0 || stream_refused.count(s.name)) continue;
    if (once) {
      auto target = stream_target.find(s.name);
      s.last_seq = target == stream_target.end() ? 0 : std::min(s.last_seq, target->second);
    }
    auto it = stream_sent.find(s.name);
    const uint64_t sent = it == stream_sent.end() ? 0 : it->second;
    if (sent >= s.last_seq) continue;
    out.push_back(std::move(s));
  }
  std::stable_sort(out.begin(), out.end(), [](const StreamInfo& a, const StreamInfo& b) {
    return a.config.priority > b.config.priority;
  });
  return out;
}

void Exchange::PushStreams() {
  while (stream_inflight.size() < options.window) {
    auto unsent = UnsentStreams();
    if (!unsent.ok()) {
      link_->Close(unsent.status());
      return;
    }
    if (unsent->empty()) return;
    const std::string& name = unsent->front().name;
    const uint64_t sent = stream_sent[name], last = unsent->front().last_seq;
    protocol::StreamEncoder enc(name);
    // Seqs are increasing: at most last - sent records are in (sent, last].
    const auto max_records =
        static_cast<size_t>(std::min<uint64_t>(options.max_batch_ops, last - sent));
    Status s = SyncAccess(*replica).ReadStream(name, sent, max_records, stream_batch_bytes, &enc);
    if (!s.ok()) {
      link_->Close(s);
      return;
    }
    if (enc.empty()) {  // acknowledged or dropped meanwhile: nothing left to send
      stream_sent[name] = last;
      continue;
    }
    std::string frame;
    enc.FinishFrame(&frame);
    link_->Send(std::move(frame));
    stream_inflight.emplace_back(name, enc.last_seq());
    stream_sent[name] = enc.last_seq();
    SetState(SyncState::kSyncing);
  }
}

void Exchange::OnStreamAck(const wire::StreamAck& ack) {
  const std::string name = ack.stream() ? ack.stream()->str() : std::string();
  if (stream_inflight.empty() || stream_inflight.front().first != name ||
      (ack.code() == 0 ? ack.through_seq() != stream_inflight.front().second
                       : ack.through_seq() > stream_inflight.front().second)) {
    link_->SendErrorAndClose(Code::kECORRUPT, "StreamAck does not match the batch sent");
    return;
  }
  stream_inflight.pop_front();
  if (ack.code() != 0) {
    // Refused: the records stay queued (nothing is lost); reported, and not sent again in
    // this session.
    Status why(static_cast<Code>(ack.code()),
               "the server refused records of stream '" + name + "': " +
                   (ack.reason() ? ack.reason()->str() : std::string()));
    log::Write(log::Level::kWarn, "sync: " + why.ToString());
    if (!stream_refused.count(name)) stream_refused.emplace(name, why);
    SetStateAndError(SyncState::kSyncing, why.ToString());
  } else if (!stream_refused.count(name)) {
    // (After a refusal, later acks of the stream would drop the refused records too.)
    KillPoint("client.stream.before_ack");
    auto removed = SyncAccess(*replica).AckStream(name, ack.through_seq());
    if (!removed.ok()) {
      link_->Close(removed.status());
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    st.records_uploaded += *removed;
  }
  RefreshPending();
  NotifyStatus();
  if (caught_up) {
    CheckIdle();  // pushes when not idle
  } else {
    Push();
  }
}

bool Exchange::RefusalKnown(uint64_t first_seq) const {
  auto run = refused_above.upper_bound(first_seq);
  return run != refused_above.begin() && std::prev(run)->second >= first_seq;
}

void Exchange::AddRefused(uint64_t first, uint64_t last) {
  auto next = refused_above.upper_bound(first);
  if (next != refused_above.begin() && std::prev(next)->second + 1 >= first) {
    auto prev = std::prev(next);  // (adjacent or overlapping: merged)
    prev->second = std::max(prev->second, last);
    first = prev->first;
  } else {
    refused_above.emplace(first, last);
  }
  auto at = refused_above.find(first);
  for (auto after = std::next(at);
       after != refused_above.end() && after->first <= at->second + 1;) {
    at->second = std::max(at->second, after->second);
    after = refused_above.erase(after);
  }
}

void Exchange::OnAck(const wire::Ack& ack) {
  uint64_t through = 0;
  if (ack.entries()) {
    for (const auto* e : *ack.entries()) {
      if (protocol::FromWire(e->origin()) == replica->id()) through = e->through_seq();
    }
  }
  if (through > pushed_through) {
    // Beyond what this session pushed: fine up to this replica's last seq (its own ops pushed by
    // another process on the file, or sent back to a restored file), never past it.
    auto own = SyncAccess(*replica).GetOwnHead();
    if (!own.ok() || through > own->last_seq) {
      link_->SendErrorAndClose(Code::kECORRUPT, "Ack beyond what was pushed");
      return;
    }
  }
  std::vector<RefusedTxn> refused;
  if (ack.refused()) {
    for (const wire::Refusal* r : *ack.refused()) {
      if (r->first_seq() == 0 || r->first_seq() > r->last_seq() || r->last_seq() > through) {
        link_->SendErrorAndClose(Code::kECORRUPT, "refusal outside the acknowledged seqs");
        return;
      }
      refused.push_back(RefusedTxn{r->first_seq(), r->last_seq(), static_cast<Code>(r->code()),
                                   r->reason() ? r->reason()->str() : std::string()});
    }
  }
  KillPoint("client.ack.before_record");
  Status s = SyncAccess(*replica).AckOutbox(through, refused);
  if (!s.ok()) {
    link_->Close(s);
    return;
  }
  while (!inflight.empty() && inflight.front() <= through) inflight.pop_front();
  caught_up = false;  // the server sends CaughtUp after every push: wait for that one
  for (const RefusedTxn& r : refused) {
    log::Write(log::Level::kWarn, "sync: the server refused local ops " +
                                      std::to_string(r.first_seq) + ".." +
                                      std::to_string(r.last_seq) + " (" + CodeName(r.code) +
                                      ": " + r.reason + "); undone, see the rejected ops");
  }
  RefreshPending();
  DurableCallback cb;
  RefusedCallback refused_fn;
  {
    std::lock_guard<std::mutex> lock(mu);
    cb = durable_cb;
    refused_fn = refused_cb;
    st.txns_refused += refused.size();
  }
  // The refusals first, then the watermark (docs/c-api.md "Write receipts"): the newest seq
  // below `through` that ends a transaction the server took, so that an Ack of refused
  // transactions alone moves nothing. Each refusal is told once to this client: pushes retried
  // in a pipeline list the refusals again (refused_above remembers them); after a lost Ack
  // the client never saw it, so it is told then.
  for (const RefusedTxn& r : refused) {
    if (r.last_seq <= durable_through || RefusalKnown(r.first_seq)) continue;
    if (refused_fn) refused_fn(r.first_seq, r.last_seq, r.code, r.reason);
    AddRefused(r.first_seq, r.last_seq);
  }
  // The watermark: below the run of refused seqs `through` falls in, if any.
  uint64_t saved = through;
  auto run = refused_above.upper_bound(saved);
  if (run != refused_above.begin() && (--run)->second >= saved) saved = run->first - 1;
  // Several Acks of pushes retried in a pipeline may come with lower receipts than one before
  // (each lists its part of the refusals): the callback never goes back.
  if (saved > durable_through) {
    durable_through = saved;
    refused_above.erase(refused_above.begin(), refused_above.upper_bound(durable_through));
    if (cb) cb(durable_through);
  }
  NotifyStatus();
  Push();
}

// The server sends a snapshot before anything else of a session: one staged earlier and not
// continued by now is stale (the client asked for something else, or the server no longer
// has its cursor) and must not be resumed later against a moved cursor.
bool Exchange::SessionGoesOn(const char* what) {
  if (in_snapshot) {
    link_->SendErrorAndClose(Code::kEINVAL, std::string(what) + " inside a snapshot");
    return false;
  }
  if (stale_snapshot) {
    Status s = SyncAccess(*replica).DiscardSnapshot();
    if (!s.ok()) {
      link_->Close(s);
      return false;
    }
    stale_snapshot = false;
  }
  return true;
}

void Exchange::OnBatch(const wire::OpBatch& batch) {
  if (!SessionGoesOn("a batch")) return;
  // A batch of entering documents' states alone (docs/sync-rules.md "Reading") may come at
  // the cursor the client has.
  const bool view_only = batch.op_count() == 0 && batch.covers() == nullptr &&
                         (batch.leave() != nullptr || batch.enter() != nullptr);
  if (batch.cursor() < cursor || (batch.cursor() == cursor && !view_only)) {
    link_->SendErrorAndClose(Code::kECORRUPT, "batch cursor did not advance");
    return;
  }
  KillPoint("client.apply.before");
  auto applied = SyncAccess(*replica).ApplyServerBatch(batch, batch.cursor(), server_id);
  if (!applied.ok()) {
    link_->SendErrorAndClose(applied.status().code(),
                            "client could not apply a batch: " + applied.status().message());
    return;
  }
  cursor = stored_cursor = batch.cursor();
  caught_up = false;  // more may follow: the next CaughtUp says when the server is done
  std::lock_guard<std::mutex> lock(mu);
  st.ops_received += applied->applied;
  st.cursor = cursor;
}

void Exchange::OnSnapshotBegin(const wire::SnapshotBegin& b) {
  if (in_snapshot) {
    link_->SendErrorAndClose(Code::kEINVAL, "SnapshotBegin inside a snapshot");
    return;
  }
  snapshot_collections.clear();
  if (b.collections()) {
    for (const auto* c : *b.collections()) snapshot_collections.push_back(c->str());
  }
  if (b.resumed()) {
    auto staged = SyncAccess(*replica).GetSnapshot();
    if (!staged.ok() || !staged->has_value() || staged->value().cursor != b.cursor() ||
        staged->value().rebase != b.rebase() || staged->value().server_id != server_id) {
      link_->SendErrorAndClose(Code::kECORRUPT,
                              "the server resumed a snapshot this replica does not have");
      return;
    }
  } else {
    store::SnapshotState snap;
    snap.server_id = server_id;
    snap.cursor = b.cursor();
    snap.rebase = b.rebase();
    snap.wanted = wanted;
    if (b.watermarks()) {
      for (const auto* e : *b.watermarks()) {
        snap.watermarks[protocol::FromWire(e->origin())] = e->through_seq();
      }
    }
    Status s = SyncAccess(*replica).BeginSnapshot(snap);
    if (!s.ok()) {
      link_->Close(s);
      return;
    }
  }
  in_snapshot = true;
  stale_snapshot = false;
  snapshot_rebase = b.rebase();
  snapshot_evict = b.rebase() && b.evict();
  snapshot_replace = b.replace() && (features & protocol::kFeatureHistory) != 0;
  snapshot_rules_digest = b.rules_digest() ? b.rules_digest()->str() : std::string();
  snapshot_cursor = b.cursor();
}

void Exchange::OnSnapshotChunk(const wire::SnapshotChunk& chunk) {
  if (!in_snapshot || chunk.batch() == nullptr) {
    link_->SendErrorAndClose(Code::kEINVAL, "a snapshot chunk outside a snapshot");
    return;
  }
  Status s = SyncAccess(*replica).StageSnapshotChunk(
      *chunk.batch(), chunk.after_collection() ? chunk.after_collection()->str() : "",
      chunk.after_key() ? chunk.after_key()->str() : "");
  if (!s.ok()) {
    link_->SendErrorAndClose(s.code(), "client could not stage a snapshot: " + s.message());
    return;
  }
  KillPoint("client.snapshot.staged");
}

void Exchange::OnSnapshotEnd(const wire::SnapshotEnd& end) {
  if (!in_snapshot || end.cursor() != snapshot_cursor) {
    link_->SendErrorAndClose(Code::kEINVAL, "SnapshotEnd does not match SnapshotBegin");
    return;
  }
  Coverage after = coverage;
  if (snapshot_rebase) {
    after = Coverage::Fresh(options.only);
  } else {
    // Held from this replica's cursor: the snapshot brought what its receipts count, the log
    // from here brings the rest.
    after.partial = true;
    for (const auto& c : snapshot_collections) after.holds[c] = cursor;
  }
  KillPoint("client.snapshot.before_finish");
  // A folded state replaces what this replica holds of what the snapshot brings: a rebase, the
  // collections it names (those this replica may read that the server has); else the
  // collections added ("*": every one it did not hold).
  std::vector<std::string> replaced;
  if (snapshot_replace) {
    if (snapshot_rebase) {
      replaced = snapshot_collections;
    } else {
      for (const auto& c : snapshot_collections) {
        if (c != "*") replaced.push_back(c);
      }
      if (std::find(snapshot_collections.begin(), snapshot_collections.end(), "*") !=
          snapshot_collections.end()) {
        auto names = SyncAccess(*replica).CollectionNames();
        if (!names.ok()) {
          link_->Close(names.status());
          return;
        }
        for (const auto& c : *names) {
          if (coverage.holds.count(c) == 0) replaced.push_back(c);
        }
      }
    }
  }
  // Sync rules: what the snapshot did not bring of what this replica syncs is not its to
  // keep (docs/sync-rules.md "Rules that change").
  auto applied = SyncAccess(*replica).FinishSnapshot(
      CoverageText(after), snapshot_evict ? &options.only : nullptr, snapshot_rules_digest,
      snapshot_replace ? &replaced : nullptr);
  if (!applied.ok()) {
    link_->SendErrorAndClose(applied.status().code(),
                            "client could not apply a snapshot: " + applied.status().message());
    return;
  }
  in_snapshot = false;
  coverage = after;
  if (snapshot_rebase) {
    cursor = stored_cursor = snapshot_cursor;
    rules_digest = snapshot_rules_digest;
  }
  std::lock_guard<std::mutex> lock(mu);
  st.ops_received += *applied;
  st.cursor = cursor;
}

void Exchange::OnCaughtUp(const wire::CaughtUp& cu) {
  if (!SessionGoesOn("CaughtUp")) return;
  if (cu.cursor() < cursor) {
    link_->SendErrorAndClose(Code::kECORRUPT, "CaughtUp cursor went backwards");
    return;
  }
  cursor = cu.cursor();
  caught_up = renewals_unanswered == 0;
  FoldHistory();
  if (link_ == nullptr || link_->closing()) return;
  CheckIdle();
}

void Exchange::FoldHistory() {
  if ((features & protocol::kFeatureHistory) == 0 || history_horizon == 0 ||
      cursor < horizon_cursor || in_snapshot) {
    return;
  }
  // First what the server refused for the horizon, written again (it has every op below it
  // now: a delete that covers one is here); then the fold.
  auto again = SyncAccess(*replica).ReapplyExpired(history_horizon);
  if (!again.ok()) {
    link_->Close(again.status());
    return;
  }
  if (*again > 0) {
    RefreshPending();
    NotifyStatus();
    caught_up = false;  // (what it wrote goes out first)
    Push();
  } else if (history_horizon <= folded_horizon) {
    return;  // (folded in this session, and nothing written again since)
  }
  auto folded = SyncAccess(*replica).FoldHistory(history_horizon);
  if (!folded.ok()) {
    link_->Close(folded.status());
    return;
  }
  folded_horizon = history_horizon;  // (below its own unacknowledged ops: again next session)
}

// Idle: the server caught this replica up after its last push and batch, and nothing local
// is left to acknowledge (ops, records of streams the server did not refuse). Stores the
// cursor; a SyncOnce finishes (with a stream's refusal, if any).
void Exchange::CheckIdle() {
  if (!caught_up || link_ == nullptr) return;
  auto pending = replica->PendingOps();
  if (!pending.ok()) {
    link_->Close(pending.status());
    return;
  }
  auto unsent = UnsentStreams();
  if (!unsent.ok()) {
    link_->Close(unsent.status());
    return;
  }
  const bool idle = inflight.empty() && *pending == 0 && stream_inflight.empty() &&
                    unsent->empty();
  std::optional<int64_t> synced;
  if (idle) synced = port::WallClockMs();
  if (cursor != stored_cursor || idle) {
    Status s = SyncAccess(*replica).SetSyncPosition(cursor, server_id, synced);
    if (!s.ok()) {
      link_->Close(s);
      return;
    }
    stored_cursor = cursor;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    st.pending_ops = *pending;
    st.cursor = cursor;
    if (idle) {
      st.state = SyncState::kIdle;
      st.last_sync_ms = synced;
    }
  }
  NotifyStatus();
  if (idle && once) {
    owner->OnIdle(stream_refused.empty() ? Status::OK() : stream_refused.begin()->second);
    return;
  }
  if (!idle) Push();
}

void Exchange::OnTick(net::Link* c, uint64_t now) {
  if (welcomed && now - c->last_send_ms() >= options.conn.idle_timeout_ms / 3) {
    flatbuffers::FlatBufferBuilder fbb(64);
    c->Send(FinishFrame(&fbb, wire::Body::Ping, wire::CreatePing(fbb, port::WallClockMs())));
  }
}

void Exchange::OnClosed(net::Link* c, const Status& why) {
  if (c != link_) return;  // not this session's link (a driver bug): nothing of ours to end
  {
    std::lock_guard<std::mutex> lock(mu);
    st.bytes_sent += c->wire_bytes_out();
    st.bytes_received += c->wire_bytes_in();
    st.state = SyncState::kOffline;
    if (!why.ok()) st.last_error = why.ToString();
  }
  if (welcomed) {
    log::Write(log::Level::kInfo, "sync: disconnected from " + options.server +
                                      (why.ok() ? std::string() : ": " + why.ToString()));
  }
  NotifyStatus();
  link_ = nullptr;
  owner->OnLinkClosed(why.ok() ? Status(Code::kENETWORK, "connection closed") : why);
}

}  // namespace cairn::sync
