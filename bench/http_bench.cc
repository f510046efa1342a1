// http_bench: the HTTP API of cairn-server (docs/BENCHMARKS.md "HTTP API"), over TLS on
// loopback, on the shared docs trace (../shared/bench), beside raw SQLite in the same run:
//
//   http_bench [--trace FILE | --scale S] [--dir DIR] [--server-bin PATH] [--sync-bench PATH]
//              [--ops N] [--batch B] [--single N] [--devices N] [--latency-writes N]
//
// - batched writes: the first --ops ops of replica A's trace (default all), POST /v1/batch of
//   --batch ops (default 1000: one transaction each), against raw SQLite upserting the same ops
//   in transactions of the same size (bench_util.h RawDb, WAL, synchronous=FULL);
// - single writes: the first --single ops (default 2000), one request each (PATCH, POST .../inc,
//   DELETE) on one kept-alive connection, against raw SQLite, one transaction each;
// - the change feed: GET /v1/changes from 0, 1000 changes a page, to the head;
// - latency: --devices connected devices (default 100: --devices - 1 live sessions of
//   `sync_bench --child idle`, and one replica syncing live in this process), then
//   --latency-writes PATCHes (default 300, 20 a second), each timed from the request sent to
//   the device's change listener seeing it.
// libcurl is the HTTP client (a connection kept alive, the run's CA).
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "bench_child.h"
#include "bench_server.h"
#include "bench_util.h"
#include "replica/replica.h"
#include "sync/sync_client.h"

namespace {

using namespace cairn::bench;  // NOLINT: the harness's helpers

struct Args {
  std::string trace, dir, server_bin, sync_bench;
  size_t ops = SIZE_MAX, batch = 1000, single = 2000, devices = 100, latency_writes = 300;
};

// One kept-alive HTTPS connection to the server's HTTP port.
class Http {
 public:
  Http(const std::string& base, const std::string& ca) : base_(base) {
    curl_ = curl_easy_init();
    if (curl_ == nullptr) Die("curl_easy_init");
    curl_easy_setopt(curl_, CURLOPT_CAINFO, ca.c_str());
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &Http::Collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &body_);
    headers_ = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
  }
  ~Http() {
    curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  // The response's JSON; dies unless it is a 200.
  Json Call(const char* method, const std::string& path, const std::string& body = "") {
    body_.clear();
    curl_easy_setopt(curl_, CURLOPT_URL, (base_ + path).c_str());
    curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method);
    if (body.empty()) {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, nullptr);
      curl_easy_setopt(curl_, CURLOPT_HTTPGET, 1L);
      curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method);
    } else {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    }
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK)
      Die(std::string("HTTP ") + method + " " + path + ": " + curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
      Die(std::string("HTTP ") + method + " " + path + ": " + std::to_string(status) + " " + body_);
    return Json::parse(body_);
  }

 private:
  static size_t Collect(char* data, size_t size, size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
  }
  std::string base_;
  CURL* curl_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::string body_;
};

Json ValueJson(const Trace& tr, const TraceOp& op) {
  switch (op.vtype) {
    case VType::kInt:
      return op.v.i;
    case VType::kDouble:
      return op.v.d;
    case VType::kString:
      return std::string(tr.Str(op));
    case VType::kNone:
      break;
  }
  return nullptr;
}

// A trace op as POST /v1/batch takes it.
Json BatchOp(const Trace& tr, const TraceOp& op) {
  Json j{{"collection", "items"}, {"key", tr.keys[op.key]}};
  switch (op.kind) {
    case Kind::kSet:
      j["op"] = "set";
      j["fields"] = Json{{kFieldNames[op.field], ValueJson(tr, op)}};
      break;
    case Kind::kInc:
      j["op"] = "inc";
      j["field"] = kFieldNames[op.field];
      j["delta"] = op.v.i;
      break;
    case Kind::kDel:
      j["op"] = "del";
      break;
  }
  return j;
}

