// net::HttpConn: one HTTP/1.1 connection (the server's HTTP port, docs/backend.md) on a Link
// in raw mode (ConnOptions::raw_input), so it has what the sync port has: TLS, the connection
// limits, the idle timeout and the backpressure of net::Conn. Requests are parsed by
// http-parser (Debian's libhttp-parser; why: docs/backend.md "The HTTP server"), one at a
// time: a request is handed whole to the handler, and the next one (pipelined, or on a
// kept-alive connection) is parsed only once its response was sent, so responses go back in
// the order of the requests.
//
// What a peer cannot do: send headers past HttpLimits::max_header_bytes (431) or a body past
// max_body_bytes (413: refused at its Content-Length, before it is read; 503 when all bodies
// being received hold more than HttpLimits::bodies), take longer than
// request_timeout_ms from a request's first byte to its last (closed), queue more than
// max_pending_bytes behind a request being handled (closed), or send what is not HTTP/1.x
// (400). Each refusal is a JSON error (ErrorBody) and the connection closes after it.
//
// Single-threaded: every call on the loop's thread. Deletes itself after the link closes.
#ifndef CAIRN_NET_HTTP_H_
#define CAIRN_NET_HTTP_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "net/conn.h"

struct http_parser;

namespace cairn::net {

struct HttpRequest {
  std::string method;  // "GET", "PATCH", ...
  std::string path;    // as sent (percent-encoded): HttpPathSegments decodes it
  std::string query;   // after '?', as sent: HttpQuery decodes it
  std::map<std::string, std::string> headers;  // names in lower case; repeats joined by ", "
  std::string body;
  std::string peer;     // "IP:PORT"
  std::string peer_ip;  // the IP alone
  // Expires once the connection closed (a long poll of a client that went is dropped).
  std::weak_ptr<const bool> open;

  const std::string* Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? nullptr : &it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more, as they are
};

struct HttpLimits {
  size_t max_header_bytes = 16u << 10;  // request line and headers
  size_t max_body_bytes = 8u << 20;
  size_t max_pending_bytes = 64u << 10;  // received behind a request being handled
  uint32_t request_timeout_ms = 30000;   // from a request's first byte to its last
  // The next request is parsed only while less than this is queued for the peer (so one that
  // does not read its responses gets no more); net::ConnOptions::drained_bytes, whose
  // OnDrained resumes it.
  size_t queued_mark = 256u << 10;
  // What the request bodies being received hold, all connections together (only `limit` and
  // `used` are used); past it a request is refused with 503. Null: no bound.
  ReadBudget* bodies = nullptr;
};

// {"error":{"code":"EINVAL","message":"..."}} (docs/backend.md "Errors").
std::string HttpErrorBody(Code code, const std::string& message);
// The response for a failed call: the status that fits its code, and HttpErrorBody.
HttpResponse HttpError(int status, Code code, const std::string& message);

// The path's segments, percent-decoded ("/v1/docs/a%2Fb" -> {"v1", "docs", "a/b"}); nullopt
// when an escape is malformed.
std::optional<std::vector<std::string>> HttpPathSegments(const std::string& path);
// The query's parameters, percent-decoded ('+' is a space); a repeated name keeps its last
// value; nullopt when an escape is malformed.
std::optional<std::map<std::string, std::string>> HttpQuery(const std::string& query);

class HttpConn final : public Link::Delegate {
 public:
  // Sends the response to the request it was given; at most once, now or later (a long poll).
  // After the connection closed it does nothing.
  using Reply = std::function<void(HttpResponse)>;
  using Handler = std::function<void(HttpRequest request, Reply reply)>;

  // Becomes `link`'s delegate; `on_closed` is called when the link closes, then this deletes
  // itself.
  HttpConn(Link* link, Handler handler, HttpLimits limits,
           std::function<void(const Status&)> on_closed);
  HttpConn(const HttpConn&) = delete;
  HttpConn& operator=(const HttpConn&) = delete;

  void OnFrame(Link*, const wire::Frame&) override {}  // (raw input: never)
  void OnBytes(Link*, const char* data, size_t len) override;
  void OnDrained(Link*) override;
  void OnClosed(Link*, const Status& why) override;

  // http-parser's callbacks (http.cc).
  struct Callbacks;

 private:
  ~HttpConn();
  // Parses what is pending while no request is being handled; hands each complete one over.
  void Drive();
  void Dispatch();
  void Send(const HttpResponse& response, bool close);
  void Refuse(int status, Code code, const std::string& message);
  void ReleaseBody();  // gives back what the body being received holds of limits_.bodies

  Link* link_;
  Handler handler_;
  HttpLimits limits_;
  std::function<void(const Status&)> on_closed_;
  std::unique_ptr<http_parser> parser_;
  std::shared_ptr<bool> alive_;  // reset once closed: late replies do nothing
  std::string pending_;          // received, not parsed yet
  HttpRequest request_;          // the one being parsed
  std::string field_, value_;    // the header being parsed
  bool in_value_ = false;
  size_t header_bytes_ = 0;
  bool complete_ = false;  // request_ is whole
  int refuse_status_ = 0;  // what a callback found wrong (413, 431)
  std::string refuse_message_;
  bool busy_ = false;     // a request is with the handler
  bool driving_ = false;  // inside Drive (a reply made there does not drive again)
  bool keep_alive_ = true;
  bool http10_ = false;  // the request being served is HTTP/1.0
  bool head_ = false;    // ...a HEAD
  uint64_t served_ = 0;  // requests handed over: a reply answers only the newest
  size_t charged_ = 0;   // what the body being received holds of limits_.bodies
  bool done_ = false;    // the last response was sent: closing once it is written
};

}  // namespace cairn::net

#endif  // CAIRN_NET_HTTP_H_
