// Deterministic simulation of sync (issue 7, docs/RELIABILITY.md "Deterministic simulation"):
// the real client exchange (sync::Exchange) and the real server sessions (server::SessionHub),
// on real SQLite files, over in-memory links on a virtual clock (tests/sim/sim_world.h). Each
// seed draws a fleet, its settings and a run: writes, counters and telemetry on every device,
// while connections are cut (both ways, or half-open), delayed, duplicated (a second process
// syncing the same file), and either side is killed and restarted. Then the network heals and
// the invariants are checked:
//   - every replica converges (per collection it reads) and a fresh replica gets the same;
//   - every write whose call returned is on the server once: each origin's log entries cover
//     its seqs 1..n without gap or overlap, and the counters equal the sum of the increments
//     that returned (an op applied twice or lost changes a sum);
//   - an op or record the server acknowledged survives the server's kills;
//   - every telemetry record appended is stored once; nothing stays queued; nothing refused.
// Every fourth seed runs with sync rules (docs/sync-rules.md): each device is a user whose
// token grants its own channel and some teams', writes documents whose owner and team fields
// move them between channels (some writes refused), and gets its grants changed (a renewal on
// the live session, or a new token at its next connection). A leak detector sees every frame
// the server sends and fails when one carries an op or a state of a document outside the
// receiver's view at that moment (or channel moves, or a leave naming a document it was never
// sent, never wrote, and that at the batch's cursor was in no channel of any token the device
// presented: docs/RELIABILITY.md "Deterministic simulation"); after the heal,
// each device holds exactly the documents of its view, as an admin newcomer has them, every
// counter equals the increments that returned less those refused, and each device's ops are
// either in the server's log or reported refused, never both.
// CAIRN_SIM_SEEDS (default 2000) seeds are spread over the shards; CAIRN_SIM_SEED=N replays
// one seed, printing its events; CAIRN_SIM_RULES=1 runs every seed with rules (set it for the
// replay of such a seed too).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "auth/jwt.h"
#include "oplog/json_codec.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "rules/rules.h"
#include "server/session_hub.h"
#include "server/sync_server.h"
#include "sim/sim_world.h"
#include "sync/exchange.h"

namespace cairn::sim {
namespace {

constexpr int kShards = 8;
constexpr const char* kStream = "telemetry";

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// The sync rules of the seeds that have them, and the secret their tokens are signed with.
constexpr const char* kRules = R"({
  "collections": {"a": {"channels": ["user:{owner}", "team:{team}"]},
                  "b": {"channels": ["user:{owner}", "team:{team}"]}},
  "grants": {"read":  ["user:{sub}", "team:{teams[]}"],
             "write": ["user:{sub}", "team:{teams[]}"]}})";
constexpr const char* kSecret = "the simulation's token secret, of 32 bytes or more";
const char* const kTeams[] = {"red", "blue", "green"};

// What a token grants, as the model reads kRules (not through rules::Rules): a document is in
// the view when its owner is the user or its team is one of the user's.
struct Grant {
  std::string user;
  std::set<std::string> teams;
  bool admin = false;

  bool Reads(const Fields& doc) const {
    if (admin) return true;
    auto text = [&](const char* field) {
      auto it = doc.find(field);
      return it != doc.end() && it->second.type() == ValueType::kString ? it->second.as_string()
                                                                        : std::string();
    };
    const std::string owner = text("owner"), team = text("team");
    return (!owner.empty() && owner == user) || (!team.empty() && teams.count(team) != 0);
  }
  // The same for a document in `channels` (as kRules names them).
  bool ReadsChannels(const std::vector<std::string>& channels) const {
    if (admin) return true;
    for (const std::string& c : channels) {
      if (c == "user:" + user || (c.rfind("team:", 0) == 0 && teams.count(c.substr(5)) != 0)) {
        return true;
      }
    }
    return false;
  }
  std::string Describe() const {
    std::string out = admin ? "admin" : "user " + user + ", teams";
    for (const std::string& t : teams) out += " " + t;
    return out;
  }
};

// What a seed's run checks against: what the app was told succeeded.
struct Model {
  std::map<std::string, int64_t> counters;  // "collection/key" -> sum of increments
  std::vector<uint64_t> ops;                // per device: local ops written (its last seq)
  std::vector<uint64_t> records;            // per device: telemetry records appended
  std::vector<uint64_t> durable;            // per device: the highest seq acknowledged
  std::vector<Grant> grants;                // with rules, per device: its newest token's
};

class Run;

// The server: a SessionHub on the run's files, killed and restarted at will.
class SimServer {
 public:
  SimServer(Run* run, server::ServerOptions options) : run_(run), options_(std::move(options)) {}
  bool up() const { return hub_ != nullptr; }
  server::SessionHub* hub() { return hub_.get(); }
  void Start();
  void Kill();
  // A client connects: the client's end of a new link (refused while the server is down).
  // `device`: whose (-1: the newcomer), for the leak detector.
  SimLink* Connect(net::Link::Delegate* client, const std::string& ip, const SimLinkOptions& link,
                   int device);

 private:
  Run* run_;
  server::ServerOptions options_;
  std::unique_ptr<server::SessionHub> hub_;
  uint64_t generation_ = 0;
  std::vector<uint64_t> ends_;  // the server's ends of links (ids; gone ones are skipped)
};

// A device: a replica file, its live sync, and at times a second process (a sidecar) running
// a once-exchange on the same file.
class SimDevice : public sync::Exchange::Owner {
 public:
  SimDevice(Run* run, int index, bool partial);
  void Start();
  void Kill();
  bool alive() const { return replica_ != nullptr; }
  void Write();
  void Append();
  void StartSidecar();
  // With rules: a new token, handed to the live session (`live`) or kept for the next Hello.
  void Renew(const std::string& token, bool live);
  void RenewNow() { Renew(options_.token, true); }
  int index() const { return index_; }
  // Both ends see the reset, or one end breaks and the other does not hear of it (half-open:
  // the server's session stays until its idle timeout, or the device's until its own).
  enum class Cut { kBoth, kDeviceEnd, kServerEnd };
  void CutLink(Cut how);
  bool Quiet(uint64_t head);
  std::string Describe();
  Replica* replica() { return replica_.get(); }
  bool partial() const { return partial_; }
  const ReplicaId& id() const { return id_; }
  const std::string& path() const { return path_; }

  void OnWelcomed() override {}
  void OnIdle(const Status&) override {}
  void OnLinkClosed(const Status& why) override;

 private:
  struct Sidecar;
  void Connect();
  void Durable(size_t i, uint64_t through);
  void DropSidecar();

