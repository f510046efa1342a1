#include "support/fault_proxy.h"

#include <signal.h>
#include <uv.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace cairn::testing {

namespace {

struct Link;

// One direction of a proxied connection.
struct Dir {
  Link* link = nullptr;
  uv_tcp_t* to = nullptr;
  std::string queue;        // received, not yet forwarded
  uint64_t forwarded = 0;
  uint64_t cut_after = UINT64_MAX;
  uint64_t stall_at = UINT64_MAX;
  uint32_t stall_ms = 0;
  bool stalled = false;
  uv_timer_t timer;
  bool timer_running = false;
  // Frame scanning (server -> client): cut before frame number `cut_before_frame`, pause
  // before frame number `stall_before_frame`.
  uint32_t cut_before_frame = UINT32_MAX;
  uint32_t stall_before_frame = UINT32_MAX;
  uint64_t seen = 0, next_frame_at = 0;
  uint32_t frames_seen = 0;
  std::string hdr;
  std::function<void(std::string_view)> on_frame;  // Faults::on_down_frame
  std::string body;                                // the frame being received, for on_frame

  void Scan(const char* p, size_t n) {
    for (size_t i = 0; i < n;) {
      uint64_t abs = seen + i;
      if (hdr.empty() && abs < next_frame_at) {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(n - i, next_frame_at - abs));
        if (on_frame) body.append(p + i, take);
        i += take;
        if (on_frame && seen + i == next_frame_at) {
          on_frame(body);
          body.clear();
        }
        continue;
      }
      if (hdr.empty()) {
        if (frames_seen == cut_before_frame) cut_after = std::min(cut_after, abs);
        if (frames_seen == stall_before_frame) stall_at = std::min(stall_at, abs);
        frames_seen++;
      }
      hdr.push_back(p[i++]);
      if (hdr.size() == 4) {
        const auto* u = reinterpret_cast<const unsigned char*>(hdr.data());
        uint64_t len = uint64_t{u[0]} | uint64_t{u[1]} << 8 | uint64_t{u[2]} << 16 |
                       uint64_t{u[3]} << 24;
        next_frame_at = seen + i + len;
        hdr.clear();
      }
    }
    seen += n;
  }
};

struct WriteReq {
  uv_write_t req;
  std::string data;
  Link* link;
  bool cut_after_write;
};

}  // namespace

struct FaultProxy::Impl {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop;
  std::thread thread;
  std::atomic<uint16_t> target_port{0};
  std::atomic<uint16_t> port{0};
  std::atomic<int> connections{0};
  std::atomic<int> cuts{0};
  std::function<Faults(int)> faults;
};

namespace {

struct Link {
  FaultProxy::Impl* proxy;
  Faults f;
  uv_tcp_t client, server;
  uv_connect_t connect_req;
  bool server_connected = false;
  bool closing = false;
  int open_handles = 0;
  Dir up, down;  // up: client -> server, down: server -> client
  char buf[16384];

  void Close() {
    if (closing) return;
    closing = true;
    // Every handle's data is this link from now on (the timers' callbacks are gone once closed).
    up.timer.data = this;
    down.timer.data = this;
    auto close = [this](uv_handle_t* h) {
      if (!uv_is_closing(h)) {
        open_handles++;
        uv_close(h, [](uv_handle_t* hh) {
          Link* l = static_cast<Link*>(hh->data);
          if (--l->open_handles == 0) delete l;
        });
      }
    };
    close(reinterpret_cast<uv_handle_t*>(&client));
    close(reinterpret_cast<uv_handle_t*>(&server));
    close(reinterpret_cast<uv_handle_t*>(&up.timer));
    close(reinterpret_cast<uv_handle_t*>(&down.timer));
  }

  void Write(Dir* d, std::string data, bool cut) {
    auto* w = new WriteReq{{}, std::move(data), this, cut};
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(d->to), &b, 1, [](uv_write_t* r, int) {
          auto* wr = reinterpret_cast<WriteReq*>(r);
          Link* l = wr->link;
          bool cut_now = wr->cut_after_write;
          delete wr;
          if (cut_now) l->Close();
        }) != 0) {
      delete w;
      Close();
    }
  }

  // Forwards what the faults allow now; schedules the rest.
  void Pump(Dir* d) {
    if (closing || (d == &up && !server_connected)) return;
    while (!d->queue.empty() && !closing) {
      if (d->timer_running) return;
      if (!d->stalled && d->forwarded >= d->stall_at && d->stall_ms > 0) {
        d->stalled = true;
        StartTimer(d, d->stall_ms);
        return;
      }
      size_t n = d->queue.size();
      if (f.chunk_bytes > 0) n = std::min(n, f.chunk_bytes);
      if (d->stall_at > d->forwarded && !d->stalled) {
        n = static_cast<size_t>(std::min<uint64_t>(n, d->stall_at - d->forwarded));
      }
      bool cut = false;
      if (d->forwarded + n >= d->cut_after) {
        n = static_cast<size_t>(d->cut_after - d->forwarded);
        cut = true;
      }
      std::string chunk = d->queue.substr(0, n);
      d->queue.erase(0, n);
      d->forwarded += n;
      if (cut) {
        proxy->cuts++;
        if (chunk.empty()) {
          Close();
        } else {
          Write(d, std::move(chunk), true);
          // Nothing more is read or forwarded: the link is as good as cut.
          uv_read_stop(reinterpret_cast<uv_stream_t*>(&client));
          uv_read_stop(reinterpret_cast<uv_stream_t*>(&server));
          d->queue.clear();
          (d == &up ? down : up).queue.clear();
          d->cut_after = d->forwarded;  // later pumps cut at once
        }
        return;
      }
      Write(d, std::move(chunk), false);
      if (f.chunk_bytes > 0 && f.chunk_delay_ms > 0) {
        StartTimer(d, f.chunk_delay_ms);
        return;
      }
    }
  }

  void StartTimer(Dir* d, uint32_t ms) {
    d->timer_running = true;
    uv_timer_start(&d->timer, [](uv_timer_t* t) {
      Dir* dir = static_cast<Dir*>(t->data);
      dir->timer_running = false;
      dir->link->Pump(dir);
    }, ms, 0);
  }

  static void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
    Link* l = static_cast<Link*>(s->data);
    if (n < 0) {
      l->Close();
      return;
    }
    if (l->closing) return;
    Dir* d = s == reinterpret_cast<uv_stream_t*>(&l->client) ? &l->up : &l->down;
    if (d == &l->down) d->Scan(b->base, static_cast<size_t>(n));
    d->queue.append(b->base, static_cast<size_t>(n));
    l->Pump(d);
  }
};

