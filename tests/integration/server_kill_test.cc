// The real cairn-server process killed with SIGKILL at random moments while three clients sync
// through it, then restarted on the same file: the clients resume from their cursors, and at the
// end every replica equals the server, counters exact (nothing lost, nothing applied twice), and
// every outbox is empty.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "replica/replica.h"
#include "support/server_process.h"
#include "support/temp_dir.h"
#include "sync/sync_client.h"

extern char** environ;

namespace cairn {
namespace {

using testing::ServerProcess;
using testing::TempDir;

// A short log: clients often fall behind it, so snapshots are cut by kills too.
const std::vector<std::string> kShortLog = {"--keep-log", "60"};

// A server started with SIGTERM and SIGINT blocked (inherited from its parent) still stops
// cleanly on them.
TEST(ServerKill, StopsOnSigtermWhenStartedWithSignalsBlocked) {
  TempDir dir;
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  ServerProcess server(dir.File("server.db"), dir.File("server.log"), 0, {}, &blocked);
  ASSERT_NE(server.WaitListening(1), 0);
  const int status = server.Signal(SIGTERM, 10000);
  server.Kill(SIGKILL);  // when it did not stop
  ASSERT_NE(status, -1) << "cairn-server ignored SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(ServerKill, ClientsResumeAfterTheServerIsKilled) {
  TempDir dir;
  const std::string db = dir.File("server.db"), log = dir.File("server.log");
  auto server = std::make_unique<ServerProcess>(db, log, 0, kShortLog);
  int starts = 1;
  const uint16_t port = server->WaitListening(starts);
  ASSERT_NE(port, 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);

  std::vector<std::unique_ptr<Replica>> rs;
  for (int i = 0; i < 3; i++) {
    auto r = Replica::Open(dir.File("r" + std::to_string(i) + ".db"));
    ASSERT_TRUE(r.ok());
    rs.push_back(std::move(r.value()));
  }
  std::map<std::string, int64_t> sums;
  std::mutex sums_mu;
  std::atomic<bool> stop{false};
  std::atomic<int> syncs_ok{0}, syncs_failed{0};
  // Each client writes and syncs in a loop on its own thread.
  std::vector<std::thread> clients;
  for (size_t i = 0; i < 3; i++) {
    clients.emplace_back([&, i] {
      std::mt19937 rng(static_cast<uint32_t>(100 + i));
      while (!stop) {
        for (int k = 0; k < 20; k++) {
          const std::string key = "k" + std::to_string(rng() % 10);
          const int64_t d = 1 + static_cast<int64_t>(rng() % 9);
          if (!rs[i]->Increment("counters", key, "n", d).ok()) return;
          {
            std::lock_guard<std::mutex> lock(sums_mu);
            sums[key] += d;
          }
          (void)rs[i]->Put("docs", key, {{"by", Value::Int(static_cast<int64_t>(i))}, {"k", Value::Int(k)}});
        }
        sync::SyncOptions o;
        o.server = address;
        o.max_batch_ops = 7;  // many batches per sync: kills land between them
        sync::SyncClient c(rs[i].get(), o);
        (c.SyncOnce(5000).ok() ? syncs_ok : syncs_failed)++;
      }
    });
  }
  // Kill the server at random moments, restart it on the same file and port.
  std::mt19937 rng(42);
  for (int kill_round = 0; kill_round < 15; kill_round++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 150));
    server->Kill(SIGKILL);
    server = std::make_unique<ServerProcess>(db, log, port, kShortLog);
    ASSERT_EQ(server->WaitListening(++starts), port);
  }
  // Then the server stays up until the clients have synced at least once (under an emulator
  // a sync can take longer than the gaps between kills).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (syncs_ok == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_GT(syncs_failed.load(), 0);  // the kills did interrupt syncs
  EXPECT_GT(syncs_ok.load(), 0);
  // Everybody syncs to the end: push what is left, then pull everything.
  for (int pass = 0; pass < 2; pass++) {
    for (auto& r : rs) {
      sync::SyncOptions o;
      o.server = address;
      sync::SyncClient c(r.get(), o);
      Status s = c.SyncOnce(20000);
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
  }
  server->Kill(SIGTERM);
  {
    std::string text = testing::ReadFile(log);
    EXPECT_NE(text.find(", snapshot"), std::string::npos);  // the short log forced snapshots
  }
  ReplicaOptions ro;
  ro.read_only = true;
  auto srv = Replica::Open(db, ro);
  ASSERT_TRUE(srv.ok());
  const std::string want = srv.value()->Digest().value();
  for (auto& r : rs) {
    EXPECT_EQ(r->Digest().value(), want);
    EXPECT_EQ(r->GetStatus().value().pending_ops, 0);
    for (const auto& [key, sum] : sums) {
      auto doc = r->Get("counters", key).value();
      ASSERT_TRUE(doc.has_value());
      EXPECT_EQ(doc->at("n").as_int(), sum) << key;
    }
  }
}

}  // namespace
}  // namespace cairn