  Run* run_;
  int index_;
  bool partial_;
  std::string path_, ip_;
  ReplicaId id_;
  SimClock clock_;
  sync::SyncOptions options_;
  std::unique_ptr<Replica> replica_;
  std::unique_ptr<sync::Exchange> ex_;
  uint64_t link_id_ = 0;  // the current link's id (0: none)
  uint64_t incarnation_ = 0;
  std::unique_ptr<Sidecar> sidecar_;
};

class Run {
 public:
  Run(uint64_t run_seed, const std::string& run_dir, bool print_events)
      : seed(run_seed), world(run_seed), dir(run_dir), verbose(print_events) {}
  void Trace(const std::string& line) {
    trace += std::to_string(world.now()) + " " + line + "\n";
    if (verbose) std::printf("%8llu %s\n", static_cast<unsigned long long>(world.now()),
                             line.c_str());
  }
  // Runs the seed; "" when every invariant holds, else what broke.
  std::string Go();

  uint64_t seed;
  SimWorld world;
  std::string dir;
  bool verbose;
  std::string trace;
  Model model;
  SimLinkOptions link;
  std::unique_ptr<SimClock> server_clock;
  std::unique_ptr<SimServer> server;
  std::vector<std::unique_ptr<SimDevice>> devices;
  std::vector<std::string> failures;
  void Fail(const std::string& what) {
    Trace("FAIL " + what);
    failures.push_back(what);
  }

  // Sync rules (every fourth seed): the tokens minted, whose they are; per server end of a
  // link, its device and the grant its session holds (from its Hello, then each Renew); per
  // device, the documents ("collection/key") it was ever sent or wrote.
  bool rules = false;
  bool force_rules = false;  // rules whatever the seed (RunSeed's with_rules)
  std::map<std::string, Grant> tokens;
  struct End {
    int device = -1;
    std::optional<Grant> grant;
  };
  std::map<uint64_t, End> ends;
  std::vector<std::set<std::string>> known;
  std::vector<std::vector<Grant>> presented;  // per device: the grant of every token it sent
  std::shared_ptr<const rules::Rules> rules_of_run;
  // Whether the document was, at `cursor`, in a channel that a grant `device` presented reads:
  // its channels then are those before its first move after `cursor`, else its channels now.
  bool MayHaveHeld(int device, const std::string& collection, const std::string& key,
                   uint64_t cursor);
  std::string Mint(const Grant& g);
  void WatchEnd(SimLink* end, int device);
  void CheckFrame(uint64_t end, const wire::Frame& frame);
  // The server's watermark for `origin` (from its state).
  uint64_t ServerThrough(const ReplicaId& origin) {
    for (const auto& o : server->hub()->store()->state()->Origins()) {
      if (o.id == origin) return o.through;
    }
    return 0;
  }

 private:
  void Chaos(uint64_t until);
  void WriteSomething();
  void Fault();
  void ChangeGrant(SimDevice* d);
  void CheckViews(Replica* reference);
  uint64_t chaos_end_ = 0;
  uint64_t base_latency_ = 0;  // the links' latency outside slow spells
  uint64_t spells_ = 0;        // slow spells begun
  bool Healed();
  void Check();
};

// ---- SimServer ----

void SimServer::Start() {
  if (hub_) return;
  const uint64_t gen = ++generation_;
  auto hub = server::SessionHub::Open(options_, [this, gen] {
    run_->world.After(0, [this, gen] {
      if (hub_ && generation_ == gen) hub_->RunTurn();
    });
  });
  if (!hub.ok()) {
    run_->Fail("server did not start: " + hub.status().ToString());
    return;
  }
  hub_ = std::move(hub.value());
  run_->Trace("server up, head " + std::to_string(hub_->store()->head()));
  // What was acknowledged before a kill is still there.
  for (size_t i = 0; i < run_->devices.size(); i++) {
    const uint64_t through = run_->ServerThrough(run_->devices[i]->id());
    if (through < run_->model.durable[i]) {
      run_->Fail("device " + std::to_string(i) + ": seqs up to " +
                 std::to_string(run_->model.durable[i]) +
                 " were acknowledged, the restarted server has " + std::to_string(through));
    }
  }
}

void SimServer::Kill() {
  if (!hub_) return;
  run_->Trace("server killed");
  for (uint64_t id : ends_) {
    if (SimLink* end = run_->world.link(id)) end->Kill(Status(Code::kECLOSED, "server killed"));
  }
  ends_.clear();
  hub_.reset();
  generation_++;
}

SimLink* SimServer::Connect(net::Link::Delegate* client, const std::string& ip,
                            const SimLinkOptions& link, int device) {
  if (!hub_) return SimLink::Refused(&run_->world, client, link);
  auto [a, b] = SimLink::Pair(&run_->world, client, ip, link);
  ends_.push_back(b->id());
  if (run_->rules) run_->WatchEnd(b, device);
  hub_->Attach(b);
  return a;
}

// ---- SimDevice ----

// A second process on the device's file: `cairn sync --once` while the app syncs live.
struct SimDevice::Sidecar : sync::Exchange::Owner {
  SimDevice* device;
  std::unique_ptr<Replica> replica;
  std::unique_ptr<sync::Exchange> ex;
  uint64_t link_id = 0;
  bool done = false;
  void OnWelcomed() override {}
  void OnIdle(const Status& result) override {
    device->run_->Trace("device " + std::to_string(device->index_) + " sidecar done: " +
                        result.ToString());
    done = true;
    if (SimLink* l = device->run_->world.link(link_id)) l->Close(Status::OK());
  }
  void OnLinkClosed(const Status&) override {
    link_id = 0;
    done = true;
  }
};

SimDevice::SimDevice(Run* run, int index, bool partial)
    : run_(run),
      index_(index),
      partial_(partial),
      path_(run->dir + "/device" + std::to_string(index) + ".cairn"),
      ip_("10.1.0." + std::to_string(index + 1)),
      clock_(&run->world, static_cast<int64_t>(run->world.Uniform(0, 4000)) - 2000) {
  unsigned char bytes[16] = {0};
  bytes[0] = 0xc0;
  bytes[15] = static_cast<unsigned char>(index + 1);
  ReplicaId::FromBytes(bytes, sizeof(bytes), &id_);
  options_.server = "sim:7000";
  if (partial_) options_.only = {"a"};
  if (run->rules) {
    Grant g;
    g.user = "u" + std::to_string(index);
    for (const char* team : kTeams) {
      if (run->world.Chance(0.4)) g.teams.insert(team);
    }
    run->model.grants[static_cast<size_t>(index)] = g;
    options_.token = run->Mint(g);
  }
  options_.max_batch_ops = static_cast<uint32_t>(run->world.Uniform(1, 40));
  options_.window = static_cast<uint32_t>(run->world.Uniform(1, 4));
  options_.conn.idle_timeout_ms = run->link.idle_timeout_ms;
}

