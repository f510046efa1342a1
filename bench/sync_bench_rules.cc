// sync_bench --scenario rules (docs/BENCHMARKS.md "Sync rules"): one cairn-server with sync
// rules, over TLS on 127.0.0.1. 1,000 users in 100 teams of ten; 10,000 tasks, ten a user, each
// in its owner's channel and its owner's team's; 1,000 more tasks of a team "big" nobody has.
//
// Fan-out: N clients connect (users 0..N-1, each a new replica: a snapshot of its view, 100
// tasks), then an admin writer sets a field of the tasks of users 0..99 (teams 0..9) at a steady
// rate: each write has the same ten recipients (its team) whatever N is. Measured: the server's
// CPU per write (user + system, /proc), of which the share it spends idle with N clients (its
// CPU over a quiet spell of 3 s before the writes, per second, times the writes' spell), the
// latency from each write to each recipient's
// connection (p50, p99), the bytes each client received (recipients, the others). The server's
// work per write should follow its recipients, not N: N = 100 against N = 1,000.
//
// Grant change: a user in no team gets a token with team "big" on a live session (SetToken):
// the time until its replica holds the 1,000 tasks, the bytes it received, and what 100 other
// connected clients received meanwhile.
//
// The N clients are connections that speak the protocol (a Hello with the user's token, then
// they receive and decode); they apply nothing to a replica, so the latency is to the client's
// connection. The writer and the newcomer are replicas with SyncClient.
#include "sync_bench_rules.h"

#include <uv.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "auth/jwt.h"
#include "bench_child.h"
#include "bench_server.h"
#include "bench_util.h"
#include "net/conn.h"
#include "net/tls.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/sync_access.h"
#include "sync/sync_client.h"

namespace cairn::bench {
namespace {

constexpr size_t kUsers = 1000, kTeamSize = 10, kTasksPerUser = 10, kBigTasks = 1000;
constexpr size_t kHotUsers = 100;  // the users whose tasks the writer sets: teams 0..9
const char kSecret[] = "the sync_bench rules scenario's HS256 secret, 32+ bytes";
const char kRules[] =
    R"({"collections": {"tasks": {"channels": ["user:{owner}", "team:{team}"]}},
 "grants": {"read": ["user:{sub}", "team:{teams[]}"], "write": ["user:{sub}", "team:{teams[]}"]}})";

std::string User(size_t u) { return "u" + std::to_string(u); }
std::string Team(size_t u) { return "t" + std::to_string(u / kTeamSize); }
std::string TaskKey(size_t i) { return "d" + std::to_string(i); }  // user i % kUsers's

std::string Token(const std::string& sub, const std::vector<std::string>& teams,
                  bool admin = false) {
  auth::Claims c;
  c.subject = sub;
  c.expires_s = port::WallClockMs() / 1000 + 3600;
  c.admin = admin;
  c.values["teams"] = auth::ClaimValue{true, teams};
  return auth::MintToken(c, kSecret);
}

// The steady clock in ns: CLOCK_MONOTONIC, the same in every process of the machine.
int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

using Flags = std::map<std::string, std::string>;

const std::string& Flag(const Flags& f, const std::string& name) {
  auto it = f.find(name);
  if (it == f.end()) Die("a child needs " + name);
  return it->second;
}

size_t FlagNumber(const Flags& f, const std::string& name) {
  return std::strtoull(Flag(f, name).c_str(), nullptr, 10);
}

sync::SyncOptions Options(const Flags& f, std::string token) {
  sync::SyncOptions o;
  o.server = Flag(f, "--address");
  o.tls = true;
  o.ca_file = Flag(f, "--ca");
  o.token = std::move(token);
  return o;
}

std::unique_ptr<Replica> NewReplica(const std::string& path) {
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
  return Must(Replica::Open(path), "open " + path);
}

