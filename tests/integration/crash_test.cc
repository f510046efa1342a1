// Crash safety (docs/crdt-semantics.md "Transactions", docs/storage-format.md "Durability": a write
// call returns only after its transaction committed): a process killed with SIGKILL at a random
// moment leaves a file that passes SQLite's integrity check, holds every write it acknowledged and
// never part of a transaction; a killed import leaves either none of the import or all of it; a
// killed telemetry appender keeps every record it acknowledged, in whole batches.
//
// The killed work runs in a fork()ed child as plain code (no GoogleTest after fork) that ends
// with _exit(); the parent kills it, then inspects the file.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "oplog/json_codec.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "support/env.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;
using testing::TempDir;
using Clk = std::chrono::steady_clock;

// Child exit codes (anything but SIGKILL or these is a test failure).
constexpr int kChildOpenFailed = 10;
constexpr int kChildWriteFailed = 11;
constexpr int kChildPipeFailed = 12;

// What `PRAGMA integrity_check` says ("ok" when the file is sound), through plain SQLite.
std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  std::string out;
  if (rc != SQLITE_OK) {
    out = std::string("open: ") + sqlite3_errmsg(db);
    sqlite3_close(db);
    return out;
  }
  sqlite3_stmt* st = nullptr;
  rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr);
  if (rc != SQLITE_OK) {
    out = std::string("prepare: ") + sqlite3_errmsg(db);
  } else {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (!out.empty()) out += "\n";
      out += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    if (rc != SQLITE_DONE) out += std::string("\nstep: ") + sqlite3_errmsg(db);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

// Kills the child (harmless when it has already exited) and reaps it. Returns the wait status.
int KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

void SpinFor(std::chrono::microseconds d) {
  // A busy wait: sleeping has a coarse, load-dependent granularity.
  auto end = Clk::now() + d;
  while (Clk::now() < end) {
  }
}

std::unique_ptr<Replica> OpenReplica(const std::string& path, Clock* clock = nullptr) {
  ReplicaOptions opts;
  opts.clock = clock;
  auto r = Replica::Open(path, opts);
  EXPECT_TRUE(r.ok()) << path << ": " << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::string DigestOf(Replica* r) {
  auto d = r->Digest();
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? d.value() : std::string();
}

VersionVector NonZero(const VersionVector& vv) {
  VersionVector out;
  for (const auto& [id, through] : vv) {
    if (through > 0) out[id] = through;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// (a) Killed while writing

// Every write is one transaction of kOpsPerTxn ops: the three fields of the token's own
// document, the same three fields of a shared document, and an increment of a counter.
constexpr uint64_t kOpsPerTxn = 7;
const char* const kTxnFields[] = {"a", "b", "c"};

std::string TokenKey(uint64_t token) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "t%08llu", static_cast<unsigned long long>(token));
  return buf;
}

// Values of varying length, so transactions touch varying numbers of pages.
std::string TokenValue(uint64_t token) {
  return "token-" + std::to_string(token) + "-" +
         std::string(static_cast<size_t>((token * 389) % 3000), static_cast<char>('a' + token % 26));
}

// The child: writes transactions until killed, one acknowledgement line per committed write.
[[noreturn]] void WriterChild(const std::string& path, int ack_fd, uint64_t first_token) {
  auto r = Replica::Open(path);
  if (!r.ok()) _exit(kChildOpenFailed);
  std::unique_ptr<Replica> replica = std::move(r).value();
  for (uint64_t token = first_token;; token++) {
    const std::string key = TokenKey(token);
    const Value value = Value::String(TokenValue(token));
    WriteBatch batch;
    for (const char* f : kTxnFields) batch.Set("tokens", key, f, value);
    batch.Increment("meta", "count", "n", 1);
    for (const char* f : kTxnFields) batch.Set("meta", "latest", f, value);
    if (!replica->Write(batch).ok()) _exit(kChildWriteFailed);
    const std::string line = std::to_string(token) + "\n";
    if (write(ack_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      _exit(kChildPipeFailed);
    }
  }
}

// Reads acknowledgement lines from `fd` into `acks`: until `want` of them arrived (0: until
// EOF) or `deadline`. Returns false on timeout.
bool ReadAcks(int fd, std::string* buf, std::vector<uint64_t>* acks, size_t want,
              Clk::time_point deadline) {
  for (;;) {
    for (size_t nl; (nl = buf->find('\n')) != std::string::npos;) {
      acks->push_back(std::stoull(buf->substr(0, nl)));
      buf->erase(0, nl + 1);
    }
    if (want > 0 && acks->size() >= want) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clk::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int rc = poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return false;
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return want == 0;  // EOF: the child is gone
    buf->append(chunk, static_cast<size_t>(n));
  }
}

// Runs `child` (it writes one acknowledgement line per committed unit of work to the fd it is
// given, and never returns) in a fork()ed process and kills it with SIGKILL: at a random moment
// 0-30 ms after the fork, or after 1-20 acknowledgements and a little into the next unit.
// Returns every acknowledgement it wrote; a child that failed or did not die by the kill is a
// test failure.
std::vector<uint64_t> RunAndKill(std::mt19937_64* rng, const std::function<void(int)>& child) {
  std::vector<uint64_t> acks;
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe";
    return acks;
  }
  pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork";
    return acks;
  }
  if (pid == 0) {
    close(fds[0]);
    child(fds[1]);
    _exit(kChildWriteFailed);  // (children do not return)
  }
  close(fds[1]);
  std::string buf;
  const auto deadline = Clk::now() + std::chrono::seconds(30);
  if ((*rng)() % 2 == 0) {
    std::this_thread::sleep_for(std::chrono::microseconds((*rng)() % 30'001));
  } else {
    const size_t n = 1 + static_cast<size_t>((*rng)() % 20);
    if (!ReadAcks(fds[0], &buf, &acks, n, deadline)) {
      const int status = KillAndReap(pid);
      close(fds[0]);
      ADD_FAILURE() << "no " << n << " acknowledgements in time; child " << DescribeExit(status);
      return acks;
    }
    SpinFor(std::chrono::microseconds((*rng)() % 3000));
  }
  const int status = KillAndReap(pid);
  ReadAcks(fds[0], &buf, &acks, 0, deadline);
  close(fds[0]);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "child " << DescribeExit(status);
  return acks;
}

// Checks the file after a kill. Tokens 1..`committed` must be there exactly (each document with
// all three fields equal, the counter and the shared document matching), where `committed` is the
// last acknowledged token or one more (committed, killed before the acknowledgement). Returns
// `committed`.
uint64_t CheckWriterFile(const std::string& path, uint64_t last_acked, uint64_t previous) {
  if (!std::filesystem::exists(path)) {  // killed before it created the file
    EXPECT_EQ(last_acked + previous, 0u) << path << " is gone";
    return 0;
  }
  EXPECT_EQ(IntegrityCheck(path), "ok");
  auto replica = OpenReplica(path);
  if (!replica) return previous;
  auto dump = replica->DumpString();
  EXPECT_TRUE(dump.ok()) << dump.status().ToString();
  if (!dump.ok()) return previous;
  const Json state = Json::parse(dump.value());

  uint64_t committed = 0;
  std::set<uint64_t> tokens;
  if (state.contains("tokens")) {
    for (const auto& [key, fields] : state["tokens"].items()) {
      uint64_t token = std::stoull(key.substr(1));
      EXPECT_EQ(key, TokenKey(token));
      tokens.insert(token);
      committed = std::max(committed, token);
      // Never part of a transaction: all three fields, equal, with the token's value.
      EXPECT_EQ(fields.size(), 3u) << key << ": " << fields.dump();
      for (const char* f : kTxnFields) {
        EXPECT_TRUE(fields.contains(f) && fields[f] == TokenValue(token))
            << key << "." << f << " is torn";
      }
    }
  }
  EXPECT_EQ(tokens.size(), committed) << "tokens missing below " << committed;
  EXPECT_GE(committed, last_acked) << "an acknowledged write was lost";
  EXPECT_GE(committed, previous) << "a write committed before an earlier kill was lost";
  EXPECT_LE(committed, std::max(last_acked, previous) + 1) << "more writes than the child made";
  const Json meta = state.value("meta", Json::object());
  if (committed > 0) {
    EXPECT_EQ(meta.value("count", Json()), Json({{"n", committed}})) << "counter torn from its txn";
    Json latest = Json::object();
    for (const char* f : kTxnFields) latest[f] = TokenValue(committed);
    EXPECT_EQ(meta.value("latest", Json()), latest) << "shared document torn";
  } else {
    EXPECT_EQ(meta, Json::object()) << "a transaction without its token document";
  }
  // The op log and the materialized SQL table agree with the state.
  auto status = replica->GetStatus();
  EXPECT_TRUE(status.ok()) << status.status().ToString();
  if (status.ok()) {
    EXPECT_EQ(status->last_seq, committed * kOpsPerTxn);
    EXPECT_EQ(status->pending_ops, static_cast<int64_t>(committed * kOpsPerTxn));
  }
  if (committed > 0) {
    std::vector<std::string> rows;
    Status st = replica->Query(
        "SELECT count(*) AS n, sum(a = b AND b = c) AS equal FROM tokens",
        [&](const std::string& row) {
          rows.push_back(row);
          return Status::OK();
        });
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(rows, std::vector<std::string>{Json({{"n", committed}, {"equal", committed}}).dump()});
  }
  return committed;
}

TEST(CrashTest, KilledWriterKeepsAcknowledgedWritesAndWholeTransactions) {
  TempDir dir;
  std::mt19937_64 rng(20240601);
  constexpr int kIterations = 60;
  constexpr int kIterationsPerFile = 12;  // the same file survives several kills in a row
  std::string path;
  uint64_t committed = 0;
  uint64_t total_acks = 0, unacked_commits = 0;
  for (int iter = 0; iter < kIterations; iter++) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    if (iter % kIterationsPerFile == 0) {
      path = dir.File("writer" + std::to_string(iter / kIterationsPerFile) + ".cairn");
      committed = 0;
    }
    std::vector<uint64_t> acks = RunAndKill(&rng, [&](int fd) {
      WriterChild(path, fd, committed + 1);
    });
    if (HasFailure()) return;
    for (size_t i = 0; i < acks.size(); i++) ASSERT_EQ(acks[i], committed + 1 + i);

    const uint64_t last_acked = acks.empty() ? 0 : acks.back();
    uint64_t now = CheckWriterFile(path, last_acked, committed);
    if (HasFailure()) return;
    total_acks += acks.size();
    if (now > std::max(last_acked, committed)) unacked_commits++;
    committed = now;
  }
  std::printf("%d kills: %llu acknowledged writes, %llu committed but not yet acknowledged\n",
              kIterations, static_cast<unsigned long long>(total_acks),
              static_cast<unsigned long long>(unacked_commits));
}

// ---------------------------------------------------------------------------------------------
// (b) Killed while importing

constexpr int64_t kEpochMs = 1'700'000'000'000;

// The child: imports the file and exits 0 (it may be killed first).
[[noreturn]] void ImporterChild(const std::string& path, const std::string& file) {
  auto r = Replica::Open(path);
  if (!r.ok()) _exit(kChildOpenFailed);
  auto im = r.value()->Import(file);
  _exit(im.ok() ? 0 : kChildWriteFailed);
}

// Writes `batches` transactions of 1000 ops to `r`: mostly sets of distinct fields (so they all
// survive compaction), some counters, a few deletes.
void WriteLoad(Replica* r, FakeClock* clock, int first_batch, int batches) {
  for (int b = first_batch; b < first_batch + batches; b++) {
    clock->Advance(1);
    WriteBatch batch;
    for (int i = 0; i < 1000; i++) {
      const int n = b * 1000 + i;
      const std::string coll = n % 2 ? "odd" : "even";
      const std::string key = "doc" + std::to_string(n / 4);  // with f0..f3: one field per op
      if (i % 25 == 0) {
        batch.Increment("counters", "c" + std::to_string(n % 300), "n", n);
      } else if (i == 999 && b % 10 == 5) {
        batch.Delete(coll, "doc" + std::to_string(n / 4 - 1000));
      } else {
        const std::string field = "f" + std::to_string(n % 4);
        switch (n % 3) {
          case 0:
            batch.Set(coll, key, field, Value::Int(n));
            break;
          case 1:
            batch.Set(coll, key, field, Value::String("value " + std::to_string(n)));
            break;
          default:
            batch.Set(coll, key, field, Value::Double(n / 7.0));
            break;
        }
      }
    }
    Status st = r->Write(batch).status();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
}

TEST(CrashTest, KilledImportLeavesAllOrNothing) {
  TempDir dir;
  std::mt19937_64 rng(20240602);
  const std::string big = dir.File("big.export");
  const std::string prefix = dir.File("prefix.export");
  const std::string tmpl = dir.File("target-template.cairn");

  // The source: 105 transactions of 1000 ops; the target already has the first 10 of them.
  std::string want_digest;
  VersionVector want_known;
  {
    FakeClock clock(kEpochMs);
    auto source = OpenReplica(dir.File("source.cairn"), &clock);
    ASSERT_TRUE(source);
    WriteLoad(source.get(), &clock, 0, 10);
    ASSERT_TRUE(source->Export(prefix).ok());
    WriteLoad(source.get(), &clock, 10, 95);
    if (HasFatalFailure()) return;
    auto ex = source->Export(big);
    ASSERT_TRUE(ex.ok()) << ex.status().ToString();
    ASSERT_GE(ex->ops, 100'000u);
    want_digest = DigestOf(source.get());
    want_known = NonZero(source->Known());
  }
  std::string pre_digest;
  VersionVector pre_known;
  {
    FakeClock clock(kEpochMs - 60'000);
    auto target = OpenReplica(tmpl, &clock);
    ASSERT_TRUE(target);
    ASSERT_TRUE(target->Import(prefix).ok());
    pre_digest = DigestOf(target.get());
    pre_known = NonZero(target->Known());
    ASSERT_TRUE(target->Close().ok());
  }
  ASSERT_NE(pre_digest, want_digest);
  // A copy of the closed template (with its WAL, should closing have left one).
  auto copy_template = [&](const std::string& to) {
    std::filesystem::copy_file(tmpl, to);
    if (std::filesystem::exists(tmpl + "-wal")) std::filesystem::copy_file(tmpl + "-wal", to + "-wal");
  };

  auto run_child = [&](const std::string& path, std::chrono::microseconds kill_after) -> int {
    pid_t pid = fork();
    if (pid == 0) ImporterChild(path, big);
    if (pid < 0) return -1;
    if (kill_after.count() >= 0) {
      std::this_thread::sleep_for(kill_after);
      return KillAndReap(pid);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  };

  // One uninterrupted import, to know how long an import takes here.
  const std::string first = dir.File("target-full.cairn");
  copy_template(first);
  const auto t0 = Clk::now();
  int status = run_child(first, std::chrono::microseconds(-1));
  const auto duration = std::chrono::duration_cast<std::chrono::microseconds>(Clk::now() - t0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeExit(status);
  {
    auto r = OpenReplica(first);
    ASSERT_TRUE(r);
    ASSERT_EQ(DigestOf(r.get()), want_digest);
  }

  // 12 in the host's Debug run; fewer where everything is slower (CAIRN_CRASH_KILLS).
  const int kKills = static_cast<int>(cairn::testing::EnvCount("CAIRN_CRASH_KILLS", 12));
  int without = 0, with = 0, completed = 0;
  bool resumed = false;
  for (int iter = 0; iter < kKills; iter++) {
    // Anywhere in the import, or (every other time) near its end, where it commits.
    const uint64_t span = static_cast<uint64_t>(duration.count());
    const uint64_t at = iter % 2 == 0 ? rng() % (span * 115 / 100 + 1)
                                      : span * 80 / 100 + rng() % (span * 35 / 100 + 1);
    const auto kill_after = std::chrono::microseconds(static_cast<int64_t>(at));
    SCOPED_TRACE("iteration " + std::to_string(iter) + ", kill after " +
                 std::to_string(kill_after.count()) + " us of " +
                 std::to_string(duration.count()));
    const std::string path = dir.File("target" + std::to_string(iter) + ".cairn");
    copy_template(path);
    status = run_child(path, kill_after);
    ASSERT_TRUE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
                (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        << "child " << DescribeExit(status);
    if (WIFEXITED(status)) completed++;

    ASSERT_EQ(IntegrityCheck(path), "ok");
    auto r = OpenReplica(path);
    ASSERT_TRUE(r);
    const std::string digest = DigestOf(r.get());
    auto st = r->GetStatus();
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    EXPECT_EQ(st->held_back_ops, 0);
    if (digest == pre_digest) {
      without++;
      EXPECT_EQ(NonZero(r->Known()), pre_known);
      EXPECT_FALSE(WIFEXITED(status)) << "the import completed but is not there";
      if (!resumed) {
        // The interrupted import can simply be run again.
        resumed = true;
        ASSERT_TRUE(r->Import(big).ok());
        EXPECT_EQ(DigestOf(r.get()), want_digest);
      }
    } else {
      EXPECT_EQ(digest, want_digest) << "partly imported";
      EXPECT_EQ(NonZero(r->Known()), want_known);
      with++;
    }
    if (HasFailure()) return;
  }
  std::printf("import of 100k ops takes %lld ms; %d kills: %d before the commit, %d after it "
              "(%d of them completed)\n",
              static_cast<long long>(duration.count() / 1000), kKills, without, with, completed);
}

// ---------------------------------------------------------------------------------------------
// (c) Killed while appending telemetry

// Batch k (from 1) of the appender holds records BatchStart(k) .. BatchStart(k + 1) - 1: sizes
// 1 to 40, so kills land in batches of every size.
uint64_t BatchSize(uint64_t k) { return 1 + (k * 7919) % 40; }

// The child: appends batches until killed, acknowledging each batch's last record.
[[noreturn]] void AppenderChild(const std::string& path, int ack_fd, uint64_t first_record) {
  auto r = Replica::Open(path);
  if (!r.ok()) _exit(kChildOpenFailed);
  std::unique_ptr<Replica> replica = std::move(r).value();
  uint64_t n = first_record;
  for (uint64_t k = 1;; k++) {
    RecordBatch batch;
    const uint64_t size = BatchSize(k);
    for (uint64_t i = 0; i < size; i++, n++) {
      if (!batch.Add({{"n", Value::Int(static_cast<int64_t>(n))},
                      {"pad", Value::String(std::string(static_cast<size_t>(n % 200), 'p'))}})
               .ok()) {
        _exit(kChildWriteFailed);
      }
    }
    if (!replica->Append("readings", batch).ok()) _exit(kChildWriteFailed);
    const std::string line = std::to_string(n - 1) + "\n";
    if (write(ack_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      _exit(kChildPipeFailed);
    }
  }
}

// After a kill: the stream holds records 1..N exactly (seq = n, each once), its counters agree
// with its rows, N >= the last acknowledged record, and N ends a batch (whole batches only).
// Returns N.
uint64_t CheckAppenderFile(const std::string& path, uint64_t last_acked, uint64_t previous,
                           const std::set<uint64_t>& batch_ends) {
  if (!std::filesystem::exists(path)) {
    EXPECT_EQ(last_acked + previous, 0u) << path << " is gone";
    return 0;
  }
  EXPECT_EQ(IntegrityCheck(path), "ok");
  auto replica = OpenReplica(path);
  if (!replica) return previous;
  auto streams = replica->Streams();
  EXPECT_TRUE(streams.ok()) << streams.status().ToString();
  if (!streams.ok()) return previous;
  uint64_t last = 0, records = 0, bytes = 0;
  for (const StreamInfo& s : streams.value()) {
    EXPECT_EQ(s.name, "readings");
    last = s.last_seq;
    records = s.records;
    bytes = s.bytes;
  }
  // Read through SQL as an app would not, to see the rows themselves.
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db,
                               "SELECT count(*), coalesce(min(key & 0xfffffffffff), 0), "
                               "coalesce(max(key & 0xfffffffffff), 0), "
                               "coalesce(sum(length(body)), 0) FROM cairn_stream_records",
                               -1, &st, nullptr),
            SQLITE_OK);
  EXPECT_EQ(sqlite3_step(st), SQLITE_ROW);
  const auto count = static_cast<uint64_t>(sqlite3_column_int64(st, 0));
  const auto min_seq = static_cast<uint64_t>(sqlite3_column_int64(st, 1));
  const auto max_seq = static_cast<uint64_t>(sqlite3_column_int64(st, 2));
  const auto sum = static_cast<uint64_t>(sqlite3_column_int64(st, 3));
  sqlite3_finalize(st);
  sqlite3_close(db);
  EXPECT_EQ(count, last) << "records missing or extra";
  EXPECT_EQ(count > 0 ? min_seq : 1, 1u);
  EXPECT_EQ(max_seq, last);
  EXPECT_EQ(records, count) << "the record counter is torn from the rows";
  EXPECT_EQ(bytes, sum) << "the byte counter is torn from the rows";
  EXPECT_GE(last, last_acked) << "an acknowledged append was lost";
  EXPECT_GE(last, previous) << "an append committed before an earlier kill was lost";
  if (last > previous) {
    EXPECT_TRUE(batch_ends.count(last)) << "record " << last << " does not end a batch: torn";
  }
  // Each record's value is its seq (none twice, none shifted).
  if (count > 0) {
    protocol::StreamEncoder enc("readings");
    EXPECT_TRUE(SyncAccess(*replica)
                    .ReadStream("readings", 0, static_cast<size_t>(count), SIZE_MAX, &enc)
                    .ok());
    EXPECT_EQ(enc.record_count(), count);
    std::string frame;
    enc.FinishFrame(&frame);
    const std::string payload = frame.substr(4);
    auto f = protocol::VerifyFrame(payload, {});
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    uint64_t want = 1;
    Status decoded = protocol::DecodeStreamBatch(
        *f.value()->body_as_StreamBatch(), UINT32_MAX, [&](const protocol::StreamRecord& rec) {
          EXPECT_EQ(rec.seq, want++);
          // Field 0 is "n" (names sort "n" < "pad"): the record's own number is its seq.
          EXPECT_EQ(rec.fields.at(0).second, Value::Int(static_cast<int64_t>(rec.seq)));
          return Status::OK();
        });
    EXPECT_TRUE(decoded.ok()) << decoded.ToString();
    EXPECT_EQ(want, last + 1);
  }
  return last;
}

TEST(CrashTest, KilledAppenderKeepsAcknowledgedRecordsAndWholeBatches) {
  TempDir dir;
  std::mt19937_64 rng(20261122);
  constexpr int kIterations = 40;
  constexpr int kIterationsPerFile = 10;
  std::string path;
  uint64_t committed = 0, total_acks = 0;
  for (int iter = 0; iter < kIterations; iter++) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    if (iter % kIterationsPerFile == 0) {
      path = dir.File("appender" + std::to_string(iter / kIterationsPerFile) + ".cairn");
      committed = 0;
    }
    // The batches this run will make, from record committed + 1.
    std::set<uint64_t> ends;
    for (uint64_t k = 1, n = committed; k < 100000; k++) ends.insert(n += BatchSize(k));
    std::vector<uint64_t> acks = RunAndKill(&rng, [&](int fd) {
      AppenderChild(path, fd, committed + 1);
    });
    if (HasFailure()) return;
    for (uint64_t a : acks) ASSERT_TRUE(ends.count(a)) << a;
    const uint64_t last_acked = acks.empty() ? 0 : acks.back();
    committed = CheckAppenderFile(path, last_acked, committed, ends);
    if (HasFailure()) return;
    total_acks += acks.size();
  }
  std::printf("%d kills: %llu acknowledged appends\n", kIterations,
              static_cast<unsigned long long>(total_acks));
}

}  // namespace
}  // namespace cairn
