// Sync rules through a real server (docs/sync-rules.md): writes judged on their documents'
// channels, reads limited to the documents in a client's view. Run against SQLite and, as
// ".pg", PostgreSQL.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "oplog/json_codec.h"
#include "port/port.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "rules/rules.h"
#include "support/env.h"
#include "support/fault_proxy.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"
#include "support/token_keys.h"

namespace cairn::testing {
namespace {

const char kSecret[] = "a test secret of at least 32 bytes, for HS256";

constexpr const char* kRules = R"({
  "collections": {
    "tasks":    {"channels": ["user:{owner}", "team:{team}"]},
    "profiles": {"channels": ["user:{$key}"]},
    "news":     {"channels": ["public"], "devices": "read-only"}
  },
  "grants": {"read":  ["public", "user:{sub}", "team:{teams[]}"],
             "write": ["user:{sub}", "team:{teams[]}"]}
})";

// `expires_s` 0: an hour from now.
std::string Token(const std::string& sub, const std::vector<std::string>& teams, bool admin = false,
                  int64_t expires_s = 0) {
  auth::Claims c;
  c.subject = sub;
  c.expires_s = expires_s != 0 ? expires_s : port::WallClockMs() / 1000 + 3600;
  c.admin = admin;
  c.values["teams"] = auth::ClaimValue{true, teams};
  return auth::MintToken(c, kSecret);
}

server::ServerOptions RulesOptions(const TempDir& dir) {
  server::ServerOptions so = Options(dir);
  so.token_secret = kSecret;
  auto rules = rules::Rules::Parse(kRules);
  EXPECT_TRUE(rules.ok()) << rules.status().ToString();
  so.rules = std::make_shared<const rules::Rules>(std::move(rules).value());
  return so;
}

Status Sync(Replica* r, const ServerThread& server, const std::string& token,
            std::vector<std::string> channels = {}) {
  sync::SyncOptions o;
  o.token = token;
  o.channels = std::move(channels);
  return SyncOnce(r, server.address(), o);
}

// Whether `done` holds within 10 s.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000; i++) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// One sync whose connection is cut before the server's frame number `frame` (0-based) reaches
// the client: the sync fails.
void SyncCutBeforeFrame(Replica* r, const ServerThread& server, const std::string& token,
                        uint32_t frame) {
  FaultProxy proxy(server.port(), [frame](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = frame;
    return f;
  });
  sync::SyncOptions o;
  o.token = token;
  EXPECT_FALSE(SyncOnce(r, "127.0.0.1:" + std::to_string(proxy.port()), o).ok());
  EXPECT_EQ(proxy.cuts(), 1);
}

// One sync whose Ack is lost: the connection is cut after Welcome and CaughtUp, before the
// Ack of the push (the server took the push; the client does not know).
void SyncLosingTheAck(Replica* r, const ServerThread& server, const std::string& token) {
  SyncCutBeforeFrame(r, server, token, 2);
}

Fields Task(const std::string& owner, const std::string& team = "") {
  Fields f{{"owner", Value::String(owner)}, {"title", Value::String("t")}};
  if (!team.empty()) f["team"] = Value::String(team);
  return f;
}

// docs/sync-rules.md "Writing": each transaction judged on its documents' channels before and
// after it; refused whole, reported, kept in `rejected` and undone; the rest goes on.
TEST(RulesSync, WritesAreJudgedOnTheirChannels) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  const std::string alice_token = Token("alice", {"red"});
  const std::string bob_token = Token("bob", {"blue", "red"});
  auto bob = OpenReplica(dir.File("bob.db"));
  ASSERT_TRUE(bob->Put("tasks", "b1", Task("bob")).ok());
  ASSERT_TRUE(bob->Put("tasks", "b2", Task("bob", "red")).ok());  // shared with team red
  ASSERT_TRUE(bob->Put("tasks", "b3", Task("bob", "finance")).ok());  // not his team: refused
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  std::vector<RejectedOp> bobs_refused = RejectedOps(bob.get());
  ASSERT_FALSE(bobs_refused.empty());
  for (const RejectedOp& r : bobs_refused) {
    EXPECT_EQ(r.op.key, "b3");
    // The reason does not name the channel he may not read.
    EXPECT_EQ(r.reason.find("finance"), std::string::npos) << r.reason;
  }
  EXPECT_FALSE(bob->Get("tasks", "b3").value().has_value());

  auto alice = OpenReplica(dir.File("alice.db"));
  // Written before she ever synced: the server refuses it (read-only for devices).
  ASSERT_TRUE(alice->Put("news", "n1", {{"text", Value::String("hi")}}).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  // Since the server's Welcome named it one-way, such a write fails at once, whatever the
  // case of the name, offline and after a reopen too; nothing is queued.
  const int64_t pending = alice->PendingOps().value();
  EXPECT_EQ(alice->Put("news", "n2", {{"text", Value::String("hi")}}).status().code(),
            Code::kEPERM);
  EXPECT_EQ(alice->Delete("NEWS", "n1").status().code(), Code::kEPERM);
  alice.reset();
  alice = OpenReplica(dir.File("alice.db"));
  EXPECT_EQ(alice->Increment("News", "n1", "reads", 1).status().code(), Code::kEPERM);
  EXPECT_EQ(alice->PendingOps().value(), pending);
  ASSERT_TRUE(alice->Put("tasks", "a1", Task("alice")).ok());                    // hers: taken
  ASSERT_TRUE(alice->Put("tasks", "b2", {{"title", Value::String("x")}}).ok());  // team: taken
  ASSERT_TRUE(alice->Put("tasks", "a2", Task("carol")).ok());                    // carol's: refused
  // One transaction: her document and bob's own one; refused whole.
  WriteBatch both;
  both.Set("tasks", "a3", "owner", Value::String("alice"));
  both.Set("tasks", "b1", "title", Value::String("mine now"));
  ASSERT_TRUE(alice->Write(both).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  std::vector<RejectedOp> rejected = RejectedOps(alice.get());
  std::set<std::string> refused_keys;
  for (const RejectedOp& r : rejected) {
    EXPECT_EQ(r.code, static_cast<int>(Code::kEPERM)) << r.reason;
    refused_keys.insert(r.op.collection + "/" + r.op.key);
  }
  EXPECT_EQ(refused_keys, (std::set<std::string>{"tasks/a2", "news/n1", "tasks/a3", "tasks/b1"}));
  // Undone on her replica: it holds what she may see and what was taken.
  EXPECT_FALSE(alice->Get("tasks", "a2").value().has_value());
  EXPECT_FALSE(alice->Get("tasks", "a3").value().has_value());
  EXPECT_FALSE(alice->Get("news", "n1").value().has_value());
  ASSERT_TRUE(alice->Get("tasks", "a1").value().has_value());
  EXPECT_EQ(alice->Get("tasks", "b2").value()->at("title").as_string(), "x");

  // She may not move her document to carol, nor take bob's out of her team's reach.
  ASSERT_TRUE(alice->Put("tasks", "a1", {{"owner", Value::String("carol")}}).ok());
  ASSERT_TRUE(alice->Put("tasks", "b2", {{"team", Value::String("green")}}).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  EXPECT_EQ(RejectedOps(alice.get()).size(), rejected.size() + 2);
  EXPECT_EQ(alice->Get("tasks", "a1").value()->at("owner").as_string(), "alice");
  EXPECT_EQ(alice->Get("tasks", "b2").value()->at("team").as_string(), "red");

  // An admin token writes the read-only collection and anything else.
  auto admin = OpenReplica(dir.File("admin.db"));
  ASSERT_TRUE(admin->Put("news", "n1", {{"text", Value::String("from the office")}}).ok());
  ASSERT_TRUE(admin->Put("tasks", "c1", Task("carol")).ok());
  ASSERT_TRUE(Sync(admin.get(), server, Token("root", {}, /*admin=*/true)).ok());
  EXPECT_TRUE(RejectedOps(admin.get()).empty());
  EXPECT_TRUE(admin->Put("news", "n2", {{"text", Value::String("more")}}).ok());
}

// docs/sync-rules.md "Reading": a client gets only documents in a channel it may read (and
// subscribes to); never another's.
TEST(RulesSync, ClientsReceiveOnlyTheDocumentsTheyMayRead) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  auto admin = OpenReplica(dir.File("admin.db"));
  ASSERT_TRUE(admin->Put("tasks", "a1", Task("alice")).ok());
  ASSERT_TRUE(admin->Put("tasks", "b1", Task("bob")).ok());
  ASSERT_TRUE(admin->Put("tasks", "r1", Task("carol", "red")).ok());
  ASSERT_TRUE(admin->Put("tasks", "none", {{"title", Value::String("no owner")}}).ok());
  ASSERT_TRUE(admin->Put("profiles", "alice", {{"name", Value::String("Alice")}}).ok());
  ASSERT_TRUE(admin->Put("profiles", "bob", {{"name", Value::String("Bob")}}).ok());
  ASSERT_TRUE(admin->Put("news", "n1", {{"text", Value::String("hello")}}).ok());
  ASSERT_TRUE(admin->Put("other", "o1", {{"x", Value::Int(1)}}).ok());  // in no channel
  ASSERT_TRUE(Sync(admin.get(), server, Token("root", {}, true)).ok());

  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(Sync(alice.get(), server, Token("alice", {"red"})).ok());
  EXPECT_EQ(alice->DumpString().value(),
            R"({"news":{"n1":{"text":"hello"}},"profiles":{"alice":{"name":"Alice"}},)"
            R"("tasks":{"a1":{"owner":"alice","title":"t"},)"
            R"("r1":{"owner":"carol","team":"red","title":"t"}}})");

  // Subscribed to some of her channels: only those. A channel she may not read: refused.
  auto news_only = OpenReplica(dir.File("news.db"));
  ASSERT_TRUE(Sync(news_only.get(), server, Token("alice", {"red"}), {"public"}).ok());
  EXPECT_EQ(news_only->DumpString().value(), R"({"news":{"n1":{"text":"hello"}}})");
  auto prying = OpenReplica(dir.File("prying.db"));
  Status st = Sync(prying.get(), server, Token("alice", {"red"}), {"user:bob"});
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_NE(st.message().find("user:bob"), std::string::npos) << st.message();

  // The admin reads everything.
  auto root = OpenReplica(dir.File("root.db"));
  ASSERT_TRUE(Sync(root.get(), server, Token("root", {}, true)).ok());
  EXPECT_EQ(root->Digest().value(), admin->Digest().value());
}

// A client behind the kept log gets a snapshot: of the documents in its view only.
TEST(RulesSync, SnapshotsBringOnlyTheView) {
  TempDir dir;
  server::ServerOptions so = RulesOptions(dir);
  so.store.keep_log_ops = 1;  // every new replica starts from a snapshot
  ServerThread server(so);
  auto admin = OpenReplica(dir.File("admin.db"));
  for (const char* key : {"a1", "a2", "b1", "c1", "r1"}) {
    const std::string owner = key[0] == 'a' ? "alice" : key[0] == 'b' ? "bob" : "carol";
    ASSERT_TRUE(admin->Put("tasks", key, Task(owner, key[0] == 'r' ? "red" : "")).ok());
  }
  ASSERT_TRUE(Sync(admin.get(), server, Token("root", {}, true)).ok());
  // A second push: the log keeps only it, the first is trimmed.
  ASSERT_TRUE(admin->Put("profiles", "bob", {{"name", Value::String("Bob")}}).ok());
  ASSERT_TRUE(Sync(admin.get(), server, Token("root", {}, true)).ok());
  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(Sync(alice.get(), server, Token("alice", {"red"})).ok());
  EXPECT_EQ(alice->DumpString().value(),
            R"({"tasks":{"a1":{"owner":"alice","title":"t"},"a2":{"owner":"alice","title":"t"},)"
            R"("r1":{"owner":"carol","team":"red","title":"t"}}})");
  EXPECT_NE(server.log().find("snapshot"), std::string::npos) << server.log();
}

// Sync rules are grants over a token's claims: they need tokens, and a server without rules
// takes no channel subscription.
TEST(RulesSync, RulesNeedTokensAndChannelsNeedRules) {
  TempDir dir;
  server::ServerOptions so = RulesOptions(dir);
  so.token_secret.clear();
  auto refused = server::SyncServer::Create(so);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kEINVAL);
  EXPECT_NE(refused.status().message().find("token"), std::string::npos);

  server::ServerOptions plain = Options(dir);
  ServerThread server(plain);
  auto a = OpenReplica(dir.File("a.db"));
  sync::SyncOptions o;
  o.channels = {"public"};
  Status st = SyncOnce(a.get(), server.address(), o);
  EXPECT_EQ(st.code(), Code::kEINVAL);
  EXPECT_NE(st.message().find("no sync rules"), std::string::npos) << st.message();
}