void WaitUntil(const std::function<bool()>& done, const char* what) {
  const auto t0 = Clock::now();
  while (!done()) {
    if (Seconds(t0, Clock::now()) > 300) Die(std::string(what) + ": not within 300 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// ---------------------------------------------------------------------------------------------
// The writer: writes the tasks, pushes them, then on each 'g' sets `--writes` tasks of the hot
// users at `--rate` a second, one transaction each, and says when all are acknowledged.

void WriterChild(const Flags& f) {
  auto rep = NewReplica(Flag(f, "--dir") + "/rules-writer.db");
  WriteBatch b;
  auto task = [&](const std::string& key, const std::string& owner, const std::string& team) {
    b.Set("tasks", key, "owner", Value::String(owner));
    b.Set("tasks", key, "team", Value::String(team));
    if (b.size() >= 1000) {
      Check(rep->Write(b), "write the tasks");
      b.Clear();
    }
  };
  for (size_t i = 0; i < kUsers * kTasksPerUser; i++)
    task(TaskKey(i), User(i % kUsers), Team(i % kUsers));
  for (size_t i = 0; i < kBigTasks; i++) task("g" + std::to_string(i), "keeper", "big");
  if (!b.empty()) Check(rep->Write(b), "write the tasks");
  sync::SyncClient c(rep.get(), Options(f, Token("admin", {}, /*admin=*/true)));
  Check(c.Start(), "sync");
  WaitUntil(
      [&] { return c.status().pending_ops == 0 && c.status().state == sync::SyncState::kIdle; },
      "pushing the tasks");
  // Where a replica that holds its view stands now: the listeners start there.
  const store::SyncPosition pos = Must(SyncAccess(*rep).GetSyncPosition(), "sync position");
  if (!pos.server_id) Die("the writer has no server id");
  Emit(Json{{"server_id", pos.server_id->Hex()},
            {"cursor", pos.cursor},
            {"rules_digest", pos.rules_digest}});
  const size_t writes = FlagNumber(f, "--writes");
  const double rate = std::strtod(Flag(f, "--rate").c_str(), nullptr);
  while (std::fgetc(stdin) == 'g') {
    const auto t0 = Clock::now();
    for (size_t k = 0; k < writes; k++) {
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(double(k) / rate)));
      // A task of a hot user: user u's are u, u + kUsers, u + 2 kUsers...
      const size_t u = (k * 37) % kHotUsers, m = (k / kHotUsers) % kTasksPerUser;
      Check(rep->Put("tasks", TaskKey(u + kUsers * m),
                     {{"t", Value::Int(NowNs())}, {"n", Value::Int(int64_t(k))}}),
            "write");
    }
    WaitUntil([&] { return c.status().pending_ops == 0; }, "the writes acknowledged");
    Emit(Json{{"writes", writes}, {"seconds", Seconds(t0, Clock::now())}});
  }
  c.Stop();
}

// ---------------------------------------------------------------------------------------------
// The listeners: `--clients` connections, user i on the i-th. Protocol of the parent's bytes:
// the 1st starts counting, the 2nd waits until `--expect` timed ops arrived (120 s at most) and
// answers with the figures, the 3rd ends.

struct ListenerSet {
  size_t ready = 0;
  bool measuring = false, stopping = false;
  size_t received = 0;
  std::vector<int64_t> latencies_ns;
};

// Where a listener starts: as a new replica (`fresh`: a snapshot of its view first), or as one
// that holds its view at `cursor` of server `server_id` under the rules `digest`.
struct Start {
  bool fresh = true;
  ReplicaId server_id;
  uint64_t cursor = 0;
  std::string digest;
};

class Listener : public net::Link::Delegate {
 public:
  Listener(ListenerSet* set, std::string token, const Start* start)
      : set_(set), token_(std::move(token)), start_(start) {}

  void OnOpen(net::Link* c) override {
    flatbuffers::FlatBufferBuilder fbb(512);
    ReplicaId id;
    Check(port::SecureRandom(id.bytes.data(), id.bytes.size()), "random");
    const wire::ReplicaId rid = protocol::ToWire(id);
    const wire::ReplicaId sid = protocol::ToWire(start_->server_id);
    auto token = fbb.CreateString(token_);
    auto digest = fbb.CreateString(start_->fresh ? std::string() : start_->digest);
    wire::HelloBuilder hello(fbb);
    hello.add_protocol_version(protocol::kProtocolVersion);
    hello.add_replica_id(&rid);
    hello.add_token(token);
    hello.add_rules_digest(digest);
    hello.add_client_time_ms(port::WallClockMs());
    if (!start_->fresh) {
      hello.add_server_id(&sid);
      hello.add_cursor(start_->cursor);
    }
    c->Send(protocol::FinishFrame(&fbb, wire::Body::Hello, hello.Finish()));
  }
  void OnFrame(net::Link*, const wire::Frame& f) override {
    if (f.body_type() == wire::Body::CaughtUp && !caught_up_) {
      caught_up_ = true;
      set_->ready++;
    } else if (f.body_type() == wire::Body::OpBatch && set_->measuring) {
      const int64_t now = NowNs();
      Check(protocol::DecodeBatch(*f.body_as_OpBatch(), {},
                                  [&](const Op& op) {
                                    if (op.field == "t" && op.value.type() == ValueType::kInt) {
                                      set_->latencies_ns.push_back(now - op.value.as_int());
                                      set_->received++;
                                    }
                                    return Status::OK();
                                  }),
            "decode a batch");
    } else if (f.body_type() == wire::Body::Error) {
      const auto* e = f.body_as_Error();
      Die("the server sent an error: " + (e && e->message() ? e->message()->str() : ""));
    }
  }
  void OnClosed(net::Link*, const Status& why) override {
    if (!set_->stopping) Die("a listener's connection closed: " + why.ToString());
  }

 private:
  ListenerSet* set_;
  std::string token_;
  const Start* start_;
  bool caught_up_ = false;
};

double Percentile(std::vector<int64_t>* v, double p) {
  if (v->empty()) return 0;
  const size_t at = std::min(v->size() - 1, size_t(p * double(v->size())));
  std::nth_element(v->begin(), v->begin() + static_cast<ptrdiff_t>(at), v->end());
  return double((*v)[at]) / 1e6;
}

void ListenersChild(const Flags& f) {
  RaiseFileLimit();
  net::ScopedSigpipeBlock no_sigpipe;
  const size_t n = FlagNumber(f, "--clients"), expect = FlagNumber(f, "--expect");
  const size_t recipients = std::min(n, FlagNumber(f, "--recipients"));
  // --fresh N: new replicas, N at a time; else each holds its view at the writer's position.
  Start start;
  const size_t fresh = f.count("--fresh") ? FlagNumber(f, "--fresh") : 0;
  start.fresh = fresh > 0;
  if (!start.fresh) {
    if (!ReplicaId::FromHex(Flag(f, "--server-id"), &start.server_id)) Die("--server-id");
    start.cursor = FlagNumber(f, "--cursor");
    start.digest = Flag(f, "--digest");
  }
  const size_t in_flight = start.fresh ? fresh : 50;
  auto tls = Must(net::TlsConfig::Client(Flag(f, "--ca")), "TLS config");
  std::string host;
  uint16_t port = 0;
  Check(net::ParseHostPort(Flag(f, "--address"), &host, &port), "address");
  uv_loop_t loop;
  uv_loop_init(&loop);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  ListenerSet set;
  std::vector<std::unique_ptr<Listener>> listeners;
  std::vector<net::Conn*> conns;
  std::vector<uv_connect_t> reqs(n);
  net::ConnOptions copts;
  copts.idle_timeout_ms = 600000;  // no pings needed while measuring
  struct Pending {
    net::Conn* conn;
    net::TlsConfig* tls;
  };
  std::vector<Pending> pending(n);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < n; i++) {
    listeners.push_back(std::make_unique<Listener>(&set, Token(User(i), {Team(i)}), &start));
    auto* conn = new net::Conn(&loop, listeners.back().get(), copts);
    conns.push_back(conn);
    pending[i] = Pending{conn, tls.get()};
    reqs[i].data = &pending[i];
    const int rc = uv_tcp_connect(
        &reqs[i], conn->tcp(), reinterpret_cast<const sockaddr*>(&addr),
        [](uv_connect_t* req, int status) {
          auto* p = static_cast<Pending*>(req->data);
          if (status != 0) Die(std::string("connect: ") + uv_strerror(status));
          p->conn->Start(Must(net::TlsSession::Create(p->tls, "localhost"), "TLS session"));
        });
    if (rc != 0) Die(std::string("connect: ") + uv_strerror(rc));
    while (set.ready + in_flight < i + 1) uv_run(&loop, UV_RUN_ONCE);  // not all at once
  }
  while (set.ready < n) uv_run(&loop, UV_RUN_ONCE);
  Emit(Json{{"ready", n}, {"seconds", Seconds(t0, Clock::now())}});

  // The parent's bytes, read in the loop; a timer wakes it to check for the deadline.
  int commands = 0;
  uv_poll_t in;
  uv_poll_init(&loop, &in, STDIN_FILENO);
  in.data = &commands;
  uv_poll_start(&in, UV_READABLE, [](uv_poll_t* h, int, int) {
    char c;
    if (read(STDIN_FILENO, &c, 1) != 1) Die("the parent went away");
    (*static_cast<int*>(h->data))++;
  });
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(
      &tick, [](uv_timer_t*) {}, 50, 50);
  auto wait_command = [&](int k) {
    while (commands < k) uv_run(&loop, UV_RUN_ONCE);
  };
  wait_command(1);
  std::vector<uint64_t> bytes_before(n);
  for (size_t i = 0; i < n; i++) bytes_before[i] = conns[i]->wire_bytes_in();
  set.measuring = true;
  wait_command(2);
  const auto t1 = Clock::now();
  while (set.received < expect && Seconds(t1, Clock::now()) < 120) uv_run(&loop, UV_RUN_ONCE);
  uint64_t to_recipients = 0, to_others = 0;
  for (size_t i = 0; i < n; i++) {
    (i < recipients ? to_recipients : to_others) += conns[i]->wire_bytes_in() - bytes_before[i];
  }
  const size_t received = set.received;
  Emit(Json{{"received", received},
            {"p50_ms", Percentile(&set.latencies_ns, 0.50)},
            {"p99_ms", Percentile(&set.latencies_ns, 0.99)},
            {"max_ms", Percentile(&set.latencies_ns, 1.0)},
            {"bytes_per_recipient", recipients ? double(to_recipients) / double(recipients) : 0},
            {"bytes_per_other", n > recipients ? double(to_others) / double(n - recipients) : 0},
            {"bytes_others", to_others}});
  wait_command(3);
  set.stopping = true;
  for (net::Conn* c : conns) c->Close(Status::OK());
  uv_poll_stop(&in);
  uv_close(reinterpret_cast<uv_handle_t*>(&in), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

// ---------------------------------------------------------------------------------------------
// The newcomer: a replica of a user in no team, live; on 'g' its token gains team "big".

size_t CountTasks(Replica* r) {
  size_t n = 0;
  Status st = r->Query("SELECT count(*) AS n FROM tasks", [&](const std::string& row) {
    n = Json::parse(row).value("n", size_t{0});
    return Status::OK();
  });
  return st.ok() ? n : 0;  // (no table before the first task)
}

// The bytes a session gets are counted when it ends: those of the grant change are the
// session's less those of a control session of another new replica that does the same without
// it (its TLS handshake and its first sync, a snapshot of an empty view).
void NewcomerChild(const Flags& f) {
  uint64_t control = 0;
  {
    auto rep = NewReplica(Flag(f, "--dir") + "/rules-control.db");
    sync::SyncClient c(rep.get(), Options(f, Token("control", {})));
    Check(c.Start(), "sync");
    WaitUntil([&] { return c.status().state == sync::SyncState::kIdle; }, "the first sync");
    c.Stop();
    control = c.status().bytes_received;
  }
  auto rep = NewReplica(Flag(f, "--dir") + "/rules-newcomer.db");
  sync::SyncClient c(rep.get(), Options(f, Token("newcomer", {})));
  Check(c.Start(), "sync");
  WaitUntil([&] { return c.status().state == sync::SyncState::kIdle; }, "the first sync");
  Emit(Json{{"ready", true}, {"tasks", CountTasks(rep.get())}});
  WaitForParent();
  const auto t0 = Clock::now();
  c.SetToken(Token("newcomer", {"big"}));
  WaitUntil([&] { return CountTasks(rep.get()) >= kBigTasks; }, "the tasks of team big");
  const double secs = Seconds(t0, Clock::now());
  c.Stop();
  const uint64_t total = c.status().bytes_received;
  Emit(Json{{"seconds", secs},
            {"bytes", total > control ? total - control : 0},
            {"tasks", CountTasks(rep.get())}});
}

// ---------------------------------------------------------------------------------------------
// Raw SQLite, the same run: the writes as single-row upsert transactions of one table.

struct RawResult {
  double cpu_per_write_us, writes_per_s;
};

RawResult RawWrites(const std::string& dir, size_t writes) {
  const std::string path = dir + "/rules-raw.db";
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("open " + path);
  auto exec = [&](const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) Die(sqlite3_errmsg(db));
  };
  exec("PRAGMA journal_mode=WAL");
  exec("CREATE TABLE tasks (key TEXT PRIMARY KEY, owner TEXT, team TEXT, t INTEGER, n INTEGER)");
  sqlite3_stmt* up = nullptr;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO tasks (key, t, n) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO "
                         "UPDATE SET t = excluded.t, n = excluded.n",
                         -1, &up, nullptr) != SQLITE_OK) {
    Die(sqlite3_errmsg(db));
  }
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  for (size_t k = 0; k < writes; k++) {
    const std::string key =
        TaskKey((k * 37) % kHotUsers + kUsers * ((k / kHotUsers) % kTasksPerUser));
    sqlite3_bind_text(up, 1, key.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(up, 2, NowNs());
    sqlite3_bind_int64(up, 3, int64_t(k));
    if (sqlite3_step(up) != SQLITE_DONE) Die(sqlite3_errmsg(db));
    sqlite3_reset(up);
  }
  const double secs = Seconds(t0, Clock::now()), cpu = CpuSeconds() - cpu0;
  sqlite3_finalize(up);
  sqlite3_close(db);
  return RawResult{cpu * 1e6 / double(writes), double(writes) / secs};
}

