#include "server/session_hub.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "oplog/json_codec.h"
#include "oplog/validate.h"
#include "protocol/frame.h"
#include "server/session.h"
#if defined(CAIRN_HAVE_HTTP)
#include "net/http.h"
#include "server/http_api.h"
#endif

namespace cairn::server {

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

Result<std::string> SessionHub::Impl::Admit(const std::string& ip, size_t open) {
  const std::string key = AddressKey(ip);
  auto it = per_address.find(key);
  const size_t from_key = it == per_address.end() ? 0 : it->second;
  std::string refusal;
  bool first = false;  // the first refusal of its kind since the limit was last reached
  if (open > options.max_connections) {
    refusal = "too many connections (limit " + std::to_string(options.max_connections) + ")";
    first = !total_limit_logged;
    total_limit_logged = true;
  } else if (from_key >= options.max_connections_per_address) {
    refusal = "too many connections from " + key + " (limit " +
              std::to_string(options.max_connections_per_address) + ")";
    first = at_limit_logged.insert(key).second;
  }
  if (!refusal.empty()) {
    if (first) Log("refusing connections: " + refusal);
    return Status(Code::kEBUSY, refusal);
  }
  per_address[key] = from_key + 1;
  return key;
}

void SessionHub::Impl::Release(const std::string& key) {
  auto it = per_address.find(key);
  if (it != per_address.end() && --it->second == 0) {
    per_address.erase(it);
    at_limit_logged.erase(key);
  }
  if (open_connections() <= options.max_connections) total_limit_logged = false;
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

void SessionHub::Impl::Committed(uint64_t from, Session* also) {
#if defined(CAIRN_HAVE_HTTP)
  if (http_api) http_api->Committed();  // (long polls of the change feed)
#endif
  if (!options.rules) {
    PumpAll();
    return;
  }
  // The reach of each new entry, read once here rather than by every session.
  std::vector<EntryReach> reach;
  Status read;
  for (uint64_t at = from; read.ok() && at < store->head();) {
    uint64_t next = at;
    read = store->ReadLog(at, 256, [&](const LogEntry& e) -> Status {
      CAIRN_ASSIGN_OR_RETURN(EntryReach r, ReachOf(e, *options.rules, store->state()));
      reach.push_back(std::move(r));
      next = e.cursor;
      return Status::OK();
    });
    if (next == at) break;
    at = next;
  }
  if (!read.ok()) {
    // Who it concerns is not known: every session reads the log itself (none of the entries
    // is kept, so none is skipped unread).
    Log("reading the log's new entries failed: " + read.ToString());
    fan_out.Extend(store->head(), {});
    PumpAll();
    return;
  }
  std::set<uint64_t> due = fan_out.Concerned(reach);
  if (also != nullptr) due.insert(also->serial());
  // Entries after `from` the store trimmed before they were read here (a node's catch-up: its
  // copy trims as it appends, or loads a checkpoint) are in no reach: the kept span starts
  // again at the floor, so that nobody skips them unread.
  fan_out.Extend(std::max(from, store->floor()), std::move(reach));
  for (uint64_t serial : fan_out.FarBehind(store->head(), store->floor())) due.insert(serial);
  for (uint64_t serial : due) {  // (a session may close while pumping another)
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
  if (options.rules && !options.tokens().enabled()) {
    return Status::Invalid(
        "sync rules need tokens (--token-secret or public keys): grants come from their claims");
  }
  // docs/protocol.md "Limits": every transaction must fit a frame, and no client takes more.
  const uint32_t frame = options.conn.limits.max_frame_bytes;
  if (frame < protocol::kMinMaxFrameBytes || frame > protocol::kMaxMaxFrameBytes) {
    return Status::Invalid(
        "the frame limit must be from " + std::to_string(protocol::kMinMaxFrameBytes) + " to " +
        std::to_string(protocol::kMaxMaxFrameBytes) + " bytes, not " + std::to_string(frame));
  }
  static_assert(kMaxTransactionBytes <= protocol::BatchBudget(protocol::kMinMaxFrameBytes),
                "every transaction fits a batch under the least frame limit");
  if (options.max_batch_ops > kMaxTransactionOps) {
    return Status::Invalid("max_batch_ops must be at most " + std::to_string(kMaxTransactionOps) +
                           " (what a client decodes in one batch)");
  }
  if (options.max_batch_ops == 0 || options.max_queued_bytes == 0 ||
      options.max_unauthenticated_bytes == 0) {
    return Status::Invalid(
        "max_batch_ops, max_queued_bytes and max_unauthenticated_bytes must be at least 1");
  }
  std::unique_ptr<SessionHub> hub(new SessionHub());
  hub->impl_->options = options;
  hub->impl_->request_turn = std::move(request_turn);
  hub->impl_->unauthenticated.limit = options.max_unauthenticated_bytes;
  hub->impl_->http_bodies.limit = options.max_unauthenticated_bytes;
  CAIRN_ASSIGN_OR_RETURN(hub->impl_->store, ServerStore::Open(options.db_path, options.store));
  hub->impl_->writer = std::make_unique<ServerWriter>(hub->impl_.get());
  return hub;
}

bool SessionHub::Attach(net::Link* link) {
  auto* session = new Session(impl_.get(), impl_->next_serial++);
  session->conn = link;
  link->set_delegate(session);
  impl_->sessions.emplace(session->serial(), session);
  return session->Admit();
}

bool SessionHub::AttachHttp(net::Link* link) {
#if defined(CAIRN_HAVE_HTTP)
  Impl* impl = impl_.get();
  Result<std::string> key = impl->Admit(link->peer_ip(), impl->open_connections() + 1);
  if (!key.ok()) {
    link->Close(key.status());
    return false;
  }
  if (!impl->http_api) impl->http_api = std::make_shared<HttpApi>(impl);
  impl->http_links.insert(link);
  std::weak_ptr<HttpApi> api = impl->http_api;
  net::HttpLimits limits = impl->options.http_limits;
  limits.queued_mark = impl->options.conn.drained_bytes;
  limits.bodies = &impl->http_bodies;
  new net::HttpConn(
      link,
      [api](net::HttpRequest request, net::HttpConn::Reply reply) {
        if (auto a = api.lock()) a->Handle(request, reply);
      },
      limits,
      [impl, link, k = std::move(key.value())](const Status&) {
        impl->metrics.bytes_in_closed += link->wire_bytes_in();
        impl->metrics.bytes_out_closed += link->wire_bytes_out();
        impl->http_links.erase(link);
        impl->Release(k);
      });
  link->SetDeadline(impl->options.handshake_timeout_ms, "waiting for the handshake and a request");
  return true;
#else
  link->Close(Status(Code::kEINVAL, "this server was built without the HTTP API"));
  return false;
#endif
}

MetricGauges SessionHub::Impl::Gauges() const {
  MetricGauges g;
  g.sync_connections = sessions.size();
  g.http_connections = http_links.size();
  g.bytes_in = metrics.bytes_in_closed;
  g.bytes_out = metrics.bytes_out_closed;
  for (const auto& [serial, s] : sessions) {
    g.bytes_in += s->conn->wire_bytes_in();
    g.bytes_out += s->conn->wire_bytes_out();
  }
  for (const net::Link* link : http_links) {
    g.bytes_in += link->wire_bytes_in();
    g.bytes_out += link->wire_bytes_out();
  }
  g.log_head = store->head();
  g.log_floor = store->floor();
  return g;
}

void SessionHub::CatchUp() {
  const uint64_t head = impl_->store->head();
  Status st = Status::OK();
  {
    ScopedTimer timed(&impl_->metrics.store_seconds["catch_up"]);
    st = impl_->store->CatchUp();
  }
  if (!st.ok()) {
    if (!impl_->catch_up_failing) impl_->Log("catching up with the database failed: " + st.ToString());
    impl_->catch_up_failing = true;
    // What it took in before failing goes on to the sessions it concerns.
    if (impl_->store->head() != head) impl_->Committed(head, nullptr);
    return;
  }
  if (impl_->catch_up_failing) impl_->Log("caught up with the database again");
  impl_->catch_up_failing = false;
  if (impl_->store->head() != head) impl_->Committed(head, nullptr);
}

void SessionHub::Maintain() {
  const uint64_t head = impl_->store->head();
  Status st = Status::OK();
  {
    ScopedTimer timed(&impl_->metrics.store_seconds["maintain"]);
    st = impl_->store->Maintain();
  }
  // (Maintenance may take in what other nodes committed: the sessions and polls hear of it.)
  if (impl_->store->head() != head) impl_->Committed(head, nullptr);
  if (!st.ok() && !impl_->maintain_failing) impl_->Log("maintenance failed: " + st.ToString());
  if (st.ok() && impl_->maintain_failing) impl_->Log("maintenance works again");
  impl_->maintain_failing = !st.ok();
  impl_->DrainInbox();
}

namespace {

// An SQL inbox row's ops (docs/backend.md "Writing through SQL"): its columns as the HTTP
// API's batch op takes them.
Result<std::vector<Op>> InboxOps(const InboxRow& r) {
  const std::string what = "cairn_inbox row " + std::to_string(r.id);
  CAIRN_RETURN_IF_ERROR(ValidateCollectionName(r.collection).WithContext(what));
  CAIRN_RETURN_IF_ERROR(ValidateKey(r.key).WithContext(what));
  Json j = Json::object();
  if (r.fields) {
    CAIRN_ASSIGN_OR_RETURN(j["fields"], ParseJson(*r.fields));
  }
  if (r.field) j["field"] = *r.field;
  if (r.delta) j["delta"] = *r.delta;
  return DocOpsFromJson(r.op, j, r.collection, r.key, what);
}

}  // namespace

void SessionHub::Impl::DrainInbox() {
  constexpr size_t kRowsPerPush = 100;
  constexpr int kPushesPerTick = 10;
  Result<ReplicaId> origin = writer->Origin();
  if (!origin.ok()) return;
  const std::string claimer = origin->Bytes();
  auto push = [&](std::vector<std::vector<Op>> txns, PushExtras extras) -> Status {
    Result<PushResult> pushed = writer->Write(
        std::move(txns), [](const Op&) { return Status::OK(); }, nullptr, &extras);
    if (pushed.ok()) {
      for (const Refused& r : pushed->refused) Log("an SQL inbox write was refused: " + r.reason);
    }
    return pushed.status();
  };
  for (int round = 0; round < kPushesPerTick; round++) {
    // Stamped after everything committed before the rows are read (ServerWriter::Write): what
    // other nodes committed first, taken in.
    const uint64_t head = store->head();
    Status caught_up = store->CatchUp();
    if (store->head() != head) Committed(head, nullptr);
    if (!caught_up.ok()) {
      Log("catching up before the SQL inbox failed: " + caught_up.ToString());
      return;
    }
    Result<std::vector<InboxRow>> rows = store->ClaimInbox(claimer, kRowsPerPush);
    if (!rows.ok()) {
      Log("reading the SQL inbox failed: " + rows.status().ToString());
      return;
    }
    if (rows->empty()) return;
    std::vector<std::vector<Op>> txns;
    PushExtras extras;
    extras.inbox_claimer = claimer;
    for (const InboxRow& r : *rows) {
      Result<std::vector<Op>> ops = InboxOps(r);
      if (!ops.ok()) {
        Log("SQL inbox: " + ops.status().message());
        Status refused = store->RefuseInbox(r.id, claimer, ops.status().message());
        if (!refused.ok()) Log("refusing an SQL inbox row failed: " + refused.ToString());
        continue;
      }
      txns.push_back(std::move(ops.value()));
      extras.inbox.emplace_back(r.id, 0);
    }
    if (txns.empty()) continue;
    Status st = push(txns, extras);
    if (st.code() == Code::kEINVAL) {
      // Too much for one push: each row alone, and one too large for any refused.
      for (size_t i = 0; i < txns.size(); i++) {
        PushExtras one;
        one.inbox_claimer = claimer;
        one.inbox.emplace_back(extras.inbox[i].first, 0);
        st = push({txns[i]}, one);
        if (st.code() == Code::kEINVAL) {
          st = store->RefuseInbox(extras.inbox[i].first, claimer, st.message());
        }
        if (!st.ok()) break;
      }
    }
    if (!st.ok()) {
      // Left claimed: taken again (by any node) once the claim lapses.
      Log("applying the SQL inbox failed: " + st.ToString());
      return;
    }
  }
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
  const std::vector<net::Link*> http(impl_->http_links.begin(), impl_->http_links.end());
  for (net::Link* link : http) link->Close(Status::OK());
}

void SessionHub::SetWakeTimer(std::function<void(uint64_t ms)> set_timer) {
  impl_->set_wake_timer = std::move(set_timer);
}

void SessionHub::Wake() {
#if defined(CAIRN_HAVE_HTTP)
  if (impl_->http_api) impl_->http_api->Wake();
#endif
}

size_t SessionHub::session_count() const { return impl_->sessions.size(); }
ServerStore* SessionHub::store() { return impl_->store.get(); }
void SessionHub::Log(const std::string& message) { impl_->Log(message); }

}  // namespace cairn::server