void SimDevice::Start() {
  if (replica_) return;
  ReplicaOptions ro;
  ro.clock = &clock_;
  ro.new_id = id_;
  auto r = Replica::Open(path_, ro);
  if (!r.ok()) {
    run_->Fail("device " + std::to_string(index_) + " did not open: " + r.status().ToString());
    return;
  }
  replica_ = std::move(r.value());
  ex_ = std::make_unique<sync::Exchange>(replica_.get(), options_, this);
  const size_t i = static_cast<size_t>(index_);
  ex_->durable_cb = [this, i](uint64_t through) { Durable(i, through); };
  ex_->LoadStatus();
  incarnation_++;
  run_->Trace("device " + std::to_string(index_) + " up");
  Connect();
}

// The durable callback (of the live sync or the sidecar): never beyond what was written.
void SimDevice::Durable(size_t i, uint64_t through) {
  Model& m = run_->model;
  if (through > m.ops[i]) {
    run_->Fail("device " + std::to_string(i) + ": acknowledged through " +
               std::to_string(through) + ", only " + std::to_string(m.ops[i]) + " written");
  }
  m.durable[i] = std::max(m.durable[i], through);
}

void SimDevice::Connect() {
  if (!ex_ || link_id_ != 0) return;
  SimLink* link = run_->server->Connect(ex_.get(), ip_, run_->link, index_);
  link_id_ = link->id();
  if (run_->verbose) {
    // A replay shows what each Ack said.
    link->on_deliver = [this](const wire::Frame& f) {
      if (const char* watch = std::getenv("CAIRN_SIM_WATCH")) {
        // CAIRN_SIM_WATCH=collection/key: what reaches the device of that document.
        auto show = [&](const char* what, const wire::OpBatch* b) {
          if (b == nullptr) return;
          (void)protocol::DecodeBatch(*b, {}, [&](const Op& op) {
            if (op.collection + "/" + op.key != watch) return Status::OK();
            run_->Trace("device " + std::to_string(index_) + " gets " + what + " op " +
                        op.id.origin.Hex().substr(30) + ":" + std::to_string(op.id.seq) + " " +
                        op.field +
                        (op.kind == OpKind::kIncrement ? " +" + std::to_string(op.delta) : ""));
            return Status::OK();
          });
        };
        if (const wire::OpBatch* b = f.body_as_OpBatch()) {
          show("log", b);
          show("enter", b->enter());
          if (b->leave()) {
            for (const wire::DocRef* d : *b->leave()) {
              if (d && d->collection() && d->key() &&
                  d->collection()->str() + "/" + d->key()->str() == watch) {
                run_->Trace("device " + std::to_string(index_) + " gets leave at cursor " +
                            std::to_string(b->cursor()));
              }
            }
          }
        }
        if (const wire::SnapshotChunk* chunk = f.body_as_SnapshotChunk()) {
          show("snapshot", chunk->batch());
        }
      }
      const wire::Ack* ack = f.body_as_Ack();
      if (ack == nullptr) return;
      std::string line = "device " + std::to_string(index_) + " ack:";
      if (ack->entries()) {
        for (const auto* e : *ack->entries()) {
          if (protocol::FromWire(e->origin()) == id_)
            line += " through " + std::to_string(e->through_seq());
        }
      }
      if (ack->refused()) {
        for (const wire::Refusal* r : *ack->refused()) {
          line +=
              " refused " + std::to_string(r->first_seq()) + ".." + std::to_string(r->last_seq());
        }
      }
      run_->Trace(line);
    };
  }
  ex_->Begin(link, /*once=*/false);
}

void SimDevice::OnLinkClosed(const Status& why) {
  run_->Trace("device " + std::to_string(index_) + " disconnected: " + why.ToString());
  link_id_ = 0;
  const uint64_t inc = incarnation_;
  run_->world.After(run_->world.Uniform(20, 3000), [this, inc] {
    if (incarnation_ == inc) Connect();
  });
}

void SimDevice::Kill() {
  if (!replica_) return;
  run_->Trace("device " + std::to_string(index_) + " killed");
  if (SimLink* l = run_->world.link(link_id_)) {
    l->set_delegate(nullptr);
    l->Kill(Status(Code::kECLOSED, "device killed"));
  }
  link_id_ = 0;
  DropSidecar();
  ex_.reset();
  replica_.reset();
  incarnation_++;
}

void SimDevice::CutLink(Cut how) {
  SimLink* l = run_->world.link(link_id_);
  if (l == nullptr) return;
  static const char* const kWhat[] = {" link cut", " link half-open (device end broken)",
                                      " link half-open (server end broken)"};
  run_->Trace("device " + std::to_string(index_) + kWhat[static_cast<int>(how)]);
  if (how == Cut::kServerEnd) {
    if (SimLink* server_end = run_->world.link(l->peer_id())) server_end->Cut(false);
  } else {
    l->Cut(how == Cut::kBoth);
  }
}

// The sidecar process ends (killed, if it still runs).
void SimDevice::DropSidecar() {
  if (!sidecar_) return;
  if (SimLink* l = run_->world.link(sidecar_->link_id)) {
    l->set_delegate(nullptr);
    l->Kill(Status(Code::kECLOSED, "sidecar ended"));
  }
  sidecar_.reset();
}

void SimDevice::StartSidecar() {
  if (!replica_ || (sidecar_ && !sidecar_->done)) return;
  DropSidecar();
  ReplicaOptions ro;
  ro.clock = &clock_;
  auto r = Replica::Open(path_, ro);
  if (!r.ok()) {
    run_->Fail("sidecar did not open: " + r.status().ToString());
    return;
  }
  auto s = std::make_unique<Sidecar>();
  s->device = this;
  s->replica = std::move(r.value());
  s->ex = std::make_unique<sync::Exchange>(s->replica.get(), options_, s.get());
  const size_t i = static_cast<size_t>(index_);
  s->ex->durable_cb = [this, i](uint64_t through) { Durable(i, through); };
  s->ex->LoadStatus();
  SimLink* link = run_->server->Connect(s->ex.get(), ip_, run_->link, index_);
  s->link_id = link->id();
  s->ex->Begin(link, /*once=*/true);
  sidecar_ = std::move(s);
  run_->Trace("device " + std::to_string(index_) + " sidecar syncs");
}

