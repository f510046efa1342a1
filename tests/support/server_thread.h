// Test support: a cairn server on 127.0.0.1 in this process, on its own loop thread, with its
// log kept for the test to read; replicas that sync with it.
#ifndef CAIRN_TESTS_SUPPORT_SERVER_THREAD_H_
#define CAIRN_TESTS_SUPPORT_SERVER_THREAD_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/strings.h"
#include "replica/replica.h"
#include "server/sync_server.h"
#ifdef CAIRN_HAVE_POSTGRESQL
#include "server/pg/pg.h"
#endif
#include "support/temp_dir.h"
#include "sync/sync_client.h"

namespace cairn::testing {

// The store the server tests run against: SQLite, or with CAIRN_TEST_POSTGRES set (the URL of a
// database: the tests' ".pg" variants, tests/CMakeLists.txt, whose fixture "postgres" starts
// one) PostgreSQL, in a schema of its own per server file: the same file, the same data (a
// restarted server finds it), and tests do not see each other's.
inline std::string TestPostgres() {
  const char* url = std::getenv("CAIRN_TEST_POSTGRES");
  return url != nullptr ? url : "";
}
inline bool TestOnPostgres() { return !TestPostgres().empty(); }

inline std::string TestStoreUrl(const std::string& db_path) {
  if (!TestOnPostgres()) return "";
#ifdef CAIRN_HAVE_POSTGRESQL
  const std::string base = TestPostgres();
  char schema[32];
  std::snprintf(schema, sizeof schema, "t_%016llx",
                static_cast<unsigned long long>(std::hash<std::string>()(db_path)));
  auto conn = server::pg::Conn::Connect(base);
  EXPECT_TRUE(conn.ok()) << conn.status().ToString();
  if (!conn.ok()) return "";
  Status st = conn.value()->ExecScript(
      ("CREATE SCHEMA IF NOT EXISTS " + QuoteIdent(schema)).c_str());
  EXPECT_TRUE(st.ok()) << st.ToString();
  std::string url = base;
  // The schema names the connections too (pg_stat_activity.application_name).
  return url + (url.find('?') == std::string::npos ? "?" : "&") +
         "options=-csearch_path%3D" + schema + "&application_name=" + schema;
#else
  (void)db_path;
  ADD_FAILURE() << "CAIRN_TEST_POSTGRES in a build without PostgreSQL support";
  return "";
#endif
}

class ServerThread {
 public:
  explicit ServerThread(server::ServerOptions o) {
    if (o.store.url.empty()) o.store.url = TestStoreUrl(o.db_path);
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_ += line + "\n";
    };
    auto s = server::SyncServer::Create(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s.value());
    Status st = server_->Listen();
    EXPECT_TRUE(st.ok()) << st.ToString();
    thread_ = std::thread([this] { (void)server_->Run(); });
  }
  ~ServerThread() {
    server_->Stop();
    thread_.join();
  }
  uint16_t port() const { return server_->port(); }
  uint16_t http_port() const { return server_->http_port(); }  // with ServerOptions::http
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }
  std::string log() {
    std::lock_guard<std::mutex> lock(log_mu_);
    return log_;
  }

 private:
  std::mutex log_mu_;
  std::string log_;
  std::unique_ptr<server::SyncServer> server_;
  std::thread thread_;
};

// A server whose file is `dir`/server.db (streams: server.db.streams), ticking every 50 ms.
inline server::ServerOptions Options(const TempDir& dir) {
  server::ServerOptions o;
  o.db_path = dir.File("server.db");
  o.conn.tick_ms = 50;
  return o;
}

inline std::unique_ptr<Replica> OpenReplica(const std::string& path) {
  auto r = Replica::Open(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

// One exchange with the server at `server` (HOST:PORT), retrying connections quickly.
inline Status SyncOnce(Replica* r, const std::string& server, sync::SyncOptions o = {}) {
  o.server = server;
  o.backoff_min_ms = 10;
  sync::SyncClient c(r, o);
  return c.SyncOnce(30000);
}

// The ops a replica keeps as refused by the server (Replica::Rejected).
inline std::vector<RejectedOp> RejectedOps(Replica* r) {
  std::vector<RejectedOp> out;
  EXPECT_TRUE(r->Rejected([&](const RejectedOp& op) {
                 out.push_back(op);
                 return Status::OK();
               }).ok());
  return out;
}

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_SERVER_THREAD_H_
