// sync_bench: Cairn's sync end to end on the shared docs trace (../shared/bench/README.md), with
// the real cairn-server over TLS on 127.0.0.1, beside raw SQLite in the same run; and the memory a
// server spends per idle TLS connection.
//
//   sync_bench [--trace FILE | --scale S] [--dir DIR] [--server-bin PATH] [--idle N]
//              [--scenario e2e,bootstrap,idle,rules]
//              [--store postgresql://... [--nodes 1|2] [--sql-tables on|off]]
//              [--clients N,N... --writes N --rate R]
//
// e2e   Replicas A, B and C each write their trace ops offline (transactions of 100 ops, not
//       timed), then all three sync through one cairn-server (TLS, a certificate made for the
//       run) at once, with live sync: each pushes its ops and pulls the others' until it holds
//       all 3 x N ops and its own are acknowledged. Timed: from the common start until the last
//       replica is done. Reported: trace
//       ops per second (3 x N / time), bytes on the wire per op (TLS records, both directions,
//       all clients), the peak RSS of each client and of the server; all three digests and the
//       server's must agree. Raw SQLite, same run: the same 3 x N ops as prepared upserts into
//       one table, transactions of 100 ops (what a central database would do for them).
//       With --store, the server keeps its data in that PostgreSQL database (which must be
//       empty: tests/support/postgres.sh starts a fresh one) and with --nodes 2 there are two
//       server processes on it, A and C syncing through the first, B through the second; every
//       node's copy must agree too. --sql-tables off: without the documents' SQL tables
//       (docs/backend.md "SQL tables"; on by default).
// bootstrap  (after e2e, SQLite store) A new replica joins: the server restarted on e2e's file,
//       the replica syncs once until it holds all 3 x N ops, first from the log, then (the
//       server restarted with --keep-log 1000 and one write pushed so that it trims) from a
//       snapshot. Timed: that one sync. Reported: ops per second, bytes received per op, the
//       replica's peak RSS; its digest must be the server's.
// rules (not run unless named) Sync rules at scale: fan-out to --clients connected clients
//       (default 100,1000), each write with the same recipients, and a grant change
//       (sync_bench_rules.cc).
// idle  One server; a client process opens N TLS connections (each a Hello of a new replica,
//       answered by Welcome and CaughtUp) and holds them. Reported: the server's RSS growth per
//       connection (VmRSS from /proc before and after).
//
// Each client, the raw side and the idle client run in child processes (this program
// re-executed with --child); peak RSS comes from wait4().
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "bench_child.h"
#include "bench_server.h"
#include "bench_util.h"
#include "net/conn.h"
#include "net/tls.h"
#include "port/port.h"
#include "protocol/frame.h"
#include "sync/sync_client.h"
#include "sync_bench_rules.h"

