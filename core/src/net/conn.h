// net::Conn: one framed connection (docs/protocol.md "Frames") on a libuv TCP handle, used by the
// sync server and the sync client alike, so both enforce the same rules on every received frame:
//   - the 4-byte length is checked against the frame limit before anything is buffered for it;
//   - the payload goes through the FlatBuffers Verifier (protocol::VerifyFrame) before the
//     delegate sees it;
//   - a frame that has started must complete within `frame_timeout_ms`, and some frame must
//     arrive every `idle_timeout_ms` (the peers Ping when they have nothing else to say);
//   - a deadline (the handshake) can be armed by the owner.
// Any violation closes the connection with a Status the delegate receives in OnClosed.
//
// Writes are queued in libuv; queued_bytes() is what has not reached the kernel yet, and the
// owner uses it for backpressure (it produces more only when the queue has drained below its
// mark; OnDrained tells it when).
//
// Lifetime: a Conn is created with new and deletes itself after OnClosed returns. Owners keep a
// raw pointer until OnClosed. Single-threaded: every call on the loop's thread.
#ifndef CAIRN_NET_CONN_H_
#define CAIRN_NET_CONN_H_

#include <signal.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>

#include "base/status.h"
#include "protocol/frame.h"

namespace cairn::net {

struct ConnOptions {
  protocol::FrameLimits limits;
  uint32_t idle_timeout_ms = 60000;   // no frame received for this long: close
  uint32_t frame_timeout_ms = 30000;  // a started frame not complete after this long: close
  uint32_t tick_ms = 1000;            // how often the timeouts are checked
  size_t drained_bytes = 256u << 10;  // OnDrained fires when the queue falls below this
  // A peer that does not read what it is sent (docs/protocol.md "Limits"): while more than
  // `pause_reads_above` bytes are queued, nothing more is read from it (so nothing it sends
  // makes more replies) until the queue falls below `drained_bytes`; past `close_above` bytes,
  // or with nothing written for `idle_timeout_ms` while paused, it is closed. 0: no limit.
  size_t pause_reads_above = 0;
  size_t close_above = 0;
  // Input goes to the delegate as it arrives (Delegate::OnBytes), not cut into frames: an HTTP
  // connection (net/http.h). The frame limit and timeout do not apply; the idle timeout does.
  bool raw_input = false;
};

class Conn;

// A budget of received bytes not yet handled that a group of connections may hold together
// (the server's connections that have not said Hello: docs/protocol.md "Limits"; what is held
// is what is resident: a buffer's unused capacity is never written). When input
// takes `used` past `limit`, the connection holding the most is closed (EBUSY), until it is
// within: a peer filling the budget goes, not the small Hello that arrives next.
// Single-threaded.
struct ReadBudget {
  size_t limit = 0;
  size_t used = 0;
  std::unordered_set<Conn*> members;  // the connections charged to it
};

class TlsSession;  // net/tls.h

// A framed, ordered, reliable connection as the sync logic (the server's sessions, the
// client's exchange) sees it: net::Conn below (libuv TCP, or TLS), or an in-memory one that a
// deterministic simulation drives (no sockets, a virtual clock).
class Link {
 public:
  class Delegate {
   public:
    virtual ~Delegate() = default;
    // A verified frame. The pointer is valid during the call only.
    virtual void OnFrame(Link* link, const wire::Frame& frame) = 0;
    // Bytes received, with ConnOptions::raw_input (instead of frames).
    virtual void OnBytes(Link*, const char* /*data*/, size_t /*len*/) {}
    // The connection is established (after the TLS handshake, when there is one).
    virtual void OnOpen(Link*) {}
    // The write queue fell below the drained mark.
    virtual void OnDrained(Link*) {}
    // Every tick, with the link's clock in ms.
    virtual void OnTick(Link*, uint64_t /*now_ms*/) {}
    // The connection is gone (why: OK for a close asked by the owner). Last call; the link is
    // deleted right after it returns.
    virtual void OnClosed(Link* link, const Status& why) = 0;
  };

  explicit Link(Delegate* delegate) : delegate_(delegate) {}
  virtual ~Link() = default;
  // Who hears of this link's events: set before the link is started (a server hands an
  // accepted link to its session this way). A link never started may close without one.
  void set_delegate(Delegate* delegate) { delegate_ = delegate; }
  // Queues one complete frame (length prefix included).
  virtual void Send(std::string frame) = 0;
  // Sends an Error message, then closes once it has been written.
  virtual void SendErrorAndClose(Code code, const std::string& message) = 0;
  // Closes once what was sent has been written (`why`: the reason OnClosed gets), within the
  // frame timeout. Nothing is sent after this call.
  virtual void CloseAfterSending(const Status& why) = 0;
  virtual size_t queued_bytes() const = 0;
  // Arms (or, with 0, clears) a deadline in ms from now; when it passes, the link closes with
  // `what` as the reason.
  virtual void SetDeadline(uint64_t ms_from_now, const char* what) = 0;
  virtual uint64_t last_send_ms() const = 0;
  // Changes the largest frame accepted from now on; `why` (a literal, or "") is said in the
  // error when a larger one is announced. A frame's length is checked at its header.
  virtual void SetFrameLimit(uint32_t max_frame_bytes, const char* why) = 0;
  // Charges the bytes this link holds in received input to `budget` from now on (nullptr: to
  // none; what was charged is given back).
  virtual void SetReadBudget(ReadBudget* budget) = 0;
  // Closes (idempotent). OnClosed follows later, never from inside this call.
  virtual void Close(const Status& why) = 0;
  virtual bool closing() const = 0;
  virtual const std::string& peer() const = 0;     // "IP:PORT"
  virtual const std::string& peer_ip() const = 0;  // the IP alone
  // Bytes sent and received on the wire (TLS records included), for the sync status.
  virtual uint64_t wire_bytes_out() const = 0;
  virtual uint64_t wire_bytes_in() const = 0;

