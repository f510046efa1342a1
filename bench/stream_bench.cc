// stream_bench: telemetry streams on the shared telemetry trace (../shared/bench/README.md:
// 1,000,000 x scale readings {"dev","ts","temp","hum"}), beside raw SQLite in the same run.
//
//   stream_bench [--trace FILE | --scale S] [--dir DIR] [--server-bin PATH] [--batch N]
//                [--single N]
//
// appends  Every reading appended to stream "readings" in batches of N (default 1000) records,
//          one transaction each (RecordBatch + Replica::Append: fields dev, temp, hum; the
//          reading's ts as the record's timestamp); then the first --single readings (default
//          2000) one per transaction into a second stream. Raw SQLite, same run, same file
//          settings (WAL, synchronous=FULL): prepared INSERTs of (dev, ts, temp, hum) into a plain
//          table, the same transactions. Timed: building the records and writing them.
// upload   The replica's whole queue to a cairn-server over TLS on 127.0.0.1 (another process),
//          one SyncOnce: from connecting until the last record is acknowledged (and so deleted
//          locally). Reported: readings per second, bytes on the wire per reading (TLS records,
//          both directions); the server's table must then hold every reading once.
#include <sqlite3.h>

#include <filesystem>

#include "bench_server.h"
#include "bench_util.h"
#include "replica/sync_access.h"
#include "sync/sync_client.h"

namespace {

using namespace cairn::bench;  // NOLINT: the harness is written against it

struct Reading {
  std::string dev;
  int64_t ts;
  double temp, hum;
};

std::vector<Reading> LoadReadings(const std::string& path) {
  std::ifstream in(path);
  if (!in) Die("cannot read " + path + " (make it with ../shared/bench/gen_trace.py "
               "--workload telemetry)");
  std::vector<Reading> out;
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line);
    if (!j.contains("dev")) continue;  // the header
    out.push_back(Reading{j["dev"].get<std::string>(), j["ts"].get<int64_t>(),
                          j["temp"].get<double>(), j["hum"].get<double>()});
  }
  return out;
}

void Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    Die(std::string("raw SQLite: ") + (err ? err : "?"));
  }
}

