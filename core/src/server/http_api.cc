#include "server/http_api.h"

#include <cctype>
#include <charconv>
#include <string_view>

#include "oplog/json_codec.h"
#include "oplog/validate.h"
#include "server/session.h"

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
    case Code::kEBUSY:
      status = 429;
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

}  // namespace

std::optional<HttpResponse> HttpApi::Authenticate(const net::HttpRequest& request,
                                                  Caller* caller) const {
  const ServerOptions& o = hub_->options;
  if (!o.tokens().enabled()) return std::nullopt;  // an open server (said loudly at start)
  const std::string* auth = request.Header("authorization");
  constexpr std::string_view kBearer = "bearer ";  // (the scheme's case does not matter)
  auto is_bearer = [&] {
    if (auth == nullptr || auth->size() < kBearer.size()) return false;
    for (size_t i = 0; i < kBearer.size(); i++) {
      if (std::tolower(static_cast<unsigned char>((*auth)[i])) != kBearer[i]) return false;
    }
    return true;
  };
  if (!is_bearer()) {
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

bool HttpApi::MayRead(const Caller& caller, const std::string& collection, const std::string& key,
                      const Fields& fields) const {
  if (!caller.claims) return true;
  if (caller.grants) {
    return caller.grants->admin ||
           caller.grants->MayRead(hub_->options.rules->Channels(collection, key, fields));
  }
  return caller.claims->MayRead(collection);
}

void HttpApi::Handle(const net::HttpRequest& request, const net::HttpConn::Reply& reply) {
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
  const bool docs = s.size() >= 3 && s.size() <= 4 && s[0] == "v1" && s[1] == "docs";
  if (!docs) {
    reply(HttpError(404, Code::kENOTFOUND, "no such resource: " + request.path));
    return;
  }
  if (m != "GET") return reply(MethodNotAllowed(m, "GET, HEAD"));
  Status valid = ValidateCollectionName(s[2]);
  if (valid.ok() && s.size() == 4) valid = ValidateKey(s[3]);
  if (!valid.ok()) return reply(ErrorResponse(valid));
  Caller caller;
  if (auto refused = Authenticate(request, &caller)) return reply(*refused);
  // Several nodes on one database: what the others committed first (a write made through
  // another node is seen here), and the node's sessions get it too.
  ServerStore* store = hub_->store.get();
  const uint64_t head_before = store->head();
  Status caught_up = store->CatchUp();
  if (store->head() != head_before) hub_->Committed(head_before, nullptr);
  if (!caught_up.ok()) {
    hub_->Log("catching up with the database failed: " + caught_up.ToString());
    return reply(HttpError(503, Code::kEIO, "server error reading its database"));
  }
  reply(s.size() == 4 ? GetDoc(caller, s[2], s[3]) : ListDocs(caller, s[2], request));
}

HttpResponse HttpApi::GetDoc(const Caller& caller, const std::string& collection,
                             const std::string& key) {
  if (caller.claims && !caller.grants && !caller.claims->MayRead(collection)) {
    return ErrorResponse(
        Status(Code::kEPERM, "the token does not allow reading '" + collection + "'"));
  }
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
  size_t limit = kDefaultLimit;
  if (auto it = query->find("limit"); it != query->end()) {
    const std::string& v = it->second;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), limit);
    if (ec != std::errc() || end != v.data() + v.size() || limit == 0 || limit > kMaxLimit) {
      return HttpError(400, Code::kEINVAL,
                       "limit must be a whole number from 1 to " + std::to_string(kMaxLimit));
    }
  }
  std::string after;
  if (auto it = query->find("after"); it != query->end() && !it->second.empty()) {
    after = it->second;
    Status valid = ValidateKey(after);
    if (!valid.ok()) return ErrorResponse(valid);
  }
  if (caller.claims && !caller.grants && !caller.claims->MayRead(collection)) {
    return ErrorResponse(
        Status(Code::kEPERM, "the token does not allow reading '" + collection + "'"));
  }
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

}  // namespace cairn::server
