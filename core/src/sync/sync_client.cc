#include "sync/sync_client.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "base/log.h"
#include "base/strings.h"
#include "oplog/validate.h"
#include "net/tls.h"
#include "port/port.h"
#include "sync/exchange.h"

namespace cairn::sync {

namespace {

// "a,b" -> {"a", "b"}, "" -> {}, each piece checked by `check`.
Result<std::vector<std::string>> SplitList(const std::string& list,
                                           Status (*check)(const std::string&)) {
  std::vector<std::string> out;
  for (size_t start = 0; !list.empty() && start <= list.size();) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string name = list.substr(start, comma - start);
    CAIRN_RETURN_IF_ERROR(check(name));
    out.push_back(std::move(name));
    start = comma + 1;
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> ParseCollectionList(const std::string& list) {
  return SplitList(list, [](const std::string& name) { return ValidateCollectionName(name); });
}

Result<std::vector<std::string>> ParseChannelList(const std::string& list) {
  return SplitList(list, [](const std::string& name) {
    return name.empty() ? Status::Invalid("an empty channel name") : Status::OK();
  });
}

const char* SyncStateName(SyncState s) {
  switch (s) {
    case SyncState::kOffline:
      return "offline";
    case SyncState::kConnecting:
      return "connecting";
    case SyncState::kSyncing:
      return "syncing";
    case SyncState::kIdle:
      return "idle";
  }
  return "offline";
}

std::string SyncStatus::ToJson() const {
  Json j = {{"state", SyncStateName(state)},
            {"pending_ops", pending_ops},
            {"pending_records", pending_records},
            {"records_uploaded", records_uploaded},
            {"last_error", last_error.empty() ? Json(nullptr) : Json(last_error)},
            {"last_sync_ms", last_sync_ms ? Json(*last_sync_ms) : Json(nullptr)},
            {"cursor", cursor},
            {"bytes_sent", bytes_sent},
            {"bytes_received", bytes_received},
            {"ops_pushed", ops_pushed},
            {"ops_received", ops_received},
            {"txns_refused", txns_refused},
            {"reconnects", reconnects},
            {"token_expires_ms", token_expires_ms > 0 ? Json(token_expires_ms) : Json(nullptr)}};
  return CanonicalJson(j);
}

// The libuv driver of an Exchange: connects (TCP, TLS), times out the handshake, reconnects
// with backoff, wakes on local writes; runs on one loop (SyncOnce: the caller's thread;
// Start: the background thread).
struct SyncClient::Engine : Exchange::Owner {
  Engine(Replica* replica, SyncOptions options) : ex(replica, std::move(options), this) {}

  Exchange ex;
  std::string host;
  uint16_t port = 0;
  std::unique_ptr<net::TlsConfig> tls;

  // Loop state (loop thread only).
  uv_loop_t* loop = nullptr;
  uv_async_t wake;               // writes, NetworkChanged, Stop
  uv_timer_t retry_timer, poll_timer, deadline_timer;
  uv_connect_t connect_req;
  net::Conn* conn = nullptr;
  bool once = false;
  bool done = false;             // once: finished (result in `result`)
  Status result;
  std::atomic<bool> stop_requested{false};
  std::atomic<bool> network_changed{false};
  std::atomic<bool> local_write{false};
  std::atomic<bool> token_changed{false};
  std::atomic<bool> live{false};  // Start .. Stop
  uint32_t attempt = 0;
  std::mt19937_64 rng{static_cast<uint64_t>(port::WallClockMs())};

  Status Init() {
    CAIRN_RETURN_IF_ERROR(net::ParseHostPort(ex.options.server, &host, &port));
    if (ex.options.tls) {
      CAIRN_ASSIGN_OR_RETURN(tls, net::TlsConfig::Client(ex.options.ca_file));
    }
    ex.LoadStatus();
    return Status::OK();
  }

  void OpenLoop(uv_loop_t* l) {
    loop = l;
    uv_async_init(loop, &wake, [](uv_async_t* a) { static_cast<Engine*>(a->data)->OnWake(); });
    wake.data = this;
    for (uv_timer_t* t : {&retry_timer, &poll_timer, &deadline_timer}) {
      uv_timer_init(loop, t);
      t->data = this;
    }
    std::lock_guard<std::mutex> lock(wake_mu);
    wake_ready = true;
    // A Signal() made before now found no loop to wake (a write just as live sync started):
    // wake once, and OnWake reads the flags it left.
    uv_async_send(&wake);
  }

  // Guards wake_ready: other threads signal `wake` only while the loop can receive it.
  std::mutex wake_mu;
  bool wake_ready = false;
  std::thread thread;

  void Signal() {
    std::lock_guard<std::mutex> lock(wake_mu);
    if (wake_ready) uv_async_send(&wake);
  }

  void CloseLoopHandles() {
    {
      std::lock_guard<std::mutex> lock(wake_mu);
      wake_ready = false;
    }
    for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&wake),
                           reinterpret_cast<uv_handle_t*>(&retry_timer),
                           reinterpret_cast<uv_handle_t*>(&poll_timer),
                           reinterpret_cast<uv_handle_t*>(&deadline_timer)}) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }
  }

  void Finish(const Status& s) {
    if (done) return;
    done = true;
    result = s;
    if (conn) conn->Close(Status::OK());
    CloseLoopHandles();
  }

  void OnWake() {
    if (stop_requested) {
      Finish(Status::OK());
      return;
    }
    if (network_changed.exchange(false) && conn == nullptr && !done) {
      uv_timer_stop(&retry_timer);
      attempt = 0;
      Connect();
    }
    if (token_changed.exchange(false) && !done) {
      if (conn != nullptr) {
        ex.SendRenewal();
      } else if (!once) {  // offline: reconnect now, with it
        uv_timer_stop(&retry_timer);
        attempt = 0;
        Connect();
      }
    }
    if (local_write.exchange(false)) {
      // The pending count grew, online or not: the status callback hears of it.
      ex.RefreshPending();
      ex.NotifyStatus();
      ex.Push();
    }
  }

  // --- Exchange::Owner ---

  void OnWelcomed() override {
    uv_timer_stop(&deadline_timer);
    attempt = 0;
  }
  void OnIdle(const Status& s) override { Finish(s); }
  void OnLinkClosed(const Status& why) override {
    conn = nullptr;
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&deadline_timer))) {
      uv_timer_stop(&deadline_timer);
    }
    if (done) return;
    Failed(why);
  }

  // --- Connecting ---

  void Connect() {
    if (done || conn != nullptr) return;
    ex.SetState(SyncState::kConnecting);
    ex.Begin(nullptr, once);  // the session starts (its state reset) before anything can fail
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    uv_getaddrinfo_t req;
    int rc = uv_getaddrinfo(loop, &req, nullptr, host.c_str(), std::to_string(port).c_str(),
                            &hints);
    if (rc != 0) {
      Failed(Status(Code::kENETWORK, "cannot resolve " + host + ": " + uv_strerror(rc)));
      return;
    }
    conn = new net::Conn(loop, &ex, ex.options.conn);
    ex.link_ = conn;
    connect_req.data = this;
    rc = uv_tcp_connect(&connect_req, conn->tcp(), req.addrinfo->ai_addr, OnConnected);
    uv_freeaddrinfo(req.addrinfo);
    if (rc != 0) {
      conn->Close(Status(Code::kENETWORK, std::string("connect: ") + uv_strerror(rc)));
      return;
    }
    uv_timer_start(&deadline_timer, [](uv_timer_t* t) {
      auto* e = static_cast<Engine*>(t->data);
      if (e->conn && !e->ex.welcomed) {
        e->conn->Close(Status(Code::kETIMEDOUT, "timed out connecting to " + e->ex.options.server));
      }
    }, ex.options.connect_timeout_ms + ex.options.handshake_timeout_ms, 0);
  }

  static void OnConnected(uv_connect_t* req, int status) {
    auto* e = static_cast<Engine*>(req->data);
    if (e->conn == nullptr) return;
    if (status != 0) {
      e->conn->Close(Status(Code::kENETWORK, "cannot connect to " + e->ex.options.server + ": " +
                                                 uv_strerror(status)));
      return;
    }
    if (e->conn->closing()) return;
    std::unique_ptr<net::TlsSession> session;
    if (e->tls) {
      const std::string& name = e->ex.options.server_name;
      auto s = net::TlsSession::Create(e->tls.get(), name.empty() ? e->host : name);
      if (!s.ok()) {
        e->conn->Close(s.status());
        return;
      }
      session = std::move(s.value());
    }
    e->conn->Start(std::move(session));
  }

  void Failed(const Status& why) {
    ex.SetStateAndError(SyncState::kOffline, why.ToString());
    if (once) {
      Finish(why);
      return;
    }
    // Exponential backoff with jitter: a uniform delay in [d/2, d], d doubling per failure.
    const SyncOptions& o = ex.options;
    uint64_t d = o.backoff_min_ms;
    for (uint32_t i = 0; i < attempt && d < o.backoff_max_ms; i++) d *= 2;
    d = std::min<uint64_t>(d, o.backoff_max_ms);
    if (why.code() == Code::kETOKEN) {
      // Retrying with an expired token is useless: SetToken reconnects (OnWake).
      log::Write(log::Level::kInfo, "sync: " + why.ToString() + "; waiting for a renewed token");
      return;
    }
    std::uniform_int_distribution<uint64_t> jitter(d / 2, d);
    attempt++;
    {
      std::lock_guard<std::mutex> lock(ex.mu);
      ex.st.reconnects++;
    }
    const uint64_t delay = jitter(rng);
    log::Write(log::Level::kInfo, "sync: " + why.ToString() + "; retrying in " +
                                      std::to_string(delay) + " ms");
    uv_timer_start(&retry_timer, [](uv_timer_t* t) { static_cast<Engine*>(t->data)->Connect(); },
                   delay, 0);
  }

  // Runs a loop until Finish (once) or Stop (live).
  Status RunLoop(bool run_once, uint32_t timeout_ms) {
    net::ScopedSigpipeBlock no_sigpipe;
    uv_loop_t l;
    uv_loop_init(&l);
    OpenLoop(&l);
    once = run_once;
    done = false;
    result = Status::OK();
    if (!run_once) {
      uv_timer_start(&poll_timer, [](uv_timer_t* t) {
        auto* e = static_cast<Engine*>(t->data);
        e->ex.Push();
      }, ex.options.poll_ms, ex.options.poll_ms);
    }
    if (timeout_ms > 0) {
      uv_timer_start(&retry_timer, [](uv_timer_t* t) {
        auto* e = static_cast<Engine*>(t->data);
        e->Finish(Status(Code::kETIMEDOUT, "sync did not complete in time"));
      }, timeout_ms, 0);
    }
    Connect();
    if (stop_requested) Finish(Status::OK());
    uv_run(&l, UV_RUN_DEFAULT);
    uv_loop_close(&l);
    loop = nullptr;
    return result;
  }
};