// docs/protocol.md "Authentication and tokens": tokens an identity provider signs (ES256,
// RS256) are checked with its public keys (a JWKS file), the server holding no secret; their
// claims feed the rules' grants as a secret's tokens do.
TEST(RulesSync, TokensSignedByAnIdentityProvider) {
  TempDir dir;
  server::ServerOptions so = RulesOptions(dir);
  so.token_secret.clear();
  auto keys = std::make_shared<auth::KeySet>();
  ASSERT_TRUE(keys->AddJwks(TestKeyFile("keys.jwks.json"), "keys.jwks.json").ok());
  so.token_keys = std::move(keys);
  so.token_issuer = "https://id.example.com";
  ServerThread server(so);
  const std::string exp = std::to_string(port::WallClockMs() / 1000 + 3600);
  const std::string claims =
      R"({"sub":"alice","iss":"https://id.example.com","exp":)" + exp + R"(,"teams":["red"]})";
  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(alice->Put("tasks", "a1", Task("alice", "red")).ok());
  ASSERT_TRUE(Sync(alice.get(), server,
                   SignWithKey("ec1.key.pem", R"({"alg":"ES256","kid":"ec-2026"})", claims))
                  .ok());
  EXPECT_TRUE(RejectedOps(alice.get()).empty());
  auto again = OpenReplica(dir.File("alice2.db"));
  ASSERT_TRUE(
      Sync(again.get(), server, SignWithKey("rsa1.key.pem", R"({"alg":"RS256"})", claims)).ok());
  EXPECT_EQ(again->Digest().value(), alice->Digest().value());
  // A key the server does not have; an HS256 token (no secret here); another issuer.
  auto refused = OpenReplica(dir.File("refused.db"));
  Status st =
      Sync(refused.get(), server, SignWithKey("rsa2.key.pem", R"({"alg":"RS256"})", claims));
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_NE(st.message().find("bad signature"), std::string::npos) << st.message();
  st = Sync(refused.get(), server, Token("alice", {"red"}));
  EXPECT_EQ(st.code(), Code::kEPERM);
  std::string other = claims;
  other.replace(other.find("id.example.com"), 2, "xx");
  st = Sync(refused.get(), server, SignWithKey("ec1.key.pem", R"({"alg":"ES256"})", other));
  EXPECT_EQ(st.code(), Code::kEPERM);
  EXPECT_NE(st.message().find("issuer"), std::string::npos) << st.message();
}

// docs/protocol.md "Token renewal": a live session takes a renewed token without reconnecting,
// and its grants from then on; an expired token ends the session with ETOKEN and the client
// waits for a new one instead of retrying; a renewed token of someone else ends it (EPERM).
TEST(RulesSync, TokensRenewOnALiveSession) {
  TempDir dir;
  FakeClock clock(port::WallClockMs());
  server::ServerOptions so = RulesOptions(dir);
  so.store.clock = &clock;
  ServerThread server(so);
  const int64_t t0 = clock.NowMs() / 1000;
  auto bob = OpenReplica(dir.File("bob.db"));
  auto bob_syncs = [&] {
    return Sync(bob.get(), server, Token("bob", {"red"}, false, clock.NowMs() / 1000 + 600));
  };
  auto alice = OpenReplica(dir.File("alice.db"));
  sync::SyncOptions o;
  o.server = server.address();
  o.token = Token("alice", {"red"}, false, t0 + 600);
  sync::SyncClient live(alice.get(), o);
  std::mutex errors_mu;
  std::vector<std::string> errors;  // every last_error the status callback heard
  live.SetStatusCallback([&](const sync::SyncStatus& st) {
    std::lock_guard<std::mutex> lock(errors_mu);
    if (!st.last_error.empty()) errors.push_back(st.last_error);
  });
  auto heard = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(errors_mu);
    for (const std::string& e : errors) {
      if (e.find(what) != std::string::npos) return true;
    }
    return false;
  };
  ASSERT_TRUE(live.Start().ok());
  auto expires_ms = [&] { return live.status().token_expires_ms; };
  ASSERT_TRUE(Eventually([&] { return expires_ms() == (t0 + 600) * 1000; })) << expires_ms();

  // Renewed: the session goes on past the first token's expiry.
  live.SetToken(Token("alice", {"red"}, false, t0 + 7200));
  ASSERT_TRUE(Eventually([&] { return expires_ms() == (t0 + 7200) * 1000; })) << expires_ms();
  clock.Advance(1200 * 1000);
  ASSERT_TRUE(bob->Put("tasks", "r1", Task("bob", "red")).ok());
  ASSERT_TRUE(bob_syncs().ok());
  EXPECT_TRUE(Eventually([&] { return alice->Get("tasks", "r1").value().has_value(); }));
  EXPECT_EQ(live.status().reconnects, 0u);
  EXPECT_EQ(live.status().last_error, "");

  // Renewed without team red: its documents leave her replica (docs/sync-rules.md "Changes of
  // view"), their ops do not reach her and her writes to them are refused.
  live.SetToken(Token("alice", {}, false, t0 + 7201));
  ASSERT_TRUE(Eventually([&] { return expires_ms() == (t0 + 7201) * 1000; }));
  ASSERT_TRUE(Eventually([&] { return !alice->Get("tasks", "r1").value().has_value(); }));
  ASSERT_TRUE(bob->Put("tasks", "r2", Task("bob", "red")).ok());
  ASSERT_TRUE(bob_syncs().ok());
  ASSERT_TRUE(alice->Put("tasks", "a1", Task("alice")).ok());
  ASSERT_TRUE(alice->Put("tasks", "r1", {{"title", Value::String("mine")}}).ok());
  ASSERT_TRUE(Eventually([&] {
    sync::SyncStatus st = live.status();
    return st.pending_ops == 0 && st.txns_refused == 1 && st.state == sync::SyncState::kIdle;
  })) << live.status().ToJson();
  EXPECT_FALSE(alice->Get("tasks", "r2").value().has_value());
  std::vector<RejectedOp> refused = RejectedOps(alice.get());
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].op.key, "r1");
  EXPECT_EQ(refused[0].code, static_cast<int>(Code::kEPERM));
  ASSERT_TRUE(bob_syncs().ok());
  EXPECT_FALSE(bob->Get("tasks", "a1").value().has_value());  // hers, not his team's
  EXPECT_EQ(bob->Get("tasks", "r1").value()->at("title").as_string(), "t");

  // Expired (past exp and the leeway): the session ends with ETOKEN and is not retried.
  clock.Set((t0 + 7201 + auth::kClockLeewayS + 5) * 1000);
  ASSERT_TRUE(Eventually([&] { return live.status().last_error.rfind("ETOKEN", 0) == 0; }))
      << live.status().ToJson();
  const uint32_t reconnects = live.status().reconnects;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // backoff_min is 250 ms
  EXPECT_EQ(live.status().reconnects, reconnects);
  EXPECT_EQ(live.status().state, sync::SyncState::kOffline);

  // A new token: it reconnects at once and syncs again.
  ASSERT_TRUE(alice->Put("tasks", "a2", Task("alice")).ok());
  live.SetToken(Token("alice", {"red"}, false, clock.NowMs() / 1000 + 3600));
  ASSERT_TRUE(Eventually([&] {
    sync::SyncStatus st = live.status();
    return st.pending_ops == 0 && st.last_error.empty();
  })) << live.status().ToJson();
  ASSERT_TRUE(bob->Put("tasks", "r3", Task("bob", "red")).ok());
  ASSERT_TRUE(bob_syncs().ok());
  EXPECT_TRUE(Eventually([&] { return alice->Get("tasks", "r3").value().has_value(); }));
  // Team red again: what it wrote meanwhile entered her view, whole.
  EXPECT_EQ(alice->Get("tasks", "r1").value()->at("title").as_string(), "t");
  EXPECT_TRUE(alice->Get("tasks", "r2").value().has_value());

  // Someone else's token: the session ends (EPERM), as a Hello with it would.
  live.SetToken(Token("bob", {"red"}, false, clock.NowMs() / 1000 + 3600));
  EXPECT_TRUE(Eventually([&] {
    return heard("EPERM: server: a renewed token must be for the same subject");
  })) << live.status().ToJson();
  EXPECT_TRUE(heard("ETOKEN: server: the token expired"));
  live.Stop();
}

