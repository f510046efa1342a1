// HttpApi: the HTTP data API of cairn-server (docs/backend.md) on the hub's store, on the
// server's loop: each request is served there between the sync sessions' work, so it sees
// the state the sessions see. Callers authenticate as devices do (Authorization: Bearer, the
// same tokens, sync rules and grants: docs/backend.md "Authentication"); a document a caller
// may not read does not exist for it (404, never 403: the answer tells nothing of it).
//
// Internal to core/src/server: the hub owns one (SessionHub::Impl::http) and hands it each
// request of its HTTP connections (net::HttpConn).
#ifndef CAIRN_SERVER_HTTP_API_H_
#define CAIRN_SERVER_HTTP_API_H_

#include <list>
#include <optional>
#include <string>
#include <vector>

#include "auth/jwt.h"
#include "base/result.h"
#include "clock/hlc.h"
#include "net/http.h"
#include "net/rate_limit.h"
#include "oplog/json_codec.h"
#include "oplog/op.h"
#include "rules/rules.h"
#include "server/session_hub.h"

namespace cairn::server {

// docs/openapi.json, the API's OpenAPI 3 description (compiled in: core/CMakeLists.txt).
extern const char* const kOpenApiJson;

class HttpApi {
 public:
  // Lists return at most this many documents (`limit`, default kDefaultLimit).
  static constexpr size_t kMaxLimit = 1000, kDefaultLimit = 100;
  // A page stops past this many bytes of documents, and after reading this many rows.
  static constexpr size_t kMaxListBytes = 4u << 20, kMaxListScan = 10000;

  // The change feed (docs/backend.md "Change feed"): `limit` as for lists; a page reads at most
  // kMaxFeedScan log entries; a long poll waits at most kMaxWaitMs.
  static constexpr size_t kMaxFeedScan = 10000;
  static constexpr uint64_t kMaxWaitMs = 60000;
  // Long polls waiting at most (more are refused with 429): each is read again at every commit.
  static constexpr size_t kMaxPolls = 1000;
  // GET /v1/refused reads at most this many log entries.
  static constexpr uint64_t kMaxRefusedScan = 100000;

  explicit HttpApi(SessionHub::Impl* hub);

  void Handle(const net::HttpRequest& request, const net::HttpConn::Reply& reply);
  // The log grew: the long polls that have changes now are answered.
  void Committed();
  // The hub's wake timer fired: the answers Committed made are sent, and the long polls past
  // their deadline are answered (no changes).
  void Wake();

 private:
  // Who calls: nothing on a server that checks no tokens (everything allowed, as for devices).
  struct Caller {
    std::optional<auth::Claims> claims;
    std::optional<rules::Grants> grants;  // with sync rules
  };
  // Fills `caller` from the request's token; the response that refuses it (401, or 403 when
  // its grants are refused), if any.
  std::optional<net::HttpResponse> Authenticate(const net::HttpRequest& request,
                                                Caller* caller) const;
  // EPERM when the caller's token (without sync rules) may not read `collection` at all.
  static Status MayReadCollection(const Caller& caller, const std::string& collection);
  // Whether the caller may read the document `collection`/`key` whose visible fields are
  // `fields` (with sync rules: one of its channels; without: the collection).
  bool MayRead(const Caller& caller, const std::string& collection, const std::string& key,
               const Fields& fields) const;

  // Whether the caller sees everything (an admin token, or none on an open server): the
  // refused ops and the clients are for it alone.
  static bool IsAdmin(const Caller& caller);

  net::HttpResponse GetDoc(const Caller& caller, const std::string& collection,
                           const std::string& key);
  net::HttpResponse ListDocs(const Caller& caller, const std::string& collection,
                             const net::HttpRequest& request);
  // docs/backend.md "Writing": the ops of one transaction (without their identity) go through
  // the push path as the server's own write (server/server_writer.h), with the caller's grants
  // or sync rules; the answer comes after the commit. With `key` (docs/backend.md
  // "Idempotency"), a write made already under it is answered again.
  net::HttpResponse Write(const Caller& caller, std::vector<Op> ops, const WriteKey* key);

  // GET /v1/refused, GET /v1/clients (docs/backend.md "Refused ops", "Clients").
  net::HttpResponse ListRefused(const Caller& caller, const net::HttpRequest& request);
  net::HttpResponse ListClients(const Caller& caller);
  // GET /v1/changes: the answer, or nullopt when the request waits (a long poll: `reply` kept).
  std::optional<net::HttpResponse> Changes(const Caller& caller, const net::HttpRequest& request,
                                           const net::HttpConn::Reply& reply);
  // The changes after cursor `since` the caller may see, at most about `limit` (whole log
  // entries), and the cursor to go on from.
  struct FeedPage {
    Json changes;
    uint64_t cursor = 0;
  };
  Result<FeedPage> ReadChanges(const Caller& caller, uint64_t since, size_t limit);
  net::HttpResponse FeedResponse(FeedPage page) const;
  // The 410 of a feed behind the log's floor, with Cairn-Head.
  net::HttpResponse Trimmed() const;
  // A long poll waiting for changes.
  struct Poll {
    Caller caller;
    uint64_t since = 0;
    size_t limit = 0;
    int64_t deadline_ms = 0;  // of a steady clock
    net::HttpConn::Reply reply;
    std::weak_ptr<const bool> open;  // net::HttpRequest::open
  };
  // Forgets the polls whose connection closed: they are not read again, nor counted against
  // kMaxPolls.
  void DropClosedPolls();
  // Asks the hub for a wake at once when answers are ready, else at the earliest deadline of
  // polls_.
  void ArmWake();

  SessionHub::Impl* hub_;
  net::RequestRate rate_;  // per client address (ServerOptions::http_requests_per_second)
  std::list<Poll> polls_;
  // Answers to long polls, sent at the next wake (on a turn of the loop of their own): a reply
  // serves its connection's next request at once, which may write and so answer polls again;
  // sent where they were made, a chain of such connections would nest without bound.
  std::vector<std::pair<net::HttpConn::Reply, net::HttpResponse>> ready_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_HTTP_API_H_
