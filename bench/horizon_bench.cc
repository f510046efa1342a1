// horizon_bench: bounded history (docs/crdt-semantics.md "History horizon") and a large
// bootstrap, with the server in this process on 127.0.0.1 (plain TCP) so that its clock can be
// moved on.
//
//   horizon_bench [--trace FILE | --scale S] [--dir DIR] [--scenario churn,bootstrap]
//                 [--ops N] [--horizon-days D] [--keep-log N] [--docs N]
//
// churn      One replica writes the shared docs trace (A's, B's then C's ops; again and again
//            until --ops ops, 1,000,000 by default: sets, increments and deletes over its
//            10,000 x scale documents) in transactions of 100 ops, syncing every 10,000, with a
//            server keeping --keep-log ops of log (default 10,000) and a history horizon of
//            --horizon-days (default 30; 0: none). Then the clock moves 31 days on; the server
//            folds, the replica syncs and folds. Reported, before and after: the bytes the
//            server's and the replica's files use (SQLite pages in use; the file itself may
//            keep free pages) beside the live data: the visible documents in a plain SQLite
//            table (key, f0..f4, n), and the rows of increments and deleted documents kept.
// bootstrap  A server file holding --docs documents (1,000,000 by default; two fields each,
//            written straight into the server's store, not timed), served with a log of 1,000
//            ops: a new replica (a child process) syncs once from it, by a snapshot. Timed: that
//            sync. Reported: documents a second and the replica's peak RSS; its digest must be
//            the server's.
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "bench_child.h"
#include "bench_util.h"
#include "protocol/batch_codec.h"
#include "server/server_store.h"
#include "server/sync_server.h"
#include "sync/sync_client.h"

namespace {

using namespace cairn::bench;  // NOLINT: the harness is written against it

constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;

struct Args {
  std::string trace, dir, scenario = "churn,bootstrap", child, address;
  size_t ops = 1000000, docs = 1000000;
  uint64_t keep_log = 10000;
  int64_t horizon_days = 30;
};

// A clock the benchmark moves (the server's and the replica's).
class MovableClock final : public cairn::Clock {
 public:
  explicit MovableClock(int64_t now) : now_(now) {}
  int64_t NowMs() override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }

 private:
  std::atomic<int64_t> now_;
};

// A server in this process, on its own thread.
class InProcessServer {
 public:
  explicit InProcessServer(cairn::server::ServerOptions o) {
    o.host = "127.0.0.1";
    o.port = 0;
    o.log = [](const std::string&) {};
    server_ = Must(cairn::server::SyncServer::Create(o), "server");
    Check(server_->Listen(), "listen");
    thread_ = std::thread([this] { (void)server_->Run(); });
  }
  ~InProcessServer() {
    server_->Stop();
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }

 private:
  std::unique_ptr<cairn::server::SyncServer> server_;
  std::thread thread_;
};

void SyncOnce(cairn::Replica* r, const std::string& address) {
  cairn::sync::SyncOptions o;
  o.server = address;
  o.backoff_min_ms = 10;
  cairn::sync::SyncClient c(r, o);
  Check(c.SyncOnce(600000), "sync");
}

// One number from an SQL query on a database file (opened read-only beside its owner).
int64_t SqlNumber(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    Die("open " + path);
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    Die(sql + ": " + sqlite3_errmsg(db));
  }
  int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

// The bytes of a database's pages in use (its pages, but the free ones, after a checkpoint).
int64_t UsedBytes(const std::string& path) {
  return SqlNumber(path,
                   "SELECT (SELECT page_count FROM pragma_page_count) - "
                   "(SELECT freelist_count FROM pragma_freelist_count)") *
         SqlNumber(path, "PRAGMA page_size");
}