// docs/protocol.md "Token renewal": from a renewal until the CaughtUp that follows the
// server's answer, the client's status says syncing, not idle: documents are still to enter
// or leave. Idle again, it holds its new view.
TEST(RulesSync, ARenewingClientIsNotIdleUntilItsNewViewIsInPlace) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  auto bob = OpenReplica(dir.File("bob.db"));
  ASSERT_TRUE(bob->Put("tasks", "r1", Task("bob", "red")).ok());
  ASSERT_TRUE(Sync(bob.get(), server, Token("bob", {"red"})).ok());
  // The server's answer to the renewal, its fifth frame (after Welcome, an empty snapshot and
  // CaughtUp: her view is empty), is held back 2 s.
  FaultProxy proxy(server.port(), [](int) {
    Faults f;
    f.stall_down_before_frame = 4;
    f.stall_ms = 2000;
    return f;
  });
  auto alice = OpenReplica(dir.File("alice.db"));
  sync::SyncOptions o;
  o.server = "127.0.0.1:" + std::to_string(proxy.port());
  o.token = Token("alice", {});
  sync::SyncClient live(alice.get(), o);
  ASSERT_TRUE(live.Start().ok());
  ASSERT_TRUE(Eventually([&] { return live.status().state == sync::SyncState::kIdle; }));
  const int64_t exp = port::WallClockMs() / 1000 + 7200;
  live.SetToken(Token("alice", {"red"}, false, exp));
  bool syncing = false;
  for (int i = 0; i < 100 && !syncing; i++) {
    syncing = live.status().state == sync::SyncState::kSyncing;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(syncing) << live.status().ToJson();
  ASSERT_TRUE(Eventually([&] {
    sync::SyncStatus st = live.status();
    return st.state == sync::SyncState::kIdle && st.token_expires_ms == exp * 1000;
  })) << live.status().ToJson();
  EXPECT_TRUE(alice->Get("tasks", "r1").value().has_value());
  live.Stop();
}

// Whether the bytes of `needle` are anywhere in the replica's files (the database and its
// WAL): what the server never sent cannot be there.
bool FileHolds(const std::string& db_path, const std::string& needle) {
  for (const std::string& path : {db_path, db_path + "-wal"}) {
    std::string bytes;
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      char buf[65536];
      for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) bytes.append(buf, n);
      std::fclose(f);
    }
    if (bytes.find(needle) != std::string::npos) return true;
  }
  return false;
}

// docs/sync-rules.md "Changes of view": a renewal on a session whose cursor moved on since its
// Hello does not count, for the clients past that point, the grants of before the Hello: a
// later sync names as leaving no document that entered those channels only afterwards (it
// named one: its key, to someone who never could read it; found by the model-based test).
TEST(RulesSync, ARenewalAfterTheLogMovedForgetsTheGrantsOfBeforeItsSession) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  auto alice = OpenReplica(dir.File("alice.db"));
  auto bob = OpenReplica(dir.File("bob.db"));
  // A live session of alice's, its token renewed from teams red+blue to blue, nothing logged
  // after: her view record is uncertain at its cursor (it may hold red's documents there).
  auto live_renewal = [&](std::vector<std::string> from, std::vector<std::string> to) {
    sync::SyncOptions o;
    o.server = server.address();
    o.token = Token("alice", from);
    sync::SyncClient live(alice.get(), o);
    EXPECT_TRUE(live.Start().ok());
    auto idle = [&] { return live.status().state == sync::SyncState::kIdle; };
    EXPECT_TRUE(Eventually(idle));
    const int64_t exp = port::WallClockMs() / 1000 + 7000 + static_cast<int64_t>(to.size());
    live.SetToken(Token("alice", to, false, exp));
    EXPECT_TRUE(Eventually([&] { return idle() && live.status().token_expires_ms == exp * 1000; }));
    live.Stop();
  };
  live_renewal({"red", "blue"}, {"blue"});
  // Bob's task enters team red after that.
  ASSERT_TRUE(bob->Put("tasks", "red-after", Task("bob", "red")).ok());
  ASSERT_TRUE(Sync(bob.get(), server, Token("bob", {"red"})).ok());
  // Alice's next session begins at that cursor (it was red's), catches up past red-after (not
  // hers) and renews to team green.
  live_renewal({"blue"}, {"green"});
  // Her next sync, through a proxy that sees every frame: no leave of red-after.
  std::mutex mu;
  std::vector<std::string> left;
  FaultProxy proxy(server.port(), [&](int) {
    Faults f;
    f.on_down_frame = [&](std::string_view frame) {
      const std::string payload(frame);
      auto v = protocol::VerifyFrame(payload, protocol::FrameLimits());
      const wire::OpBatch* b = v.ok() ? (*v)->body_as_OpBatch() : nullptr;
      const auto* leave = b != nullptr ? b->leave() : nullptr;
      if (leave == nullptr) return;
      std::lock_guard<std::mutex> lock(mu);
      for (const wire::DocRef* d : *leave) {
        if (d != nullptr && d->key() != nullptr) left.push_back(d->key()->str());
      }
    };
    return f;
  });
  ASSERT_TRUE(SyncOnce(alice.get(), "127.0.0.1:" + std::to_string(proxy.port()),
                       [&] {
                         sync::SyncOptions o;
                         o.token = Token("alice", {"green"});
                         return o;
                       }())
                  .ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(std::count(left.begin(), left.end(), "red-after"), 0) << "named as leaving";
  EXPECT_FALSE(FileHolds(dir.File("alice.db"), "red-after"));
}