namespace {

using namespace cairn::bench;  // NOLINT: the harness is written against it

constexpr size_t kTxnOps = 100;  // ops per local transaction of the trace's replicas

struct Args {
  std::string trace, dir, server_bin, scenario = "e2e,bootstrap,idle", child, replica;
  std::string address, ca, store;
  size_t idle = 2000;
  int nodes = 1;
  std::string sql_tables;  // with --store: cairn-server --sql-tables (empty: the default)
  RulesArgs rules;
};

// Says the child is ready, waits for the parent's go, and returns the options of a sync with
// the run's server (TLS, the run's CA).
cairn::sync::SyncOptions ReadyThenSyncOptions(const Args& a) {
  Emit(Json{{"ready", true}});
  WaitForParent();
  cairn::sync::SyncOptions o;
  o.server = a.address;
  o.tls = true;
  o.ca_file = a.ca;
  return o;
}

// A SQLite file and its WAL and shared-memory files, gone.
// One replica of the trace: writes its ops offline, then syncs until it holds all three
// replicas' ops.
void ClientChild(const Args& a) {
  const int r = a.replica == "A" ? kA : a.replica == "B" ? kB : kC;
  std::array<bool, 3> want{};
  want[static_cast<size_t>(r)] = true;
  Trace tr = LoadTrace(a.trace, want);
  const auto& ops = tr.ops[static_cast<size_t>(r)];
  const uint64_t per_replica = ops.size();
  OpenReplica rep = OpenCairn(a.dir + "/client-" + a.replica + ".db", T0(tr));
  for (size_t i = 0; i < ops.size(); i += kTxnOps) {
    WriteCairn(tr, &rep, ops.data() + i, ops.data() + std::min(ops.size(), i + kTxnOps));
  }
  tr = Trace();
  const cairn::sync::SyncOptions o = ReadyThenSyncOptions(a);
  auto t0 = Clock::now();
  // Live sync, as an app runs it: pushes and pulls as ops arrive, until all three replicas' ops
  // are here and its own are acknowledged (the others may still need them).
  cairn::sync::SyncClient c(rep.replica.get(), o);
  Check(c.Start(), "sync");
  for (;;) {
    size_t complete = 0;
    for (const auto& [origin, seq] : rep.replica->Known()) complete += seq == per_replica;
    if (complete >= 3 && c.status().pending_ops == 0) break;
    if (Seconds(t0, Clock::now()) > 120) Die("sync did not complete in 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double secs = Seconds(t0, Clock::now());
  c.Stop();
  const cairn::sync::SyncStatus st = c.status();
  const uint64_t syncs = st.reconnects + 1, sent = st.bytes_sent, received = st.bytes_received;
  Emit(Json{{"seconds", secs},
            {"syncs", syncs},
            {"bytes_sent", sent},
            {"bytes_received", received},
            {"digest", Must(rep.replica->Digest(), "digest")}});
}

// A new replica joining (the bootstrap scenario): one sync from nothing. With --replica poke, a
// replica that writes one op and syncs instead (so that a server with a short log trims it).
void JoinerChild(const Args& a) {
  const bool poke = a.replica == "poke";
  const std::string path = a.dir + (poke ? "/poke.db" : "/joiner.db");
  RemoveDbFiles(path);
  auto rep = Must(cairn::Replica::Open(path), "open joiner");
  if (poke) Check(rep->Put("poke", "p", {{"v", cairn::Value::Int(1)}}), "poke");
  const cairn::sync::SyncOptions o = ReadyThenSyncOptions(a);
  auto t0 = Clock::now();
  cairn::sync::SyncClient c(rep.get(), o);
  Check(c.SyncOnce(600000), "sync");
  const double secs = Seconds(t0, Clock::now());
  const cairn::sync::SyncStatus st = c.status();
  const uint64_t received = st.bytes_received;
  Emit(Json{
      {"seconds", secs}, {"bytes_received", received}, {"digest", Must(rep->Digest(), "digest")}});
}

// Raw SQLite: all three replicas' ops as upserts, transactions of kTxnOps.
void RawChild(const Args& a) {
  Trace tr = LoadTrace(a.trace, {true, true, true});
  const std::string path = a.dir + "/raw.db";
  RemoveDbFiles(path);
  RawDb db(path);
  Emit(Json{{"ready", true}});
  WaitForParent();
  auto t0 = Clock::now();
  size_t n = 0;
  for (const auto& ops : tr.ops) {
    for (size_t i = 0; i < ops.size(); i += kTxnOps) {
      db.ApplyTxn(tr, ops.data() + i, ops.data() + std::min(ops.size(), i + kTxnOps));
    }
    n += ops.size();
  }
  const double secs = Seconds(t0, Clock::now());
  Emit(Json{{"ops", n}, {"seconds", secs}, {"ops_per_s", double(n) / secs}});
}

// N idle TLS connections, each a Hello of a new replica; held until the parent says so.
class IdleConn : public cairn::net::Link::Delegate {
 public:
  explicit IdleConn(size_t* ready) : ready_(ready) {}
  void OnOpen(cairn::net::Link* c) override {
    flatbuffers::FlatBufferBuilder fbb(256);
    cairn::ReplicaId id;
    Check(cairn::port::SecureRandom(id.bytes.data(), id.bytes.size()), "random");
    cairn::wire::ReplicaId rid = cairn::protocol::ToWire(id);
    cairn::wire::HelloBuilder hello(fbb);
    hello.add_protocol_version(cairn::protocol::kProtocolVersion);
    hello.add_replica_id(&rid);
    c->Send(cairn::protocol::FinishFrame(&fbb, cairn::wire::Body::Hello, hello.Finish()));
  }
  void OnFrame(cairn::net::Link*, const cairn::wire::Frame& f) override {
    if (f.body_type() == cairn::wire::Body::CaughtUp && !counted_) {
      counted_ = true;
      (*ready_)++;
    }
    if (f.body_type() == cairn::wire::Body::Error) Die("the server refused an idle connection");
  }
  void OnClosed(cairn::net::Link*, const cairn::Status& why) override {
    if (!why.ok()) Die("an idle connection closed: " + why.ToString());
  }

 private:
  size_t* ready_;
  bool counted_ = false;
};

void IdleChild(const Args& a) {
  RaiseFileLimit();
  cairn::net::ScopedSigpipeBlock no_sigpipe;
  auto tls = Must(cairn::net::TlsConfig::Client(a.ca), "TLS config");
  std::string host;
  uint16_t port = 0;
  Check(cairn::net::ParseHostPort(a.address, &host, &port), "address");
  uv_loop_t loop;
  uv_loop_init(&loop);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  size_t ready = 0;
  std::vector<std::unique_ptr<IdleConn>> delegates;
  std::vector<cairn::net::Conn*> conns;
  std::vector<uv_connect_t> reqs(a.idle);
  cairn::net::ConnOptions copts;
  copts.idle_timeout_ms = 600000;  // idle: no pings needed while measuring
  struct Pending {
    cairn::net::Conn* conn;
    cairn::net::TlsConfig* tls;
  };
  std::vector<Pending> pending(a.idle);
  for (size_t i = 0; i < a.idle; i++) {
    delegates.push_back(std::make_unique<IdleConn>(&ready));
    auto* conn = new cairn::net::Conn(&loop, delegates.back().get(), copts);
    conns.push_back(conn);
    pending[i] = Pending{conn, tls.get()};
    reqs[i].data = &pending[i];
    int rc = uv_tcp_connect(&reqs[i], conn->tcp(), reinterpret_cast<const sockaddr*>(&addr),
                            [](uv_connect_t* req, int status) {
                              auto* p = static_cast<Pending*>(req->data);
                              if (status != 0) Die(std::string("connect: ") + uv_strerror(status));
                              p->conn->Start(Must(cairn::net::TlsSession::Create(p->tls, "localhost"),
                                                  "TLS session"));
                            });
    if (rc != 0) Die(std::string("connect: ") + uv_strerror(rc));
    // Do not open thousands of handshakes at once: let the loop work every 50.
    if (i % 50 == 49) {
      while (ready + 50 < i + 1) uv_run(&loop, UV_RUN_ONCE);
    }
  }
  while (ready < a.idle) uv_run(&loop, UV_RUN_ONCE);
  Emit(Json{{"connections", ready}});
  WaitForParent();
  for (auto* c : conns) c->Close(cairn::Status::OK());
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

// ---------------------------------------------------------------------------------------------
// Parent

void Usage() {
  std::fprintf(stderr,
               "usage: sync_bench [--trace FILE | --scale S] [--dir DIR] [--server-bin PATH]\n"
               "                  [--idle N] [--scenario e2e,bootstrap,idle,rules] [--store URL "
               "[--nodes 1|2] [--sql-tables on|off]]\n"
               "                  [--clients N,N... --writes N --rate R]\n");
}

}  // namespace

int main(int argc, char** argv) {
  // The rules scenario's children take flags of their own.
  if (argc >= 3 && std::string(argv[1]) == "--child" &&
      std::string(argv[2]).rfind("rules-", 0) == 0) {
    RulesChild(argv[2], std::vector<std::string>(argv + 3, argv + argc));
    return 0;
  }
  Args a;
  std::string scale = "1";
  for (int i = 1; i < argc; i++) {
    std::string f = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (f == "--trace") {
      a.trace = next();
    } else if (f == "--scale") {
      scale = next();
    } else if (f == "--dir") {
      a.dir = next();
    } else if (f == "--server-bin") {
      a.server_bin = next();
    } else if (f == "--idle") {
      a.idle = std::strtoul(next().c_str(), nullptr, 10);
    } else if (f == "--scenario") {
      a.scenario = next();
    } else if (f == "--child") {
      a.child = next();
    } else if (f == "--replica") {
      a.replica = next();
    } else if (f == "--address") {
      a.address = next();
    } else if (f == "--ca") {
      a.ca = next();
    } else if (f == "--store") {
      a.store = next();
    } else if (f == "--sql-tables") {
      a.sql_tables = next();
      if (a.sql_tables != "on" && a.sql_tables != "off") Die("--sql-tables takes on or off");
    } else if (f == "--nodes") {
      a.nodes = std::atoi(next().c_str());
      if (a.nodes < 1 || a.nodes > 2) Die("--nodes takes 1 or 2");
    } else if (f == "--clients") {
      a.rules.clients.clear();
      std::stringstream list(next());
      for (std::string n; std::getline(list, n, ',');) {
        const size_t v = std::strtoul(n.c_str(), nullptr, 10);
        if (v == 0) Die("--clients takes positive numbers, comma-separated");
        a.rules.clients.push_back(v);
      }
      if (a.rules.clients.empty()) Die("--clients takes positive numbers, comma-separated");
    } else if (f == "--writes") {
      a.rules.writes = std::strtoul(next().c_str(), nullptr, 10);
      if (a.rules.writes == 0) Die("--writes takes a positive number");
    } else if (f == "--rate") {
      a.rules.rate = std::strtod(next().c_str(), nullptr);
      if (!(a.rules.rate > 0)) Die("--rate takes a positive number of writes a second");
    } else {
      Usage();
      return 2;
    }
  }
  if (a.child == "client") {
    ClientChild(a);
    return 0;
  }
  if (a.child == "raw") {
    RawChild(a);
    return 0;
  }
  if (a.child == "idle") {
    IdleChild(a);
    return 0;
  }
  if (a.child == "joiner") {
    JoinerChild(a);
    return 0;
  }

  namespace fs = std::filesystem;
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  if (a.server_bin.empty()) {
    a.server_bin = (fs::path(self).parent_path().parent_path() / "core" / "cairn-server").string();
  }
  a.trace = TracePath(a.trace, scale);
  const bool temp_dir = a.dir.empty();
  a.dir = WorkDir(a.dir, "cairn-sync-bench");
  a.ca = a.dir + "/ca.pem";
  MakeDevCerts(a.dir);
  RaiseFileLimit();
  // Only the end-to-end scenario reads the trace; the idle one runs without it.
  const bool e2e = a.scenario.find("e2e") != std::string::npos;
  std::printf("\n## sync_bench results\n\n");
  if (e2e) {
    std::fprintf(stderr, "sync_bench: trace %s (sha256 %s), work dir %s\n", a.trace.c_str(),
                 FileSha256(a.trace).c_str(), a.dir.c_str());
    std::printf("- trace `%s`, sha256 `%s`\n", a.trace.c_str(), FileSha256(a.trace).c_str());
  }

  if (e2e) {
    // Raw SQLite first (its own process), then the three clients through the server.
    Child raw = SpawnChild(self, {"--child", "raw", "--trace", a.trace, "--dir", a.dir});
    ReadLine(&raw);
    Tell(&raw);
    Json raw_out = ReadLine(&raw);
    Reap(&raw);

    if (a.nodes > 1 && a.store.empty()) Die("--nodes 2 needs --store postgresql://...");
    std::vector<std::string> store_args;
    if (!a.store.empty()) store_args = {"--store", a.store};
    if (!a.sql_tables.empty()) {
      if (a.store.empty()) Die("--sql-tables needs --store postgresql://...");
      store_args.insert(store_args.end(), {"--sql-tables", a.sql_tables});
    }
    std::vector<Server> servers;
    for (int n = 0; n < a.nodes; n++) {
      servers.push_back(StartServer(a.server_bin, a.dir, n == 0 ? "server" : "server2",
                                    store_args));
    }
    std::vector<Child> clients;
    int next_client = 0;
    for (const char* r : {"A", "B", "C"}) {
      const Server& server = servers[static_cast<size_t>(next_client++ % a.nodes)];
      clients.push_back(SpawnChild(self, {"--child", "client", "--replica", r, "--trace",
                                          a.trace, "--dir", a.dir, "--address", server.address,
                                          "--ca", a.ca}));
    }
    for (auto& c : clients) ReadLine(&c);  // written offline, ready
    auto t0 = Clock::now();
    for (auto& c : clients) Tell(&c);
    std::vector<Json> outs;
    for (auto& c : clients) outs.push_back(ReadLine(&c));
    const double secs = Seconds(t0, Clock::now());
    for (auto& c : clients) Reap(&c);
    int64_t server_kb = 0;
    for (auto& server : servers) server_kb = std::max(server_kb, StopServer(&server));
    std::string server_digest;
    bool agree = true;
    for (int n = 0; n < a.nodes; n++) {
      cairn::ReplicaOptions ro;
      ro.read_only = true;
      auto srv = Must(cairn::Replica::Open(a.dir + (n == 0 ? "/server.db" : "/server2.db"), ro),
                      "open server file");
      const std::string d = Must(srv->Digest(), "server digest");
      if (n == 0) server_digest = d;
      agree = agree && d == server_digest;
    }
    uint64_t bytes = 0, sent = 0, received = 0;
    for (const auto& o : outs) {
      sent += o["bytes_sent"].get<uint64_t>();
      received += o["bytes_received"].get<uint64_t>();
      agree = agree && o["digest"] == server_digest;
    }
    bytes = sent + received;
    const double trace_ops = raw_out["ops"].get<double>();
    const double ops_s = trace_ops / secs;
    std::printf("\n### End to end: A, B and C through %s over TLS (127.0.0.1), %s store\n\n",
                a.nodes == 1 ? "one cairn-server" : "two cairn-server nodes",
                a.store.empty() ? "SQLite" : "PostgreSQL");
    std::printf("| | value |\n|---|---:|\n");
    std::printf("| trace ops (A + B + C) | %s |\n", Num(trace_ops).c_str());
    std::printf("| time until all three hold everything | %s s |\n", Num(secs, 3).c_str());
    std::printf("| Cairn end to end | %s ops/s |\n", Num(ops_s).c_str());
    std::printf("| raw SQLite upserts of the same ops, same run | %s ops/s |\n",
                Num(raw_out["ops_per_s"].get<double>()).c_str());
    std::printf("| ratio | %s |\n", Ratio(ops_s, raw_out["ops_per_s"].get<double>()).c_str());
    std::printf("| bytes on the wire per trace op (TLS, both ways, all clients) | %s |\n",
                Num(double(bytes) / trace_ops, 2).c_str());
    std::printf("| of which pushed / pulled | %s / %s |\n",
                Num(double(sent) / trace_ops, 2).c_str(),
                Num(double(received) / trace_ops, 2).c_str());
    for (size_t i = 0; i < clients.size(); i++) {
      std::printf("| client %c: peak RSS, connections, seconds | %s, %d, %s s |\n", "ABC"[i],
                  Mb(clients[i].maxrss_kb).c_str(), outs[i]["syncs"].get<int>(),
                  Num(outs[i]["seconds"].get<double>(), 3).c_str());
    }
    std::printf("| server peak RSS (the largest node) | %s |\n", Mb(server_kb).c_str());
    std::printf("| raw SQLite process peak RSS | %s |\n", Mb(raw.maxrss_kb).c_str());
    std::printf("| digests of A, B, C and the server | %s |\n",
                agree ? ("all `" + server_digest.substr(0, 16) + "...`").c_str() : "DIFFER");
    if (!agree) Die("the replicas did not converge");

    if (a.scenario.find("bootstrap") != std::string::npos && a.store.empty()) {
      std::printf("\n### Bootstrap: a new replica's first sync, on e2e's server file\n\n");
      std::printf(
          "| from | time | ops/s | bytes received per op | joiner peak RSS |\n"
          "|---|---:|---:|---:|---:|\n");
      for (const bool snapshot : {false, true}) {
        std::vector<std::string> extra;
        if (snapshot) extra = {"--keep-log", "1000"};
        Server server = StartServer(a.server_bin, a.dir, "server", extra, /*fresh=*/false);
        if (snapshot) {  // one push, and the log is trimmed to its last 1,000 ops
          Child poke = SpawnChild(self, {"--child", "joiner", "--replica", "poke", "--dir", a.dir,
                                         "--address", server.address, "--ca", a.ca});
          ReadLine(&poke);
          Tell(&poke);
          ReadLine(&poke);
          Reap(&poke);
        }
        Child joiner = SpawnChild(
            self, {"--child", "joiner", "--dir", a.dir, "--address", server.address, "--ca", a.ca});
        ReadLine(&joiner);
        Tell(&joiner);
        Json out = ReadLine(&joiner);
        Reap(&joiner);
        StopServer(&server);
        cairn::ReplicaOptions ro;
        ro.read_only = true;
        auto srv = Must(cairn::Replica::Open(a.dir + "/server.db", ro), "open server file");
        if (out["digest"] != Must(srv->Digest(), "server digest")) {
          Die("the new replica does not hold what the server holds");
        }
        const double joined = out["seconds"].get<double>();
        std::printf("| %s | %s s | %s | %s | %s |\n", snapshot ? "a snapshot" : "the log",
                    Num(joined, 3).c_str(), Num(trace_ops / joined).c_str(),
                    Num(out["bytes_received"].get<double>() / trace_ops, 2).c_str(),
                    Mb(joiner.maxrss_kb).c_str());
      }
    }
  }

  if (a.scenario.find("idle") != std::string::npos) {
    // Every idle connection comes from 127.0.0.1: the server's per-address limit (default 256)
    // and its total (default 10,000) are raised to let them all in.
    const std::string limit = std::to_string(a.idle + 16);
    Server server = StartServer(a.server_bin, a.dir, "idle-server",
                                {"--max-connections-per-address", limit,
                                 "--max-connections", limit});
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int64_t before = ProcessRssKb(server.pid);
    Child idle = SpawnChild(self, {"--child", "idle", "--address", server.address, "--ca", a.ca,
                                   "--idle", std::to_string(a.idle)});
    Json got = ReadLine(&idle);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int64_t after = ProcessRssKb(server.pid);
    Tell(&idle);
    Reap(&idle);
    StopServer(&server);
    const double per = double(after - before) * 1024.0 / double(a.idle);
    std::printf("\n### Idle TLS connections on one server\n\n");
    std::printf("| connections | server RSS before | after | per connection |\n"
                "|---:|---:|---:|---:|\n");
    std::printf("| %s | %s | %s | %s KiB |\n", Num(got["connections"].get<double>()).c_str(),
                Mb(before).c_str(), Mb(after).c_str(), Num(per / 1024.0, 1).c_str());
  }
  if (a.scenario.find("rules") != std::string::npos) {
    a.rules.self = self;
    a.rules.dir = a.dir;
    a.rules.server_bin = a.server_bin;
    a.rules.ca = a.ca;
    RunRules(a.rules);
  }
  if (temp_dir) fs::remove_all(a.dir);
  return 0;
}