int64_t FileBytes(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// The live data: the visible documents of `replica` as rows of a plain SQLite table, the way an
// application would keep them without any history.
int64_t LiveBytes(cairn::Replica* replica, const std::string& path) {
  RemoveDbFiles(path);
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("open " + path);
  sqlite3_exec(db,
               "CREATE TABLE items(key TEXT PRIMARY KEY, f0, f1, f2, f3, f4, n) WITHOUT ROWID;"
               "BEGIN",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO items VALUES (?,?,?,?,?,?,?)", -1, &st, nullptr);
  Check(replica->Query("SELECT key, f0, f1, f2, f3, f4, n FROM items",
                       [&](const std::string& row) {
                         Json j = Json::parse(row);
                         int i = 1;
                         for (const char* c : {"key", "f0", "f1", "f2", "f3", "f4", "n"}) {
                           const Json& v = j[c];
                           if (v.is_string()) {
                             const std::string& s = v.get_ref<const std::string&>();
                             sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()),
                                               SQLITE_TRANSIENT);
                           } else if (v.is_number_integer()) {
                             sqlite3_bind_int64(st, i, v.get<int64_t>());
                           } else if (v.is_number()) {
                             sqlite3_bind_double(st, i, v.get<double>());
                           } else {
                             sqlite3_bind_null(st, i);
                           }
                           i++;
                         }
                         sqlite3_step(st);
                         sqlite3_reset(st);
                         return cairn::Status::OK();
                       }),
        "read the live documents");
  sqlite3_finalize(st);
  sqlite3_exec(db, "COMMIT; VACUUM", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  return FileBytes(path);
}

struct Sizes {
  int64_t server_used, server_file, replica_used, replica_file, incs, tombstones;
};

Sizes Measure(const std::string& server_db, const std::string& replica_db) {
  for (const std::string& p : {server_db, replica_db}) {
    SqlNumber(p, "PRAGMA wal_checkpoint(PASSIVE)");
  }
  return Sizes{UsedBytes(server_db),
               FileBytes(server_db),
               UsedBytes(replica_db),
               FileBytes(replica_db),
               SqlNumber(replica_db, "SELECT count(*) FROM cairn_incs"),
               SqlNumber(replica_db, "SELECT count(*) FROM cairn_docs WHERE cells IS NULL")};
}

std::string MiB(int64_t bytes) { return Num(double(bytes) / (1024.0 * 1024.0), 1) + " MiB"; }

void Churn(const Args& a) {
  Trace tr = LoadTrace(a.trace, {true, true, true});
  MovableClock clock(T0(tr));
  cairn::server::ServerOptions so;
  so.db_path = a.dir + "/churn-server.db";
  RemoveDbFiles(so.db_path);
  so.store.clock = &clock;
  so.store.keep_log_ops = a.keep_log;
  so.store.history_horizon_ms = a.horizon_days * kDayMs;
  so.maintain_ms = 50;
  InProcessServer server(so);
  const std::string path = a.dir + "/churn.db";
  RemoveDbFiles(path);
  cairn::ReplicaOptions ro;
  ro.clock = &clock;
  auto replica = Must(cairn::Replica::Open(path, ro), "open the replica");
  size_t written = 0, since_sync = 0;
  auto t0 = Clock::now();
  while (written < a.ops) {
    for (const auto& ops : tr.ops) {
      for (size_t i = 0; i < ops.size() && written < a.ops; i += 100) {
        const size_t n = std::min({size_t{100}, ops.size() - i, a.ops - written});
        cairn::WriteBatch b;
        for (size_t k = 0; k < n; k++) AddToBatch(tr, ops[i + k], &b);
        clock.Advance(1);
        Check(replica->Write(b), "write");
        written += n;
        since_sync += n;
        if (since_sync >= 10000) {
          SyncOnce(replica.get(), server.address());
          since_sync = 0;
        }
      }
    }
  }
  SyncOnce(replica.get(), server.address());
  const double write_secs = Seconds(t0, Clock::now());
  const Sizes before = Measure(so.db_path, path);
  const int64_t live = LiveBytes(replica.get(), a.dir + "/churn-live.db");
  const std::string digest = Must(replica->Digest(), "digest");
  // 31 days on: the server folds (its maintenance), the replica folds at its next sync.
  clock.Advance(31 * kDayMs);
  const int64_t folded_at = clock.NowMs() - a.horizon_days * kDayMs;
  auto f0 = Clock::now();
  if (a.horizon_days > 0) {
    while (SqlNumber(so.db_path, "SELECT horizon >> 16 FROM cairn_state") < folded_at) {
      if (Seconds(f0, Clock::now()) > 600) Die("the server did not fold");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  const double fold_secs = Seconds(f0, Clock::now());
  SyncOnce(replica.get(), server.address());
  if (Must(replica->Digest(), "digest") != digest) Die("folding changed what the replica shows");
  const Sizes after = Measure(so.db_path, path);
  // The same documents in a new replica (a snapshot of the folded state): the file the live
  // data makes in Cairn's own format, with no history.
  const std::string fresh_path = a.dir + "/churn-fresh.db";
  RemoveDbFiles(fresh_path);
  int64_t fresh = 0;
  {
    auto f = Must(cairn::Replica::Open(fresh_path), "open the new replica");
    SyncOnce(f.get(), server.address());
    if (Must(f->Digest(), "digest") != digest) Die("the new replica differs");
    SqlNumber(fresh_path, "PRAGMA wal_checkpoint(PASSIVE)");
    fresh = UsedBytes(fresh_path);
  }
  std::printf(
      "\n### churn: %zu trace ops over %zu documents, --keep-log %llu, horizon %lld days\n\n",
      written, tr.keys.size(), static_cast<unsigned long long>(a.keep_log),
      static_cast<long long>(a.horizon_days));
  std::printf("- written and synced in %s s; the server folded within %s s of the clock's move\n",
              Num(write_secs, 1).c_str(), Num(fold_secs, 2).c_str());
  std::printf(
      "- live data: the visible documents as a plain SQLite table, **%s**; in a new "
      "replica (its own format: each field's value, its stamp, and the SQL table), **%s**\n\n",
      MiB(live).c_str(), MiB(fresh).c_str());
  std::printf("| | before the horizon passes | after |\n|---|---:|---:|\n");
  auto row = [&](const char* what, int64_t b, int64_t f, bool ratio) {
    std::printf("| %s | %s%s | %s%s |\n", what, ratio ? MiB(b).c_str() : Num(double(b)).c_str(),
                ratio ? (" (" + Ratio(double(b), double(live)) + ")").c_str() : "",
                ratio ? MiB(f).c_str() : Num(double(f)).c_str(),
                ratio ? (" (" + Ratio(double(f), double(live)) + ")").c_str() : "");
  };
  auto vs_fresh = [&](const char* what, int64_t b, int64_t f) {
    std::printf("| %s | %s | %s |\n", what, Ratio(double(b), double(fresh)).c_str(),
                Ratio(double(f), double(fresh)).c_str());
  };
  row("server file, pages in use (x live)", before.server_used, after.server_used, true);
  row("server file on disk", before.server_file, after.server_file, true);
  row("replica file, pages in use (x live)", before.replica_used, after.replica_used, true);
  row("replica file on disk", before.replica_file, after.replica_file, true);
  row("replica's increment rows", before.incs, after.incs, false);
  row("replica's deleted-document rows", before.tombstones, after.tombstones, false);
  vs_fresh("server file, pages in use, x the new replica's", before.server_used, after.server_used);
  vs_fresh("replica file, pages in use, x the new replica's", before.replica_used,
           after.replica_used);
  const bool met = after.server_used <= 2 * fresh && after.replica_used <= 2 * fresh;
  const bool met_plain = after.server_used <= 2 * live && after.replica_used <= 2 * live;
  std::printf(
      "\nTarget (files within 2x the live data after the horizon, pages in use): against "
      "the new replica's file **%s**; against the plain table **%s**\n",
      MetStr(met).c_str(), MetStr(met_plain).c_str());
}

// The server file of the bootstrap scenario: `docs` documents of two fields, pushed straight
// into the store by one origin.
void BuildBootstrapServer(const std::string& db, size_t docs) {
  RemoveDbFiles(db);
  cairn::server::ServerStoreOptions o;
  o.keep_log_ops = 1000;
  auto store = Must(cairn::server::ServerStore::Open(db, o), "open the server store");
  cairn::ReplicaId origin;
  origin.bytes.fill(0x42);
  const cairn::Hlc start = cairn::MakeHlc(uint64_t(store->NowMs()) - 60000, 0);
  uint64_t seq = 0;
  cairn::server::PushLimits limits;
  char key[32];
  for (size_t d = 0; d < docs;) {
    cairn::protocol::BatchEncoder enc;
    for (size_t k = 0; k < 4000 && d < docs; k++, d++) {
      std::snprintf(key, sizeof key, "doc-%07zu", d);
      for (int f = 0; f < 2; f++) {
        cairn::Op op;
        op.id = cairn::OpId{start + seq, origin, seq + 1};
        seq++;
        op.kind = cairn::OpKind::kSet;
        op.collection = "items";
        op.key = key;
        op.field = f == 0 ? "title" : "n";
        op.value = f == 0 ? cairn::Value::String("document number " + std::to_string(d))
                          : cairn::Value::Int(static_cast<int64_t>(d));
        op.continues_txn = f == 1;
        enc.Add(op);
      }
    }
    flatbuffers::FlatBufferBuilder fbb(enc.ops_bytes() + 1024);
    enc.Finish(&fbb);
    const cairn::wire::OpBatch* batch =
        flatbuffers::GetRoot<cairn::wire::Frame>(fbb.GetBufferPointer())->body_as_OpBatch();
    if (batch == nullptr) Die("not a batch");
    auto pushed = store->ApplyPush(
        origin, *batch, limits,
        [](const cairn::Op&) { return cairn::Status::OK(); }, nullptr, nullptr);
    Check(pushed.status(), "push");
    if (!pushed->refused.empty()) Die("a push was refused: " + pushed->refused[0].reason);
  }
}

void JoinerChild(const Args& a) {
  const std::string path = a.dir + "/joiner.db";
  RemoveDbFiles(path);
  auto rep = Must(cairn::Replica::Open(path), "open joiner");
  Emit(Json{{"ready", true}});
  WaitForParent();
  auto t0 = Clock::now();
  SyncOnce(rep.get(), a.address);
  const double secs = Seconds(t0, Clock::now());
  Emit(Json{{"seconds", secs}, {"digest", Must(rep->Digest(), "digest")}});
}

void Bootstrap(const Args& a, const std::string& self) {
  const std::string db = a.dir + "/boot-server.db";
  auto b0 = Clock::now();
  BuildBootstrapServer(db, a.docs);
  const double build_secs = Seconds(b0, Clock::now());
  std::string server_digest;
  {
    cairn::ReplicaOptions ro;
    ro.read_only = true;
    auto r = Must(cairn::Replica::Open(db, ro), "open the server file");
    server_digest = Must(r->Digest(), "digest");
  }
  cairn::server::ServerOptions so;
  so.db_path = db;
  so.store.keep_log_ops = 1000;
  InProcessServer server(so);
  Child joiner =
      SpawnChild(self, {"--child", "joiner", "--dir", a.dir, "--address", server.address()});
  ReadLine(&joiner);
  Tell(&joiner);
  Json done = ReadLine(&joiner);
  Reap(&joiner);
  if (done.at("digest").get<std::string>() != server_digest) Die("the new replica differs");
  const double secs = done.at("seconds").get<double>();
  const double per_s = double(a.docs) / secs;
  const double rss_mb = double(joiner.maxrss_kb) / 1024.0;
  std::printf("\n### bootstrap: a new replica from a server holding %zu documents\n\n", a.docs);
  std::printf("- server file written in %s s (not timed)\n", Num(build_secs, 1).c_str());
  std::printf("- one sync (a snapshot), %s s: **%s documents/s** (target 200,000: %s)\n",
              Num(secs, 2).c_str(), Num(per_s).c_str(), MetStr(per_s >= 200000).c_str());
  std::printf("- the new replica's peak RSS: **%s MB** (target 32 MB: %s)\n",
              Num(rss_mb, 1).c_str(), MetStr(rss_mb <= 32.0).c_str());
}

void Usage() {
  std::fprintf(stderr,
               "usage: horizon_bench [--trace FILE | --scale S] [--dir DIR] "
               "[--scenario churn,bootstrap]\n"
               "                     [--ops N] [--horizon-days D] [--keep-log N] [--docs N]\n");
}

}  // namespace

int main(int argc, char** argv) {
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
    } else if (f == "--scenario") {
      a.scenario = next();
    } else if (f == "--ops") {
      a.ops = std::strtoul(next().c_str(), nullptr, 10);
    } else if (f == "--docs") {
      a.docs = std::strtoul(next().c_str(), nullptr, 10);
    } else if (f == "--keep-log") {
      a.keep_log = std::strtoull(next().c_str(), nullptr, 10);
    } else if (f == "--horizon-days") {
      a.horizon_days = std::strtoll(next().c_str(), nullptr, 10);
    } else if (f == "--child") {
      a.child = next();
    } else if (f == "--address") {
      a.address = next();
    } else {
      Usage();
      return 2;
    }
  }
  if (a.child == "joiner") {
    JoinerChild(a);
    return 0;
  }
  namespace fs = std::filesystem;
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  a.trace = TracePath(a.trace, scale);
  a.dir = WorkDir(a.dir, "cairn-horizon-bench");
  std::printf("\n## horizon_bench results\n");
  if (a.scenario.find("churn") != std::string::npos) {
    std::printf("\n- trace `%s`, sha256 `%s`\n", a.trace.c_str(), FileSha256(a.trace).c_str());
    Churn(a);
  }
  if (a.scenario.find("bootstrap") != std::string::npos) Bootstrap(a, self);
  return 0;
}
