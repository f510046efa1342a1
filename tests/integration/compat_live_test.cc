// Mixed versions, live (docs/protocol.md "Versions and compatibility"): the release in the
// field (c5e6389), built from this repository's history by tests/compat/build_release.sh, and
// today's code syncing with each other both ways, for everything that release could do. Its
// programs: CAIRN_SERVER_PATH (its cairn-server, for ServerProcess) and CAIRN_RELEASE_CLI.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "port/port.h"
#include "replica/replica.h"
#include "support/server_process.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::ServerProcess;
using testing::ServerThread;
using testing::SyncOnce;
using testing::TempDir;

// Runs the release's `cairn` with `args`; its standard output, or nullopt when it failed.
std::optional<std::string> ReleaseCli(const std::string& args) {
  const std::string command = std::string(CAIRN_RELEASE_CLI) + " " + args + " 2>&1";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = pclose(p);
  if (status != 0) {
    ADD_FAILURE() << command << ": exit " << status << "\n" << out;
    return std::nullopt;
  }
  return out;
}

// Runs the release's `cairn` with `args`, expecting it to fail: what it printed.
std::string ReleaseCliFails(const std::string& args) {
  const std::string command = std::string(CAIRN_RELEASE_CLI) + " " + args + " 2>&1";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  EXPECT_NE(pclose(p), 0) << command << " did not fail:\n" << out;
  return out;
}

std::string Dump(Replica* r) { return r->DumpString().value() + "\n"; }

void Write(Replica* r, int round) {
  const std::string n = std::to_string(round);
  ASSERT_TRUE(r->Put("tasks", "t" + n,
                     {{"title", Value::String("task " + n)}, {"done", Value::Bool(round % 2 == 0)}})
                  .ok());
  ASSERT_TRUE(r->Put("notes", "n" + n, {{"blob", Value::Bytes(std::string("\0\xff", 2))}}).ok());
  ASSERT_TRUE(r->Increment("counters", "visits", "n", round).ok());
  if (round > 1) {
    ASSERT_TRUE(r->Delete("tasks", "t" + std::to_string(round - 1)).ok());
  }
}

// Today's replicas with the release's server: pushes, pulls from the log and from a cursor, a
// partial replica, telemetry records, a snapshot after the log was trimmed; every replica and
// the release's server end with the same state.
TEST(CompatLive, TodaysClientsSyncWithTheReleasesServer) {
  TempDir dir;
  const std::string db = dir.File("server.db");
  auto a = testing::OpenReplica(dir.File("a.db"));
  auto b = testing::OpenReplica(dir.File("b.db"));
  auto c = testing::OpenReplica(dir.File("c.db"));
  {
    ServerProcess release(db, dir.File("server.log"), 0);
    const std::string at = "127.0.0.1:" + std::to_string(release.WaitListening());
    Write(a.get(), 1);
    ASSERT_TRUE(SyncOnce(a.get(), at).ok());
    ASSERT_TRUE(SyncOnce(b.get(), at).ok());
    EXPECT_EQ(Dump(b.get()), Dump(a.get()));
    Write(b.get(), 2);
    ASSERT_TRUE(SyncOnce(b.get(), at).ok());
    ASSERT_TRUE(SyncOnce(a.get(), at).ok());  // (from its cursor)
    EXPECT_EQ(Dump(a.get()), Dump(b.get()));
    sync::SyncOptions only;
    only.only = {"tasks"};
    ASSERT_TRUE(SyncOnce(c.get(), at, only).ok());
    auto tasks = c->Get("tasks", "t2");
    ASSERT_TRUE(tasks.ok() && tasks->has_value());
    auto note = c->Get("notes", "n1");
    ASSERT_TRUE(note.ok());
    EXPECT_FALSE(note->has_value()) << "a partial replica got a collection it did not ask for";
    ASSERT_TRUE(a->Append("temp", Fields{{"c", Value::Double(21.5)}}).ok());
    ASSERT_TRUE(a->Append("temp", Fields{{"c", Value::Double(-3)}}).ok());
    ASSERT_TRUE(SyncOnce(a.get(), at).ok());
    auto status = a->GetStatus();
    ASSERT_TRUE(status.ok());
    ASSERT_EQ(status->streams.size(), 1u);
    EXPECT_EQ(status->streams[0].uploaded, 2u);
    EXPECT_EQ(status->streams[0].records, 0u);
    EXPECT_EQ(status->pending_ops, 0);
  }
  {
    // The release's server keeping two log entries: a new replica gets a snapshot.
    ServerProcess release(db, dir.File("server.log"), 0, {"--keep-log", "2"});
    const std::string at = "127.0.0.1:" + std::to_string(release.WaitListening(2));
    Write(a.get(), 3);
    ASSERT_TRUE(SyncOnce(a.get(), at).ok());
    Write(a.get(), 4);
    ASSERT_TRUE(SyncOnce(a.get(), at).ok());
    auto d = testing::OpenReplica(dir.File("d.db"));
    ASSERT_TRUE(SyncOnce(d.get(), at).ok());
    EXPECT_EQ(Dump(d.get()), Dump(a.get()));
    ASSERT_TRUE(SyncOnce(b.get(), at).ok());
    EXPECT_EQ(Dump(b.get()), Dump(a.get()));
  }
  // The release's server holds what today's replicas hold (its own `cairn dump`).
  auto served = ReleaseCli("--db " + db + " dump");
  ASSERT_TRUE(served.has_value());
  EXPECT_EQ(*served, Dump(a.get()));
}