void SimDevice::Write() {
  if (!replica_) return;
  SimWorld& w = run_->world;
  const std::vector<std::string> colls =
      partial_ ? std::vector<std::string>{"a"} : std::vector<std::string>{"a", "b"};
  WriteBatch batch;
  std::map<std::string, int64_t> increments;
  uint64_t n = w.Chance(0.15) ? w.Uniform(2, 6) : 1;
  uint64_t ops = 0;
  // With rules, a document's owner and team (which put it in channels): mostly its writer's
  // own, at times a team the writer is not in (refused), at times a move to another team.
  auto place = [&](const std::string& coll, const std::string& key) {
    if (!run_->rules) return;
    if (w.Chance(0.8)) {
      batch.Set(coll, key, "owner", Value::String("u" + std::to_string(index_)));
      ops++;
    }
    if (w.Chance(0.5)) {
      batch.Set(coll, key, "team", Value::String(kTeams[w.Pick(3)]));
      ops++;
    }
  };
  for (uint64_t k = 0; k < n; k++) {
    const std::string& coll = colls[w.Pick(colls.size())];
    const uint64_t kind = w.Uniform(0, run_->rules ? 10 : 9);
    std::string key;
    if (kind < 5) {
      key = "k" + std::to_string(w.Uniform(0, 9));
      const auto v = static_cast<int64_t>(w.Uniform(0, 1000));
      batch.Set(coll, key, "v", Value::Int(v));
      place(coll, key);
      if (run_->verbose) {
        run_->Trace("device " + std::to_string(index_) + " sets " + coll + "/" + key + " " +
                    std::to_string(v));
      }
    } else if (kind < 8) {
      key = "n" + std::to_string(w.Uniform(0, 3));
      const auto delta = static_cast<int64_t>(w.Uniform(1, 5));
      batch.Increment(coll, key, "count", delta);
      increments[coll + "/" + key] += delta;
      place(coll, key);
      if (run_->verbose && run_->rules) {
        run_->Trace("device " + std::to_string(index_) + " increments " + coll + "/" + key +
                    " by " + std::to_string(delta) + " as op " +
                    std::to_string(run_->model.ops[static_cast<size_t>(index_)] + k + 1));
      }
    } else if (kind < 10) {
      key = "k" + std::to_string(w.Uniform(0, 9));
      batch.Delete(coll, key);
      if (run_->verbose) run_->Trace("device " + std::to_string(index_) + " deletes " + coll + "/" + key);
    } else {
      // A move: another team, whoever owns it.
      key = (w.Chance(0.5) ? "k" : "n") + std::to_string(w.Uniform(0, 3));
      batch.Set(coll, key, "team", Value::String(kTeams[w.Pick(3)]));
      if (run_->verbose)
        run_->Trace("device " + std::to_string(index_) + " moves " + coll + "/" + key);
    }
    if (run_->rules) run_->known[static_cast<size_t>(index_)].insert(coll + "/" + key);
  }
  n += ops;
  Status s = replica_->Write(batch).status();
  if (!s.ok()) {
    run_->Fail("device " + std::to_string(index_) + " write failed: " + s.ToString());
    return;
  }
  const size_t i = static_cast<size_t>(index_);
  run_->model.ops[i] += n;
  for (const auto& [k, d] : increments) run_->model.counters[k] += d;
  ex_->Push();
}

void SimDevice::Renew(const std::string& token, bool live) {
  options_.token = token;
  if (!ex_) return;
  ex_->SetToken(token);
  if (live) ex_->SendRenewal();
}

void SimDevice::Append() {
  if (!replica_) return;
  const size_t i = static_cast<size_t>(index_);
  Fields f;
  f["n"] = Value::Int(static_cast<int64_t>(run_->model.records[i] + 1));
  auto r = replica_->Append(kStream, f);
  if (!r.ok()) {
    run_->Fail("device " + std::to_string(index_) + " append failed: " + r.status().ToString());
    return;
  }
  run_->model.records[i]++;
  ex_->Push();
}

// Everything local is acknowledged and the server has nothing more for it.
bool SimDevice::Quiet(uint64_t head) {
  if (!ex_ || !ex_->welcomed || link_id_ == 0 || !ex_->caught_up || !ex_->inflight.empty() ||
      !ex_->stream_inflight.empty() || ex_->cursor != head) {
    return false;
  }
  if (sidecar_ && !sidecar_->done) return false;
  // A link whose server end broke unheard (half-open) is not quiet: it times out first.
  SimLink* mine = run_->world.link(link_id_);
  SimLink* theirs = mine ? run_->world.link(mine->peer_id()) : nullptr;
  if (theirs == nullptr || theirs->closing()) return false;
  auto pending = replica_->PendingOps();
  auto queued = SyncAccess(*replica_).QueuedRecords();
  return pending.ok() && *pending == 0 && queued.ok() && *queued == 0;
}

std::string SimDevice::Describe() {
  std::string out = "device " + std::to_string(index_) + ":";
  if (!ex_) return out + " down";
  auto pending = replica_->PendingOps();
  auto queued = SyncAccess(*replica_).QueuedRecords();
  out += " link " + std::to_string(link_id_) + (ex_->welcomed ? " welcomed" : "") +
         (ex_->caught_up ? " caught-up" : "") + " cursor " + std::to_string(ex_->cursor) +
         " inflight " + std::to_string(ex_->inflight.size()) + "/" +
         std::to_string(ex_->stream_inflight.size()) + " pending " +
         std::to_string(pending.ok() ? *pending : -1) + " queued " +
         std::to_string(queued.ok() ? *queued : 0) +
         (sidecar_ && !sidecar_->done ? " sidecar running" : "");
  return out;
}

// ---- Run ----

std::string Run::Mint(const Grant& g) {
  auth::Claims c;
  c.subject = g.admin ? "admin" : g.user;
  c.expires_s = SimClock::kEpochMs / 1000 + 365 * 86400;
  c.admin = g.admin;
  c.write = {kStream};  // streams are not under sync rules: the token's own permission
  c.values["teams"] = auth::ClaimValue{true, {g.teams.begin(), g.teams.end()}};
  std::string token = auth::MintToken(c, kSecret);
  tokens[token] = g;
  return token;
}

// The leak detector's eyes on the server's end of a link: the grant its session holds (from
// the token of the Hello, then of each Renew: the session takes it before it sends anything
// more), and every frame it sends.
void Run::WatchEnd(SimLink* end, int device) {
  const uint64_t id = end->id();
  ends[id].device = device;
  end->on_deliver = [this, id](const wire::Frame& f) {
    const flatbuffers::String* token = nullptr;
    if (const wire::Hello* hello = f.body_as_Hello()) token = hello->token();
    if (const wire::Renew* renew = f.body_as_Renew()) token = renew->token();
    if (token == nullptr) return;
    auto t = tokens.find(token->str());
    if (t == tokens.end()) {
      Fail("a client sent a token the run never minted");
      return;
    }
    ends[id].grant = t->second;
    if (ends[id].device >= 0) presented[static_cast<size_t>(ends[id].device)].push_back(t->second);
  };
  end->on_send = [this, id](const wire::Frame& f) { CheckFrame(id, f); };
}