SyncClient::SyncClient(Replica* replica, SyncOptions options)
    : engine_(std::make_unique<Engine>(replica, std::move(options))) {}

SyncClient::~SyncClient() { Stop(); }

Status SyncClient::SyncOnce(uint32_t timeout_ms) {
  if (engine_->thread.joinable()) return Status(Code::kEBUSY, "live sync is running");
  CAIRN_RETURN_IF_ERROR(engine_->Init());
  engine_->stop_requested = false;
  return engine_->RunLoop(/*run_once=*/true, timeout_ms);
}

Status SyncClient::Start() {
  if (engine_->thread.joinable()) return Status(Code::kEBUSY, "live sync is already running");
  CAIRN_RETURN_IF_ERROR(engine_->Init());
  engine_->stop_requested = false;
  Engine* e = engine_.get();
  e->ex.replica->SetWriteListener([e] {
    e->local_write = true;
    e->Signal();
  });
  e->thread = std::thread([e] { (void)e->RunLoop(/*run_once=*/false, 0); });
  e->live = true;
  return Status::OK();
}

void SyncClient::Stop() {
  Engine* e = engine_.get();
  if (!e->thread.joinable()) return;
  e->ex.replica->SetWriteListener(nullptr);
  e->stop_requested = true;
  e->Signal();
  e->thread.join();
  e->live = false;
}

