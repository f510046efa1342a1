#include "server/sync_server.h"

#include <unistd.h>

#include <cstdio>

#include "net/tls.h"
#include "server/session_hub.h"

namespace cairn::server {

// The libuv transport: a listener, TCP (or TLS) connections handed to the hub, and the loop.
struct SyncServer::Impl {
  std::unique_ptr<SessionHub> hub;
  ServerOptions options;
  std::unique_ptr<net::TlsConfig> tls;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_tcp_t http_listener;  // with ServerOptions::http
  bool http_listening = false;
  uv_async_t stop_async;
  uv_signal_t sigterm, sigint;
  uv_idle_t repump;  // runs the hub's turn
  uv_timer_t wake_timer;  // SessionHub::SetWakeTimer's (the HTTP API's long polls)
  // Several nodes (a PostgreSQL store): its notifications wake the hub to catch up, and so
  // does a timer, for what a lost notification did not say.
  // Polls a duplicate of the store's notify_socket(): libpq may close its own descriptor (a
  // broken connection) while the poll is active, and its number may come back for the next
  // connection; the duplicate stays ours until the poll handle is closed.
  struct NotifyPoll {
    uv_poll_t handle;
    int fd = -1;
  };
  NotifyPoll* notify_poll = nullptr;
  uv_timer_t catch_up_timer;
  bool catch_up_timer_on = false;
  bool loop_ready = false;  // the loop and its handles are initialized (Create got that far)
  bool stopping = false;

  static void OnConnection(uv_stream_t* server, int status);
  static void OnHttpConnection(uv_stream_t* server, int status);
  // Accepts a connection on `listener` and hands it to `attach` (the hub's), then starts it
  // (TLS first when the server has it).
  void Accept(uv_stream_t* server, net::ConnOptions conn_options,
              bool (SessionHub::*attach)(net::Link*));
  void StopNow();
  // Starts watching the store's notification socket, when it has one and none is watched.
  void WatchNotifications();
  void CloseNotifyPoll();
};

void SyncServer::Impl::OnConnection(uv_stream_t* listener, int status) {
  auto* impl = static_cast<Impl*>(listener->data);
  if (status != 0) {
    impl->hub->Log(std::string("accept failed: ") + uv_strerror(status));
    return;
  }
  net::ConnOptions conn_options = impl->options.conn;
  conn_options.pause_reads_above = impl->options.max_queued_bytes;
  conn_options.close_above =
      impl->options.max_queued_bytes + impl->options.conn.limits.max_frame_bytes + (1u << 20);
  impl->Accept(listener, conn_options, &SessionHub::Attach);
}

void SyncServer::Impl::OnHttpConnection(uv_stream_t* listener, int status) {
  auto* impl = static_cast<Impl*>(listener->data);
  if (status != 0) {
    impl->hub->Log(std::string("accept failed (HTTP): ") + uv_strerror(status));
    return;
  }
  net::ConnOptions conn_options = impl->options.conn;
  conn_options.raw_input = true;
  // One response at a time, the next only once the queue drained (net::HttpConn): what is
  // queued is bounded by one response, however large; a peer that reads none of it is closed
  // after the idle timeout.
  conn_options.pause_reads_above = impl->options.max_queued_bytes;
  conn_options.close_above = 0;
  impl->Accept(listener, conn_options, &SessionHub::AttachHttp);
}

void SyncServer::Impl::Accept(uv_stream_t* server, net::ConnOptions conn_options,
                              bool (SessionHub::*attach)(net::Link*)) {
  auto* conn = new net::Conn(&loop, nullptr, conn_options);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(conn->tcp())) != 0) {
    conn->Close(Status(Code::kENETWORK, "accept failed"));  // no session: closes silently
    return;
  }
  // The limits first: a refused peer costs no TLS session and no read.
  conn->ReadPeer();
  if (!(hub.get()->*attach)(conn)) return;
  std::unique_ptr<net::TlsSession> session;
  if (tls) {
    auto t = net::TlsSession::Create(tls.get(), "");
    if (!t.ok()) {
      conn->Close(t.status());
      return;
    }
    session = std::move(t.value());
  }
  conn->Start(std::move(session));
}