void Run::CheckFrame(uint64_t end_id, const wire::Frame& frame) {
  if (!server->up()) return;
  const End& end = ends[end_id];
  const std::string who = end.device < 0 ? "the newcomer" : "device " + std::to_string(end.device);
  std::set<std::string>* had = end.device < 0 ? nullptr : &known[static_cast<size_t>(end.device)];
  store::ReplicaStore* state = server->hub()->store()->state();
  auto check_op = [&](const char* what, const Op& op) -> Status {
    const std::string doc = op.collection + "/" + op.key;
    auto fields = state->GetDoc(op.collection, op.key);
    if (!fields.ok()) return fields.status();
    if (!end.grant || !end.grant->Reads(fields->has_value() ? **fields : Fields())) {
      Fail("leak: " + std::string(what) + " to " + who + " (" +
           (end.grant ? end.grant->Describe() : "no grant yet") + ") carries " + doc +
           ", outside its view");
    }
    if (had) had->insert(doc);
    return Status::OK();
  };
  auto check_batch = [&](const char* what, const wire::OpBatch* b) {
    if (b == nullptr) return;
    Status st = protocol::DecodeBatch(*b, {}, [&](const Op& op) { return check_op(what, op); });
    if (!st.ok()) Fail(std::string(what) + " to " + who + " does not decode: " + st.ToString());
  };
  if (const wire::SnapshotChunk* chunk = frame.body_as_SnapshotChunk()) {
    check_batch("a snapshot chunk", chunk->batch());
    return;
  }
  const wire::OpBatch* b = frame.body_as_OpBatch();
  if (b == nullptr) return;
  check_batch("a log batch", b);
  check_batch("an entering state", b->enter());
  if (b->moves() != nullptr && b->moves()->size() > 0) {
    Fail("a batch to " + who + " carries channel moves");
  }
  if (b->leave() != nullptr && had) {
    for (const wire::DocRef* d : *b->leave()) {
      if (d == nullptr || d->collection() == nullptr || d->key() == nullptr) {
        Fail("a batch to " + who + " names a leaving document without its name");
        continue;
      }
      const std::string doc = d->collection()->str() + "/" + d->key()->str();
      // A leave of a change of view names what the device may hold at its cursor, in any view
      // it may be in there (the server cannot know what a cut session delivered).
      if (had->count(doc) == 0 &&
          !MayHaveHeld(end.device, d->collection()->str(), d->key()->str(), b->cursor())) {
        Fail("leak: a batch to " + who + " names " + doc +
             ", never its, in no view it had at cursor " + std::to_string(b->cursor()));
      }
    }
  }
}

bool Run::MayHaveHeld(int device, const std::string& collection, const std::string& key,
                      uint64_t cursor) {
  server::ServerStore* store = server->hub()->store();
  // (The moves of a trimmed log are gone, so this cannot be told: a session the trim passes is
  // pumped at once and walks past it, or is rebased, which names no leaves; one still below
  // the floor when its view changes is let through.)
  if (cursor < store->floor()) return true;
  std::optional<std::vector<std::string>> then;
  for (uint64_t at = cursor; !then && at < store->head();) {
    uint64_t next = at;
    Status st = store->ReadLog(at, 256, [&](const server::LogEntry& e) -> Status {
      next = e.cursor;
      CAIRN_ASSIGN_OR_RETURN(auto moves, protocol::DecodeMovesFrame(e.batch));
      for (protocol::ChannelMove& m : moves) {
        if (!then && m.collection == collection && m.key == key) then = std::move(m.before);
      }
      return then ? Status(Code::kEBUSY, "found") : Status::OK();
    });
    if (!st.ok() && !then) {
      Fail("reading the log: " + st.ToString());
      return true;
    }
    if (next == at) break;
    at = next;
  }
  if (!then) {
    auto fields = store->state()->GetDoc(collection, key);
    if (!fields.ok()) {
      Fail("reading " + collection + "/" + key + ": " + fields.status().ToString());
      return true;
    }
    then = rules_of_run->Channels(collection, key, fields->has_value() ? **fields : Fields());
  }
  for (const Grant& g : presented[static_cast<size_t>(device)]) {
    if (g.ReadsChannels(*then)) return true;
  }
  return false;
}

// A user joins or leaves a team: a new token, renewed on the live session or kept for the next
// connection.
void Run::ChangeGrant(SimDevice* d) {
  Grant& g = model.grants[static_cast<size_t>(d->index())];
  const std::string team = kTeams[world.Pick(3)];
  if (!g.teams.erase(team)) g.teams.insert(team);
  const bool live = world.Chance(0.6);
  Trace("device " + std::to_string(d->index()) + " now " + g.Describe() +
        (live ? " (renewed live)" : " (next connection)"));
  d->Renew(Mint(g), live);
}