void SyncClient::NetworkChanged() {
  engine_->network_changed = true;
  engine_->Signal();
}

void SyncClient::SetToken(std::string token) {
  engine_->ex.SetToken(std::move(token));
  engine_->token_changed = true;
  engine_->Signal();
}

SyncStatus SyncClient::status() const {
  // Live sync keeps the pending count current (writes wake it). Otherwise local writes change
  // it between exchanges: it is read from the replica.
  if (!engine_->live) engine_->ex.RefreshPending();
  std::lock_guard<std::mutex> lock(engine_->ex.mu);
  return engine_->ex.st;
}

void SyncClient::SetDurableCallback(DurableCallback cb) {
  std::lock_guard<std::mutex> lock(engine_->ex.mu);
  engine_->ex.durable_cb = std::move(cb);
}

void SyncClient::SetRefusedCallback(RefusedCallback cb) {
  std::lock_guard<std::mutex> lock(engine_->ex.mu);
  engine_->ex.refused_cb = std::move(cb);
}

void SyncClient::SetStatusCallback(StatusCallback cb) {
  std::lock_guard<std::mutex> lock(engine_->ex.mu);
  engine_->ex.status_cb = std::move(cb);
  engine_->ex.notified.clear();  // a new callback hears the status at the next change
}

}  // namespace cairn::sync
