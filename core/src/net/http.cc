#include "net/http.h"

#include <http_parser.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "base/strings.h"

namespace cairn::net {

namespace {

const char* Reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = HexDigit(s[i + 1]), lo = HexDigit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::string HttpErrorBody(Code code, const std::string& message) {
  return nlohmann::json{{"error", {{"code", CodeName(code)}, {"message", message}}}}.dump();
}

HttpResponse HttpError(int status, Code code, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.body = HttpErrorBody(code, message);
  return r;
}

std::optional<std::vector<std::string>> HttpPathSegments(const std::string& path) {
  std::vector<std::string> out;
  size_t start = path.empty() || path[0] != '/' ? 0 : 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    auto segment = PercentDecode(std::string_view(path).substr(start, end - start), false);
    if (!segment) return std::nullopt;
    out.push_back(std::move(*segment));
    start = end + 1;
  }
  return out;
}

std::optional<std::map<std::string, std::string>> HttpQuery(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    const std::string_view pair = std::string_view(query).substr(start, end - start);
    start = end + 1;
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    auto name = PercentDecode(pair.substr(0, eq), true);
    auto value = PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    out[*name] = std::move(*value);
  }
  return out;
}

// http-parser calls these with the connection in parser->data. A callback that finds the
// request too large pauses the parser and leaves the refusal to Drive.
struct HttpConn::Callbacks {
  static HttpConn* Of(http_parser* p) { return static_cast<HttpConn*>(p->data); }

  static bool CountHeader(HttpConn* c, size_t n) {
    c->header_bytes_ += n;
    if (c->header_bytes_ <= c->limits_.max_header_bytes) return true;
    c->refuse_status_ = 431;
    c->refuse_message_ = "the request line and headers exceed " +
                         std::to_string(c->limits_.max_header_bytes) + " bytes";
    return false;
  }
  static void EndHeader(HttpConn* c) {
    if (c->field_.empty()) return;
    for (char& ch : c->field_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    std::string& v = c->request_.headers[c->field_];
    v += (v.empty() ? "" : ", ") + c->value_;
    c->field_.clear();
    c->value_.clear();
  }
  static int Refused(http_parser* p) {
    http_parser_pause(p, 1);
    return 0;
  }

  static int MessageBegin(http_parser* p) {
    HttpConn* c = Of(p);
    c->request_ = HttpRequest();
    c->request_.peer = c->link_->peer();
    c->request_.peer_ip = c->link_->peer_ip();
    c->field_.clear();
    c->value_.clear();
    c->in_value_ = false;
    c->header_bytes_ = 0;
    c->link_->SetDeadline(c->limits_.request_timeout_ms, "receiving an HTTP request");
    return 0;
  }
  static int Url(http_parser* p, const char* at, size_t n) {
    HttpConn* c = Of(p);
    if (!CountHeader(c, n)) return Refused(p);
    c->request_.path.append(at, n);  // (split from the query at the headers' end)
    return 0;
  }
  static int HeaderField(http_parser* p, const char* at, size_t n) {
    HttpConn* c = Of(p);
    if (!CountHeader(c, n)) return Refused(p);
    if (c->in_value_) {
      EndHeader(c);
      c->in_value_ = false;
    }
    c->field_.append(at, n);
    return 0;
  }
  static int HeaderValue(http_parser* p, const char* at, size_t n) {
    HttpConn* c = Of(p);
    if (!CountHeader(c, n)) return Refused(p);
    c->in_value_ = true;
    c->value_.append(at, n);
    return 0;
  }
  static int HeadersComplete(http_parser* p) {
    HttpConn* c = Of(p);
    EndHeader(c);
    HttpRequest& r = c->request_;
    r.method = http_method_str(static_cast<http_method>(p->method));
    const size_t hash = r.path.find('#');  // (a fragment is the client's: not a key's part)
    if (hash != std::string::npos) r.path.resize(hash);
    const size_t q = r.path.find('?');
    if (q != std::string::npos) {
      r.query = r.path.substr(q + 1);
      r.path.resize(q);
    }
    // A body announced larger than the limit is refused before it is read.
    if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > c->limits_.max_body_bytes) {
      c->refuse_status_ = 413;
      c->refuse_message_ = "the body of " + std::to_string(p->content_length) +
                           " bytes exceeds the limit of " +
                           std::to_string(c->limits_.max_body_bytes);
      return Refused(p);
    }
    const std::string* expect = r.Header("expect");
    if (expect != nullptr && EqualsIgnoreCase(*expect, "100-continue")) {
      c->link_->Send("HTTP/1.1 100 Continue\r\n\r\n");
    }
    return 0;
  }
  static int Body(http_parser* p, const char* at, size_t n) {
    HttpConn* c = Of(p);
    if (c->request_.body.size() + n > c->limits_.max_body_bytes) {
      c->refuse_status_ = 413;
      c->refuse_message_ =
          "the body exceeds the limit of " + std::to_string(c->limits_.max_body_bytes) + " bytes";
      return Refused(p);
    }
    // What every connection's bodies hold together is bounded too (HttpLimits::bodies).
    if (ReadBudget* b = c->limits_.bodies) {
      if (b->used + n > b->limit) {
        c->refuse_status_ = 503;
        c->refuse_message_ = "the server holds too many request bodies; retry later";
        return Refused(p);
      }
      b->used += n;
      c->charged_ += n;
    }
    c->request_.body.append(at, n);
    return 0;
  }
  static int MessageComplete(http_parser* p) {
    Of(p)->complete_ = true;
    http_parser_pause(p, 1);  // one request at a time: Drive hands it over
    return 0;
  }

