#include "net/conn.h"

#include <cstring>

#include "net/tls.h"

namespace cairn::net {

namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
  Conn* conn;
};

}  // namespace

Conn::Conn(uv_loop_t* loop, Delegate* delegate, const ConnOptions& options)
    : Link(delegate), loop_(loop), options_(options) {
  uv_tcp_init(loop_, &tcp_);
  uv_timer_init(loop_, &timer_);
  tcp_.data = this;
  timer_.data = this;
}

Conn::~Conn() = default;

void Conn::ReadPeer() {
  if (!peer_.empty()) return;
  sockaddr_storage addr;
  int len = sizeof(addr);
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    char ip[64] = "";
    int port = 0;
    if (addr.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      uv_ip4_name(a, ip, sizeof(ip));
      port = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      uv_ip6_name(a, ip, sizeof(ip));
      port = ntohs(a->sin6_port);
    }
    peer_ip_ = ip;
    peer_ = peer_ip_ + ":" + std::to_string(port);
  }
}

void Conn::Start(std::unique_ptr<TlsSession> tls) {
  ReadPeer();
  uv_tcp_nodelay(&tcp_, 1);
  last_recv_ms_ = last_send_ms_ = last_written_ms_ = uv_now(loop_);
  uv_timer_start(&timer_, TimerCb, options_.tick_ms, options_.tick_ms);
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), AllocCb, ReadCb);
  if (rc != 0) {
    Close(Status(Code::kENETWORK, std::string("read: ") + uv_strerror(rc)));
    return;
  }
  tls_ = std::move(tls);
  if (tls_) {
    Status st = tls_->Start(this);
    if (!st.ok()) Close(st);
    return;
  }
  delegate_->OnOpen(this);
}

void Conn::OnTlsOpen() {
  if (!closing_) delegate_->OnOpen(this);
}

// One read buffer per thread (each loop runs on one): libuv calls the read callback right
// after filling it, and ReadCb copies what it got (into in_, or TLS's input) before returning,
// so connections need not each keep 64 KiB for it.
void Conn::AllocCb(uv_handle_t*, size_t, uv_buf_t* buf) {
  thread_local char read_buf[kReadBufferBytes];
  buf->base = read_buf;
  buf->len = sizeof(read_buf);
}

void Conn::ReadCb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (n < 0 && c->lingering_) {
    c->Close(c->close_reason_);  // the peer closed too, as hoped
    return;
  }
  if (n < 0) {
    c->Close(n == UV_EOF ? Status(Code::kENETWORK, "connection closed by the peer")
                         : Status(Code::kENETWORK, std::string("read: ") + uv_strerror(static_cast<int>(n))));
    return;
  }
  if (n == 0 || c->closing_) return;
  c->wire_in_ += static_cast<uint64_t>(n);
  if (c->tls_) {
    Status st = c->tls_->OnCiphertext(buf->base, static_cast<size_t>(n));
    if (!st.ok()) c->Close(st);
    return;
  }
  c->OnPlaintext(buf->base, static_cast<size_t>(n));
}

void Conn::OnPlaintext(const char* data, size_t len) {
  if (closing_ || close_after_flush_) return;
  if (options_.raw_input) {
    last_recv_ms_ = uv_now(loop_);
    delegate_->OnBytes(this, data, len);
    return;
  }
  in_.append(data, len);
  if (!ChargeInput()) return;
  ParseFrames();
}

bool Conn::ChargeInput() {
  if (budget_ == nullptr) return true;
  const size_t held = in_.size();
  budget_->used = budget_->used - charged_ + held;
  charged_ = held;
  while (budget_ != nullptr && budget_->used > budget_->limit) {
    Conn* largest = this;
    for (Conn* c : budget_->members) {
      if (c->charged_ > largest->charged_) largest = c;
    }
    const size_t limit = budget_->limit;
    largest->Close(Status(Code::kEBUSY, "the connections that have not said Hello hold more than " +
                                            std::to_string(limit) +
                                            " bytes of input, this one the most"));
    if (largest == this) return false;
  }
  return true;
}

void Conn::SetReadBudget(ReadBudget* budget) {
  if (budget_ != nullptr) {
    budget_->used -= charged_;
    budget_->members.erase(this);
  }
  charged_ = 0;
  budget_ = budget;
  if (budget_ != nullptr) {
    budget_->members.insert(this);
    if (!closing_) ChargeInput();
  }
}

void Conn::PauseReads() {
  if (reads_paused_ || closing_) return;
  reads_paused_ = true;
  // From now the idle clock counts from the last progress of the writes.
  last_written_ms_ = uv_now(loop_);
  write_queue_seen_ = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp_));
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
}

