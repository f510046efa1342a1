// Shared by the benchmarks (cairn_bench, sync_bench): the shared docs trace held compactly, the
// trace clock, the mapping of trace ops to Cairn writes, the raw SQLite side, and formatting.
#ifndef CAIRN_BENCH_BENCH_UTIL_H_
#define CAIRN_BENCH_BENCH_UTIL_H_

#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/sha256.h"
#include "base/strings.h"
#include "replica/replica.h"

namespace cairn::bench {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kA = 0, kB = 1, kC = 2;
const char* const kFieldNames[] = {"f0", "f1", "f2", "f3", "f4", "n"};
constexpr uint8_t kCounterField = 5;

[[noreturn]] inline void Die(const std::string& msg) {
  std::fprintf(stderr, "cairn_bench: FATAL: %s\n", msg.c_str());
  std::fflush(stderr);
  std::exit(2);
}

// In a child between fork and exec: SIGKILL when the benchmark (the parent) ends, however it
// ends, so that no server or client process outlives a benchmark that died.
inline void DieWithParent() {
  const pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);  // the parent ended before prctl took effect
}

inline void Check(const cairn::Status& st, const std::string& what) {
  if (!st.ok()) Die(what + ": " + st.ToString());
}
// The same for a call that returns a Result (a write's receipt, which is not needed here).
template <class T>
void Check(const cairn::Result<T>& r, const std::string& what) {
  Check(r.status(), what);
}

template <class T>
T Must(cairn::Result<T> r, const std::string& what) {
  if (!r.ok()) Die(what + ": " + r.status().ToString());
  return std::move(r).value();
}

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU time (user + system) of this process so far, in seconds.
inline double CpuSeconds() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// The trace, held compactly (24 bytes an op plus the string bytes), so that the harness adds
// little to the peak RSS of the process it measures.

enum class Kind : uint8_t { kSet, kInc, kDel };
enum class VType : uint8_t { kNone, kInt, kDouble, kString };

struct TraceOp {
  int64_t t;
  union {
    int64_t i;  // kInt value, or the inc delta
    double d;
    struct {
      uint32_t off, len;  // kString: bytes in Trace::arena
    } s;
  } v;
  uint32_t key;  // index into Trace::keys
  Kind kind;
  uint8_t field;  // index into kFieldNames
  VType vtype;
};

struct Trace {
  Json header;
  std::array<std::vector<TraceOp>, 3> ops;  // A, B, C
  std::vector<std::string> keys;
  std::string arena;

  std::string_view Str(const TraceOp& op) const {
    return std::string_view(arena).substr(op.v.s.off, op.v.s.len);
  }
};

inline int ReplicaIndex(std::string_view r) {
  if (r == "A") return kA;
  if (r == "B") return kB;
  if (r == "C") return kC;
  return -1;
}

inline int64_t T0(const Trace& tr) { return tr.header.value("t0", int64_t{0}); }

// Loads the ops of the replicas in `want` (e.g. {true,false,false} for A only).
inline Trace LoadTrace(const std::string& path, std::array<bool, 3> want) {
  std::ifstream in(path);
  if (!in) Die("cannot read trace " + path);
  Trace tr;
  std::unordered_map<std::string, uint32_t> key_index;
  std::string line;
  if (!std::getline(in, line)) Die("empty trace " + path);
  tr.header = Json::parse(line);
  if (tr.header.value("workload", "") != "docs") Die(path + " is not a docs trace");
  // Reserve up front: growing by doubling would leave the harness's own peak in every figure.
  size_t per_replica = tr.header.value("ops_per_replica", size_t{0});
  for (size_t r = 0; r < 3; r++) {
    if (want[r]) tr.ops[r].reserve(per_replica);
  }
  tr.keys.reserve(tr.header.value("keys", size_t{0}));
  key_index.reserve(tr.header.value("keys", size_t{0}));
  size_t wanted = size_t{want[0]} + size_t{want[1]} + size_t{want[2]};
  tr.arena.reserve(per_replica * wanted * 8);  // 28% of ops carry 16-32 chars: ~6.7 bytes an op
  size_t lineno = 1;
  while (std::getline(in, line)) {
    lineno++;
    if (line.empty()) continue;
    // Lines are compact JSON starting {"r":"X": skip unwanted replicas without parsing them.
    if (line.compare(0, 6, "{\"r\":\"") == 0 && line.size() > 7) {
      int r = ReplicaIndex(std::string_view(line).substr(6, 1));
      if (r >= 0 && !want[static_cast<size_t>(r)]) continue;
    }
    Json j = Json::parse(line);
    int r = ReplicaIndex(j.at("r").get<std::string>());
    if (r < 0) Die("line " + std::to_string(lineno) + ": unknown replica");
    if (!want[static_cast<size_t>(r)]) continue;
    TraceOp op{};
    op.t = j.at("t").get<int64_t>();
    std::string key = j.at("k").get<std::string>();
    auto [it, inserted] = key_index.emplace(key, static_cast<uint32_t>(tr.keys.size()));
    if (inserted) tr.keys.push_back(key);
    op.key = it->second;
    std::string kind = j.at("op").get<std::string>();
    if (kind == "del") {
      op.kind = Kind::kDel;
    } else {
      std::string f = j.at("f").get<std::string>();
      op.field = 255;
      for (uint8_t i = 0; i < 6; i++) {
        if (f == kFieldNames[i]) op.field = i;
      }
      if (op.field == 255) Die("line " + std::to_string(lineno) + ": unknown field " + f);
      const Json& v = j.at("v");
      if (kind == "inc") {
        op.kind = Kind::kInc;
        op.vtype = VType::kInt;
        op.v.i = v.get<int64_t>();
      } else if (kind == "set") {
        op.kind = Kind::kSet;
        if (v.is_number_integer()) {
          op.vtype = VType::kInt;
          op.v.i = v.get<int64_t>();
        } else if (v.is_number_float()) {
          op.vtype = VType::kDouble;
          op.v.d = v.get<double>();
        } else if (v.is_string()) {
          const std::string& s = v.get_ref<const std::string&>();
          op.vtype = VType::kString;
          op.v.s.off = static_cast<uint32_t>(tr.arena.size());
          op.v.s.len = static_cast<uint32_t>(s.size());
          tr.arena += s;
        } else {
          Die("line " + std::to_string(lineno) + ": unsupported value");
        }
      } else {
        Die("line " + std::to_string(lineno) + ": unknown op " + kind);
      }
    }
    tr.ops[static_cast<size_t>(r)].push_back(op);
  }
  return tr;
}