  static const http_parser_settings& Settings() {
    static const http_parser_settings settings = [] {
      http_parser_settings s;
      http_parser_settings_init(&s);
      s.on_message_begin = MessageBegin;
      s.on_url = Url;
      s.on_header_field = HeaderField;
      s.on_header_value = HeaderValue;
      s.on_headers_complete = HeadersComplete;
      s.on_body = Body;
      s.on_message_complete = MessageComplete;
      return s;
    }();
    return settings;
  }
};

HttpConn::HttpConn(Link* link, Handler handler, HttpLimits limits,
                   std::function<void(const Status&)> on_closed)
    : link_(link),
      handler_(std::move(handler)),
      limits_(limits),
      on_closed_(std::move(on_closed)),
      parser_(std::make_unique<http_parser>()),
      alive_(std::make_shared<bool>(true)) {
  http_parser_init(parser_.get(), HTTP_REQUEST);
  parser_->data = this;
  link_->set_delegate(this);
}

HttpConn::~HttpConn() = default;

void HttpConn::OnBytes(Link*, const char* data, size_t len) {
  if (done_ || link_->closing()) return;
  pending_.append(data, len);
  if (busy_ && pending_.size() > limits_.max_pending_bytes) {
    link_->Close(Status(Code::kEBUSY, "more than " + std::to_string(limits_.max_pending_bytes) +
                                          " bytes sent ahead of a response"));
    return;
  }
  Drive();
}

void HttpConn::Drive() {
  if (driving_) return;
  driving_ = true;
  // (A client that does not read its responses gets no more: the next request waits until
  // the queue drains, OnDrained.)
  while (!busy_ && !done_ && !link_->closing() && !pending_.empty() &&
         link_->queued_bytes() < limits_.queued_mark) {
    std::string in;
    in.swap(pending_);
    const size_t parsed =
        http_parser_execute(parser_.get(), &Callbacks::Settings(), in.data(), in.size());
    const auto err = static_cast<http_errno>(parser_->http_errno);
    if (refuse_status_ != 0) {
      Refuse(refuse_status_, refuse_status_ == 503 ? Code::kEBUSY : Code::kEINVAL, refuse_message_);
      break;
    }
    if (err == HPE_PAUSED && complete_) {
      pending_ = in.substr(parsed) + pending_;
      http_parser_pause(parser_.get(), 0);
      Dispatch();  // (its reply may come at once: the loop goes on with the next request)
      continue;
    }
    if (err != HPE_OK) {
      Refuse(err == HPE_HEADER_OVERFLOW ? 431 : 400, Code::kEINVAL,
             std::string("not a valid HTTP/1.1 request: ") + http_errno_description(err));
      break;
    }
  }
  driving_ = false;
}

void HttpConn::OnDrained(Link*) { Drive(); }

void HttpConn::ReleaseBody() {
  if (limits_.bodies != nullptr) limits_.bodies->used -= charged_;
  charged_ = 0;
}

void HttpConn::Dispatch() {
  complete_ = false;
  busy_ = true;
  // An Upgrade (h2c, websocket) is not taken: the request is answered as HTTP/1.1, and the
  // connection closed after it (the parser would take what follows for the other protocol).
  keep_alive_ = http_should_keep_alive(parser_.get()) != 0 && parser_->upgrade == 0;
  http10_ = parser_->http_major == 1 && parser_->http_minor == 0;
  head_ = request_.method == "HEAD";
  link_->SetDeadline(0, "");
  ReleaseBody();  // (the handler has it now: requests are served one at a time)
  const uint64_t serial = ++served_;
  request_.open = alive_;
  std::weak_ptr<bool> alive = alive_;
  handler_(std::move(request_), [this, alive, serial](HttpResponse response) {
    if (alive.expired() || !busy_ || serial != served_) return;
    busy_ = false;
    Send(response, !keep_alive_);
    if (!keep_alive_) {
      done_ = true;
      link_->CloseAfterSending(Status::OK());
      return;
    }
    Drive();
  });
}

void HttpConn::Send(const HttpResponse& response, bool close) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " + Reason(response.status) +
                    "\r\nContent-Type: " + response.content_type +
                    "\r\nContent-Length: " + std::to_string(response.body.size()) + "\r\n";
  for (const auto& [name, value] : response.headers) out += name + ": " + value + "\r\n";
  if (close) {
    out += "Connection: close\r\n";
  } else if (http10_) {
    out += "Connection: keep-alive\r\n";  // (an HTTP/1.0 client closes otherwise)
  }
  out += "\r\n";
  if (!head_) out += response.body;  // (HEAD: the headers a GET would have)
  link_->Send(std::move(out));
}

void HttpConn::Refuse(int status, Code code, const std::string& message) {
  Send(HttpError(status, code, message), true);
  done_ = true;
  link_->CloseAfterSending(Status(code, message));
}

void HttpConn::OnClosed(Link*, const Status& why) {
  alive_.reset();  // (late replies find it expired)
  ReleaseBody();
  if (on_closed_) on_closed_(why);
  delete this;
}

}  // namespace cairn::net
