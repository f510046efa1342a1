// A deterministic world for the sync logic (docs/RELIABILITY.md "Deterministic simulation"):
// one thread, a virtual clock, a queue of events ordered by (time, order of scheduling), and
// in-memory links between sync::Exchange clients and a server::SessionHub. Everything that
// varies (latencies, faults, the workload) is drawn from one seeded generator, so a seed
// replays the same run event for event.
#ifndef CAIRN_TESTS_SIM_SIM_WORLD_H_
#define CAIRN_TESTS_SIM_SIM_WORLD_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "clock/hlc.h"
#include "net/conn.h"

namespace cairn::sim {

class SimLink;

class SimWorld {
 public:
  explicit SimWorld(uint64_t seed) : rng_(seed) {}
  ~SimWorld();
  SimWorld(const SimWorld&) = delete;
  SimWorld& operator=(const SimWorld&) = delete;

  uint64_t now() const { return now_; }
  std::mt19937_64& rng() { return rng_; }
  // A uniform draw in [lo, hi].
  uint64_t Uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  // A uniform index in [0, n) (n > 0).
  size_t Pick(size_t n) { return static_cast<size_t>(Uniform(0, n - 1)); }

  // Runs `fn` at `when` (not before now), after everything already scheduled for that time.
  void At(uint64_t when, std::function<void()> fn);
  void After(uint64_t delay, std::function<void()> fn) { At(now_ + delay, std::move(fn)); }
  // Runs the events due up to `until` (the clock ends there); false when the queue is empty.
  bool RunUntil(uint64_t until);
  // Frames sent on the world's links and not yet delivered (or dropped).
  size_t in_flight() const { return in_flight_; }
  // The live link with this id, or nullptr.
  SimLink* link(uint64_t id) const {
    auto it = links_.find(id);
    return it == links_.end() ? nullptr : it->second;
  }
  // A hash of every event run (its time and place in the queue) and every frame's size: two
  // runs with the same fingerprint did the same things at the same times.
  uint64_t fingerprint() const { return fingerprint_; }
  void Mix(uint64_t v) { fingerprint_ = (fingerprint_ ^ v) * 1099511628211ull; }

 private:
  friend class SimLink;
  // The links by id: events refer to links by id, so one that is gone is simply not found.
  std::map<uint64_t, SimLink*> links_;
  std::set<uint64_t> cut_links_;  // links whose frames in flight are lost
  uint64_t next_link_id_ = 1;
  size_t in_flight_ = 0;
  uint64_t fingerprint_ = 14695981039346656037ull;
  uint64_t now_ = 0;
  uint64_t order_ = 0;
  std::map<std::pair<uint64_t, uint64_t>, std::function<void()>> events_;
  std::mt19937_64 rng_;
};

// A Clock on the world's time: a fixed epoch plus the virtual ms plus this device's offset.
class SimClock final : public Clock {
 public:
  SimClock(SimWorld* world, int64_t offset_ms) : world_(world), offset_ms_(offset_ms) {}
  int64_t NowMs() override {
    return kEpochMs + static_cast<int64_t>(world_->now()) + offset_ms_;
  }
  static constexpr int64_t kEpochMs = 1767225600000;  // 2026-01-01

 private:
  SimWorld* world_;
  int64_t offset_ms_;
};

struct SimLinkOptions {
  uint64_t latency_ms = 5;       // one way
  uint64_t jitter_ms = 5;        // added per frame, uniform in [0, jitter]; order is kept
  uint32_t idle_timeout_ms = 60000;
  uint32_t tick_ms = 1000;
  size_t drained_bytes = 64u << 10;
};

// One end of an in-memory connection: frames arrive in order after the latency, verified the
// way net::Conn verifies them; a close reaches the peer after the frames sent before it (a FIN)
// unless the link is cut. Owned by the world's registry: deleted after its OnClosed.
class SimLink final : public net::Link {
 public:
  // A connected pair: `a` (the client's end, delegate `client`) and the server's end (its
  // delegate set by SessionHub::Attach), with the server's end seeing `client_ip` as its peer.
  // Both open after one latency (OnOpen) unless closed first.
  static std::pair<SimLink*, SimLink*> Pair(SimWorld* world, Delegate* client,
                                           const std::string& client_ip,
                                           const SimLinkOptions& options);
  // An end whose connection is refused: it closes with ENETWORK after one latency.
  static SimLink* Refused(SimWorld* world, Delegate* client, const SimLinkOptions& options);

  void Send(std::string frame) override;
  void SendErrorAndClose(Code code, const std::string& message) override;
  void CloseAfterSending(const Status& why) override;
  size_t queued_bytes() const override { return queued_; }
  void SetDeadline(uint64_t ms_from_now, const char* what) override;
  uint64_t last_send_ms() const override { return last_send_ms_; }
  void SetFrameLimit(uint32_t max_frame_bytes, const char* why) override;
  // Frames arrive whole here: no partial input is held to charge.
  void SetReadBudget(net::ReadBudget*) override {}
  void Close(const Status& why) override;
  bool closing() const override { return closing_; }
  uint64_t peer_id() const { return peer_id_; }
  const std::string& peer() const override { return peer_name_; }
  const std::string& peer_ip() const override { return peer_ip_; }
  uint64_t wire_bytes_out() const override { return bytes_out_; }
  uint64_t wire_bytes_in() const override { return bytes_in_; }

  // Faults. Cut: the connection breaks here (frames in flight either way are lost); the peer
  // hears of it only when `tell_peer` (else it stays half-open until its idle timeout, as
  // after a lost FIN). Kill: the process at this end died: its delegate hears OnClosed now (the
  // server's sessions must be closed before the hub goes), the peer gets the FIN.
  void Cut(bool tell_peer);
  uint64_t id() const { return id_; }
  void Kill(const Status& why);

  // Observers (the leak detector of sim_test.cc): each frame this end sends, as it is sent, and
  // each frame delivered to it, before its delegate sees it.
  std::function<void(const wire::Frame&)> on_send, on_deliver;

 private:
  SimLink(SimWorld* world, Delegate* delegate, const SimLinkOptions& options);
  ~SimLink() override;
  void Open();
  void Deliver(std::string frame);
  void PeerClosed(const Status& why);
  void Tick();
  void FinishClose();
  SimLink* Find(uint64_t id) const;
  friend class SimWorld;

  SimWorld* world_;
  SimLinkOptions options_;
  uint64_t id_;
  uint64_t peer_id_ = 0;       // 0: none (refused), or the peer is gone
  uint64_t next_arrival_ = 0;  // frames to the peer arrive in order, not before this
  size_t queued_ = 0;
  bool above_drained_ = false;
  bool closing_ = false;
  bool close_after_flush_ = false;  // SendErrorAndClose: closes once its frame has arrived
  uint64_t last_send_ms_ = 0, last_recv_ms_ = 0;
  uint64_t deadline_ms_ = 0;
  const char* deadline_what_ = "";
  uint32_t max_frame_bytes_;
  const char* frame_limit_why_ = "";
  Status close_reason_;
  std::string peer_name_, peer_ip_;
  uint64_t bytes_out_ = 0, bytes_in_ = 0;
};

}  // namespace cairn::sim

#endif  // CAIRN_TESTS_SIM_SIM_WORLD_H_
