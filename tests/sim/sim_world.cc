#include "sim/sim_world.h"

#include <algorithm>

#include "protocol/frame.h"

namespace cairn::sim {

SimWorld::~SimWorld() {
  std::map<uint64_t, SimLink*> left;
  left.swap(links_);
  for (auto& entry : left) delete entry.second;
}

void SimWorld::At(uint64_t when, std::function<void()> fn) {
  events_.emplace(std::make_pair(std::max(when, now_), order_++), std::move(fn));
}

bool SimWorld::RunUntil(uint64_t until) {
  while (!events_.empty()) {
    auto it = events_.begin();
    if (it->first.first > until) break;
    now_ = it->first.first;
    Mix(now_);
    Mix(it->first.second);
    std::function<void()> fn = std::move(it->second);
    events_.erase(it);
    fn();
  }
  now_ = std::max(now_, until);
  return !events_.empty();
}

SimLink::SimLink(SimWorld* world, Delegate* delegate, const SimLinkOptions& options)
    : Link(delegate),
      world_(world),
      options_(options),
      id_(world->next_link_id_++),
      max_frame_bytes_(protocol::FrameLimits{}.max_frame_bytes) {
  world_->links_[id_] = this;
  last_send_ms_ = last_recv_ms_ = world_->now();
}

SimLink::~SimLink() { world_->links_.erase(id_); }

SimLink* SimLink::Find(uint64_t id) const {
  auto it = world_->links_.find(id);
  return it == world_->links_.end() ? nullptr : it->second;
}

std::pair<SimLink*, SimLink*> SimLink::Pair(SimWorld* world, Delegate* client,
                                            const std::string& client_ip,
                                            const SimLinkOptions& options) {
  auto* a = new SimLink(world, client, options);
  auto* b = new SimLink(world, nullptr, options);
  a->peer_id_ = b->id_;
  b->peer_id_ = a->id_;
  a->peer_ip_ = "10.0.0.1";
  a->peer_name_ = "10.0.0.1:7000";
  b->peer_ip_ = client_ip;
  b->peer_name_ = client_ip + ":" + std::to_string(40000 + a->id_);
  const uint64_t ida = a->id_, idb = b->id_;
  world->After(options.latency_ms, [world, ida, idb] {
    for (uint64_t id : {idb, ida}) {
      auto it = world->links_.find(id);
      if (it != world->links_.end()) it->second->Open();
    }
  });
  return {a, b};
}

SimLink* SimLink::Refused(SimWorld* world, Delegate* client, const SimLinkOptions& options) {
  auto* a = new SimLink(world, client, options);
  const uint64_t id = a->id_;
  world->After(options.latency_ms, [world, id] {
    auto it = world->links_.find(id);
    if (it != world->links_.end()) {
      it->second->Close(Status(Code::kENETWORK, "connection refused"));
    }
  });
  return a;
}

void SimLink::Open() {
  if (closing_) return;
  last_recv_ms_ = world_->now();
  const uint64_t id = id_;
  world_->After(options_.tick_ms, [this, id, w = world_] {
    if (w->links_.count(id)) Tick();
  });
  if (delegate_) delegate_->OnOpen(this);
}

void SimLink::Tick() {
  if (closing_) return;
  const uint64_t now = world_->now();
  // As net::Conn: the deadline, then the idle timeout, then the delegate's tick.
  if (deadline_ms_ != 0 && now >= deadline_ms_) {
    Close(Status(Code::kETIMEDOUT, std::string("timed out ") + deadline_what_));
    return;
  }
  if (now - last_recv_ms_ >= options_.idle_timeout_ms) {
    Close(Status(Code::kETIMEDOUT,
                 "no frame for " + std::to_string(options_.idle_timeout_ms) + " ms"));
    return;
  }
  if (delegate_) delegate_->OnTick(this, now);
  if (closing_) return;
  const uint64_t id = id_;
  world_->After(options_.tick_ms, [this, id, w = world_] {
    if (w->links_.count(id)) Tick();
  });
}

void SimLink::Send(std::string frame) {
  if (closing_ || close_after_flush_ || peer_id_ == 0) return;
  if (on_send) {
    const std::string payload = frame.substr(4);
    auto verified = protocol::VerifyFrame(payload, protocol::FrameLimits{});
    if (verified.ok()) on_send(*verified.value());
  }
  const size_t n = frame.size();
  world_->Mix(n);
  bytes_out_ += n;
  queued_ += n;
  last_send_ms_ = world_->now();
  if (queued_ >= options_.drained_bytes) above_drained_ = true;
  const uint64_t arrive = std::max(
      next_arrival_, world_->now() + options_.latency_ms + world_->Uniform(0, options_.jitter_ms));
  next_arrival_ = arrive;
  world_->in_flight_++;
  world_->At(arrive, [w = world_, from = id_, to = peer_id_, f = std::move(frame)]() mutable {
    w->in_flight_--;
    auto sender = w->links_.find(from);
    if (sender != w->links_.end()) {
      SimLink* s = sender->second;
      s->queued_ -= f.size();
      if (s->above_drained_ && s->queued_ < s->options_.drained_bytes && !s->closing_) {
        s->above_drained_ = false;
        if (s->delegate_) s->delegate_->OnDrained(s);
      }
    }
    if (w->cut_links_.count(from)) return;  // lost with the connection
    auto dest = w->links_.find(to);
    if (dest != w->links_.end()) dest->second->Deliver(std::move(f));
  });
}

void SimLink::Deliver(std::string frame) {
  if (closing_ || close_after_flush_) return;
  bytes_in_ += frame.size();
  last_recv_ms_ = world_->now();
  const size_t n = frame.size() - 4;
  if (n > max_frame_bytes_) {
    std::string why = "frame of " + std::to_string(n) + " bytes exceeds the limit of " +
                      std::to_string(max_frame_bytes_);
    if (*frame_limit_why_ != '\0') why += std::string(" ") + frame_limit_why_;
    SendErrorAndClose(Code::kECORRUPT, why);
    return;
  }
  protocol::FrameLimits limits;
  limits.max_frame_bytes = max_frame_bytes_;
  const std::string payload = frame.substr(4);
  auto verified = protocol::VerifyFrame(payload, limits);
  if (!verified.ok()) {
    SendErrorAndClose(Code::kECORRUPT, verified.status().message());
    return;
  }
  if (on_deliver) on_deliver(*verified.value());
  if (delegate_) delegate_->OnFrame(this, *verified.value());
}

// As net::Conn: the Error frame is sent, nothing else is sent or read, and the link closes
// (closing() turns true) once the frame has left: here, when it has arrived.
void SimLink::SendErrorAndClose(Code code, const std::string& message) {
  if (closing_ || close_after_flush_) return;
  flatbuffers::FlatBufferBuilder fbb;
  auto err = wire::CreateError(fbb, static_cast<int32_t>(code), fbb.CreateString(message));
  Send(protocol::FinishFrame(&fbb, wire::Body::Error, err));
  CloseAfterSending(Status(code, message));
}

void SimLink::CloseAfterSending(const Status& why) {
  if (closing_ || close_after_flush_) return;
  close_after_flush_ = true;
  const uint64_t id = id_;
  world_->At(std::max(next_arrival_, world_->now()), [w = world_, id, why] {
    auto it = w->links_.find(id);
    if (it != w->links_.end()) it->second->Close(why);
  });
}

void SimLink::SetDeadline(uint64_t ms_from_now, const char* what) {
  deadline_ms_ = ms_from_now == 0 ? 0 : world_->now() + ms_from_now;
  deadline_what_ = what;
}

void SimLink::SetFrameLimit(uint32_t max_frame_bytes, const char* why) {
  max_frame_bytes_ = max_frame_bytes;
  frame_limit_why_ = why;
}

void SimLink::Close(const Status& why) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = why;
  if (peer_id_ != 0) {
    // The FIN: after the frames already sent.
    const uint64_t at = std::max(next_arrival_, world_->now() + options_.latency_ms);
    world_->At(at, [w = world_, to = peer_id_] {
      auto it = w->links_.find(to);
      if (it != w->links_.end()) {
        it->second->Close(Status(Code::kENETWORK, "connection closed by the peer"));
      }
    });
  }
  const uint64_t id = id_;
  world_->After(0, [w = world_, id] {
    auto it = w->links_.find(id);
    if (it != w->links_.end()) it->second->FinishClose();
  });
}

void SimLink::FinishClose() {
  Delegate* d = delegate_;
  delegate_ = nullptr;
  if (d) d->OnClosed(this, close_reason_);
  delete this;
}

void SimLink::Cut(bool tell_peer) {
  if (closing_) return;
  world_->cut_links_.insert(id_);
  SimLink* peer = peer_id_ != 0 ? Find(peer_id_) : nullptr;
  peer_id_ = 0;  // no FIN
  Close(Status(Code::kENETWORK, "connection reset"));
  if (peer != nullptr && tell_peer) peer->Cut(false);
}

void SimLink::Kill(const Status& why) {
  Close(why);  // the FIN (the kernel closes a dead process's sockets), then the deletion
  Delegate* d = delegate_;
  delegate_ = nullptr;
  if (d) d->OnClosed(this, why);
}

}  // namespace cairn::sim