void SyncServer::Impl::CloseNotifyPoll() {
  if (notify_poll == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&notify_poll->handle), [](uv_handle_t* h) {
    auto* p = reinterpret_cast<NotifyPoll*>(h);  // (handle is the first member)
    close(p->fd);
    delete p;
  });
  notify_poll = nullptr;
}

void SyncServer::Impl::WatchNotifications() {
  if (notify_poll != nullptr) return;
  const int socket = hub->store()->notify_socket();
  if (socket < 0) return;
  auto* p = new NotifyPoll;
  p->fd = dup(socket);
  if (p->fd < 0 || uv_poll_init_socket(&loop, &p->handle, p->fd) != 0) {
    if (p->fd >= 0) close(p->fd);
    delete p;
    hub->Log("cannot watch the database's notifications: catching up every " +
             std::to_string(options.catch_up_ms) + " ms only");
    return;
  }
  notify_poll = p;
  p->handle.data = this;
  uv_poll_start(&p->handle, UV_READABLE, [](uv_poll_t* h, int status, int) {
    auto* impl = static_cast<Impl*>(h->data);
    Result<bool> woken = status == 0 ? impl->hub->store()->TakeNotifications()
                                     : Result<bool>(Status(Code::kENETWORK, uv_strerror(status)));
    if (!woken.ok()) {
      // The timer listens again (a new connection, a new poll) and catches up meanwhile.
      impl->hub->Log("database notifications: " + woken.status().ToString() +
                     "; listening again");
      impl->CloseNotifyPoll();
      impl->hub->CatchUp();
      return;
    }
    if (*woken) impl->hub->CatchUp();
  });
}

void SyncServer::Impl::StopNow() {
  if (stopping) return;
  stopping = true;
  hub->Log("stopping");
  CloseNotifyPoll();
  if (catch_up_timer_on) uv_close(reinterpret_cast<uv_handle_t*>(&catch_up_timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  if (http_listening) uv_close(reinterpret_cast<uv_handle_t*>(&http_listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&repump), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&wake_timer), nullptr);
  if (options.handle_signals) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
  }
  hub->CloseAll();
}

SyncServer::SyncServer() : impl_(std::make_unique<Impl>()) {}

SyncServer::~SyncServer() {
  if (impl_ && impl_->loop_ready) {
    if (!impl_->stopping) {
      impl_->StopNow();
      uv_run(&impl_->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&impl_->loop);
  }
}

Result<std::unique_ptr<SyncServer>> SyncServer::Create(const ServerOptions& options) {
  std::unique_ptr<SyncServer> s(new SyncServer());
  Impl* i = s->impl_.get();
  i->options = options;
#if !defined(CAIRN_HAVE_HTTP)
  if (options.http) {
    return Status::Invalid("this cairn-server was built without the HTTP API (http-parser)");
  }
#endif
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Status::Invalid("TLS needs both a certificate and a key");
  }
  if (!options.tls_cert_file.empty()) {
    CAIRN_ASSIGN_OR_RETURN(i->tls,
                           net::TlsConfig::Server(options.tls_cert_file, options.tls_key_file));
  }
  CAIRN_ASSIGN_OR_RETURN(i->hub, SessionHub::Open(options, [i] {
    uv_idle_start(&i->repump, [](uv_idle_t* idle) {
      uv_idle_stop(idle);
      static_cast<Impl*>(idle->data)->hub->RunTurn();
    });
  }));
  uv_loop_init(&i->loop);
  i->loop_ready = true;
  uv_tcp_init(&i->loop, &i->listener);
  i->listener.data = i;
  uv_idle_init(&i->loop, &i->repump);
  i->repump.data = i;
  uv_timer_init(&i->loop, &i->wake_timer);
  i->wake_timer.data = i;
  i->hub->SetWakeTimer([i](uint64_t ms) {
    if (i->stopping) return;
    uv_timer_start(
        &i->wake_timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->hub->Wake(); }, ms, 0);
  });
  uv_async_init(&i->loop, &i->stop_async, [](uv_async_t* a) {
    static_cast<Impl*>(a->data)->StopNow();
  });
  i->stop_async.data = i;
  if (i->hub->store()->notify_socket() >= 0) {
    i->WatchNotifications();
    uv_timer_init(&i->loop, &i->catch_up_timer);
    i->catch_up_timer.data = i;
    i->catch_up_timer_on = true;
    const uint64_t every = std::max<uint32_t>(options.catch_up_ms, 1);
    uv_timer_start(&i->catch_up_timer, [](uv_timer_t* t) {
      auto* impl = static_cast<Impl*>(t->data);
      if (impl->notify_poll == nullptr && impl->hub->store()->Relisten().ok()) {
        impl->WatchNotifications();
      }
      impl->hub->CatchUp();
      impl->hub->Maintain();
    }, every, every);
  } else if (options.store.history_horizon_ms > 0) {
    // One file: maintenance only folds history (docs/crdt-semantics.md "History horizon").
    uv_timer_init(&i->loop, &i->catch_up_timer);
    i->catch_up_timer.data = i;
    i->catch_up_timer_on = true;
    const uint64_t every = std::max<uint32_t>(options.maintain_ms, 1);
    uv_timer_start(
        &i->catch_up_timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->hub->Maintain(); },
        every, every);
  }
  if (options.handle_signals) {
    for (uv_signal_t* sig : {&i->sigterm, &i->sigint}) {
      uv_signal_init(&i->loop, sig);
      sig->data = i;
    }
    auto on_signal = [](uv_signal_t* sig, int signum) {
      auto* impl = static_cast<Impl*>(sig->data);
      impl->hub->Log(std::string("received ") + (signum == SIGTERM ? "SIGTERM" : "SIGINT"));
      impl->StopNow();
    };
    uv_signal_start(&i->sigterm, on_signal, SIGTERM);
    uv_signal_start(&i->sigint, on_signal, SIGINT);
  }
  return s;
}