std::string Run::Go() {
  SimWorld& w = world;
  // Every fourth seed, or every one with CAIRN_SIM_RULES=1 (the long run of sync rules).
  rules = seed % 4 == 0 || force_rules || EnvU64("CAIRN_SIM_RULES", 0) != 0;
  link.latency_ms = base_latency_ = w.Uniform(1, 40);
  link.jitter_ms = w.Uniform(0, 20);
  link.idle_timeout_ms = static_cast<uint32_t>(w.Uniform(5, 30) * 1000);
  link.drained_bytes = (w.Pick(16) + 1) << 10;
  server::ServerOptions so;
  so.db_path = dir + "/server.db";
  so.max_queued_bytes = link.drained_bytes * 2;
  so.max_batch_ops = static_cast<uint32_t>(w.Uniform(1, 64));
  so.window_batches = static_cast<uint32_t>(w.Uniform(1, 8));
  so.snapshot_docs_per_turn = w.Pick(8) + 1;
  const bool trims = w.Chance(0.3);
  so.store.keep_log_ops = trims ? w.Uniform(5, 100) : 1000000;
  server_clock = std::make_unique<SimClock>(&world, 0);
  so.store.clock = server_clock.get();
  so.log = [this](const std::string& m) {
    if (verbose) Trace("server: " + m);
  };
  if (rules) {
    auto parsed = rules::Rules::Parse(kRules);
    if (!parsed.ok()) return "the rules: " + parsed.status().ToString();
    so.rules = std::make_shared<const rules::Rules>(std::move(parsed).value());
    rules_of_run = so.rules;
    so.token_secret = kSecret;
  }
  const int n = static_cast<int>(w.Uniform(2, 4));
  model.ops.assign(static_cast<size_t>(n), 0);
  model.records.assign(static_cast<size_t>(n), 0);
  model.durable.assign(static_cast<size_t>(n), 0);
  model.grants.assign(static_cast<size_t>(n), Grant());
  known.assign(static_cast<size_t>(n), {});
  presented.assign(static_cast<size_t>(n), {});
  server = std::make_unique<SimServer>(this, so);
  for (int i = 0; i < n; i++) {
    devices.push_back(std::make_unique<SimDevice>(this, i, i > 0 && w.Chance(0.25)));
  }
  Trace("seed " + std::to_string(seed) + ": " + std::to_string(n) + " devices" +
        (rules ? " with sync rules" : "") + ", latency " + std::to_string(link.latency_ms) + "+" +
        std::to_string(link.jitter_ms) + " ms, keep " + std::to_string(so.store.keep_log_ops) +
        " ops");
  server->Start();
  for (auto& d : devices) d->Start();
  const uint64_t chaos_end = w.Uniform(10, 40) * 1000;
  Chaos(chaos_end);
  // Heal: no more faults or writes; everything up; with rules, each device's newest token in
  // force (one kept for the next connection is renewed on the live session).
  Trace("heal");
  link.latency_ms = base_latency_;
  spells_++;
  server->Start();
  for (auto& d : devices) {
    d->Start();
    if (rules) d->RenewNow();
  }
  const uint64_t limit = w.now() + 900000;
  while (failures.empty() && !Healed()) {
    if (w.now() >= limit) {
      std::string state = "head " + std::to_string(server->hub()->store()->head()) + ", " +
                          std::to_string(world.in_flight()) + " frames in flight";
      for (auto& d : devices) state += "; " + d->Describe();
      Fail("no quiescence 900 s after the faults stopped: " + state);
      break;
    }
    w.RunUntil(w.now() + 250);
  }
  if (failures.empty()) Check();
  Trace("end: fingerprint " + std::to_string(world.fingerprint()));
  // Close everything before the files go.
  for (auto& d : devices) d->Kill();
  server->Kill();
  w.RunUntil(w.now() + 1);
  std::string out;
  for (const auto& f : failures) out += f + "\n";
  return out;
}

void Run::Chaos(uint64_t until) {
  chaos_end_ = until;
  world.After(world.Uniform(0, 200), [this] { WriteSomething(); });
  world.After(world.Uniform(200, 3000), [this] { Fault(); });
  world.RunUntil(until);
}

// The workload: a write or a record on a random device, again and again until the chaos ends.
void Run::WriteSomething() {
  SimWorld& w = world;
  if (w.now() >= chaos_end_) return;
  SimDevice* d = devices[w.Pick(devices.size())].get();
  if (w.Chance(0.2)) {
    d->Append();
  } else {
    d->Write();
  }
  w.After(w.Uniform(10, 400), [this] { WriteSomething(); });
}

// The faults, at random intervals until the chaos ends.
void Run::Fault() {
  SimWorld& w = world;
  if (w.now() >= chaos_end_) return;
  const uint64_t kind = w.Uniform(0, 99);
  SimDevice* d = devices[w.Pick(devices.size())].get();
  if (kind < 28) {
    d->CutLink(SimDevice::Cut::kBoth);
  } else if (kind < 38) {
    d->CutLink(SimDevice::Cut::kDeviceEnd);
  } else if (kind < 46) {
    d->CutLink(SimDevice::Cut::kServerEnd);
  } else if (kind < 60) {
    d->Kill();
    w.After(w.Uniform(10, 5000), [d] { d->Start(); });
  } else if (kind < 72) {
    server->Kill();
    w.After(w.Uniform(10, 5000), [this] { server->Start(); });
  } else if (kind < 84) {
    // With rules, a grant changes instead: a sidecar syncing the same file under an older
    // token would hold another view than the live session's (not modelled).
    if (rules) {
      ChangeGrant(d);
    } else {
      d->StartSidecar();
    }
  } else {
    // A slow spell: new links get a long latency for a while.
    link.latency_ms = w.Uniform(200, 3000);
    Trace("latency " + std::to_string(link.latency_ms) + " ms");
    const uint64_t spell = ++spells_;
    w.After(w.Uniform(1000, 8000), [this, spell] {
      if (spell == spells_) link.latency_ms = base_latency_;
    });
  }
  w.After(w.Uniform(100, 4000), [this] { Fault(); });
}

bool Run::Healed() {
  // (Pings may always be in flight on a slow link: the devices' state says when all is done.)
  if (!server->up()) return false;
  const uint64_t head = server->hub()->store()->head();
  for (auto& d : devices) {
    if (!d->Quiet(head)) return false;
  }
  return true;
}