// docs/sync-rules.md "Reading": a document whose fields move it out of a client's view is
// removed there (not deleted: its holders keep it); one that moves in arrives with its whole
// state, every op counted once; one that came and went while the client was away never
// reaches it, not even its key; a pending write to a document that left is judged and, the
// writer having lost access, refused and undone.
// docs/crdt-semantics.md "History horizon": a document that entered a view before the last
// fold, read by a session still behind that fold, would come as its folded state (one entry
// summing increments the log then brings again): the session gets the whole view at the head
// instead, and the counter is exact.
TEST(RulesSync, ADocumentEnteringBehindAFoldCountsEachIncrementOnce) {
  if (TestOnPostgres()) GTEST_SKIP() << "the history horizon is the SQLite store's only, for now";
  TempDir dir;
  FakeClock clock(port::WallClockMs());
  server::ServerOptions so = RulesOptions(dir);
  so.store.clock = &clock;
  so.store.history_horizon_ms = int64_t{30} * 24 * 3600 * 1000;
  so.maintain_ms = 20;
  ServerThread server(so);
  const int64_t expires = port::WallClockMs() / 1000 + 60 * 24 * 3600;
  const std::string bob_token = Token("bob", {"red", "blue"}, false, expires);
  const std::string alice_token = Token("alice", {"red"}, false, expires);
  ReplicaOptions ro;
  ro.clock = &clock;
  auto bob = Replica::Open(dir.File("bob.db"), ro).value();
  auto alice = Replica::Open(dir.File("alice.db"), ro).value();
  ASSERT_TRUE(bob->Put("tasks", "t", Task("bob", "blue")).ok());
  for (int d = 1; d <= 3; d++) ASSERT_TRUE(bob->Increment("tasks", "t", "n", d).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  EXPECT_FALSE(alice->Get("tasks", "t").value().has_value());
  // Two more increments and the move into team red, in one push; then the fold.
  WriteBatch more;
  more.Increment("tasks", "t", "n", 4).Increment("tasks", "t", "n", 5);
  more.Set("tasks", "t", "team", Value::String("red"));
  ASSERT_TRUE(bob->Write(more).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  clock.Advance(int64_t{31} * 24 * 3600 * 1000);
  ASSERT_TRUE(Eventually([&] {
    ReplicaOptions read;
    read.read_only = true;
    auto f = Replica::Open(dir.File("server.db"), read);
    std::string rows;
    return f.ok() &&
           f.value()
               ->Query("SELECT count(*) AS n FROM cairn_incs",
                       [&](const std::string& r) {
                         rows = r;
                         return Status::OK();
                       })
               .ok() &&
           rows == "{\"n\":1}";
  }));
  Status synced = Sync(alice.get(), server, alice_token);
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  auto t = alice->Get("tasks", "t").value();
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->at("n").as_int(), 15);
  EXPECT_EQ(alice->DumpString().value(), bob->DumpString().value());
}

TEST(RulesSync, DocumentsEnterAndLeaveTheView) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  const std::string bob_token = Token("bob", {"red", "blue"});
  const std::string alice_token = Token("alice", {"red"});
  auto bob = OpenReplica(dir.File("bob.db"));
  ASSERT_TRUE(bob->Put("tasks", "t1",
                       {{"owner", Value::String("bob")},
                        {"team", Value::String("red")},
                        {"title", Value::String("hello")}})
                  .ok());
  ASSERT_TRUE(bob->Put("tasks", "t2",
                       {{"owner", Value::String("bob")},
                        {"team", Value::String("blue")},
                        {"title", Value::String("blue plans")}})
                  .ok());
  ASSERT_TRUE(bob->Increment("tasks", "t2", "votes", 5).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  EXPECT_TRUE(alice->Get("tasks", "t1").value().has_value());
  EXPECT_FALSE(alice->Get("tasks", "t2").value().has_value());

  // t1 leaves her view (team blue), t2 enters it (team red), in one push.
  WriteBatch swap;
  swap.Set("tasks", "t1", "team", Value::String("blue"));
  swap.Set("tasks", "t2", "team", Value::String("red"));
  ASSERT_TRUE(bob->Write(swap).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  Status synced = Sync(alice.get(), server, alice_token);
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  EXPECT_FALSE(alice->Get("tasks", "t1").value().has_value());
  auto t2 = alice->Get("tasks", "t2").value();
  ASSERT_TRUE(t2.has_value());
  EXPECT_EQ(t2->at("title").as_string(), "blue plans");  // written before it entered
  EXPECT_EQ(t2->at("votes").as_int(), 5);
  EXPECT_EQ(alice->DumpString().value().find("t1"), std::string::npos);
  std::string rows;
  ASSERT_TRUE(alice
                  ->Query("SELECT key FROM tasks",
                          [&](const std::string& row) {
                            rows += row;
                            return Status::OK();
                          })
                  .ok());
  EXPECT_EQ(rows.find("t1"), std::string::npos) << rows;
  bool logged = false;
  ASSERT_TRUE(alice
                  ->Log([&](const Op& op) {
                    logged = logged || op.key == "t1";
                    return Status::OK();
                  })
                  .ok());
  EXPECT_FALSE(logged);
  // Bob still has t1: a removal, not a delete.
  EXPECT_TRUE(bob->Get("tasks", "t1").value().has_value());

  // Later writes merge as everywhere: no increment counted twice.
  ASSERT_TRUE(bob->Increment("tasks", "t2", "votes", 1).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  EXPECT_EQ(alice->Get("tasks", "t2").value()->at("votes").as_int(), 6);

  // Away, she edits t2 while bob takes it to blue; a document comes and goes meanwhile.
  ASSERT_TRUE(alice->Put("tasks", "t2", {{"title", Value::String("alice was here")}}).ok());
  ASSERT_TRUE(bob->Put("tasks", "t2", {{"team", Value::String("blue")}}).ok());
  ASSERT_TRUE(bob->Put("tasks", "zz-passing-key",
                       {{"owner", Value::String("bob")}, {"team", Value::String("blue")}})
                  .ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(bob->Put("tasks", "zz-passing-key", {{"team", Value::String("red")}}).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(bob->Put("tasks", "zz-passing-key", {{"team", Value::String("blue")}}).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  EXPECT_FALSE(alice->Get("tasks", "t2").value().has_value());
  std::vector<RejectedOp> refused = RejectedOps(alice.get());
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].op.key, "t2");
  EXPECT_EQ(refused[0].code, static_cast<int>(Code::kEPERM));
  EXPECT_EQ(bob->Get("tasks", "t2").value()->at("title").as_string(), "blue plans");
  alice.reset();
  EXPECT_FALSE(FileHolds(dir.File("alice.db"), "zz-passing-key"));

  // A client that never held t1 (its cursor before it existed) gets nothing of it either way.
  auto carol = OpenReplica(dir.File("carol.db"));
  ASSERT_TRUE(Sync(carol.get(), server, Token("carol", {"red"})).ok());
  EXPECT_EQ(carol->DumpString().value(), "{}");
  carol.reset();
  EXPECT_FALSE(FileHolds(dir.File("carol.db"), "zz-passing-key"));
}

// docs/sync-rules.md "Changes of view": a client that comes back with other grants loses the
// documents it may no longer read and gets those it now may, whole; one whose change was cut
// halfway (it may hold either view) is brought to the view it comes back with.
TEST(RulesSync, ViewsChangeBetweenSessions) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  auto bob = OpenReplica(dir.File("bob.db"));
  for (const char* team : {"red", "blue"}) {
    for (int i = 1; i <= 3; i++) {
      const std::string key = std::string(team) + std::to_string(i);
      ASSERT_TRUE(bob->Put("tasks", key, Task("bob", team)).ok());
      ASSERT_TRUE(bob->Increment("tasks", key, "votes", i).ok());
    }
  }
  ASSERT_TRUE(Sync(bob.get(), server, Token("bob", {"red", "blue"})).ok());
  auto alice = OpenReplica(dir.File("alice.db"));
  // Which of red1..3 and blue1..3 she holds, whole ("-": not at all).
  auto holding = [&] {
    std::string held;
    for (const char* team : {"red", "blue"}) {
      for (int i = 1; i <= 3; i++) {
        auto doc = alice->Get("tasks", std::string(team) + std::to_string(i)).value();
        held += !doc ? "-" : doc->count("votes") && doc->at("votes").as_int() == i ? "+" : "?";
      }
    }
    return held;
  };
  auto sync_as = [&](std::vector<std::string> teams, const std::string& via = "") {
    sync::SyncOptions o;
    o.token = Token("alice", teams);
    return SyncOnce(alice.get(), via.empty() ? server.address() : via, o);
  };
  ASSERT_TRUE(sync_as({"red", "blue"}).ok());
  EXPECT_EQ(holding(), "++++++");
  ASSERT_TRUE(sync_as({"red"}).ok());
  EXPECT_EQ(holding(), "+++---");
  EXPECT_EQ(alice->DumpString().value().find("blue"), std::string::npos);
  ASSERT_TRUE(sync_as({"blue"}).ok());
  EXPECT_EQ(holding(), "---+++");
  ASSERT_TRUE(sync_as({"blue"}).ok());  // the same view: nothing changes
  EXPECT_EQ(holding(), "---+++");
  // Changes cut short leave her cursor where it was: at it she may hold either view. Red, cut
  // after the Welcome (nothing of the change reached her); then blue, cut after the leaving
  // and entering batches (all of it did, before CaughtUp).
  FaultProxy proxy(server.port(), [](int n) {
    Faults f;
    f.cut_down_before_frame = n == 0 ? 1 : 3;
    return f;
  });
  const std::string via = "127.0.0.1:" + std::to_string(proxy.port());
  EXPECT_FALSE(sync_as({"red"}, via).ok());
  EXPECT_EQ(holding(), "---+++");
  ASSERT_TRUE(sync_as({"red"}).ok());
  EXPECT_EQ(holding(), "+++---");
  EXPECT_FALSE(sync_as({"blue"}, via).ok());
  ASSERT_EQ(proxy.cuts(), 2);
  EXPECT_EQ(holding(), "---+++");
  ASSERT_TRUE(sync_as({"red"}).ok());
  EXPECT_EQ(holding(), "+++---");
  // Both: what she lacks enters, what she holds is not sent again (merged as the same ops).
  ASSERT_TRUE(sync_as({"red", "blue"}).ok());
  EXPECT_EQ(holding(), "++++++");
  ASSERT_TRUE(bob->Increment("tasks", "red1", "votes", 10).ok());
  ASSERT_TRUE(Sync(bob.get(), server, Token("bob", {"red", "blue"})).ok());
  ASSERT_TRUE(sync_as({"red", "blue"}).ok());
  EXPECT_EQ(alice->Get("tasks", "red1").value()->at("votes").as_int(), 11);
}

// docs/sync-rules.md "Rules that change": a server started again with other rules gives each
// client that synced before a snapshot that removes what they no longer let it read (its
// unsent writes are pushed and judged as usual: one refused brings nothing back); started
// again with the same rules in another layout, nothing of the kind.
TEST(RulesSync, RulesThatChangeRebaseTheirClients) {
  TempDir dir;
  auto bob = OpenReplica(dir.File("bob.db"));
  auto alice = OpenReplica(dir.File("alice.db"));
  const std::string bob_token = Token("bob", {"red"});
  const std::string alice_token = Token("alice", {"red"});
  {
    ServerThread server(RulesOptions(dir));
    ASSERT_TRUE(bob->Put("tasks", "red1", Task("bob", "red")).ok());
    ASSERT_TRUE(bob->Put("tasks", "red2", Task("bob", "red")).ok());
    ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
    ASSERT_TRUE(alice->Put("tasks", "mine", Task("alice")).ok());
    ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
    ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
    EXPECT_NE(alice->DumpString().value().find("red1"), std::string::npos);
  }
  // Offline, she edits red2. The new rules put tasks in their owner's channel only.
  ASSERT_TRUE(alice->Put("tasks", "red2", {{"title", Value::String("alice's")}}).ok());
  auto owners_only = [&](const char* layout) {
    server::ServerOptions so = RulesOptions(dir);
    auto rules = rules::Rules::Parse(layout);
    EXPECT_TRUE(rules.ok()) << rules.status().ToString();
    so.rules = std::make_shared<const rules::Rules>(std::move(rules).value());
    return so;
  };
  {
    ServerThread server(owners_only(R"({"collections": {"tasks": {"channels": ["user:{owner}"]}},
      "grants": {"read": ["user:{sub}"], "write": ["user:{sub}"]}})"));
    Status synced = Sync(alice.get(), server, alice_token);
    ASSERT_TRUE(synced.ok()) << synced.ToString();
    EXPECT_NE(server.log().find("snapshot"), std::string::npos) << server.log();
    EXPECT_TRUE(alice->Get("tasks", "mine").value().has_value());
    EXPECT_FALSE(alice->Get("tasks", "red1").value().has_value());
    EXPECT_FALSE(alice->Get("tasks", "red2").value().has_value());  // refused, undone: nothing
    std::vector<RejectedOp> refused = RejectedOps(alice.get());
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused[0].op.key, "red2");
    ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
    EXPECT_EQ(bob->Get("tasks", "red2").value()->at("title").as_string(), "t");
  }
  {
    // The same rules, another layout: no snapshot.
    ServerThread server(owners_only(R"({"grants": {"write": ["user:{sub}"],
      "read": ["user:{sub}"]}, "collections": {"tasks": {"channels": ["user:{owner}"]}}})"));
    ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
    EXPECT_EQ(server.log().find("snapshot"), std::string::npos) << server.log();
    EXPECT_TRUE(alice->Get("tasks", "mine").value().has_value());
  }
}

// docs/sync-rules.md "Leaving": a push whose Ack was lost was judged before its client comes
// back; a leave that reaches the client before the Ack of the push retried takes the writes the
// server had judged with the rest (the batch says how far: OpBatch.leave_through), so the
// document does not stay behind with only those (fails without: it stays, "alice's" alone).
TEST(RulesSync, ALeaveBeforeTheAckOfARetriedPushTakesWhatTheServerJudged) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  const std::string bob_token = Token("bob", {"red", "blue"});
  const std::string alice_token = Token("alice", {"red"});
  auto bob = OpenReplica(dir.File("bob.db"));
  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(bob->Put("tasks", "d", Task("bob", "red")).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  ASSERT_TRUE(alice->Get("tasks", "d").value().has_value());
  // She edits d; the Ack of her push is lost.
  ASSERT_TRUE(alice->Put("tasks", "d", {{"title", Value::String("alice's")}}).ok());
  SyncLosingTheAck(alice.get(), server, alice_token);
  // Bob takes d to team blue: out of her view. She comes back.
  ASSERT_TRUE(bob->Put("tasks", "d", {{"team", Value::String("blue")}}).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  Status synced = Sync(alice.get(), server, alice_token);
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  EXPECT_FALSE(alice->Get("tasks", "d").value().has_value()) << alice->DumpString().value();
  EXPECT_TRUE(RejectedOps(alice.get()).empty());
  EXPECT_EQ(alice->GetStatus().value().pending_ops, 0);
  // Her write was taken: Bob has it.
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  EXPECT_EQ(bob->Get("tasks", "d").value()->at("title").as_string(), "alice's");
}

// The same for a document the lost push created: its own log entry moved the document into the
// client's channels, and the client holds it from then on whatever the server's view of its
// state before (none); taken out of its view later, it leaves (found by the simulation's long
// run with rules; fails without: "mine" stays, Alice's own fields alone).
TEST(RulesSync, ADocumentALostPushCreatedLeavesWhenMovedAway) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  const std::string bob_token = Token("bob", {"red", "blue"});
  const std::string alice_token = Token("alice", {"red"});
  auto bob = OpenReplica(dir.File("bob.db"));
  auto alice = OpenReplica(dir.File("alice.db"));
  ASSERT_TRUE(Sync(alice.get(), server, alice_token).ok());
  ASSERT_TRUE(alice->Put("tasks", "mine", Task("alice", "red")).ok());
  SyncLosingTheAck(alice.get(), server, alice_token);
  // Bob takes it: his, team blue. Out of her view.
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  ASSERT_TRUE(bob->Get("tasks", "mine").value().has_value());
  WriteBatch take;
  take.Set("tasks", "mine", "owner", Value::String("bob"));
  take.Set("tasks", "mine", "team", Value::String("blue"));
  ASSERT_TRUE(bob->Write(take).ok());
  ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
  Status synced = Sync(alice.get(), server, alice_token);
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  EXPECT_FALSE(alice->Get("tasks", "mine").value().has_value()) << alice->DumpString().value();
  EXPECT_TRUE(RejectedOps(alice.get()).empty());
  EXPECT_EQ(alice->GetStatus().value().pending_ops, 0);
}

// docs/sync-rules.md "Rules that change": a rebase snapshot cut midway under sync rules starts
// again, never resumed, so nothing staged under another view or other rules is kept: a token
// that lost a team between the cut and the return; the same after a session that began a new
// rebase and was cut before its first frame reached the client (its view record says the new
// view, the client still holds the old staged part); rules that changed. Each fails when
// resumed; resumed whenever the view record is certain and of the same view and rules, the
// second still fails (checked).
TEST(RulesSync, ACutRebaseUnderRulesStartsAgain) {
  TempDir dir;
  server::ServerOptions so = RulesOptions(dir);
  so.max_batch_ops = 4;  // many small chunks
  auto bob = OpenReplica(dir.File("bob.db"));
  const std::string bob_token = Token("bob", {"red", "blue"});
  WriteBatch tasks;
  for (int i = 0; i < 12; i++) {
    // Keys in snapshot order: the blue ones (a*) are staged first.
    const std::string n = std::to_string(10 + i);
    for (const char* team : {"blue", "red"}) {
      const std::string key = (team[0] == 'b' ? "a" : "b") + n;
      tasks.Set("tasks", key, "owner", Value::String("bob"));
      tasks.Set("tasks", key, "team", Value::String(team));
    }
  }
  ASSERT_TRUE(bob->Write(tasks).ok());
  // Frames to a new replica: Welcome, SnapshotBegin, chunks...: cut before the third chunk.
  auto staged_blue = [&](Replica* r, ServerThread& server, const std::string& token) {
    SyncCutBeforeFrame(r, server, token, 4);
    auto staged = SyncAccess(*r).GetSnapshot().value();
    ASSERT_TRUE(staged.has_value());
    EXPECT_EQ(staged->after_key.substr(0, 1), "a");  // blue tasks staged, not applied
  };
  auto holds_no_blue = [](Replica* r) {
    EXPECT_FALSE(r->Get("tasks", "a10").value().has_value());
    EXPECT_TRUE(r->Get("tasks", "b10").value().has_value());
    EXPECT_EQ(r->DumpString().value().find("\"a1"), std::string::npos);
  };
  const std::string red = Token("alice", {"red"}), red_blue = Token("alice", {"red", "blue"});
  auto alice = OpenReplica(dir.File("alice.db"));
  auto erin = OpenReplica(dir.File("erin.db"));
  auto carol = OpenReplica(dir.File("carol.db"));
  const std::string carol_token = Token("carol", {"red", "blue"});
  {
    ServerThread server(so);
    ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
    // Alice's token loses team blue between the cut and her return.
    staged_blue(alice.get(), server, red_blue);
    Status synced = Sync(alice.get(), server, red);
    ASSERT_TRUE(synced.ok()) << synced.ToString();
    holds_no_blue(alice.get());
    // Erin's too, and her first session with it is cut after its Welcome: the new rebase
    // never reached her.
    staged_blue(erin.get(), server, Token("erin", {"red", "blue"}));
    {
      FaultProxy after_welcome(server.port(), [](int n) {
        Faults f;
        if (n == 0) f.cut_down_before_frame = 1;
        return f;
      });
      sync::SyncOptions o;
      o.token = Token("erin", {"red"});
      EXPECT_FALSE(
          SyncOnce(erin.get(), "127.0.0.1:" + std::to_string(after_welcome.port()), o).ok());
      EXPECT_EQ(after_welcome.cuts(), 1);
    }
    synced = Sync(erin.get(), server, Token("erin", {"red"}));
    ASSERT_TRUE(synced.ok()) << synced.ToString();
    holds_no_blue(erin.get());
    // The same view: started again too, and whole.
    staged_blue(carol.get(), server, carol_token);
    ASSERT_TRUE(Sync(carol.get(), server, carol_token).ok());
    EXPECT_EQ(server.log().find("(resumed)"), std::string::npos) << server.log();
    EXPECT_TRUE(carol->Get("tasks", "a10").value().has_value());
    EXPECT_TRUE(carol->Get("tasks", "b21").value().has_value());
  }
  // Other rules (tasks in their owner's channel only), the same grants.
  auto dave = OpenReplica(dir.File("dave.db"));
  const std::string dave_token = Token("dave", {"red", "blue"});
  {
    ServerThread server(so);
    staged_blue(dave.get(), server, dave_token);
  }
  server::ServerOptions owners = so;
  auto rules = rules::Rules::Parse(R"({"collections": {"tasks": {"channels": ["user:{owner}"]}},
    "grants": {"read": ["public", "user:{sub}", "team:{teams[]}"],
               "write": ["user:{sub}", "team:{teams[]}"]}})");
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  owners.rules = std::make_shared<const rules::Rules>(std::move(rules).value());
  ServerThread server(owners);
  Status synced = Sync(dave.get(), server, dave_token);
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  EXPECT_EQ(server.log().find("(resumed)"), std::string::npos) << server.log();
  EXPECT_EQ(dave->DumpString().value(), "{}");
}