// The trace a benchmark reads: `path`, or else the generator's file of that workload and scale
// (build/bench/trace-WORKLOAD-sSCALE.jsonl); made absolute.
inline std::string TracePath(const std::string& path, const std::string& scale,
                             const char* workload = "docs") {
  std::string p = path;
  if (p.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", std::strtod(scale.c_str(), nullptr));
    p = std::string("build/bench/trace-") + workload + "-s" + buf + ".jsonl";
  }
  return std::filesystem::absolute(p).string();
}

// A benchmark's work directory: `dir` (made when missing), or else a new one under /tmp named
// after `name`; absolute.
inline std::string WorkDir(const std::string& dir, const std::string& name) {
  if (dir.empty()) {
    std::string tmpl = "/tmp/" + name + "-XXXXXX";
    if (!mkdtemp(tmpl.data())) Die("mkdtemp");
    return tmpl;
  }
  std::filesystem::create_directories(dir);
  return std::filesystem::absolute(dir).string();
}

// Removes an SQLite database and its WAL and shared-memory files.
inline void RemoveDbFiles(const std::string& path) {
  for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path + ext);
}

inline std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  cairn::Sha256 sha;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize n = in.gcount();
    if (n > 0) sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  return cairn::HexEncode(sha.Finish());
}

// ---------------------------------------------------------------------------------------------
// Process memory