void Run::Check() {
  Trace("check: head " + std::to_string(server->hub()->store()->head()));
  if (verbose) {
    for (auto& d : devices) Trace(d->Describe());
  }
  const size_t n = devices.size();
  // Convergence: per collection, every device that reads it has the same digest.
  std::map<std::string, std::string> reference;  // from the full devices
  std::vector<std::map<std::string, std::string>> digests(n);
  for (size_t i = 0; i < n; i++) {
    auto d = devices[i]->replica()->CollectionDigests();
    if (!d.ok()) {
      Fail("digests: " + d.status().ToString());
      return;
    }
    digests[i] = *d;
  }
  reference = digests[0];
  for (size_t i = 1; i < n && !rules; i++) {  // (with rules, each holds its own view)
    for (const std::string c : {"a", "b"}) {
      if (devices[i]->partial() && c != std::string("a")) continue;
      if (digests[i][c] != reference[c]) {
        Fail("device " + std::to_string(i) + " differs from device 0 in '" + c + "'");
      }
    }
  }
  // Counters: the sums of the increments that returned (with rules: CheckViews).
  for (size_t i = 0; i < n && !rules; i++) {
    for (const auto& [ck, sum] : model.counters) {
      const std::string coll = ck.substr(0, ck.find('/'));
      if (devices[i]->partial() && coll != "a") continue;
      auto doc = devices[i]->replica()->Get(coll, ck.substr(ck.find('/') + 1));
      int64_t got = 0;
      if (doc.ok() && doc->has_value()) {
        auto f = (*doc)->find("count");
        if (f != (*doc)->end() && f->second.type() == ValueType::kInt) got = f->second.as_int();
      }
      if (got != sum) {
        Fail("device " + std::to_string(i) + ": counter " + ck + " is " + std::to_string(got) +
             ", the increments that returned sum to " + std::to_string(sum));
      }
    }
    int rejected = 0;
    (void)devices[i]->replica()->Rejected([&](const RejectedOp&) {
      rejected++;
      return Status::OK();
    });
    if (rejected > 0) Fail("device " + std::to_string(i) + ": ops refused");
  }
  // The server: each origin's seqs once, all of them.
  server::ServerStore* store = server->hub()->store();
  std::map<ReplicaId, uint64_t> next;  // origin -> the next seq expected in the log
  std::map<ReplicaId, std::set<uint64_t>> logged;  // origin -> the seqs of its ops logged
  const bool whole_log = store->floor() == 0;
  Status st = store->ReadLog(0, 1u << 30, [&](const server::LogEntry& e) -> Status {
    uint64_t& expect = next[e.origin];
    if (expect == 0) expect = whole_log ? 1 : e.first_seq;
    if (e.first_seq != expect || e.last_seq < e.first_seq) {
      Fail("log entry " + std::to_string(e.cursor) + " of " + e.origin.Hex() + " covers " +
           std::to_string(e.first_seq) + ".." + std::to_string(e.last_seq) + ", expected from " +
           std::to_string(expect));
    }
    expect = e.last_seq + 1;
    if (!rules) return Status::OK();
    return protocol::DecodeBatchFrame(e.batch, "log entry", [&](const Op& op) {
      logged[op.id.origin].insert(op.id.seq);
      return Status::OK();
    });
  });
  if (!st.ok()) Fail("reading the log: " + st.ToString());
  // With rules: each op of a device is in the log or reported refused to it, never both.
  for (size_t i = 0; i < n && rules && whole_log; i++) {
    std::set<uint64_t> refused;
    (void)devices[i]->replica()->Rejected([&](const RejectedOp& r) {
      refused.insert(r.op.id.seq);
      return Status::OK();
    });
    const std::set<uint64_t>& in_log = logged[devices[i]->id()];
    for (uint64_t seq = 1; seq <= model.ops[i]; seq++) {
      const bool l = in_log.count(seq) != 0, r = refused.count(seq) != 0;
      if (l == r) {
        Fail("device " + std::to_string(i) + ": op " + std::to_string(seq) +
             (l ? " is in the log and reported refused"
                : " is neither in the log nor reported refused"));
        if (verbose) {
          std::string list = "refused:";
          for (uint64_t x : refused) list += " " + std::to_string(x);
          list += "; logged:";
          for (uint64_t x : in_log) list += " " + std::to_string(x);
          Trace(list);
        }
        break;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    const ReplicaId& id = devices[i]->id();
    if (ServerThrough(id) != model.ops[i]) {
      Fail("device " + std::to_string(i) + " wrote " + std::to_string(model.ops[i]) +
           " ops, the server has " + std::to_string(ServerThrough(id)));
    }
    if (whole_log && model.ops[i] > 0 && next[id] != model.ops[i] + 1) {
      Fail("device " + std::to_string(i) + ": the log ends at seq " +
           std::to_string(next[id] - 1) + " of " + std::to_string(model.ops[i]));
    }
  }
  // Telemetry: every record stored once (the table's key is (origin, seq)).
  sqlite3* db = nullptr;
  const std::string streams = dir + "/server.db.streams";
  uint64_t total = 0;
  for (uint64_t r : model.records) total += r;
  if (total > 0) {
    if (sqlite3_open_v2(streams.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      Fail("cannot open the server's stream file");
    } else {
      for (size_t i = 0; i < n; i++) {
        sqlite3_stmt* q = nullptr;
        const std::string sql = std::string("SELECT count(*), count(DISTINCT n), min(seq), "
                                            "max(seq) FROM ") + kStream + " WHERE origin = ?";
        sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr);
        const std::string hex = devices[i]->id().Hex();
        sqlite3_bind_text(q, 1, hex.c_str(), -1, SQLITE_TRANSIENT);
        if (q && sqlite3_step(q) == SQLITE_ROW) {
          const auto count = static_cast<uint64_t>(sqlite3_column_int64(q, 0));
          const auto distinct = static_cast<uint64_t>(sqlite3_column_int64(q, 1));
          const auto max_seq = static_cast<uint64_t>(sqlite3_column_int64(q, 3));
          if (count != model.records[i] || distinct != count || max_seq != count) {
            Fail("device " + std::to_string(i) + " appended " + std::to_string(model.records[i]) +
                 " records, the server has " + std::to_string(count) + " (" +
                 std::to_string(distinct) + " distinct, last seq " + std::to_string(max_seq) +
                 ")");
          }
        } else {
          Fail(std::string("cannot query the stream table: ") + sqlite3_errmsg(db));
        }
        sqlite3_finalize(q);
      }
      sqlite3_close(db);
    }
  }
  // A newcomer gets the same state.
  {
    class Once : public sync::Exchange::Owner {
     public:
      bool done = false;
      Status result;
      void OnWelcomed() override {}
      void OnIdle(const Status& s) override {
        done = true;
        result = s;
      }
      void OnLinkClosed(const Status& why) override {
        if (!done) result = why;
        done = true;
      }
    } owner;
    ReplicaOptions ro;
    SimClock clock(&world, 0);
    ro.clock = &clock;
    auto fresh = Replica::Open(dir + "/newcomer.cairn", ro);
    if (!fresh.ok()) {
      Fail("newcomer: " + fresh.status().ToString());
      return;
    }
    sync::SyncOptions options;
    options.conn.idle_timeout_ms = link.idle_timeout_ms;
    if (rules) {
      Grant admin;
      admin.admin = true;
      options.token = Mint(admin);
    }
    sync::Exchange ex(fresh->get(), options, &owner);
    ex.LoadStatus();
    SimLink* l = server->Connect(&ex, "10.2.0.1", link, -1);
    const uint64_t id = l->id();
    ex.Begin(l, /*once=*/true);
    const uint64_t limit = world.now() + 600000;
    while (!owner.done && world.now() < limit) world.RunUntil(world.now() + 100);
    if (!owner.done || !owner.result.ok()) {
      Fail("newcomer's sync: " + (owner.done ? owner.result.ToString() : "did not finish"));
    } else if (rules) {
      CheckViews(fresh->get());
    } else {
      auto d = (*fresh)->CollectionDigests();
      for (const std::string c : {"a", "b"}) {
        if (!d.ok() || (*d)[c] != reference[c]) {
          Fail("the newcomer differs from device 0 in '" + c + "'");
          if (verbose) {
            std::string mine, theirs;
            (void)(*fresh)->Dump([&](std::string_view p) { mine += p; });
            (void)devices[0]->replica()->Dump([&](std::string_view p) { theirs += p; });
            std::printf("newcomer: %s\ndevice 0: %s\n", mine.c_str(), theirs.c_str());
          }
        }
      }
    }
    if (SimLink* left = world.link(id)) {
      left->set_delegate(nullptr);
      left->Kill(Status::OK());
    }
    world.RunUntil(world.now() + 1);
  }
  // No session left behind: once the idle timeout has passed, one per device.
  world.RunUntil(world.now() + link.idle_timeout_ms + 2 * link.tick_ms);
  if (server->hub()->session_count() != devices.size()) {
    Fail("the server has " + std::to_string(server->hub()->session_count()) + " sessions for " +
         std::to_string(devices.size()) + " devices");
  }
}

// With rules, after the heal, against an admin newcomer's replica (the server's state): the
// counters hold the increments that returned less those refused, and each device holds exactly
// the documents of its newest token's view, as the server has them.
void Run::CheckViews(Replica* reference) {
  std::map<std::string, int64_t> expected = model.counters;
  for (auto& d : devices) {
    (void)d->replica()->Rejected([&](const RejectedOp& r) {
      if (r.op.kind == OpKind::kIncrement) expected[r.op.collection + "/" + r.op.key] -= r.op.delta;
      return Status::OK();
    });
  }
  for (const auto& [ck, sum] : expected) {
    auto doc = reference->Get(ck.substr(0, ck.find('/')), ck.substr(ck.find('/') + 1));
    int64_t got = 0;
    if (doc.ok() && doc->has_value()) {
      auto f = (*doc)->find("count");
      if (f != (*doc)->end() && f->second.type() == ValueType::kInt) got = f->second.as_int();
    }
    if (got != sum) {
      Fail("counter " + ck + " is " + std::to_string(got) + " on the server; the increments " +
           "that returned, less those refused, sum to " + std::to_string(sum));
    }
  }
  std::vector<std::string> keys;
  for (int k = 0; k < 10; k++) keys.push_back("k" + std::to_string(k));
  for (int k = 0; k < 4; k++) keys.push_back("n" + std::to_string(k));
  for (size_t i = 0; i < devices.size(); i++) {
    const Grant& g = model.grants[i];
    for (const std::string coll : {"a", "b"}) {
      if (devices[i]->partial() && coll != "a") continue;
      for (const std::string& key : keys) {
        auto ref = reference->Get(coll, key);
        auto mine = devices[i]->replica()->Get(coll, key);
        if (!ref.ok() || !mine.ok()) {
          Fail("reading " + coll + "/" + key + " failed");
          continue;
        }
        const bool in_view = ref->has_value() && g.Reads(**ref);
        const std::string who = "device " + std::to_string(i) + " (" + g.Describe() + ")";
        if (in_view != mine->has_value()) {
          Fail(who + (in_view ? " lacks " : " holds ") + coll + "/" + key);
        } else if (in_view && **ref != **mine) {
          Fail(who + " holds " + coll + "/" + key + " other than the server");
          if (verbose) {
            Trace("  server: " + CanonicalJson(FieldsToJson(**ref)) +
                  "\n  device: " + CanonicalJson(FieldsToJson(**mine)));
          }
        }
      }
    }
  }
}

// Runs one seed in a fresh directory (on tmpfs when there is one: files, not fsyncs, are
// what is tested here).
// `with_rules`: the seed runs with sync rules whatever its number (as CAIRN_SIM_RULES=1).
std::string RunSeed(uint64_t seed, bool verbose, std::string* trace = nullptr,
                    bool with_rules = false) {
  std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "";
  std::string tmpl =
      (base.empty() ? std::filesystem::temp_directory_path().string() : base) + "/cairn-sim-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return "cannot make a directory for the run";
  const std::string dir = tmpl;
  std::string result;
  {
    Run run(seed, dir, verbose);
    run.force_rules = with_rules;
    result = run.Go();
    if (trace) *trace = run.trace;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return result;
}

class SimTest : public ::testing::TestWithParam<int> {};

TEST_P(SimTest, SeedsKeepTheInvariants) {
  const uint64_t only = EnvU64("CAIRN_SIM_SEED", 0);
  const int shard = GetParam();
  if (only != 0) {  // a replay: the one seed, on shard 0, its events printed
    if (shard == 0) {
      EXPECT_EQ(RunSeed(only, true), "") << "seed " << only;
    }
    return;
  }
  const uint64_t first = EnvU64("CAIRN_SIM_FIRST", 1);
  const uint64_t seeds = EnvU64("CAIRN_SIM_SEEDS", 2000);
  uint64_t ran = 0;
  for (uint64_t seed = first; seed < first + seeds; seed++) {
    if (static_cast<int>(seed % kShards) != shard) continue;
    const std::string failed = RunSeed(seed, false);
    ran++;
    ASSERT_EQ(failed, "") << "seed " << seed << " broke an invariant; replay it with "
                          << "CAIRN_SIM_SEED=" << seed << " (prints its events)";
  }
  std::printf("shard %d: %llu seeds\n", shard, static_cast<unsigned long long>(ran));
}

INSTANTIATE_TEST_SUITE_P(Shards, SimTest, ::testing::Range(0, kShards));

// Seeds the long run with rules (CAIRN_SIM_RULES=1) found failing, kept as regressions. 20033:
// a document a push created whose Ack was lost, moved out of the view later, stayed on the
// device (the session did not count the client's own push as holding it; fixed in
// Session::TrackMoves, also RulesSync.ADocumentALostPushCreatedLeavesWhenMovedAway). 21957: a
// device took a CaughtUp the server sent before it saw the device's token renewal as the end
// of the renewal's change of view, and was idle without the documents entering it (fixed in
// Exchange: a CaughtUp counts after the Renewed). 41336, 40905, 41482: a change of view's leave
// names a document the device was never sent but may hold at its cursor (a view its token granted
// there; the session that would have sent it was cut): allowed, as docs/RELIABILITY.md says;
// a leave outside every view the device may be in at its cursor still fails.
TEST(SimReplay, SeedsTheLongRunFound) {
  for (uint64_t seed : {20033u, 21957u, 41336u, 40905u, 41482u}) {
    EXPECT_EQ(RunSeed(seed, false, nullptr, /*with_rules=*/true), "") << "seed " << seed;
  }
}

// A seed is a replay: the same events in the same order, at the same times.
TEST(SimReplay, SameSeedSameRun) {
  for (uint64_t seed : {3u, 11u}) {
    std::string first, second;
    ASSERT_EQ(RunSeed(seed, false, &first), "");
    ASSERT_EQ(RunSeed(seed, false, &second), "");
    EXPECT_GT(first.size(), 100u);
    EXPECT_EQ(first, second) << "seed " << seed;
  }
}

}  // namespace
}  // namespace cairn::sim
