// The HTTP API's writes against a replica whose clock the test controls (the Python test,
// tests/http/http_api_test.py, drives the real binaries: it cannot move a device's clock).
// docs/backend.md "Writing".
#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "port/port.h"
#include "replica/replica.h"
#include "support/raw_socket.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::Dial;
using testing::FakeClock;
using testing::SendAll;
using testing::ServerThread;
using testing::TempDir;

// One request on its own connection (Connection: close): the status and the body, read until
// the server closes (at most 10 s).
std::pair<int, std::string> Http(uint16_t port, const std::string& method, const std::string& path,
                                 const std::string& body = "", const std::string& headers = "") {
  const int fd = Dial(port);
  if (fd < 0) return {0, "cannot connect"};
  const std::string request = method + " " + path +
                              " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                              "Content-Type: application/json\r\n" +
                              headers + "Content-Length: " + std::to_string(body.size()) +
                              "\r\n\r\n" + body;
  std::string out;
  if (SendAll(fd, request)) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    char buf[4096];
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  const size_t head_end = out.find("\r\n\r\n");
  if (out.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return {0, out};
  return {std::stoi(out.substr(9, 3)), out.substr(head_end + 4)};
}

// An HTTP write is stamped after everything the document holds: it supersedes what a device
// wrote before it even when that device's clock runs ahead (within the drift bound), and a
// device's later write supersedes it in turn (the usual order).
TEST(HttpWrite, SupersedesWhatTheDocumentHeldWhateverTheDevicesClock) {
  TempDir dir;
  server::ServerOptions so = testing::Options(dir);
  so.http = true;
  ServerThread server(so);
  FakeClock ahead(port::WallClockMs() + 30000);  // 30 s fast: the bound is 60 s
  ReplicaOptions ro;
  ro.clock = &ahead;
  auto opened = Replica::Open(dir.File("device.db"), ro);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Replica> device = std::move(opened).value();
  ASSERT_TRUE(device->Put("tasks", "t1", {{"v", Value::String("device")}}).ok());
  ASSERT_TRUE(testing::SyncOnce(device.get(), server.address()).ok());

  auto [status, body] =
      Http(server.http_port(), "PATCH", "/v1/docs/tasks/t1", R"({"fields":{"v":"backend"}})");
  ASSERT_EQ(status, 200) << body;
  ASSERT_TRUE(testing::SyncOnce(device.get(), server.address()).ok());
  EXPECT_EQ(device->Get("tasks", "t1").value()->at("v").as_string(), "backend");
  std::tie(status, body) = Http(server.http_port(), "GET", "/v1/docs/tasks/t1");
  EXPECT_NE(body.find(R"("v":"backend")"), std::string::npos) << body;

  ahead.Advance(1000);
  ASSERT_TRUE(device->Put("tasks", "t1", {{"v", Value::String("device again")}}).ok());
  ASSERT_TRUE(testing::SyncOnce(device.get(), server.address()).ok());
  std::tie(status, body) = Http(server.http_port(), "GET", "/v1/docs/tasks/t1");
  EXPECT_NE(body.find(R"("v":"device again")"), std::string::npos) << body;
}

// Two nodes of one PostgreSQL database (docs/backend.md "Idempotency", "Change feed"): one
// keyed write sent to both at once by several clients is applied once, every client answered
// with its cursor; the change feed, read from either node in turn, gives every change made
// through either (HTTP writes and a device's push) once, in cursor order.
TEST(HttpWrite, TwoNodesApplyAKeyOnceAndFeedEveryChangeOnce) {
  if (!testing::TestOnPostgres()) GTEST_SKIP() << "needs CAIRN_TEST_POSTGRES";
  TempDir dir;
  auto node = [&](int n) {
    server::ServerOptions o = testing::Options(dir);
    o.db_path = dir.File("node" + std::to_string(n) + ".db");
    o.store.url = testing::TestStoreUrl(dir.File("cluster"));
    o.http = true;
    return o;
  };
  ServerThread n1(node(1)), n2(node(2));
  const uint16_t ports[2] = {n1.http_port(), n2.http_port()};

  std::vector<std::pair<int, std::string>> answers(8);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < answers.size(); i++) {
    clients.emplace_back([&, i] {
      answers[i] = Http(ports[i % 2], "POST", "/v1/docs/tasks/t0/inc", R"({"field":"n","delta":1})",
                        "Idempotency-Key: once\r\n");
    });
  }
  for (std::thread& t : clients) t.join();
  for (const auto& [status, body] : answers) {
    EXPECT_EQ(status, 200) << body;
    EXPECT_EQ(body, answers[0].second);
  }
  for (uint16_t port : ports) {
    auto [status, body] = Http(port, "GET", "/v1/docs/tasks/t0");
    EXPECT_NE(body.find(R"("fields":{"n":1})"), std::string::npos) << body;
  }

  // Writes through both nodes and a device's push, the feed read from both in turn.
  auto opened = Replica::Open(dir.File("device.db"), ReplicaOptions());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Replica> device = std::move(opened).value();
  std::vector<std::string> written = {"t0"};
  for (int i = 1; i <= 12; i++) {
    const std::string key = "t" + std::to_string(i);
    if (i % 4 == 0) {
      ASSERT_TRUE(device->Put("tasks", key, {{"i", Value::Int(i)}}).ok());
      ASSERT_TRUE(testing::SyncOnce(device.get(), i % 8 == 0 ? n1.address() : n2.address()).ok());
    } else {
      auto [status, body] = Http(ports[i % 2], "PATCH", "/v1/docs/tasks/" + key,
                                 R"({"fields":{"i":)" + std::to_string(i) + "}}");
      ASSERT_EQ(status, 200) << body;
    }
    written.push_back(key);
  }
  std::vector<std::string> seen;
  uint64_t cursor = 0, last = 0;
  for (int page = 0; page < 50; page++) {
    auto [status, body] =
        Http(ports[page % 2], "GET", "/v1/changes?limit=2&since=" + std::to_string(cursor));
    ASSERT_EQ(status, 200) << body;
    auto json = nlohmann::json::parse(body);
    if (json["changes"].empty()) break;
    for (const auto& c : json["changes"]) {
      EXPECT_GT(c["cursor"].get<uint64_t>(), last) << body;
      last = c["cursor"].get<uint64_t>();
      seen.push_back(c["key"].get<std::string>());
    }
    cursor = json["cursor"].get<uint64_t>();
  }
  EXPECT_EQ(seen, written);
}

}  // namespace
}  // namespace cairn