 protected:
  Delegate* delegate_;
};

// The libuv Link: TCP, with TLS when given one.
class Conn final : public Link {
 public:
  using Delegate = Link::Delegate;

  Conn(uv_loop_t* loop, Delegate* delegate, const ConnOptions& options);
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  uv_loop_t* loop() const { return loop_; }
  // Starts reading and the timers, on an accepted or connected handle. With `tls`, frames go
  // through it (the handshake runs first; OnOpen follows it).
  void Start(std::unique_ptr<TlsSession> tls = nullptr);
  void Send(std::string frame) override;
  void SendErrorAndClose(Code code, const std::string& message) override;
  void CloseAfterSending(const Status& why) override;
  size_t queued_bytes() const override { return queued_; }
  void SetDeadline(uint64_t ms_from_now, const char* what) override;
  uint64_t last_send_ms() const override { return last_send_ms_; }
  void SetFrameLimit(uint32_t max_frame_bytes, const char* why) override {
    options_.limits.max_frame_bytes = max_frame_bytes;
    frame_limit_why_ = why;
  }
  void SetReadBudget(ReadBudget* budget) override;
  void Close(const Status& why) override;
  bool closing() const override { return closing_; }
  // Reads the peer's address (Start does it too): a server can look at it before starting.
  void ReadPeer();
  const std::string& peer() const override { return peer_; }  // known after ReadPeer
  const std::string& peer_ip() const override { return peer_ip_; }
  uint64_t wire_bytes_out() const override { return wire_out_; }
  uint64_t wire_bytes_in() const override { return wire_in_; }

  // For TlsSession: ciphertext to the socket, and plaintext from it.
  void WriteRaw(std::string bytes);
  void OnPlaintext(const char* data, size_t len);
  void OnTlsOpen();

 private:
  ~Conn();
  static constexpr size_t kReadBufferBytes = 64 * 1024;
  static constexpr uint64_t kLingerMs = 2000;
  static void AllocCb(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void ReadCb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void WriteCb(uv_write_t* req, int status);
  static void TimerCb(uv_timer_t* t);
  static void CloseCb(uv_handle_t* h);
  void ParseFrames();
  // Charges the input held (in_) to the read budget; false when this connection was closed
  // to keep the budget.
  bool ChargeInput();
  void PauseReads();
  // Closes once what was queued is written: at once, or for raw input after a lingering
  // shutdown (FinishAfterSending in conn.cc).
  void FinishAfterSending();
  void ResumeReads();

  uv_loop_t* loop_;
  ConnOptions options_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  std::unique_ptr<TlsSession> tls_;
  std::string in_;
  size_t in_pos_ = 0;  // start of the unparsed bytes in in_
  size_t queued_ = 0;
  bool above_drained_ = false;
  bool reads_paused_ = false;  // ConnOptions::pause_reads_above
  ReadBudget* budget_ = nullptr;
  size_t charged_ = 0;  // what budget_ holds for this connection
  uint64_t last_recv_ms_ = 0, last_send_ms_ = 0, partial_since_ms_ = 0;
  uint64_t last_written_ms_ = 0;  // the last write progress seen
  size_t write_queue_seen_ = 0;   // libuv's write queue size at the last tick while paused
  uint64_t deadline_ms_ = 0;
  const char* deadline_what_ = "";
  const char* frame_limit_why_ = "";
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool lingering_ = false;  // shut for writing, waiting for the peer's end (raw input)
  int pending_closes_ = 0;
  Status close_reason_;
  std::string peer_, peer_ip_;
  uint64_t wire_out_ = 0, wire_in_ = 0;
};

// Blocks SIGPIPE on the calling thread for its lifetime, so a write to a socket the peer closed
// fails with EPIPE instead of killing the process (libuv writes with write(2), and Linux has no
// per-socket way out). A SIGPIPE left pending is consumed before the mask is restored. Every loop
// thread of the client and the server runs under one; the process's own handlers are untouched.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock();
  ~ScopedSigpipeBlock();
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool was_blocked_ = false;
};

// "host:port" -> (host, port). EINVAL when malformed.
Status ParseHostPort(const std::string& s, std::string* host, uint16_t* port);

}  // namespace cairn::net

#endif  // CAIRN_NET_CONN_H_