// Raw SQLite: the readings inserted in transactions of `batch`; readings per second.
double RawAppends(const std::string& path, const std::vector<Reading>& rs, size_t count,
                  size_t batch) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("raw SQLite: open");
  Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
           "CREATE TABLE readings(dev TEXT, ts INTEGER, temp REAL, hum REAL)");
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO readings VALUES (?,?,?,?)", -1, &ins, nullptr);
  auto t0 = Clock::now();
  for (size_t i = 0; i < count; i += batch) {
    Exec(db, "BEGIN");
    for (size_t k = i; k < std::min(count, i + batch); k++) {
      sqlite3_bind_text(ins, 1, rs[k].dev.data(), static_cast<int>(rs[k].dev.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(ins, 2, rs[k].ts);
      sqlite3_bind_double(ins, 3, rs[k].temp);
      sqlite3_bind_double(ins, 4, rs[k].hum);
      if (sqlite3_step(ins) != SQLITE_DONE) Die("raw SQLite: insert");
      sqlite3_reset(ins);
    }
    Exec(db, "COMMIT");
  }
  const double secs = Seconds(t0, Clock::now());
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return double(count) / secs;
}

// Cairn: the readings appended to `stream` in batches of `batch`; readings per second.
double CairnAppends(cairn::Replica* r, const std::string& stream, const std::vector<Reading>& rs,
                    size_t count, size_t batch) {
  cairn::StreamConfig cfg;
  cfg.max_bytes = 0;  // the whole trace stays queued for the upload
  Check(r->ConfigureStream(stream, cfg), "configure");
  auto t0 = Clock::now();
  cairn::RecordBatch b;
  for (size_t i = 0; i < count; i += batch) {
    b.Clear();
    for (size_t k = i; k < std::min(count, i + batch); k++) {
      Check(b.Add({{"dev", cairn::Value::String(rs[k].dev)},
                   {"temp", cairn::Value::Double(rs[k].temp)},
                   {"hum", cairn::Value::Double(rs[k].hum)}},
                  rs[k].ts),
            "record");
    }
    Must(r->Append(stream, b), "append");
  }
  return double(count) / Seconds(t0, Clock::now());
}

int64_t ServerCount(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* st = nullptr;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, "SELECT count(DISTINCT seq) FROM readings", -1, &st, nullptr) ==
          SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    n = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string trace, dir, server_bin, scale = "1";
  size_t batch = 1000, single = 2000;
  for (int i = 1; i < argc; i++) {
    std::string f = argv[i];
    if (i + 1 >= argc) Die("usage: stream_bench [--trace F | --scale S] [--dir D] "
                           "[--server-bin P] [--batch N] [--single N]");
    std::string v = argv[++i];
    if (f == "--trace") {
      trace = v;
    } else if (f == "--scale") {
      scale = v;
    } else if (f == "--dir") {
      dir = v;
    } else if (f == "--server-bin") {
      server_bin = v;
    } else if (f == "--batch") {
      batch = std::strtoul(v.c_str(), nullptr, 10);
    } else if (f == "--single") {
      single = std::strtoul(v.c_str(), nullptr, 10);
    } else {
      Die("unknown flag " + f);
    }
  }
  namespace fs = std::filesystem;
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  if (server_bin.empty()) {
    server_bin = (fs::path(self).parent_path().parent_path() / "core" / "cairn-server").string();
  }
  trace = TracePath(trace, scale, "telemetry");
  const bool temp_dir = dir.empty();
  dir = WorkDir(dir, "cairn-stream-bench");
  const std::vector<Reading> rs = LoadReadings(trace);
  const size_t n = rs.size();
  single = std::min(single, n);
  std::printf("\n## stream_bench results\n\n- trace `%s`, sha256 `%s`, %zu readings\n",
              trace.c_str(), FileSha256(trace).c_str(), n);

  // Appends, raw SQLite first.
  const double raw_batched = RawAppends(dir + "/raw.db", rs, n, batch);
  const double raw_single = RawAppends(dir + "/raw1.db", rs, single, 1);
  auto replica = Must(cairn::Replica::Open(dir + "/gateway.db"), "open replica");
  const double cairn_batched = CairnAppends(replica.get(), "readings", rs, n, batch);
  const double cairn_single = CairnAppends(replica.get(), "single", rs, single, 1);
  const auto gw_bytes = fs::file_size(dir + "/gateway.db") +
                        (fs::exists(dir + "/gateway.db-wal") ? fs::file_size(dir + "/gateway.db-wal")
                                                             : 0);
  std::printf("\n### Appends (WAL, synchronous=FULL on both sides)\n\n");
  std::printf("| | Cairn | raw SQLite | ratio (target >= 0.5x) |\n|---|---:|---:|---:|\n");
  std::printf("| %zu readings, %zu per transaction | %s /s | %s /s | %s |\n", n, batch,
              Num(cairn_batched).c_str(), Num(raw_batched).c_str(),
              Ratio(cairn_batched, raw_batched).c_str());
  std::printf("| %zu readings, one per transaction | %s /s | %s /s | %s |\n", single,
              Num(cairn_single).c_str(), Num(raw_single).c_str(),
              Ratio(cairn_single, raw_single).c_str());
  std::printf("| replica file with the queue | %s MB (%s bytes per reading) | | |\n",
              Num(double(gw_bytes) / 1048576.0, 1).c_str(),
              Num(double(gw_bytes) / double(n + single), 1).c_str());

  // Upload over TLS.
  MakeDevCerts(dir);
  Server server = StartServer(server_bin, dir, "server");
  cairn::sync::SyncOptions o;
  o.server = server.address;
  o.tls = true;
  o.ca_file = dir + "/ca.pem";
  cairn::sync::SyncClient client(replica.get(), o);
  const uint64_t queued = Must(cairn::SyncAccess(*replica).QueuedRecords(), "queued");
  auto t0 = Clock::now();
  Check(client.SyncOnce(0), "upload");
  const double secs = Seconds(t0, Clock::now());
  const cairn::sync::SyncStatus st = client.status();
  const int64_t server_kb = StopServer(&server);
  const int64_t stored = ServerCount(dir + "/server.db.streams");
  if (stored != static_cast<int64_t>(n) ||
      Must(cairn::SyncAccess(*replica).QueuedRecords(), "queued") != 0) {
    Die("the upload is incomplete: the server holds " + std::to_string(stored) + " of " +
        std::to_string(n));
  }
  const double wire = double(st.bytes_sent + st.bytes_received);
  std::printf("\n### Upload to a cairn-server over TLS on 127.0.0.1\n\n");
  std::printf("| | value |\n|---|---:|\n");
  std::printf("| records uploaded (both streams) | %s |\n", Num(double(queued)).c_str());
  std::printf("| time, connect to last ack | %s s |\n", Num(secs, 3).c_str());
  std::printf("| readings per second (target >= 200,000) | %s |\n",
              Num(double(queued) / secs).c_str());
  std::printf("| bytes on the wire per reading (TLS, both ways) | %s |\n",
              Num(wire / double(queued), 2).c_str());
  std::printf("| of which client -> server | %s |\n",
              Num(double(st.bytes_sent) / double(queued), 2).c_str());
  std::printf("| server peak RSS | %s |\n", Mb(server_kb).c_str());
  std::printf("| server table `readings` holds every reading once | %s |\n",
              stored == static_cast<int64_t>(n) ? "yes" : "NO");
  replica.reset();
  if (temp_dir) fs::remove_all(dir);
  return 0;
}
