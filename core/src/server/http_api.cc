#include "server/http_api.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <map>
#include <set>
#include <string_view>

#include "base/sha256.h"
#include "base/strings.h"
#include "oplog/json_codec.h"
#include "oplog/validate.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "server/session.h"
#include "server/write_judge.h"

namespace cairn::server {

namespace {

using net::HttpError;
using net::HttpResponse;

HttpResponse JsonResponse(const Json& body) {
  HttpResponse r;
  r.body = CanonicalJson(body);
  return r;
}

// A failed call's status: docs/backend.md "Errors".
HttpResponse ErrorResponse(const Status& st) {
  int status = 500;
  switch (st.code()) {
    case Code::kEINVAL:
    case Code::kECORRUPT:
      status = 400;
      break;
    case Code::kETOKEN:
      status = 401;
      break;
    case Code::kEPERM:
      status = 403;
      break;
    case Code::kENOTFOUND:
      status = 404;
      break;
    default:
      break;
  }
  return HttpError(status, st.code(), st.message());
}

HttpResponse Unauthorized(Code code, const std::string& message) {
  HttpResponse r = HttpError(401, code, message);
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

HttpResponse MethodNotAllowed(const std::string& method, const char* allow) {
  HttpResponse r = HttpError(405, Code::kEINVAL,
                             method + " is not served here (allowed: " + std::string(allow) + ")");
  r.headers.emplace_back("Allow", allow);
  return r;
}

// The JSON body of a write: 415 for another content type, 400 when it is not JSON.
std::optional<HttpResponse> JsonBody(const net::HttpRequest& request, Json* out) {
  const std::string* type = request.Header("content-type");
  if (type != nullptr && type->rfind("application/json", 0) != 0) {
    return HttpError(415, Code::kEINVAL, "the body must be JSON (Content-Type: application/json)");
  }
  auto parsed = ParseJson(request.body);
  if (!parsed.ok()) return HttpError(400, Code::kEINVAL, "the body: " + parsed.status().message());
  *out = std::move(parsed.value());
  return std::nullopt;
}

// EINVAL unless `j` is an object whose keys are all among `allowed`.
Status OnlyKeys(const Json& j, std::initializer_list<const char*> allowed,
                const std::string& what) {
  if (!j.is_object()) return Status::Invalid(what + " must be a JSON object");
  for (const auto& [name, value] : j.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || name == a;
    if (!known) return Status::Invalid(what + " has an unknown key '" + name + "'");
  }
  return Status::OK();
}

// POST /v1/batch's body: {"ops":[{"op":..,"collection":..,"key":..,...}, ...]}.
Result<std::vector<Op>> BatchOps(const Json& j) {
  CAIRN_RETURN_IF_ERROR(OnlyKeys(j, {"ops"}, "the body"));
  if (!j.contains("ops") || !j["ops"].is_array() || j["ops"].empty()) {
    return Status::Invalid("the body needs \"ops\", an array of at least one op");
  }
  std::vector<Op> ops;
  for (size_t i = 0; i < j["ops"].size(); i++) {
    const Json& o = j["ops"][i];
    const std::string what = "ops[" + std::to_string(i) + "]";
    CAIRN_RETURN_IF_ERROR(
        OnlyKeys(o, {"op", "collection", "key", "fields", "field", "delta"}, what));
    CAIRN_ASSIGN_OR_RETURN(std::string kind, JsonStringAt(o, "op", what));
    CAIRN_ASSIGN_OR_RETURN(std::string collection, JsonStringAt(o, "collection", what));
    CAIRN_ASSIGN_OR_RETURN(std::string key, JsonStringAt(o, "key", what));
    CAIRN_ASSIGN_OR_RETURN(std::vector<Op> more, DocOpsFromJson(kind, o, collection, key, what));
    for (Op& op : more) ops.push_back(std::move(op));
  }
  return ops;
}

// Milliseconds of a steady clock: a long poll's deadline (the server's clock may be set).
int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The query parameter `name` as a whole number in [low, high] into `out` (left as it is when
// the query has none); the 400 for a bad one.
std::optional<HttpResponse> NumberParam(const std::map<std::string, std::string>& query,
                                        const char* name, uint64_t low, uint64_t high,
                                        uint64_t* out) {
  auto it = query.find(name);
  if (it == query.end()) return std::nullopt;
  const std::string& v = it->second;
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < low || n > high) {
    return HttpError(400, Code::kEINVAL,
                     std::string(name) + " must be a whole number from " + std::to_string(low) +
                         " to " + std::to_string(high));
  }
  *out = n;
  return std::nullopt;
}

// docs/backend.md "Idempotency": the request's Idempotency-Key (1 to 255 printable ASCII
// characters), if it has one, into `key` with the caller's subject and a digest of the
// request; the 400 for a bad one.
std::optional<HttpResponse> WriteKeyOf(const net::HttpRequest& request, const std::string& subject,
                                       std::optional<WriteKey>* key) {
  const std::string* k = request.Header("idempotency-key");
  if (k == nullptr) return std::nullopt;
  bool printable = !k->empty() && k->size() <= 255;
  for (char c : *k) printable = printable && c >= 0x20 && c <= 0x7e;
  if (!printable) {
    return HttpError(400, Code::kEINVAL,
                     "an Idempotency-Key is 1 to 255 printable ASCII characters");
  }
  Sha256 digest;
  for (const std::string* part : {&request.method, &request.path, &request.body}) {
    const std::string size = std::to_string(part->size()) + ":";
    digest.Update(size);
    digest.Update(*part);
  }
  *key = WriteKey{subject, *k, digest.Finish()};
  return std::nullopt;
}

// The answer kept for a write's key, given again to a retry of the same request.
HttpResponse Replay(const KeptWrite& kept, const WriteKey& key) {
  if (kept.request != key.request) {
    return HttpError(409, Code::kEINVAL,
                     "this Idempotency-Key came with another request within the last 24 hours");
  }
  HttpResponse r = kept.code == Code::kOK
                       ? JsonResponse(Json{{"cursor", kept.cursor}})
                       : HttpError(kept.code == Code::kEPERM ? 403 : 400, kept.code, kept.reason);
  r.headers.emplace_back("Idempotent-Replayed", "true");
  return r;
}

}  // namespace

HttpApi::HttpApi(SessionHub::Impl* hub)
    : hub_(hub), rate_(hub->options.http_requests_per_second, hub->options.http_request_burst) {}

std::optional<HttpResponse> HttpApi::Authenticate(const net::HttpRequest& request,
                                                  Caller* caller) const {
  const ServerOptions& o = hub_->options;
  if (!o.tokens().enabled()) return std::nullopt;  // an open server (said loudly at start)
  const std::string* auth = request.Header("authorization");
  constexpr std::string_view kBearer = "bearer ";  // (the scheme's case does not matter)
  if (auth == nullptr || !StartsWithIgnoreCase(*auth, kBearer)) {
    return Unauthorized(Code::kEPERM, "this server requires a token (Authorization: Bearer TOKEN)");
  }
  auto claims =
      auth::VerifyToken(auth->substr(kBearer.size()), o.tokens(), hub_->store->NowMs() / 1000);
  if (!claims.ok()) {
    return Unauthorized(claims.status().code() == Code::kETOKEN ? Code::kETOKEN : Code::kEPERM,
                        claims.status().message());
  }
  if (o.rules) {
    auto grants = o.rules->GrantsFor(*claims);
    if (!grants.ok()) return ErrorResponse(grants.status());
    caller->grants = std::move(grants.value());
  }
  caller->claims = std::move(claims.value());
  return std::nullopt;
}

bool HttpApi::IsAdmin(const Caller& caller) {
  return !caller.claims || caller.claims->admin || (caller.grants && caller.grants->admin);
}

Status HttpApi::MayReadCollection(const Caller& caller, const std::string& collection) {
  if (caller.claims && !caller.grants && !caller.claims->MayRead(collection)) {
    return Status(Code::kEPERM, "the token does not allow reading '" + collection + "'");
  }
  return Status::OK();
}

bool HttpApi::MayRead(const Caller& caller, const std::string& collection, const std::string& key,
                      const Fields& fields) const {
  if (!caller.claims) return true;
  if (caller.grants) {
    return caller.grants->admin ||
           caller.grants->MayRead(hub_->options.rules->Channels(collection, key, fields));
  }
  return caller.claims->MayRead(collection);
}

void HttpApi::Handle(const net::HttpRequest& request, const net::HttpConn::Reply& sent) {
  // Every answer counted by its status (GET /metrics).
  const net::HttpConn::Reply reply = [this, sent](HttpResponse response) {
    hub_->metrics.http_responses[response.status]++;
    sent(std::move(response));
  };
  auto segments = net::HttpPathSegments(request.path);
  if (!segments) {
    reply(HttpError(400, Code::kEINVAL, "the path has a malformed %-escape"));
    return;
  }
  const std::vector<std::string>& s = *segments;
  // HEAD is GET without the body (net::HttpConn leaves it out).
  const std::string m = request.method == "HEAD" ? "GET" : request.method;
  if (s.size() == 1 && s[0] == "healthz") {
    if (m != "GET") return reply(MethodNotAllowed(m, "GET, HEAD"));
    return reply(JsonResponse(Json{{"ok", true}}));
  }
  // The rate limit per client address (docs/backend.md "Limits"); /healthz is not counted: a
  // load balancer's checks must not take a busy node out.
  int64_t retry_ms = 0;
  if (!rate_.Take(AddressKey(request.peer_ip), SteadyMs(), &retry_ms)) {
    HttpResponse r = HttpError(429, Code::kEBUSY,
                               "too many requests from " + request.peer_ip + " (more than " +
                                   std::to_string(hub_->options.http_requests_per_second) +
                                   " a second): try again later");
    r.headers.emplace_back("Retry-After", std::to_string((retry_ms + 999) / 1000));
    return reply(std::move(r));
  }
  if (s.size() == 2 && s[0] == "v1" && s[1] == "openapi.json") {
    if (m != "GET") return reply(MethodNotAllowed(m, "GET, HEAD"));
    HttpResponse r;
    r.body = kOpenApiJson;
    return reply(std::move(r));
  }
  if (s.size() == 1 && s[0] == "metrics") {
    if (m != "GET") return reply(MethodNotAllowed(m, "GET, HEAD"));
    Caller caller;
    if (auto denied = Authenticate(request, &caller)) return reply(*denied);
    if (!IsAdmin(caller)) {
      return reply(HttpError(403, Code::kEPERM, "the metrics are for admin tokens"));
    }
    MetricGauges gauges = hub_->Gauges();
    DropClosedPolls();
    gauges.feed_polls = polls_.size();
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = hub_->metrics.Render(gauges);
    return reply(std::move(r));
  }
  // The routes (docs/backend.md): /v1/docs/C, /v1/docs/C/K, /v1/docs/C/K/inc, /v1/batch,
  // /v1/changes.
  const bool v1 = s.size() >= 2 && s[0] == "v1";
  const bool docs =
      v1 && s[1] == "docs" && s.size() >= 3 && s.size() <= 5 && (s.size() < 5 || s[4] == "inc");
  const bool batch = v1 && s.size() == 2 && s[1] == "batch";
  const bool changes = v1 && s.size() == 2 && s[1] == "changes";
  const bool refused = v1 && s.size() == 2 && s[1] == "refused";
  const bool clients = v1 && s.size() == 2 && s[1] == "clients";
  if ((changes || refused || clients) && m != "GET") return reply(MethodNotAllowed(m, "GET, HEAD"));
  if (!docs && !batch && !changes && !refused && !clients) {
    reply(HttpError(404, Code::kENOTFOUND, "no such resource: " + request.path));
    return;
  }
  const char* allow = batch           ? "POST"
                      : s.size() == 3 ? "GET, HEAD"
                      : s.size() == 4 ? "GET, HEAD, PATCH, DELETE"
                                      : "POST";
  const bool allowed = (batch || s.size() == 5) ? m == "POST"
                       : s.size() == 3          ? m == "GET"
                                                : m == "GET" || m == "PATCH" || m == "DELETE";
  if (!allowed) return reply(MethodNotAllowed(m, allow));
  Status valid = docs ? ValidateCollectionName(s[2]) : Status::OK();
  if (valid.ok() && docs && s.size() >= 4) valid = ValidateKey(s[3]);
  if (!valid.ok()) return reply(ErrorResponse(valid));
  Caller caller;
  if (auto denied = Authenticate(request, &caller)) return reply(*denied);
  // Several nodes on one database: what the others committed first (a write made through
  // another node is seen here, and judged with it), and the node's sessions get it too.
  ServerStore* store = hub_->store.get();
  const uint64_t head_before = store->head();
  Status caught_up = store->CatchUp();
  if (store->head() != head_before) hub_->Committed(head_before, nullptr);
  if (!caught_up.ok()) {
    hub_->Log("catching up with the database failed: " + caught_up.ToString());
    return reply(HttpError(503, Code::kEIO, "server error reading its database"));
  }
  if (changes) {
    if (auto now = Changes(caller, request, reply)) reply(*now);
    return;
  }
  if (refused) return reply(ListRefused(caller, request));
  if (clients) return reply(ListClients(caller));
  if (m == "GET") {
    return reply(s.size() == 4 ? GetDoc(caller, s[2], s[3]) : ListDocs(caller, s[2], request));
  }
  // A write: its ops from the method and the body.
  Result<std::vector<Op>> ops = std::vector<Op>();
  if (m == "DELETE") {
    ops = DocOpsFromJson("del", Json::object(), s[2], s[3], "the request");
  } else {
    Json body;
    if (auto bad = JsonBody(request, &body)) return reply(*bad);
    if (batch) {
      ops = BatchOps(body);
    } else if (s.size() == 5) {
      Status only = OnlyKeys(body, {"field", "delta"}, "the body");
      ops = only.ok() ? DocOpsFromJson("inc", body, s[2], s[3], "the body") : only;
    } else {
      Status only = OnlyKeys(body, {"fields"}, "the body");
      ops = only.ok() ? DocOpsFromJson("set", body, s[2], s[3], "the body") : only;
    }
  }
  if (!ops.ok()) return reply(ErrorResponse(ops.status()));
  std::optional<WriteKey> key;
  if (auto bad = WriteKeyOf(request, caller.claims ? caller.claims->subject : "", &key)) {
    return reply(*bad);
  }
  reply(Write(caller, std::move(ops.value()), key ? &*key : nullptr));
}

HttpResponse HttpApi::GetDoc(const Caller& caller, const std::string& collection,
                             const std::string& key) {
  if (Status may = MayReadCollection(caller, collection); !may.ok()) return ErrorResponse(may);
  auto doc = hub_->store->state()->GetDoc(collection, key);
  if (!doc.ok()) {
    hub_->Log("reading " + collection + "/" + key + " failed: " + doc.status().ToString());
    return HttpError(500, Code::kEINTERNAL, "server error reading the document");
  }
  // One the caller may not read is not there for it.
  if (!doc->has_value() || !MayRead(caller, collection, key, **doc)) {
    return HttpError(404, Code::kENOTFOUND, "no document " + collection + "/" + key);
  }
  return JsonResponse(
      Json{{"key", key}, {"fields", FieldsToJson(**doc)}, {"cursor", hub_->store->head()}});
}

HttpResponse HttpApi::ListDocs(const Caller& caller, const std::string& collection,
                               const net::HttpRequest& request) {
  auto query = net::HttpQuery(request.query);
  if (!query) return HttpError(400, Code::kEINVAL, "the query has a malformed %-escape");
  uint64_t limit = kDefaultLimit;
  if (auto bad = NumberParam(*query, "limit", 1, kMaxLimit, &limit)) return *bad;
  std::string after;
  if (auto it = query->find("after"); it != query->end() && !it->second.empty()) {
    after = it->second;
    Status valid = ValidateKey(after);
    if (!valid.ok()) return ErrorResponse(valid);
  }
  if (Status may = MayReadCollection(caller, collection); !may.ok()) return ErrorResponse(may);
  // A page holds at most `limit` documents and about kMaxListBytes, and reads at most
  // kMaxListScan rows (documents the caller may not read, deleted ones): a request costs the
  // server's loop a bounded time. `next` is where to go on: the last key returned, or, when the
  // scan stopped first, the last key read (a page may then hold fewer documents, even none).
  Json docs = Json::array();
  bool more = false;
  std::string next;
  size_t scanned = 0, bytes = 0;
  constexpr size_t kRowsPerRead = 256;
  for (std::string from = after;;) {
    size_t rows = 0;
    const std::string start = from;
    Status st = hub_->store->state()->ForEachDocFields(
        collection, start, kRowsPerRead, [&](const std::string& key, const Fields& fields) {
          if (more) return Status::OK();
          rows++;
          scanned++;
          from = key;
          if (!fields.empty() && MayRead(caller, collection, key, fields)) {
            if (docs.size() == limit || bytes >= kMaxListBytes) {
              more = true;  // (next: the last one returned)
              return Status::OK();
            }
            Json doc{{"key", key}, {"fields", FieldsToJson(fields)}};
            bytes += doc.dump().size();
            docs.push_back(std::move(doc));
            next = key;
          }
          if (scanned == kMaxListScan) {
            more = true;
            next = key;
          }
          return Status::OK();
        });
    if (!st.ok()) {
      hub_->Log("listing " + collection + " failed: " + st.ToString());
      return HttpError(500, Code::kEINTERNAL, "server error reading the documents");
    }
    if (more || rows < kRowsPerRead) break;
  }
  return JsonResponse(Json{{"docs", std::move(docs)}, {"next", more ? Json(next) : Json()}});
}

std::optional<HttpResponse> HttpApi::Changes(const Caller& caller, const net::HttpRequest& request,
                                             const net::HttpConn::Reply& reply) {
  auto query = net::HttpQuery(request.query);
  if (!query) return HttpError(400, Code::kEINVAL, "the query has a malformed %-escape");
  for (const auto& [name, value] : *query) {
    if (name != "since" && name != "limit" && name != "wait_ms") {
      return HttpError(400, Code::kEINVAL,
                       "unknown query parameter '" + name + "' (since, limit, wait_ms)");
    }
  }
  ServerStore* store = hub_->store.get();
  uint64_t since = 0, limit = kDefaultLimit, wait_ms = 0;
  if (auto bad = NumberParam(*query, "since", 0, store->head(), &since)) {
    bad->body = net::HttpErrorBody(Code::kEINVAL, "since must be a cursor of this server, 0 to " +
                                                      std::to_string(store->head()));
    return bad;
  }
  if (auto bad = NumberParam(*query, "limit", 1, kMaxLimit, &limit)) return bad;
  if (auto bad = NumberParam(*query, "wait_ms", 0, kMaxWaitMs, &wait_ms)) return bad;
  if (caller.claims && !caller.grants && caller.claims->read.empty()) {
    return HttpError(403, Code::kEPERM, "the token does not allow reading any collection");
  }
  if (since < store->floor()) return Trimmed();
  auto page = ReadChanges(caller, since, static_cast<size_t>(limit));  // (<= kMaxLimit)
  if (!page.ok()) {
    hub_->Log("reading the change feed failed: " + page.status().ToString());
    return HttpError(500, Code::kEINTERNAL, "server error reading its log");
  }
  if (!page->changes.empty() || wait_ms == 0) return FeedResponse(std::move(page.value()));
  DropClosedPolls();
  if (polls_.size() >= kMaxPolls) {
    HttpResponse r = HttpError(
        429, Code::kEBUSY,
        "too many long polls wait on this server (" + std::to_string(kMaxPolls) + "): retry later");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  polls_.push_back(Poll{caller, page->cursor, static_cast<size_t>(limit),
                        SteadyMs() + static_cast<int64_t>(wait_ms), reply, request.open});
  ArmWake();
  return std::nullopt;
}

Result<HttpApi::FeedPage> HttpApi::ReadChanges(const Caller& caller, uint64_t since, size_t limit) {
  ServerStore* store = hub_->store.get();
  const rules::Rules* rules = hub_->options.rules.get();
  struct Change {
    uint64_t cursor;
    std::string collection, key;
    std::optional<Fields> fields;  // nullopt: not visible
    size_t bytes;
    bool superseded = false;  // the document changes again later in the page
  };
  std::vector<Change> out;
  std::map<std::pair<std::string, std::string>, size_t> at;  // document -> its index in `out`
  size_t count = 0, bytes = 0, scanned = 0;
  bool full = false;
  FeedPage page;
  page.cursor = since;
  constexpr size_t kRowsPerRead = 64;
  for (;;) {
    size_t rows = 0;
    Status st = store->ReadLog(page.cursor, kRowsPerRead, [&](const LogEntry& e) -> Status {
      if (full) return Status::OK();
      rows++;
      // The documents the entry changed (written, or moved between channels), in order.
      std::vector<std::pair<std::string, std::string>> touched;
      std::set<std::pair<std::string, std::string>> seen;
      std::vector<protocol::ChannelMove> moves;
      CAIRN_RETURN_IF_ERROR(protocol::DecodeBatchFrame(
          e.batch, "log entry",
          [&](const wire::OpBatch& b) -> Status {
            if (rules != nullptr) {
              CAIRN_ASSIGN_OR_RETURN(moves, protocol::DecodeMoves(b));
            }
            return Status::OK();
          },
          [&](const Op& op) {
            auto ref = std::make_pair(op.collection, op.key);
            if (seen.insert(ref).second) touched.push_back(std::move(ref));
            return Status::OK();
          }));
      for (const protocol::ChannelMove& m : moves) {
        auto ref = std::make_pair(m.collection, m.key);
        if (seen.insert(ref).second) touched.push_back(std::move(ref));
      }
      for (auto& ref : touched) {
        const auto& [collection, key] = ref;
        if (!MayReadCollection(caller, collection).ok()) continue;
        CAIRN_ASSIGN_OR_RETURN(std::optional<Fields> fields,
                               store->state()->GetDoc(collection, key));
        if (fields && !MayRead(caller, collection, key, *fields)) {
          // There, but not for the caller: it hears of it only when it left its view here.
          fields.reset();
          const bool left = caller.grants && std::any_of(moves.begin(), moves.end(), [&](auto& m) {
                              return m.collection == collection && m.key == key &&
                                     caller.grants->MayRead(m.before);
                            });
          if (!left) continue;
        } else if (!fields && caller.grants && !caller.grants->admin) {
          // Deleted: heard of by a caller that could read it (its channels before the entry,
          // or those its key alone gives).
          const bool could = caller.grants->MayRead(rules->Channels(collection, key, Fields())) ||
                             std::any_of(moves.begin(), moves.end(), [&](auto& m) {
                               return m.collection == collection && m.key == key &&
                                      caller.grants->MayRead(m.before);
                             });
          if (!could) continue;
        }
        auto [it, fresh] = at.emplace(ref, out.size());
        if (!fresh) {
          out[it->second].superseded = true;
          count--;
          bytes -= out[it->second].bytes;
          it->second = out.size();
        }
        size_t size = collection.size() + key.size() + 64;
        if (fields) {
          for (const auto& [name, value] : *fields) {
            const bool text =
                value.type() == ValueType::kString || value.type() == ValueType::kBytes;
            size += name.size() + (text ? value.as_string().size() * 4 / 3 : 24) + 8;
          }
        }
        out.push_back(Change{e.cursor, collection, key, std::move(fields), size});
        count++;
        bytes += size;
      }
      page.cursor = e.cursor;
      scanned++;
      if (count >= limit || bytes >= kMaxListBytes || scanned >= kMaxFeedScan) full = true;
      return Status::OK();
    });
    CAIRN_RETURN_IF_ERROR(st);
    if (full || rows < kRowsPerRead) break;
  }
  page.changes = Json::array();
  for (Change& c : out) {
    if (c.superseded) continue;
    page.changes.push_back(Json{{"cursor", c.cursor},
                                {"collection", std::move(c.collection)},
                                {"key", std::move(c.key)},
                                {"fields", c.fields ? FieldsToJson(*c.fields) : Json()}});
  }
  return page;
}

HttpResponse HttpApi::Trimmed() const {
  // The reader starts again from the documents (docs/backend.md "Change feed").
  const ServerStore* store = hub_->store.get();
  HttpResponse r =
      HttpError(410, Code::kENOTFOUND,
                "the log before cursor " + std::to_string(store->floor()) +
                    " was trimmed: read the documents again, then follow the feed from cursor " +
                    std::to_string(store->head()) + " (the Cairn-Head header)");
  r.headers.emplace_back("Cairn-Head", std::to_string(store->head()));
  return r;
}

HttpResponse HttpApi::FeedResponse(FeedPage page) const {
  return JsonResponse(Json{{"changes", std::move(page.changes)}, {"cursor", page.cursor}});
}

HttpResponse HttpApi::ListRefused(const Caller& caller, const net::HttpRequest& request) {
  if (!IsAdmin(caller)) {
    return HttpError(403, Code::kEPERM, "the refused ops of every client are for admin tokens");
  }
  auto query = net::HttpQuery(request.query);
  if (!query) return HttpError(400, Code::kEINVAL, "the query has a malformed %-escape");
  for (const auto& [name, value] : *query) {
    if (name != "since" && name != "limit") {
      return HttpError(400, Code::kEINVAL, "unknown query parameter '" + name + "' (since, limit)");
    }
  }
  ServerStore* store = hub_->store.get();
  uint64_t since = 0, limit = kDefaultLimit;
  if (auto bad = NumberParam(*query, "since", 0, store->head(), &since)) return *bad;
  if (auto bad = NumberParam(*query, "limit", 1, kMaxLimit, &limit)) return *bad;
  // At most kMaxRefusedScan log entries read, at most `limit` refusals but those of one entry
  // whole (the cursor resumes after an entry).
  const uint64_t upto = std::min(store->head(), since + kMaxRefusedScan);
  std::vector<RefusalEntry> rows;
  auto keep = [&](const RefusalEntry& e) {
    rows.push_back(e);
    return Status::OK();
  };
  const size_t most = static_cast<size_t>(limit);  // (<= kMaxLimit)
  Status st = store->ReadRefused(since, upto, most + 1, keep);
  uint64_t cursor = upto;
  if (st.ok() && rows.size() > most) {
    cursor = rows[most].cursor;
    if (rows.front().cursor == cursor) {
      rows.clear();
      st = store->ReadRefused(since, cursor, SIZE_MAX, keep);
    } else {
      while (rows.back().cursor == cursor) rows.pop_back();
      cursor--;
    }
  }
  if (!st.ok()) {
    hub_->Log("reading the refused ops failed: " + st.ToString());
    return HttpError(500, Code::kEINTERNAL, "server error reading the refused ops");
  }
  Json out = Json::array();
  for (const RefusalEntry& e : rows) {
    out.push_back(Json{{"cursor", e.cursor},
                       {"origin", e.origin.Hex()},
                       {"subject", e.subject ? Json(*e.subject) : Json()},
                       {"first_seq", e.refused.first_seq},
                       {"last_seq", e.refused.last_seq},
                       {"code", CodeName(e.refused.code)},
                       {"reason", e.refused.reason},
                       {"at_ms", e.at_ms}});
  }
  return JsonResponse(Json{{"refused", std::move(out)}, {"cursor", cursor}});
}

HttpResponse HttpApi::ListClients(const Caller& caller) {
  if (!IsAdmin(caller)) {
    return HttpError(403, Code::kEPERM, "the list of clients is for admin tokens");
  }
  const uint64_t head = hub_->store->head();
  Json out = Json::array();
  for (const auto& [serial, session] : hub_->sessions) {
    std::optional<Session::Info> info = session->info();
    if (!info) continue;
    out.push_back(Json{{"id", info->replica.Hex()},
                       {"subject", info->subject ? Json(*info->subject) : Json()},
                       {"address", info->peer},
                       {"cursor", info->cursor},
                       {"lag", head > info->cursor ? head - info->cursor : 0},
                       {"since_ms", info->since_ms}});
  }
  return JsonResponse(Json{{"clients", std::move(out)}, {"head", head}});
}

void HttpApi::DropClosedPolls() {
  polls_.remove_if([](const Poll& p) { return p.open.expired(); });
}

void HttpApi::Committed() {
  DropClosedPolls();
  if (polls_.empty()) return;
  // The answers wait in ready_ for the next wake (ready_'s comment).
  for (auto it = polls_.begin(); it != polls_.end();) {
    if (it->since < hub_->store->floor()) {  // (trimmed while it waited)
      ready_.emplace_back(it->reply, Trimmed());
      it = polls_.erase(it);
      continue;
    }
    auto page = ReadChanges(it->caller, it->since, it->limit);
    if (!page.ok()) {
      hub_->Log("reading the change feed failed: " + page.status().ToString());
      ready_.emplace_back(it->reply,
                          HttpError(500, Code::kEINTERNAL, "server error reading its log"));
    } else if (!page->changes.empty()) {
      ready_.emplace_back(it->reply, FeedResponse(std::move(page.value())));
    } else {
      it->since = page->cursor;  // (entries it may not see: not read again)
      ++it;
      continue;
    }
    it = polls_.erase(it);
  }
  if (!hub_->set_wake_timer) {  // (no loop to wake: a hub without a server)
    std::vector<std::pair<net::HttpConn::Reply, HttpResponse>> now;
    now.swap(ready_);
    for (auto& [reply, response] : now) reply(std::move(response));
  }
  ArmWake();
}

void HttpApi::Wake() {
  DropClosedPolls();
  const int64_t now = SteadyMs();
  std::vector<std::pair<net::HttpConn::Reply, HttpResponse>> due;
  due.swap(ready_);
  for (auto it = polls_.begin(); it != polls_.end();) {
    if (it->deadline_ms > now) {
      ++it;
      continue;
    }
    FeedPage page;
    page.changes = Json::array();
    page.cursor = it->since;
    due.emplace_back(it->reply, FeedResponse(std::move(page)));
    it = polls_.erase(it);
  }
  for (auto& [reply, response] : due) reply(std::move(response));
  ArmWake();
}

void HttpApi::ArmWake() {
  if (!hub_->set_wake_timer) return;
  if (!ready_.empty()) return hub_->set_wake_timer(0);
  if (polls_.empty()) return;
  int64_t first = polls_.front().deadline_ms;
  for (const Poll& p : polls_) first = std::min(first, p.deadline_ms);
  hub_->set_wake_timer(static_cast<uint64_t>(std::max<int64_t>(first - SteadyMs(), 0)));
}

HttpResponse HttpApi::Write(const Caller& caller, std::vector<Op> ops, const WriteKey* key) {
  ServerStore* store = hub_->store.get();
  // A retry of a write already made: its answer again, nothing applied.
  auto kept = [&]() -> std::optional<HttpResponse> {
    auto found = store->FindWrite(key->subject, key->key);
    if (!found.ok()) {
      hub_->Log("reading an Idempotency-Key failed: " + found.status().ToString());
      return HttpError(503, Code::kEIO, "server error reading its database");
    }
    if (!found->has_value()) return std::nullopt;
    return Replay(**found, *key);
  };
  if (key != nullptr) {
    if (auto replay = kept()) return *replay;
  }
  auto admit = [&](const Op& op) -> Status {
    if (caller.claims && !caller.grants && !caller.claims->MayWrite(op.collection)) {
      return Status(Code::kEPERM, "the token does not allow writing '" + op.collection + "'");
    }
    return Status::OK();
  };
  std::optional<WriteJudge> judge;
  if (caller.grants) judge.emplace(hub_->options.rules.get(), &*caller.grants, store->state());
  PushExtras extras;
  if (key != nullptr) extras.key = *key;
  std::vector<std::vector<Op>> txns;
  txns.push_back(std::move(ops));
  auto pushed = hub_->writer->Write(std::move(txns), admit, judge ? &*judge : nullptr, &extras);
  if (!pushed.ok()) {
    if (pushed.status().code() == Code::kEINVAL) {
      return HttpError(413, Code::kEINVAL, pushed.status().message());
    }
    if (pushed.status().code() == Code::kEBUSY) {
      // Another node took the key meanwhile (its answer, once it committed), or this node is
      // catching up from a checkpoint.
      if (key != nullptr) {
        if (auto replay = kept()) return *replay;
      }
      HttpResponse r = HttpError(503, Code::kEBUSY, pushed.status().message() + "; retry");
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    hub_->Log("storing an HTTP write failed: " + pushed.status().ToString());
    return HttpError(500, Code::kEINTERNAL, "server error storing the write");
  }
  if (!pushed->refused.empty()) {
    const Refused& r = pushed->refused.front();
    hub_->Log("HTTP write refused: " + r.reason);
    return HttpError(r.code == Code::kEPERM ? 403 : 400, r.code, r.reason);
  }
  return JsonResponse(Json{{"cursor", pushed->cursor}});
}

}  // namespace cairn::server