// Bob's five tasks of team blue, each kBlobBytes large, moved to team red in one push after
// Alice (team red) synced; the server and Alice take frames of at most 9 MiB (the least allowed).
struct EnteringSetup {
  static constexpr int kDocs = 5;
  static constexpr uint32_t kFrameBytes = 9u << 20;
  static constexpr size_t kBlobBytes = 2u << 20;  // 5 x 2 MiB: more than a frame
  TempDir dir;
  std::unique_ptr<ServerThread> server;
  std::unique_ptr<Replica> alice;
  const std::string alice_token = Token("alice", {"red"});

  EnteringSetup() {
    server::ServerOptions so = RulesOptions(dir);
    so.conn.limits.max_frame_bytes = kFrameBytes;
    server = std::make_unique<ServerThread>(so);
    const std::string bob_token = Token("bob", {"red", "blue"});
    auto bob = OpenReplica(dir.File("bob.db"));
    for (int i = 0; i < kDocs; i++) {
      EXPECT_TRUE(bob->Put("tasks", "big" + std::to_string(i),
                           {{"owner", Value::String("bob")},
                            {"team", Value::String("blue")},
                            {"blob", Value::String(std::string(kBlobBytes, 'x'))}})
                      .ok());
    }
    EXPECT_TRUE(Sync(bob.get(), *server, bob_token).ok());
    alice = OpenReplica(dir.File("alice.db"));
    EXPECT_TRUE(SyncVia(server->address()).ok());
    WriteBatch all_red;
    for (int i = 0; i < kDocs; i++) {
      all_red.Set("tasks", "big" + std::to_string(i), "team", Value::String("red"));
    }
    EXPECT_TRUE(bob->Write(all_red).ok());
    EXPECT_TRUE(Sync(bob.get(), *server, bob_token).ok());
  }
  Status SyncVia(const std::string& address) {
    sync::SyncOptions o;
    o.token = alice_token;
    o.conn.limits.max_frame_bytes = kFrameBytes;
    return SyncOnce(alice.get(), address, o);
  }
  void ExpectAll() {
    for (int i = 0; i < kDocs; i++) {
      auto doc = alice->Get("tasks", "big" + std::to_string(i)).value();
      ASSERT_TRUE(doc.has_value()) << i;
      ASSERT_EQ(doc->count("blob"), 1u) << i;
      EXPECT_EQ(doc->at("blob").as_string().size(), kBlobBytes) << i;
      EXPECT_EQ(doc->at("team").as_string(), "red") << i;
    }
  }
};

// Documents entering a view at once whose states together exceed a frame: their states are
// spread over several batches (docs/sync-rules.md "Reading"), none over the frame limit (one
// batch fails). A connection cut after the first of them: the client's cursor never passes the
// move before every entering state was sent, so the next sync brings the rest (fails when the
// states ride after the entry).
TEST(RulesSync, EnteringStatesSpreadOverBatchesAndSurviveACut) {
  EnteringSetup s;
  FaultProxy proxy(s.server->port(), [](int n) {
    Faults f;
    if (n == 0) f.cut_down_before_frame = 2;  // Welcome, one batch, cut
    return f;
  });
  EXPECT_FALSE(s.SyncVia("127.0.0.1:" + std::to_string(proxy.port())).ok());
  ASSERT_EQ(proxy.cuts(), 1);
  Status synced = s.SyncVia(s.server->address());
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  s.ExpectAll();
}