// A trace op as its own request: (method, path, body).
std::tuple<const char*, std::string, std::string> SingleRequest(const Trace& tr,
                                                                const TraceOp& op) {
  char* escaped =
      curl_easy_escape(nullptr, tr.keys[op.key].data(), static_cast<int>(tr.keys[op.key].size()));
  const std::string path = std::string("/v1/docs/items/") + escaped;
  curl_free(escaped);
  switch (op.kind) {
    case Kind::kSet:
      return {"PATCH", path,
              Json{{"fields", Json{{kFieldNames[op.field], ValueJson(tr, op)}}}}.dump()};
    case Kind::kInc:
      return {"POST", path + "/inc",
              Json{{"field", kFieldNames[op.field]}, {"delta", op.v.i}}.dump()};
    case Kind::kDel:
      break;
  }
  return {"DELETE", path, ""};
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1,
                    static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

void Run(const Args& a) {
  Trace tr = LoadTrace(a.trace, {true, false, false});
  std::vector<TraceOp>& ops = tr.ops[kA];
  if (ops.size() > a.ops) ops.resize(a.ops);
  const size_t single = std::min(a.single, ops.size());
  std::printf(
      "- trace `%s`, sha256 `%s`; %zu ops of replica A, batches of %zu; %zu single writes\n\n",
      a.trace.c_str(), FileSha256(a.trace).c_str(), ops.size(), a.batch, single);

  // Raw SQLite, the same ops.
  double raw_batched = 0, raw_single = 0;
  {
    const std::string path = a.dir + "/raw.db";
    for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
    RawDb db(path);
    auto t0 = Clock::now();
    for (size_t i = 0; i < ops.size(); i += a.batch) {
      db.ApplyTxn(tr, ops.data() + i, ops.data() + std::min(ops.size(), i + a.batch));
    }
    raw_batched = double(ops.size()) / Seconds(t0, Clock::now());
    const std::string path1 = a.dir + "/raw1.db";
    for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path1 + ext);
    RawDb db1(path1);
    t0 = Clock::now();
    for (size_t i = 0; i < single; i++) db1.ApplyTxn(tr, ops.data() + i, ops.data() + i + 1);
    raw_single = double(single) / Seconds(t0, Clock::now());
  }

  Server server = StartServer(a.server_bin, a.dir, "http", {"--http", "127.0.0.1:0"});
  const std::regex re("HTTP API on https://127\\.0\\.0\\.1:([0-9]+)");
  std::smatch m;
  const std::string log = ReadFile(a.dir + "/http.log");
  if (!std::regex_search(log, m, re)) Die("no HTTP port in the server's log");
  const std::string base = "https://localhost:" + m[1].str();
  Http http(base, a.dir + "/ca.pem");

  // Batched writes.
  std::vector<std::string> bodies;
  for (size_t i = 0; i < ops.size(); i += a.batch) {
    Json batch = Json::array();
    for (size_t j = i; j < std::min(ops.size(), i + a.batch); j++)
      batch.push_back(BatchOp(tr, ops[j]));
    bodies.push_back(Json{{"ops", std::move(batch)}}.dump());
  }
  auto t0 = Clock::now();
  for (const std::string& body : bodies) http.Call("POST", "/v1/batch", body);
  const double http_batched = double(ops.size()) / Seconds(t0, Clock::now());
  bodies.clear();

  // Single writes, on documents of their own collection's keys (the same ops again).
  std::vector<std::tuple<const char*, std::string, std::string>> requests;
  for (size_t i = 0; i < single; i++) requests.push_back(SingleRequest(tr, ops[i]));
  t0 = Clock::now();
  for (const auto& [method, path, body] : requests) http.Call(method, path, body);
  const double http_single = double(single) / Seconds(t0, Clock::now());

  // The change feed, from the start.
  size_t changes = 0, pages = 0;
  uint64_t cursor = 0;
  t0 = Clock::now();
  for (;;) {
    Json page = http.Call("GET", "/v1/changes?limit=1000&since=" + std::to_string(cursor));
    pages++;
    if (page["changes"].empty()) break;
    changes += page["changes"].size();
    cursor = page["cursor"].get<uint64_t>();
  }
  const double feed_secs = Seconds(t0, Clock::now());

  // Latency to a live device's change listener, with the other devices connected.
  Child idle;
  const bool others = a.devices > 1;
  if (others) {
    idle = SpawnChild(a.sync_bench, {"--child", "idle", "--idle", std::to_string(a.devices - 1),
                                     "--address", server.address, "--ca", a.dir + "/ca.pem"});
    ReadLine(&idle);
  }
  const std::string device_path = a.dir + "/device.db";
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(device_path + ext);
  auto device = Must(cairn::Replica::Open(device_path, cairn::ReplicaOptions()), "device");
  cairn::sync::SyncOptions so;
  so.server = server.address;
  so.tls = true;
  so.ca_file = a.dir + "/ca.pem";
  Check(cairn::sync::SyncClient(device.get(), so).SyncOnce(), "the device's first sync");
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Clock::time_point> seen;
  device->AddChangeListener([&](const cairn::ChangeSet& c) {
    if (c.collection != "latency") return;
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mu);
    for (const std::string& k : c.keys) seen.emplace(k, now);
    cv.notify_all();
  });
  cairn::sync::SyncClient live(device.get(), so);
  Check(live.Start(), "live sync");
  for (int i = 0; i < 500 && live.status().state != cairn::sync::SyncState::kIdle; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<double> latencies_ms;
  for (size_t i = 0; i < a.latency_writes; i++) {
    const std::string key = "w" + std::to_string(i);
    const auto sent = Clock::now();
    http.Call("PATCH", "/v1/docs/latency/" + key, Json{{"fields", {{"i", i}}}}.dump());
    {
      std::unique_lock<std::mutex> lock(mu);
      if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return seen.count(key) > 0; })) {
        Die("the device never saw " + key);
      }
      latencies_ms.push_back(std::chrono::duration<double, std::milli>(seen[key] - sent).count());
    }
    std::this_thread::sleep_until(sent + std::chrono::milliseconds(50));
  }
  live.Stop();
  if (others) {
    Tell(&idle);
    Reap(&idle);
  }
  const int64_t rss_kb = StopServer(&server);

  std::printf("| | ops/s | raw SQLite ops/s | ratio |\n|---|---:|---:|---:|\n");
  std::printf("| batched writes (%zu ops a request) | %.0f | %.0f | %.2fx |\n", a.batch,
              http_batched, raw_batched, http_batched / raw_batched);
  std::printf("| single writes (a request each) | %.0f | %.0f | %.2fx |\n\n", http_single,
              raw_single, http_single / raw_single);
  std::printf("| change feed | value |\n|---|---:|\n");
  std::printf("| changes read | %zu in %zu pages |\n| changes/s | %.0f |\n\n", changes, pages,
              double(changes) / feed_secs);
  std::printf(
      "| HTTP write to a live device's change listener (%zu devices connected, %zu writes) | ms |\n"
      "|---|---:|\n",
      a.devices, a.latency_writes);
  std::printf("| p50 | %.1f |\n| p99 | %.1f |\n| max | %.1f |\n\n", Percentile(latencies_ms, 0.5),
              Percentile(latencies_ms, 0.99), Percentile(latencies_ms, 1.0));
  std::printf("- cairn-server peak RSS %.1f MB\n", double(rss_kb) / 1024);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string scale = "1";
  for (int i = 1; i < argc; i++) {
    const std::string f = argv[i];
    if (i + 1 >= argc)
      Die("usage: see the header of bench/http_bench.cc (" + f + " needs a value)");
    const std::string v = argv[++i];
    auto count = [&]() {
      const size_t n = std::strtoull(v.c_str(), nullptr, 10);
      if (n == 0) Die(f + " takes a positive number");
      return n;
    };
    if (f == "--trace") {
      a.trace = v;
    } else if (f == "--scale") {
      scale = v;
    } else if (f == "--dir") {
      a.dir = v;
    } else if (f == "--server-bin") {
      a.server_bin = v;
    } else if (f == "--sync-bench") {
      a.sync_bench = v;
    } else if (f == "--ops") {
      a.ops = count();
    } else if (f == "--batch") {
      a.batch = count();
    } else if (f == "--single") {
      a.single = count();
    } else if (f == "--devices") {
      a.devices = count();
    } else if (f == "--latency-writes") {
      a.latency_writes = count();
    } else {
      Die("unknown flag " + f + " (see the header of bench/http_bench.cc)");
    }
  }
  namespace fs = std::filesystem;
  const fs::path self = fs::read_symlink("/proc/self/exe");
  if (a.server_bin.empty()) {
    a.server_bin = (self.parent_path().parent_path() / "core" / "cairn-server").string();
  }
  if (a.sync_bench.empty()) a.sync_bench = (self.parent_path() / "sync_bench").string();
  a.trace = TracePath(a.trace, scale);
  a.dir = WorkDir(a.dir, "cairn-http-bench");
  MakeDevCerts(a.dir);
  RaiseFileLimit();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  std::printf("\n## http_bench results\n\n");
  Run(a);
  curl_global_cleanup();
  return 0;
}