Flags ParseFlags(const std::vector<std::string>& args) {
  Flags f;
  for (size_t i = 0; i + 1 < args.size(); i += 2) f[args[i]] = args[i + 1];
  return f;
}

}  // namespace

void RulesChild(const std::string& role, const std::vector<std::string>& args) {
  const Flags f = ParseFlags(args);
  if (role == "rules-writer") {
    WriterChild(f);
  } else if (role == "rules-listeners") {
    ListenersChild(f);
  } else if (role == "rules-newcomer") {
    NewcomerChild(f);
  } else {
    Die("no child " + role);
  }
}

void RunRules(const RulesArgs& a) {
  const std::string rules = a.dir + "/rules.json", secret = a.dir + "/rules-secret";
  std::ofstream(rules) << kRules;
  std::ofstream(secret) << kSecret;
  const size_t most = *std::max_element(a.clients.begin(), a.clients.end());
  const std::string limit = std::to_string(std::max<size_t>(most, kHotUsers) + 16);
  Server server =
      StartServer(a.server_bin, a.dir, "rules-server",
                  {"--rules", rules, "--token-secret", secret, "--max-connections-per-address",
                   limit, "--max-connections", limit, "--idle-timeout-ms", "600000"});
  const std::vector<std::string> conn = {"--dir", a.dir, "--address", server.address, "--ca", a.ca};
  auto spawn = [&](const char* role, std::vector<std::string> more) {
    std::vector<std::string> args = {"--child", role};
    args.insert(args.end(), conn.begin(), conn.end());
    args.insert(args.end(), more.begin(), more.end());
    return SpawnChild(a.self, args);
  };
  Child writer = spawn("rules-writer",
                       {"--writes", std::to_string(a.writes), "--rate", std::to_string(a.rate)});
  const Json at = ReadLine(&writer);  // the tasks are on the server; where a client stands
  auto listeners = [&](size_t n, size_t expect, size_t fresh = 0) {
    std::vector<std::string> more = {"--clients",    std::to_string(n),
                                     "--recipients", std::to_string(kHotUsers),
                                     "--expect",     std::to_string(expect)};
    if (fresh > 0) {
      more.insert(more.end(), {"--fresh", std::to_string(fresh)});
    } else {
      more.insert(more.end(), {"--server-id", at["server_id"].get<std::string>(), "--cursor",
                               std::to_string(at["cursor"].get<uint64_t>()), "--digest",
                               at["rules_digest"].get<std::string>()});
    }
    return spawn("rules-listeners", more);
  };

  // New clients, one after another: each first sync is a snapshot of the client's view.
  constexpr size_t kJoiners = 20;
  Child joiners = listeners(kJoiners, 0, /*fresh=*/1);
  const Json joined_all = ReadLine(&joiners);
  Tell(&joiners);
  Tell(&joiners);
  ReadLine(&joiners);
  Tell(&joiners);
  Reap(&joiners);

  std::printf(
      "\n### Sync rules: fan-out (%s users in teams of %s, %s tasks; each write has "
      "%s recipients)\n\n",
      Num(double(kUsers)).c_str(), Num(double(kTeamSize)).c_str(),
      Num(double(kUsers * kTasksPerUser + kBigTasks)).c_str(), Num(double(kTeamSize)).c_str());
  std::printf(
      "A new client's first sync (a snapshot of its view: %s of the %s tasks), %s "
      "clients one after another: %s s each.\n\n",
      Num(double(kTeamSize * kTasksPerUser)).c_str(),
      Num(double(kUsers * kTasksPerUser + kBigTasks)).c_str(), Num(double(kJoiners)).c_str(),
      Num(joined_all["seconds"].get<double>() / double(kJoiners), 3).c_str());
  std::printf(
      "| connected clients | writes (rate) | server CPU per write | of which idle | "
      "latency p50 / p99 / max | bytes per recipient client | bytes per other client |\n"
      "|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t n : a.clients) {
    const size_t expect = a.writes * kTeamSize;
    Child l = listeners(n, expect);
    ReadLine(&l);
    // What the server spends with the clients connected and nothing written (timers, the
    // connections' upkeep): per second, over a quiet spell.
    const double quiet0 = ProcessCpuSeconds(server.pid);
    const auto q0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    const double idle_per_s = (ProcessCpuSeconds(server.pid) - quiet0) / Seconds(q0, Clock::now());
    Tell(&l);  // count from here
    const double cpu0 = ProcessCpuSeconds(server.pid);
    const auto w0 = Clock::now();
    Tell(&writer);
    ReadLine(&writer);
    Tell(&l);  // until every recipient has every write
    const Json got = ReadLine(&l);
    const double cpu = ProcessCpuSeconds(server.pid) - cpu0;
    const double idle = idle_per_s * Seconds(w0, Clock::now());
    Tell(&l);
    Reap(&l);
    const size_t received = got["received"].get<size_t>();
    // A server that cannot keep up shows as deliveries missing after 120 s: said in the row.
    const std::string missing =
        received < expect ? " (" + Num(double(expect - received)) + " deliveries missing)" : "";
    std::printf(
        "| %s%s | %s (%s/s) | %s us | %s us | %s / %s / %s ms | %s | %s |\n",
        Num(double(n)).c_str(), missing.c_str(), Num(double(a.writes)).c_str(), Num(a.rate).c_str(),
        Num(cpu * 1e6 / double(a.writes)).c_str(), Num(idle * 1e6 / double(a.writes)).c_str(),
        Num(got["p50_ms"].get<double>(), 2).c_str(), Num(got["p99_ms"].get<double>(), 2).c_str(),
        Num(got["max_ms"].get<double>(), 2).c_str(),
        Num(got["bytes_per_recipient"].get<double>()).c_str(),
        Num(got["bytes_per_other"].get<double>()).c_str());
  }
  const RawResult raw = RawWrites(a.dir, a.writes);
  std::printf(
      "| raw SQLite, same run: the writes as single-row upserts | %s (%s/s at most) | "
      "%s us | | | | |\n",
      Num(double(a.writes)).c_str(), Num(raw.writes_per_s).c_str(),
      Num(raw.cpu_per_write_us, 1).c_str());

  // A grant change, watched by 100 other clients.
  Child bystanders = listeners(kHotUsers, 0);
  Child newcomer = spawn("rules-newcomer", {});
  ReadLine(&bystanders);
  const Json before = ReadLine(&newcomer);
  if (before["tasks"].get<size_t>() != 0) Die("the newcomer held tasks before its grant");
  Tell(&bystanders);
  Tell(&newcomer);
  const Json joined = ReadLine(&newcomer);
  Tell(&bystanders);
  const Json others = ReadLine(&bystanders);
  Tell(&bystanders);
  Reap(&bystanders);
  Reap(&newcomer);
  Tell(&writer, 'q');
  Reap(&writer);
  StopServer(&server);
  const double bytes = joined["bytes"].get<double>();
  std::printf("\n### Sync rules: a grant change (a token renewed with a team of %s tasks)\n\n",
              Num(double(kBigTasks)).c_str());
  std::printf(
      "| tasks it gets | time until its replica holds them | bytes it received | per task "
      "| bytes 100 other connected clients received meanwhile |\n"
      "|---:|---:|---:|---:|---:|\n");
  std::printf("| %s | %s ms | %s | %s | %s |\n", Num(joined["tasks"].get<double>()).c_str(),
              Num(joined["seconds"].get<double>() * 1e3, 1).c_str(), Num(bytes).c_str(),
              Num(bytes / double(kBigTasks), 1).c_str(),
              Num(others["bytes_others"].get<double>() +
                  others["bytes_per_recipient"].get<double>() * double(kHotUsers))
                  .c_str());
}

}  // namespace cairn::bench