// Found by the model-based test (seed 9): a client writes a document outside its view (its
// subscription leaves it out) that the write does not move: the write is accepted, and nothing
// of the document may stay on the client (its own ops of it leave with the entry).
TEST(RulesSync, AnOwnWriteOutsideTheViewLeavesWithIt) {
  TempDir dir;
  ServerThread server(RulesOptions(dir));
  const std::string token = Token("carol", {"blue", "red"});
  const std::vector<std::string> teams = {"team:blue", "team:red"};
  auto carol = OpenReplica(dir.File("carol.db"));
  ASSERT_TRUE(carol->Put("tasks", "b", {{"owner", Value::String("carol")}}).ok());
  ASSERT_TRUE(Sync(carol.get(), server, token, teams).ok());
  ASSERT_FALSE(carol->Get("tasks", "b").value().has_value());  // user:carol: not subscribed
  ASSERT_TRUE(carol->Put("tasks", "b", {{"title", Value::String("x")}}).ok());
  ASSERT_TRUE(Sync(carol.get(), server, token, teams).ok());
  auto b = carol->Get("tasks", "b");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->has_value()) << FieldsToJson(**b).dump();
  EXPECT_EQ(RejectedOps(carol.get()).size(), 0u);
  ASSERT_TRUE(Sync(carol.get(), server, token).ok());  // every channel: it comes back whole
  EXPECT_EQ(carol->Get("tasks", "b").value(),
            (Fields{{"owner", Value::String("carol")}, {"title", Value::String("x")}}));
}

// The model-based randomized test (docs/sync-rules.md "Status"): users with replicas of their
// own write tasks whose owner and team move them between channels (some offline for several
// steps, some refused), join and leave teams (a new token at the next sync), narrow and widen
// their subscription, and sync, one at a time, through a real server. A model of its own (the
// rules read as "owner is the user, or team is one of its teams", not through rules.cc; merges
// per field by the order of the writes, which one clock shared by every replica and the server
// makes the order of their timestamps) judges each pushed transaction and holds the server's
// state. After each sync the user's replica holds exactly the tasks of its view in the model's
// state, its rejected table exactly the refused writes, and its files no key of a task it was
// never entitled to (in its view at one of its syncs, or written by it). Seeds:
// CAIRN_RULES_MODEL_SEEDS (default 20), from CAIRN_RULES_MODEL_FIRST (default 1).
class RulesModel {
 public:
  RulesModel(uint64_t seed, const TempDir& dir) : seed_(seed), dir_(dir), rng_(seed) {
    for (size_t i = 0; i < kKeys; i++) {
      // Distinctive keys: found in a file's bytes only if they were written there.
      keys_.push_back("task-" + std::to_string(seed) + "-" + std::string(1, char('a' + i)) + "-zq" +
                      std::to_string(i * 7919 % 1000));
    }
    for (size_t i = 0; i < kUsers; i++) {
      User u;
      u.name = "u" + std::to_string(i);
      for (const char* t : kTeams) {
        if (Pick(2) == 0) u.teams.insert(t);
      }
      ReplicaOptions ro;
      ro.clock = &clock_;
      auto r = Replica::Open(dir.File(u.name + ".db"), ro);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      u.replica = std::move(r).value();
      u.synced_teams = u.teams;
      users_.push_back(std::move(u));
    }
  }

  FakeClock* clock() { return &clock_; }  // the server's too

  // Runs `steps` random steps, then syncs everyone twice; "" or what went wrong first. Each
  // sync goes to one of `nodes` (several: server nodes of one PostgreSQL store), at random.
  std::string Run(const std::vector<ServerThread*>& nodes, int steps) {
    // The leak detector's eyes: every frame a node sends, through a proxy.
    std::vector<std::unique_ptr<FaultProxy>> proxies;
    for (ServerThread* node : nodes) {
      proxies.push_back(std::make_unique<FaultProxy>(node->port(), [this](int) {
        Faults f;
        f.nodelay = true;  // (40 ms delayed acknowledgements would make each sync slow)
        f.on_down_frame = [this](std::string_view frame) {
          std::lock_guard<std::mutex> lock(frames_mu_);
          frames_.emplace_back(frame);
        };
        return f;
      }));
      addresses_.push_back("127.0.0.1:" + std::to_string(proxies.back()->port()));
    }
    for (int step = 0; step < steps && failure_.empty(); step++) {
      User& u = users_[Pick(kUsers)];
      const size_t what = Pick(20);
      if (what < 11) {
        Write(&u);
      } else if (what < 17) {
        SyncAndCheck(&u);
      } else if (what < 19) {
        const std::string team = kTeams[Pick(3)];
        if (!u.teams.erase(team)) u.teams.insert(team);
        // (It subscribes only to channels its token grants: a team it left goes.)
        u.subscribed.erase("team:" + team);
        Trace(u.name + " now in teams " + Join(u.teams) + ", subscribed " +
              (u.subscribed.empty() ? "all" : Join(u.subscribed)));
      } else {
        u.subscribed.clear();
        if (Pick(2) == 0) {
          std::set<std::string> grants = Grants(u);
          for (const std::string& c : grants) {
            if (Pick(2) == 0) u.subscribed.insert(c);
          }
        }
        Trace(u.name + " subscribes to " + (u.subscribed.empty() ? "all" : Join(u.subscribed)));
      }
    }
    for (int round = 0; round < 2 && failure_.empty(); round++) {
      for (User& u : users_) SyncAndCheck(&u);
    }
    return failure_.empty() ? "" : failure_ + "\nevents:\n" + trace_;
  }

 private:
  static constexpr size_t kUsers = 4, kKeys = 10;
  static constexpr const char* kTeams[] = {"red", "blue", "green"};
  struct Cell {
    Value value;
    uint64_t step = 0;  // the write's order: its timestamp's
  };
  struct Doc {  // docs/crdt-semantics.md "The rules"
    std::map<std::string, Cell> cells;
    uint64_t deleted = 0;  // the step of its largest delete (D)
  };
  struct Txn {
    std::string key;
    Fields fields;  // none: a delete
    uint64_t step = 0;
  };
  struct User {
    std::string name;
    std::set<std::string> teams, subscribed;  // subscribed: empty for every channel it reads
    std::set<std::string> synced_teams;       // those of the token the server saw last
    std::unique_ptr<Replica> replica;
    std::vector<Txn> pending;  // written, not pushed yet
    size_t refused_ops = 0;
    std::set<std::string> entitled;  // keys it may have had
  };

  size_t Pick(size_t n) { return static_cast<size_t>(rng_() % n); }
  static std::string Join(const std::set<std::string>& s) {
    std::string out;
    for (const std::string& x : s) out += (out.empty() ? "" : ",") + x;
    return out.empty() ? "(none)" : out;
  }
  void Trace(const std::string& line) { trace_ += "  " + line + "\n"; }
  void Fail(const std::string& what) {
    if (failure_.empty()) failure_ = "seed " + std::to_string(seed_) + ": " + what;
  }

  // The model's reading of the rules: channels user:{owner} and team:{team}; a token grants
  // user:{sub} and team:{each of its teams}, to read and to write.
  static std::set<std::string> Channels(const Fields& f) {
    std::set<std::string> out;
    for (const auto& [field, prefix] :
         {std::pair<const char*, const char*>{"owner", "user:"}, {"team", "team:"}}) {
      auto it = f.find(field);
      if (it != f.end() && it->second.type() == ValueType::kString &&
          !it->second.as_string().empty()) {
        out.insert(prefix + it->second.as_string());
      }
    }
    return out;
  }
  static std::set<std::string> Grants(const User& u) { return Grants(u, u.teams); }
  static std::set<std::string> Grants(const User& u, const std::set<std::string>& teams) {
    std::set<std::string> out = {"user:" + u.name};
    for (const std::string& t : teams) out.insert("team:" + t);
    return out;
  }
  static bool Meets(const std::set<std::string>& a, const std::set<std::string>& b) {
    for (const std::string& x : a) {
      if (b.count(x)) return true;
    }
    return false;
  }
  static Fields Visible(const Doc& d) {
    Fields f;
    for (const auto& [name, cell] : d.cells) {
      if (cell.step > d.deleted) f[name] = cell.value;
    }
    return f;
  }
  bool InView(const User& u, const Fields& f) const { return InView(u, f, u.teams); }
  bool InView(const User& u, const Fields& f, const std::set<std::string>& teams) const {
    if (f.empty()) return false;
    const std::set<std::string> ch = Channels(f);
    return Meets(ch, Grants(u, teams)) && (u.subscribed.empty() || Meets(ch, u.subscribed));
  }

  void Write(User* u) {
    Txn t;
    t.key = keys_[Pick(kKeys)];
    const size_t n = Pick(4);
    const bool del = Pick(10) == 0;
    if (!del && (n == 0 || Pick(3) == 0)) {  // mostly its own
      t.fields["owner"] = Value::String(Pick(4) == 0 ? users_[Pick(kUsers)].name : u->name);
    }
    if (!del && (n == 1 || Pick(2) == 0))
      t.fields["team"] = Value::String(Pick(4) == 0 ? "" : kTeams[Pick(3)]);
    if (!del && (n >= 2 || t.fields.empty()))
      t.fields["title"] = Value::Int(static_cast<int64_t>(step_));
    clock_.Advance(1);
    t.step = ++step_;
    Status st =
        (del ? u->replica->Delete("tasks", t.key) : u->replica->Put("tasks", t.key, t.fields))
            .status();
    if (!st.ok()) {
      Fail(u->name + (del ? " delete " : " put ") + t.key + ": " + st.ToString());
      return;
    }
    std::string desc = del ? " (a delete)" : "";
    for (const auto& [k, v] : t.fields) desc += " " + k + "=" + JsonOf(v);
    Trace("step " + std::to_string(t.step) + ": " + u->name + " writes " + t.key + desc);
    u->entitled.insert(t.key);
    u->pending.push_back(std::move(t));
  }
  static std::string JsonOf(const Value& v) {
    Fields f{{"v", v}};
    return FieldsToJson(f)["v"].dump();
  }