void Conn::ResumeReads() {
  if (!reads_paused_ || closing_) return;
  reads_paused_ = false;
  // The time paused was the peer's not reading, not its not sending.
  const uint64_t now = uv_now(loop_);
  last_recv_ms_ = now;
  if (partial_since_ms_ != 0) partial_since_ms_ = now;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), AllocCb, ReadCb);
  if (rc != 0) {
    Close(Status(Code::kENETWORK, std::string("read: ") + uv_strerror(rc)));
    return;
  }
  ParseFrames();  // what arrived before the pause
}

void Conn::ParseFrames() {
  const uint64_t now = uv_now(loop_);
  while (!closing_ && !close_after_flush_ && !reads_paused_) {
    size_t avail = in_.size() - in_pos_;
    if (avail < 4) break;
    const auto* p = reinterpret_cast<const unsigned char*>(in_.data() + in_pos_);
    uint32_t n = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
                 uint32_t{p[3]} << 24;
    if (n > options_.limits.max_frame_bytes) {
      std::string why = "frame of " + std::to_string(n) + " bytes exceeds the limit of " +
                        std::to_string(options_.limits.max_frame_bytes);
      if (*frame_limit_why_ != '\0') why += std::string(" ") + frame_limit_why_;
      SendErrorAndClose(Code::kECORRUPT, why);
      return;
    }
    // Every frame carries the identifier at bytes 4-7 of its payload (docs/protocol.md
    // "Frames"): what does not is refused at once, not after waiting for the length it seems
    // to announce (a TLS ClientHello on a plain port reads as a 66 KB frame).
    if (avail >= 12 && !wire::FrameBufferHasIdentifier(in_.data() + in_pos_ + 4)) {
      SendErrorAndClose(Code::kECORRUPT, "not a Cairn frame (a TLS client on a plain port?)");
      return;
    }
    if (avail < 4 + size_t{n}) break;
    std::string payload = in_.substr(in_pos_ + 4, n);
    in_pos_ += 4 + size_t{n};
    last_recv_ms_ = now;
    auto frame = protocol::VerifyFrame(payload, options_.limits);
    if (!frame.ok()) {
      SendErrorAndClose(Code::kECORRUPT, frame.status().message());
      return;
    }
    delegate_->OnFrame(this, *frame.value());
  }
  if (closing_) return;
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
    partial_since_ms_ = 0;
    // A large frame's buffer is not kept for the small ones that usually follow.
    if (in_.capacity() > kReadBufferBytes) in_.shrink_to_fit();
  } else {
    if (in_pos_ > 0) {
      in_.erase(0, in_pos_);
      in_pos_ = 0;
    }
    if (partial_since_ms_ == 0) partial_since_ms_ = now;
  }
  ChargeInput();
}

void Conn::Send(std::string frame) {
  if (closing_ || close_after_flush_) return;
  last_send_ms_ = uv_now(loop_);
  if (tls_) {
    Status st = tls_->Write(frame);
    if (!st.ok()) Close(st);
    return;
  }
  WriteRaw(std::move(frame));
}

void Conn::WriteRaw(std::string bytes) {
  if (closing_ || bytes.empty()) return;
  auto* w = new WriteReq;
  w->data = std::move(bytes);
  w->conn = this;
  queued_ += w->data.size();
  wire_out_ += w->data.size();
  if (queued_ >= options_.drained_bytes) above_drained_ = true;
  if (options_.pause_reads_above != 0 && queued_ > options_.pause_reads_above) PauseReads();
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, WriteCb);
  if (rc != 0) {
    queued_ -= w->data.size();
    delete w;
    Close(Status(Code::kENETWORK, std::string("write: ") + uv_strerror(rc)));
    return;
  }
  if (options_.close_above != 0 && queued_ > options_.close_above) {
    Close(Status(Code::kEBUSY, "the peer does not read what it is sent (" +
                                   std::to_string(queued_) + " bytes queued)"));
  }
}

void Conn::WriteCb(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  Conn* c = w->conn;
  c->queued_ -= w->data.size();
  delete w;
  if (status != 0) {
    c->Close(Status(Code::kENETWORK, std::string("write: ") + uv_strerror(status)));
    return;
  }
  if (c->closing_) return;
  c->last_written_ms_ = uv_now(c->loop_);
  if (c->reads_paused_ && c->queued_ < c->options_.drained_bytes) {
    c->ResumeReads();
    if (c->closing_) return;
  }
  if (c->close_after_flush_ && c->queued_ == 0) {
    c->FinishAfterSending();
    return;
  }
  if (c->above_drained_ && c->queued_ < c->options_.drained_bytes) {
    c->above_drained_ = false;
    c->delegate_->OnDrained(c);
  }
}

void Conn::SendErrorAndClose(Code code, const std::string& message) {
  if (closing_ || close_after_flush_) return;
  flatbuffers::FlatBufferBuilder fbb;
  auto err = wire::CreateError(fbb, static_cast<int32_t>(code), fbb.CreateString(message));
  Send(protocol::FinishFrame(&fbb, wire::Body::Error, err));
  CloseAfterSending(Status(code, message));
}