// The release's clients (its `cairn sync --once`) with today's server, live, beside today's.
TEST(CompatLive, TheReleasesClientsSyncWithTodaysServer) {
  TempDir dir;
  ServerThread server(testing::Options(dir));
  const std::string old_db = dir.File("old.db");
  const std::string sync = " sync --once --server " + server.address();
  ASSERT_TRUE(ReleaseCli("--db " + old_db + " put tasks t1 '{\"title\":\"from the release\"}'"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + " inc counters visits n 5"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + " append temp '{\"c\":20.5}'"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + sync));
  auto today = testing::OpenReplica(dir.File("today.db"));
  ASSERT_TRUE(SyncOnce(today.get(), server.address()).ok());
  Write(today.get(), 1);
  ASSERT_TRUE(SyncOnce(today.get(), server.address()).ok());
  ASSERT_TRUE(ReleaseCli("--db " + old_db + sync));
  EXPECT_EQ(ReleaseCli("--db " + old_db + " dump").value_or(""), Dump(today.get()));
  // Its record reached today's server, acknowledged.
  auto status = ReleaseCli("--db " + old_db + " status");
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(status->find("\"uploaded\":1"), std::string::npos) << *status;
  // A partial replica of the release (--only) with today's server.
  const std::string partial = dir.File("partial.db");
  ASSERT_TRUE(ReleaseCli("--db " + partial + sync + " --only counters"));
  EXPECT_EQ(ReleaseCli("--db " + partial + " dump").value_or(""),
            "{\"counters\":{\"visits\":{\"n\":6}}}\n");
}

// docs/crdt-semantics.md "History horizon": the release's client cannot replace its copy by a
// folded state, so once today's server folded history the release's replica that holds history
// and needs a snapshot is refused (EEXPIRED, telling to upgrade) rather than served one it
// would miscount; a new replica of the release takes the folded state as it is.
TEST(CompatLive, TheReleasesClientsAndAFoldedHistory) {
  TempDir dir;
  testing::FakeClock clock(port::WallClockMs());
  server::ServerOptions o = testing::Options(dir);
  o.store.clock = &clock;
  o.store.history_horizon_ms = int64_t{30} * 24 * 3600 * 1000;
  o.store.keep_log_ops = 5;
  o.maintain_ms = 20;
  ServerThread server(o);
  const std::string old_db = dir.File("old.db");
  const std::string sync = " sync --once --server " + server.address();
  for (int i = 0; i < 3; i++)
    ASSERT_TRUE(ReleaseCli("--db " + old_db + " inc counters visits n 2"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + " put tasks t1 '{\"title\":\"gone soon\"}'"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + " del tasks t1"));
  ASSERT_TRUE(ReleaseCli("--db " + old_db + sync));
  // 31 days on: the server folds the counter's increments and forgets the delete.
  clock.Advance(int64_t{31} * 24 * 3600 * 1000);
  for (int i = 0; i < 500; i++) {
    ReplicaOptions ro;
    ro.read_only = true;
    auto f = Replica::Open(o.db_path, ro);
    ASSERT_TRUE(f.ok());
    std::string rows;
    ASSERT_TRUE(f.value()
                    ->Query("SELECT count(*) AS n FROM cairn_incs",
                            [&](const std::string& r) {
                              rows = r;
                              return Status::OK();
                            })
                    .ok());
    if (rows == "{\"n\":1}") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ReplicaOptions ro;
  ro.clock = &clock;
  auto today = Replica::Open(dir.File("today.db"), ro);
  ASSERT_TRUE(today.ok());
  for (int round = 1; round <= 3; round++) {  // two log entries: the log is trimmed past the
    Write(today.value().get(), round);        // release's replica's cursor
    if (round != 2) {
      ASSERT_TRUE(SyncOnce(today.value().get(), server.address()).ok());
    }
  }
  const std::string refused = ReleaseCliFails("--db " + old_db + sync);
  EXPECT_NE(refused.find("upgrade it"), std::string::npos) << refused;
  EXPECT_EQ(ReleaseCli("--db " + old_db + " dump").value_or(""),
            "{\"counters\":{\"visits\":{\"n\":6}}}\n");  // what it had, unchanged
  const std::string fresh = dir.File("fresh.db");
  ASSERT_TRUE(ReleaseCli("--db " + fresh + sync));
  EXPECT_EQ(ReleaseCli("--db " + fresh + " dump").value_or(""), Dump(today.value().get()));
}

}  // namespace
}  // namespace cairn