void Alloc(uv_handle_t* h, size_t, uv_buf_t* b) {
  Link* l = static_cast<Link*>(h->data);
  b->base = l->buf;
  b->len = sizeof(l->buf);
}

void OnAccept(uv_stream_t* listener, int status) {
  auto* p = static_cast<FaultProxy::Impl*>(listener->data);
  if (status != 0) return;
  auto* l = new Link();
  l->proxy = p;
  l->f = p->faults(p->connections++);
  for (uv_tcp_t* t : {&l->client, &l->server}) {
    uv_tcp_init(&p->loop, t);
    t->data = l;
  }
  for (Dir* d : {&l->up, &l->down}) {
    uv_timer_init(&p->loop, &d->timer);
    d->timer.data = d;
    d->link = l;
  }
  l->up.to = &l->server;
  l->down.to = &l->client;
  l->up.cut_after = l->f.cut_up_after;
  l->down.cut_after = l->f.cut_down_after;
  l->down.stall_at = l->f.stall_down_at;
  l->down.cut_before_frame = l->f.cut_down_before_frame;
  l->down.stall_before_frame = l->f.stall_down_before_frame;
  l->down.on_frame = l->f.on_down_frame;
  l->down.stall_ms = l->f.stall_ms;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&l->client)) != 0) {
    l->Close();
    return;
  }
  if (l->f.nodelay) uv_tcp_nodelay(&l->client, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&l->client), Alloc, Link::OnRead);
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", p->target_port, &addr);
  l->connect_req.data = l;
  uv_tcp_connect(&l->connect_req, &l->server, reinterpret_cast<const sockaddr*>(&addr),
                 [](uv_connect_t* req, int st) {
                   Link* link = static_cast<Link*>(req->data);
                   if (st != 0 || link->closing) {
                     link->Close();
                     return;
                   }
                   link->server_connected = true;
                   if (link->f.nodelay) uv_tcp_nodelay(&link->server, 1);
                   uv_read_start(reinterpret_cast<uv_stream_t*>(&link->server), Alloc,
                                 Link::OnRead);
                   link->Pump(&link->up);
                 });
}

}  // namespace

FaultProxy::FaultProxy(uint16_t target_port, std::function<Faults(int)> faults)
    : impl_(std::make_unique<Impl>()) {
  Impl* p = impl_.get();
  p->target_port = target_port;
  p->faults = std::move(faults);
  uv_loop_init(&p->loop);
  uv_tcp_init(&p->loop, &p->listener);
  p->listener.data = p;
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_bind(&p->listener, reinterpret_cast<const sockaddr*>(&addr), 0);
  uv_listen(reinterpret_cast<uv_stream_t*>(&p->listener), 128, OnAccept);
  sockaddr_in bound;
  int len = sizeof(bound);
  uv_tcp_getsockname(&p->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  p->port = ntohs(bound.sin_port);
  uv_async_init(&p->loop, &p->stop, [](uv_async_t* a) {
    auto* impl = static_cast<Impl*>(a->data);
    uv_close(reinterpret_cast<uv_handle_t*>(&impl->listener), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&impl->stop), nullptr);
    uv_walk(&impl->loop, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h) && h->type == UV_TCP) {
        Link* l = static_cast<Link*>(h->data);
        if (l) l->Close();
      }
    }, nullptr);
  });
  p->stop.data = p;
  p->thread = std::thread([p] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // a cut peer: EPIPE, not a dead test
    uv_run(&p->loop, UV_RUN_DEFAULT);
  });
}

FaultProxy::~FaultProxy() {
  uv_async_send(&impl_->stop);
  impl_->thread.join();
  uv_loop_close(&impl_->loop);
}

void FaultProxy::set_target(uint16_t target_port) { impl_->target_port = target_port; }
uint16_t FaultProxy::port() const { return impl_->port; }
int FaultProxy::connections() const { return impl_->connections; }
int FaultProxy::cuts() const { return impl_->cuts; }

}  // namespace cairn::testing