  // docs/sync-rules.md "Writing", on the model's state, for a token granting `w`.
  static bool MayWrite(const std::set<std::string>& w, const Doc& before, const Doc& after) {
    const Fields fb = Visible(before), fa = Visible(after);
    const std::set<std::string> cb = Channels(fb), ca = Channels(fa);
    if (fb.empty() && fa.empty()) return false;  // its key alone gives no channel
    if (!fb.empty() && !Meets(cb, w)) return false;
    if (!fa.empty()) {
      if (!Meets(ca, w)) return false;
      for (const std::string& c : ca) {
        if (!cb.count(c) && !w.count(c)) return false;
      }
    }
    return true;
  }

  // The leak detector: each frame of the sync carries ops and states only of tasks in the
  // user's view in the server's state before its push or after it (which of the two a frame
  // saw is not known here), under the token it pushed with or the one it renewed to, names as
  // leaving only those or tasks it was entitled to before, and carries no channel moves.
  void CheckFrames(const User& u, const std::map<std::string, Doc>& before,
                   const std::set<std::string>& entitled, const std::set<std::string>& push_teams) {
    auto visible = [&](const std::string& key) {
      for (const std::map<std::string, Doc>* state : {&before, &std::as_const(docs_)}) {
        auto d = state->find(key);
        if (d == state->end()) continue;
        const Fields f = Visible(d->second);
        if (InView(u, f) || InView(u, f, push_teams)) return true;
      }
      return false;
    };
    std::vector<std::string> frames;
    {
      std::lock_guard<std::mutex> lock(frames_mu_);
      frames.swap(frames_);
    }
    auto check_batch = [&](const char* what, const wire::OpBatch* b) {
      if (b == nullptr) return;
      Status st = protocol::DecodeBatch(*b, {}, [&](const Op& op) {
        if (op.collection != "tasks" || !visible(op.key)) {
          Fail("leak: " + std::string(what) + " to " + u.name + " carries " + op.collection + "/" +
               op.key + ", outside its view");
        }
        return Status::OK();
      });
      if (!st.ok()) Fail(std::string(what) + " to " + u.name + ": " + st.ToString());
    };
    for (const std::string& payload : frames) {
      auto frame = protocol::VerifyFrame(payload, protocol::FrameLimits());
      if (!frame.ok()) {
        Fail("a frame to " + u.name + ": " + frame.status().ToString());
        return;
      }
      if (const wire::SnapshotChunk* chunk = (*frame)->body_as_SnapshotChunk()) {
        check_batch("a snapshot chunk", chunk->batch());
        continue;
      }
      const wire::OpBatch* b = (*frame)->body_as_OpBatch();
      if (b == nullptr) continue;
      check_batch("a log batch", b);
      check_batch("an entering state", b->enter());
      if (b->moves() != nullptr && b->moves()->size() > 0) {
        Fail("a batch to " + u.name + " carries channel moves");
      }
      const auto* leave = b->leave();
      if (leave == nullptr) continue;
      for (const wire::DocRef* d : *leave) {
        const std::string key = d && d->key() ? d->key()->str() : std::string();
        if (!entitled.count(key) && !visible(key)) {
          Fail("leak: a batch to " + u.name + " names " + key + " as leaving, never its");
        }
      }
    }
  }

  void SyncAndCheck(User* u) {
    clock_.Advance(1);
    const std::map<std::string, Doc> before = docs_;     // the server's state before the push
    const std::set<std::string> entitled = u->entitled;  // (before this sync)
    // When its teams changed since its last sync, it may renew its token on a live session
    // (docs/protocol.md "Token renewal"): it pushes under the token the server saw last, then
    // renews. (Only when both tokens read what it subscribes to: else the server ends it.)
    const std::set<std::string> old_grants = Grants(*u, u->synced_teams);
    bool live = u->synced_teams != u->teams && Pick(2) == 0;
    for (const std::string& c : u->subscribed) live = live && old_grants.count(c) > 0;
    const std::set<std::string> push_teams = live ? u->synced_teams : u->teams;
    const size_t node = Pick(addresses_.size());
    via_ = addresses_[node];
    // The server judges its pushed transactions in order, on its state.
    for (const Txn& t : u->pending) {
      Doc& doc = docs_[t.key];
      Doc after = doc;
      if (t.fields.empty()) after.deleted = std::max(after.deleted, t.step);
      for (const auto& [name, value] : t.fields) {
        Cell& c = after.cells[name];
        if (t.step > c.step) c = Cell{value, t.step};
      }
      const bool ok = MayWrite(Grants(*u, push_teams), doc, after);
      Trace("  " + u->name + "'s write " + std::to_string(t.step) + ": " +
            (ok ? "accepted" : "refused"));
      if (ok) {
        doc = std::move(after);
      } else {
        u->refused_ops += std::max<size_t>(t.fields.size(), 1);
      }
    }
    u->pending.clear();
    Trace(u->name + " (teams " + Join(u->teams) + ", subscribed " +
          (u->subscribed.empty() ? "all" : Join(u->subscribed)) + ") syncs" +
          (live ? ", renewing its token of teams " + Join(u->synced_teams) + " live" : "") +
          (addresses_.size() > 1 ? ", through node " + std::to_string(node + 1) : ""));
    {
      std::lock_guard<std::mutex> lock(frames_mu_);
      frames_.clear();
    }
    Status st = live ? RenewLive(u) : SyncOnce(u->replica.get(), via_, OptionsFor(*u, u->teams));
    if (!st.ok()) {
      Fail(u->name + " sync: " + st.ToString());
      return;
    }
    u->synced_teams = u->teams;
    CheckFrames(*u, before, entitled, push_teams);
    if (live) {  // what its old token read, before the push or after, it may have held
      for (const std::map<std::string, Doc>* state : {&before, &std::as_const(docs_)}) {
        for (const auto& [key, doc] : *state) {
          if (InView(*u, Visible(doc), push_teams)) u->entitled.insert(key);
        }
      }
    }
    const std::string wrong = Mismatch(u);
    if (!wrong.empty()) Fail(wrong);
    for (const std::string& key : keys_) {
      if (!u->entitled.count(key) && FileHolds(dir_.File(u->name + ".db"), key)) {
        Fail("leak: " + u->name + "'s files hold " + key + ", never in its view");
      }
    }
  }

  // A sync with a token for `teams`; each token expires at another second (the status's
  // token_expires_ms tells which one the server took): *expires_ms.
  sync::SyncOptions OptionsFor(const User& u, const std::set<std::string>& teams,
                               int64_t* expires_ms = nullptr) {
    const int64_t exp = clock_.NowMs() / 1000 + 3600 + static_cast<int64_t>(++tokens_);
    if (expires_ms != nullptr) *expires_ms = exp * 1000;
    sync::SyncOptions o;
    o.server = via_;
    o.token = Token(u.name, std::vector<std::string>(teams.begin(), teams.end()), false, exp);
    o.channels.assign(u.subscribed.begin(), u.subscribed.end());
    return o;
  }

  // A live session under the token of its last sync: idle (its pushes judged), it renews the
  // token with its new teams and waits for idle again: the new view must be in place then.
  Status RenewLive(User* u) {
    int64_t old_expires_ms = 0, new_expires_ms = 0;
    sync::SyncClient live(u->replica.get(), OptionsFor(*u, u->synced_teams, &old_expires_ms));
    Status st = live.Start();
    if (!st.ok()) return st;
    auto idle_with = [&](int64_t expires_ms) {
      return Eventually([&] {
        sync::SyncStatus s = live.status();
        return s.state == sync::SyncState::kIdle && s.pending_ops == 0 &&
               s.token_expires_ms == expires_ms;
      });
    };
    if (!idle_with(old_expires_ms)) {
      st = Status(Code::kETIMEDOUT, "not idle under its old token: " + live.status().ToJson());
    } else {
      live.SetToken(OptionsFor(*u, u->teams, &new_expires_ms).token);
      if (!idle_with(new_expires_ms)) {
        st = Status(Code::kETIMEDOUT, "not idle after the renewal: " + live.status().ToJson());
      } else {
        // Checked while the session is still up: nothing is left to arrive once idle.
        const std::string wrong = Mismatch(u);
        if (!wrong.empty()) Fail("idle after the renewal, but " + wrong);
      }
    }
    live.Stop();
    return st;
  }

  // "" when the replica holds exactly the model's view and refusals, else what differs.
  std::string Mismatch(User* u) {
    for (const std::string& key : keys_) {
      auto d = docs_.find(key);
      const Fields model = d == docs_.end() ? Fields() : Visible(d->second);
      const bool in_view = InView(*u, model);
      if (in_view) u->entitled.insert(key);
      auto got = u->replica->Get("tasks", key);
      if (!got.ok()) return u->name + " get " + key + ": " + got.status().ToString();
      if (in_view != got->has_value() || (in_view && **got != model)) {
        return u->name + " holds " + key + " as " +
               (got->has_value() ? FieldsToJson(**got).dump() : std::string("(nothing)")) +
               ", the model says " + (in_view ? FieldsToJson(model).dump() : "(nothing)") +
               " (the server's: " + FieldsToJson(model).dump() + ")";
      }
    }
    const size_t refused = RejectedOps(u->replica.get()).size();
    if (refused != u->refused_ops) {
      return u->name + " has " + std::to_string(refused) + " refused ops, the model says " +
             std::to_string(u->refused_ops);
    }
    return "";
  }

  const uint64_t seed_;
  const TempDir& dir_;
  std::mt19937_64 rng_;
  FakeClock clock_{port::WallClockMs()};
  std::vector<std::string> keys_;
  std::vector<User> users_;
  std::map<std::string, Doc> docs_;  // the server's state
  uint64_t step_ = 0;
  uint64_t tokens_ = 0;  // minted
  std::vector<std::string> addresses_;  // the proxies', one per node
  std::string via_;                     // the one of the sync under way
  std::mutex frames_mu_;
  std::vector<std::string> frames_;  // what the server sent in the sync under way
  std::string trace_, failure_;
};