const ReplicaId& SyncServer::id() const { return impl_->hub->store()->id(); }

size_t SyncServer::session_count() const { return impl_->hub->session_count(); }

namespace {

// Binds `handle` to host:port and listens; the port bound (port 0: the one the OS chose).
Result<uint16_t> BindAndListen(uv_tcp_t* handle, const std::string& host, uint16_t port,
                               uv_connection_cb on_connection) {
  sockaddr_storage addr;
  int rc = uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) rc = uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr));
  if (rc != 0) return Status::Invalid("listen address '" + host + "' is not an IP");
  rc = uv_tcp_bind(handle, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(handle), 1024, on_connection);
  if (rc != 0) {
    return Status(Code::kENETWORK,
                  "cannot listen on " + host + ":" + std::to_string(port) + ": " + uv_strerror(rc));
  }
  int len = sizeof(addr);
  uv_tcp_getsockname(handle, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

}  // namespace

Status SyncServer::Listen() {
  Impl* i = impl_.get();
  CAIRN_ASSIGN_OR_RETURN(
      port_, BindAndListen(&i->listener, i->options.host, i->options.port, Impl::OnConnection));
  i->hub->Log("listening on " + i->options.host + ":" + std::to_string(port_) +
         (i->tls ? " (TLS)" : " (plain TCP, no TLS)") + ", server id " + i->hub->store()->id().Hex());
  if (i->options.http) {
    uv_tcp_init(&i->loop, &i->http_listener);
    i->http_listener.data = i;
    i->http_listening = true;
    CAIRN_ASSIGN_OR_RETURN(http_port_, BindAndListen(&i->http_listener, i->options.http_host,
                                                     i->options.http_port, Impl::OnHttpConnection));
    i->hub->Log("HTTP API on " + std::string(i->tls ? "https://" : "http://") +
                i->options.http_host + ":" + std::to_string(http_port_) + " (docs/backend.md)");
  }
  if (!i->options.tokens().enabled()) {
    i->hub->Log(
        "WARNING: no token secret or key: the server is OPEN, anyone who can connect may "
        "read and write everything. Use --token-secret FILE (or --token-public-key, --jwks) "
        "outside development.");
  }
  return Status::OK();
}

Status SyncServer::Run() {
  net::ScopedSigpipeBlock no_sigpipe;
  uv_run(&impl_->loop, UV_RUN_DEFAULT);
  return Status::OK();
}

void SyncServer::Stop() { uv_async_send(&impl_->stop_async); }

}  // namespace cairn::server