inline int64_t StatusKb(const char* field) {  // VmRSS, VmHWM from /proc/self/status, in KiB
  std::ifstream in("/proc/self/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::strtoll(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Cairn side

// The physical time source of a replica: while a write is under way, the i-th call returns the
// `t` of the i-th op of that write (Replica::Write asks once per entry, in order); outside a
// write it returns the `t` of the last op written (t0 before any).
class TraceClock final : public cairn::Clock {
 public:
  explicit TraceClock(int64_t t0) : now_(t0) {}
  int64_t NowMs() override {
    if (next_ < times_.size()) now_ = times_[next_++];
    return now_;
  }
  // Copies the ops' times, so the trace itself may be released before the timed write.
  void Expect(const TraceOp* begin, const TraceOp* end) {
    times_.clear();
    for (const TraceOp* op = begin; op != end; ++op) times_.push_back(op->t);
    next_ = 0;
  }
  // True when every op of the last Expect() was handed out.
  bool Drained() const { return next_ == times_.size(); }

 private:
  int64_t now_;
  std::vector<int64_t> times_;
  size_t next_ = 0;
};

inline void AddToBatch(const Trace& tr, const TraceOp& op, cairn::WriteBatch* b) {
  const std::string& key = tr.keys[op.key];
  switch (op.kind) {
    case Kind::kSet: {
      cairn::Value v;
      switch (op.vtype) {
        case VType::kInt:
          v = cairn::Value::Int(op.v.i);
          break;
        case VType::kDouble:
          v = cairn::Value::Double(op.v.d);
          break;
        case VType::kString:
          v = cairn::Value::String(std::string(tr.Str(op)));
          break;
        case VType::kNone:
          break;
      }
      b->Set("items", key, kFieldNames[op.field], std::move(v));
      break;
    }
    case Kind::kInc:
      b->Increment("items", key, kFieldNames[op.field], op.v.i);
      break;
    case Kind::kDel:
      b->Delete("items", key);
      break;
  }
}

struct OpenReplica {
  std::unique_ptr<TraceClock> clock;
  std::unique_ptr<cairn::Replica> replica;
};

inline OpenReplica OpenCairn(const std::string& path, int64_t t0) {
  OpenReplica r;
  r.clock = std::make_unique<TraceClock>(t0);
  cairn::ReplicaOptions opts;
  opts.clock = r.clock.get();
  r.replica = Must(cairn::Replica::Open(path, opts), "open " + path);
  return r;
}

// Writes ops [begin, end) as one WriteBatch (one transaction).
inline void WriteCairn(const Trace& tr, OpenReplica* r, const TraceOp* begin, const TraceOp* end) {
  cairn::WriteBatch b;
  for (const TraceOp* op = begin; op != end; ++op) AddToBatch(tr, *op, &b);
  r->clock->Expect(begin, end);
  Check(r->replica->Write(b), "write");
  if (!r->clock->Drained()) Die("the trace clock was not asked once per op of the batch");
}

// ---------------------------------------------------------------------------------------------
// Raw SQLite side

class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      Die("raw open " + path + ": " + sqlite3_errmsg(db_));
    }
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");
    Exec("CREATE TABLE IF NOT EXISTS items(key TEXT PRIMARY KEY, f0, f1, f2, f3, f4, n) "
         "WITHOUT ROWID");
    for (uint8_t f = 0; f < 5; f++) {
      std::string c = kFieldNames[f];
      set_[f] = Prepare("INSERT INTO items(key, " + c + ") VALUES (?1, ?2) ON CONFLICT(key) DO "
                        "UPDATE SET " + c + " = excluded." + c);
    }
    inc_ = Prepare("INSERT INTO items(key, n) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET "
                   "n = coalesce(n, 0) + excluded.n");
    del_ = Prepare("DELETE FROM items WHERE key = ?1");
    begin_ = Prepare("BEGIN IMMEDIATE");
    commit_ = Prepare("COMMIT");
  }
  ~RawDb() {
    for (sqlite3_stmt* s : set_) sqlite3_finalize(s);
    for (sqlite3_stmt* s : {inc_, del_, begin_, commit_}) sqlite3_finalize(s);
    sqlite3_close(db_);
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void Begin() { Step(begin_); }
  void Commit() { Step(commit_); }
  void Apply(const Trace& tr, const TraceOp& op) {
    const std::string& key = tr.keys[op.key];
    sqlite3_stmt* s = nullptr;
    switch (op.kind) {
      case Kind::kSet:
        s = set_[op.field];
        switch (op.vtype) {
          case VType::kInt:
            sqlite3_bind_int64(s, 2, op.v.i);
            break;
          case VType::kDouble:
            sqlite3_bind_double(s, 2, op.v.d);
            break;
          case VType::kString: {
            std::string_view v = tr.Str(op);
            sqlite3_bind_text(s, 2, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
            break;
          }
          case VType::kNone:
            sqlite3_bind_null(s, 2);
            break;
        }
        break;
      case Kind::kInc:
        s = inc_;
        sqlite3_bind_int64(s, 2, op.v.i);
        break;
      case Kind::kDel:
        s = del_;
        break;
    }
    sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    Step(s);
  }
  void ApplyTxn(const Trace& tr, const TraceOp* begin, const TraceOp* end) {
    Begin();
    for (const TraceOp* op = begin; op != end; ++op) Apply(tr, *op);
    Commit();
  }

 private:
  void Exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      Die("raw exec " + sql + ": " + msg);
    }
  }
  sqlite3_stmt* Prepare(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) !=
        SQLITE_OK) {
      Die("raw prepare " + sql + ": " + sqlite3_errmsg(db_));
    }
    return s;
  }
  void Step(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) Die(std::string("raw step: ") + sqlite3_errmsg(db_));
    sqlite3_reset(s);
  }

  sqlite3* db_ = nullptr;
  std::array<sqlite3_stmt*, 5> set_{};
  sqlite3_stmt *inc_ = nullptr, *del_ = nullptr, *begin_ = nullptr, *commit_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Report formatting

inline std::string Num(double v, int prec = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  // Thousands separators for readability.
  std::string s(buf);
  size_t dot = s.find('.');
  size_t end = dot == std::string::npos ? s.size() : dot;
  size_t start = (s[0] == '-') ? 1 : 0;
  for (size_t i = end; i > start + 3; i -= 3) s.insert(i - 3, ",");
  return s;
}

inline std::string Mb(int64_t kb) { return Num(double(kb) / 1024.0, 1) + " MB"; }

inline std::string Ratio(double cairn, double raw) { return raw > 0 ? Num(cairn / raw, 2) + "x" : "-"; }

inline std::string MetStr(bool met) { return met ? "met" : "NOT met"; }

}  // namespace cairn::bench

#endif  // CAIRN_BENCH_BENCH_UTIL_H_