TEST(RulesModelTest, EachSyncLeavesEveryReplicaWithItsView) {
  const int64_t first = EnvCount("CAIRN_RULES_MODEL_FIRST", 1);
  const int64_t seeds = EnvCount("CAIRN_RULES_MODEL_SEEDS", 20);
  for (int64_t seed = first; seed < first + seeds; seed++) {
    TempDir dir;
    RulesModel model(static_cast<uint64_t>(seed), dir);
    server::ServerOptions so = RulesOptions(dir);
    so.store.clock = model.clock();
    ServerThread server(so);
    const std::string failed = model.Run({&server}, 80);
    ASSERT_EQ(failed, "") << "the server's log:\n"
                          << server.log() << "replay: CAIRN_RULES_MODEL_FIRST=" << seed
                          << " CAIRN_RULES_MODEL_SEEDS=1";
  }
}

// The same on two server nodes of one PostgreSQL store (docs/scale-out.md): each sync, and
// each live renewal, goes to either node; one node judges on the state the other merged, and
// its clients see the other's moves.
TEST(RulesModelTest, EachSyncLeavesEveryReplicaWithItsViewOnSeveralNodes) {
  if (!TestOnPostgres()) GTEST_SKIP() << "several nodes need PostgreSQL";
  const int64_t first = EnvCount("CAIRN_RULES_MODEL_FIRST", 1);
  const int64_t seeds = EnvCount("CAIRN_RULES_MODEL_SEEDS", 20) / 2 + 1;
  for (int64_t seed = first; seed < first + seeds; seed++) {
    TempDir dir;
    RulesModel model(static_cast<uint64_t>(seed), dir);
    auto node = [&](int n) {
      server::ServerOptions o = RulesOptions(dir);
      o.db_path = dir.File("node" + std::to_string(n) + ".db");
      o.store.url = TestStoreUrl(dir.File("cluster"));
      o.store.clock = model.clock();
      return o;
    };
    ServerThread n1(node(1)), n2(node(2));
    const std::string failed = model.Run({&n1, &n2}, 80);
    ASSERT_EQ(failed, "") << "node 1's log:\n"
                          << n1.log() << "node 2's log:\n"
                          << n2.log() << "replay: CAIRN_RULES_MODEL_FIRST=" << seed
                          << " CAIRN_RULES_MODEL_SEEDS=2";
  }
}

// docs/sync-rules.md "Fan-out": a write reaches the clients whose view it touches; a client it
// does not concern hears nothing of it (its cursor stays) until a quiet spell has passed, or the
// log was trimmed past it, and then gets coverage, not a snapshot. A later write in its view
// reaches it whole (the coverage before it: no gap).
TEST(RulesSync, WritesReachOnlyTheClientsTheyConcern) {
  TempDir dir;
  FakeClock clock(port::WallClockMs());
  server::ServerOptions so = RulesOptions(dir);
  so.store.clock = &clock;
  so.store.keep_log_ops = 60;  // 20 writes of 3 ops
  ServerThread server(so);
  auto bob = OpenReplica(dir.File("bob.db"));
  const std::string bob_token = Token("bob", {"red"});
  auto write_red = [&](int from, int to) {
    for (int i = from; i < to; i++) {
      ASSERT_TRUE(bob->Put("tasks", "r" + std::to_string(i), Task("bob", "red")).ok());
      ASSERT_TRUE(Sync(bob.get(), server, bob_token).ok());
    }
  };
  write_red(0, 1);
  auto start = [&](Replica* r, const std::string& token) {
    sync::SyncOptions o;
    o.server = server.address();
    o.token = token;
    auto live = std::make_unique<sync::SyncClient>(r, o);
    EXPECT_TRUE(live->Start().ok());
    return live;
  };
  auto alice = OpenReplica(dir.File("alice.db"));
  auto carol = OpenReplica(dir.File("carol.db"));
  auto alice_live = start(alice.get(), Token("alice", {"red"}));
  auto carol_live = start(carol.get(), Token("carol", {"blue"}));
  // Alice gets every red write: once she has the last one, her cursor is the log's head.
  auto alice_has = [&](int i) {
    return Eventually([&] {
      return alice->Get("tasks", "r" + std::to_string(i)).value().has_value() &&
             alice_live->status().state == sync::SyncState::kIdle;
    });
  };
  ASSERT_TRUE(alice_has(0));
  ASSERT_TRUE(Eventually([&] {
    return carol_live->status().state == sync::SyncState::kIdle &&
           carol_live->status().cursor == alice_live->status().cursor;
  }));
  const uint64_t carol_at = carol_live->status().cursor;

  // Red writes: Alice gets each; Carol hears nothing, not even that her cursor moved.
  write_red(1, 11);
  ASSERT_TRUE(alice_has(10));
  // The log's head: Bob's cursor after his last sync (Alice's status may still show the cursor
  // of the batch before the last, which she applied r10 with: an ASan run saw it).
  const uint64_t head = bob->GetStatus().value().cursor;
  ASSERT_TRUE(Eventually([&] { return alice_live->status().cursor == head; }))
      << alice_live->status().ToJson() << " head " << head;
  ASSERT_GT(head, carol_at);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(carol_live->status().cursor, carol_at);

  // A quiet spell later (the server's clock), her cursor moves past them.
  clock.Advance(so.idle_cursor_ms);
  EXPECT_TRUE(Eventually([&] { return carol_live->status().cursor == head; }))
      << carol_live->status().ToJson() << " head " << head;

  // The log trimmed past her (it keeps 60 ops): she is pumped at once, coverage of what was
  // trimmed and no snapshot. A replica whose cursor was where hers was shows the trim: it gets a
  // snapshot.
  auto dave = OpenReplica(dir.File("dave.db"));
  ASSERT_TRUE(Sync(dave.get(), server, Token("dave", {"blue"})).ok());
  write_red(11, 80);
  ASSERT_TRUE(alice_has(79));
  EXPECT_TRUE(Eventually([&] { return carol_live->status().cursor > head; }))
      << carol_live->status().ToJson();
  ASSERT_TRUE(bob->Put("tasks", "b1", Task("bob", "blue")).ok());
  ASSERT_TRUE(Sync(bob.get(), server, Token("bob", {"red", "blue"})).ok());
  EXPECT_TRUE(Eventually([&] { return carol->Get("tasks", "b1").value().has_value(); }))
      << carol_live->status().ToJson();
  EXPECT_EQ(carol_live->status().last_error, "");
  EXPECT_EQ(carol_live->status().reconnects, 0u);
  EXPECT_EQ(server.log().find("fell behind the kept log"), std::string::npos) << server.log();
  EXPECT_EQ(carol->DumpString().value(),
            R"({"tasks":{"b1":{"owner":"bob","team":"blue","title":"t"}}})");
  const size_t before = server.log().size();
  ASSERT_TRUE(Sync(dave.get(), server, Token("dave", {"blue"})).ok());
  EXPECT_EQ(dave->DumpString().value(), carol->DumpString().value());
  const std::string dave_session = server.log().substr(before);
  EXPECT_NE(dave_session.find("session " + dave->id().Hex()), std::string::npos) << dave_session;
  EXPECT_NE(dave_session.find(", snapshot"), std::string::npos) << dave_session;
  carol_live->Stop();
  alice_live->Stop();
}

// docs/sync-rules.md "Status" (several nodes): two nodes on one PostgreSQL database. A move
// pushed through one node makes documents leave and enter the view of a client live on the
// other; a write pushed through the second is judged on what the first logged (the move that
// took the document out of its writer's channels), refused, and the document leaves the
// writer's replica.
TEST(RulesSync, MovesThroughOneNodeReachClientsOnAnother) {
  if (!TestOnPostgres()) GTEST_SKIP() << "several nodes need PostgreSQL";
  TempDir dir;
  auto node = [&](int n) {
    server::ServerOptions o = RulesOptions(dir);
    o.db_path = dir.File("node" + std::to_string(n) + ".db");
    o.store.url = TestStoreUrl(dir.File("cluster"));
    return o;
  };
  ServerThread n1(node(1)), n2(node(2));
  const std::string bob_token = Token("bob", {"red", "blue"});
  auto bob = OpenReplica(dir.File("bob.db"));
  ASSERT_TRUE(bob->Put("tasks", "t1", Task("bob", "red")).ok());
  ASSERT_TRUE(bob->Put("tasks", "t2", Task("bob", "blue")).ok());
  ASSERT_TRUE(Sync(bob.get(), n1, bob_token).ok());

  auto alice = OpenReplica(dir.File("alice.db"));
  {
    sync::SyncOptions o;
    o.server = n2.address();
    o.token = Token("alice", {"red"});
    sync::SyncClient live(alice.get(), o);
    ASSERT_TRUE(live.Start().ok());
    ASSERT_TRUE(Eventually([&] { return alice->Get("tasks", "t1").value().has_value(); }));
    EXPECT_FALSE(alice->Get("tasks", "t2").value().has_value());
    WriteBatch swap;
    swap.Set("tasks", "t1", "team", Value::String("blue"));
    swap.Set("tasks", "t2", "team", Value::String("red"));
    ASSERT_TRUE(bob->Write(swap).ok());
    ASSERT_TRUE(Sync(bob.get(), n1, bob_token).ok());
    EXPECT_TRUE(Eventually([&] {
      return alice->Get("tasks", "t2").value().has_value() &&
             !alice->Get("tasks", "t1").value().has_value();
    })) << "node 2 log:\n"
        << n2.log();
    live.Stop();
  }
  // Offline, she edits t2, which bob takes back to blue through node 1 meanwhile.
  ASSERT_TRUE(alice->Put("tasks", "t2", {{"title", Value::String("alice's")}}).ok());
  ASSERT_TRUE(bob->Put("tasks", "t2", {{"team", Value::String("blue")}}).ok());
  ASSERT_TRUE(Sync(bob.get(), n1, bob_token).ok());
  Status synced = Sync(alice.get(), n2, Token("alice", {"red"}));
  ASSERT_TRUE(synced.ok()) << synced.ToString();
  EXPECT_FALSE(alice->Get("tasks", "t2").value().has_value());
  std::vector<RejectedOp> refused = RejectedOps(alice.get());
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].op.key, "t2");
  EXPECT_EQ(refused[0].code, static_cast<int>(Code::kEPERM));
  ASSERT_TRUE(Sync(bob.get(), n2, bob_token).ok());
  EXPECT_EQ(bob->Get("tasks", "t2").value()->at("title").as_string(), "t");
}

}  // namespace
}  // namespace cairn::testing