void Conn::CloseAfterSending(const Status& why) {
  if (closing_ || close_after_flush_) return;
  close_reason_ = why;
  close_after_flush_ = true;
  // A peer that does not read must not keep us: the frame timeout bounds the wait.
  SetDeadline(options_.frame_timeout_ms, "sending the last message");
  if (queued_ == 0) FinishAfterSending();
}

void Conn::FinishAfterSending() {
  if (!options_.raw_input) {
    Close(close_reason_);
    return;
  }
  // An HTTP peer may still be sending (a body refused before it was read): closing now, with
  // its bytes unread, would reset the connection and could destroy the response before the
  // peer reads it. So: our side is shut (FIN), and what still comes is read and dropped until
  // the peer closes too, for at most a short while (RFC 9112 9.6).
  if (lingering_) return;
  lingering_ = true;
  auto* req = new uv_shutdown_t;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&tcp_),
                  [](uv_shutdown_t* r, int) { delete r; }) != 0) {
    delete req;
    Close(close_reason_);
    return;
  }
  SetDeadline(kLingerMs, "draining the peer's input after the last response");
  if (reads_paused_) ResumeReads();
}

void Conn::SetDeadline(uint64_t ms_from_now, const char* what) {
  deadline_ms_ = ms_from_now == 0 ? 0 : uv_now(loop_) + ms_from_now;
  deadline_what_ = what;
}

void Conn::TimerCb(uv_timer_t* t) {
  auto* c = static_cast<Conn*>(t->data);
  if (c->closing_) return;
  const uint64_t now = uv_now(c->loop_);
  if (c->deadline_ms_ != 0 && now >= c->deadline_ms_) {
    c->Close(Status(Code::kETIMEDOUT, std::string("timed out ") + c->deadline_what_));
    return;
  }
  if (c->close_after_flush_) return;
  if (c->reads_paused_) {
    // Its replies wait for it: the clock that counts is how long since it last took some
    // (libuv says when a write completes; a large one in progress shows in its queue's size).
    const size_t in_flight =
        uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&c->tcp_));
    if (in_flight != c->write_queue_seen_) {
      c->write_queue_seen_ = in_flight;
      c->last_written_ms_ = now;
    }
    if (now - c->last_written_ms_ >= c->options_.idle_timeout_ms) {
      c->Close(Status(Code::kETIMEDOUT, "the peer read nothing for " +
                                            std::to_string(now - c->last_written_ms_) + " ms (" +
                                            std::to_string(c->queued_) + " bytes queued)"));
      return;
    }
    c->delegate_->OnTick(c, now);
    return;
  }
  if (c->partial_since_ms_ != 0 && now - c->partial_since_ms_ >= c->options_.frame_timeout_ms) {
    c->Close(Status(Code::kETIMEDOUT, "frame timeout: a frame started and did not complete"));
    return;
  }
  if (now - c->last_recv_ms_ >= c->options_.idle_timeout_ms) {
    c->Close(Status(Code::kETIMEDOUT, "idle timeout: nothing received for " +
                                    std::to_string(now - c->last_recv_ms_) + " ms"));
    return;
  }
  c->delegate_->OnTick(c, now);
}

void Conn::Close(const Status& why) {
  if (closing_) return;
  closing_ = true;
  // Input is freed now, not when the handle's close completes: one turn of the loop may read
  // from many connections and close many (a budget closing them as they fill it).
  SetReadBudget(nullptr);
  std::string().swap(in_);
  in_pos_ = 0;
  close_reason_ = why;
  uv_timer_stop(&timer_);
  pending_closes_ = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), CloseCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), CloseCb);
}

void Conn::CloseCb(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  if (--c->pending_closes_ > 0) return;
  if (c->delegate_) c->delegate_->OnClosed(c, c->close_reason_);
  delete c;
}

ScopedSigpipeBlock::ScopedSigpipeBlock() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &old_);
  was_blocked_ = sigismember(&old_, SIGPIPE) == 1;
}

ScopedSigpipeBlock::~ScopedSigpipeBlock() {
  if (was_blocked_) return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  timespec zero{0, 0};
  while (sigtimedwait(&set, nullptr, &zero) == SIGPIPE) {
  }
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

Status ParseHostPort(const std::string& s, std::string* host, uint16_t* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) {
    return Status::Invalid("expected HOST:PORT, got '" + s + "'");
  }
  std::string h = s.substr(0, colon);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned long p = 0;
  for (size_t i = colon + 1; i < s.size(); i++) {
    if (s[i] < '0' || s[i] > '9') return Status::Invalid("bad port in '" + s + "'");
    p = p * 10 + static_cast<unsigned long>(s[i] - '0');
    if (p > 65535) return Status::Invalid("port out of range in '" + s + "'");
  }
  *host = h;
  *port = static_cast<uint16_t>(p);
  return Status::OK();
}

}  // namespace cairn::net
