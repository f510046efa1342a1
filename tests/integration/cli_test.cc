// The `cairn` tool as a user runs it: output, exit codes (0 ok, 1 not found, 2 usage, 3 error),
// and bad input that must leave the replica unchanged.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "support/server_process.h"
#include "support/temp_dir.h"

namespace {

struct CliRun {
  int code;
  std::string out;
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the shell command `cmd`: its standard output and its exit code.
CliRun Capture(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

class CliTest : public ::testing::Test {
 protected:
  // Runs `cairn --db DB ARGS...`, with `env` ("NAME=value ...", shell-quoted) in its environment.
  CliRun Cairn(const std::vector<std::string>& args, const std::string& env = "") {
    std::string cmd = env + (env.empty() ? "" : " ") + CAIRN_CLI_PATH + " --db " + Quote(db_);
    for (const auto& a : args) cmd += " " + Quote(a);
    cmd += " 2>" + Quote(dir_.File("stderr"));
    CliRun run = Capture(cmd);
    stderr_ = cairn::testing::ReadFile(dir_.File("stderr"));
    return run;
  }
  std::string Digest() { return Cairn({"digest"}).out; }

  cairn::testing::TempDir dir_;
  std::string db_ = dir_.File("r.db");
  std::string stderr_;
};

TEST_F(CliTest, QuickStartFlow) {
  EXPECT_EQ(Cairn({"put", "notes", "n1", R"({"title":"Hi","n":1,"d":0.5})"}).code, 0);
  EXPECT_EQ(Cairn({"inc", "notes", "n1", "views", "3"}).code, 0);
  EXPECT_EQ(Cairn({"get", "notes", "n1"}).out, "{\"d\":0.5,\"n\":1,\"title\":\"Hi\",\"views\":3}\n");
  EXPECT_EQ(Cairn({"dump"}).out,
            "{\"notes\":{\"n1\":{\"d\":0.5,\"n\":1,\"title\":\"Hi\",\"views\":3}}}\n");
  EXPECT_EQ(Cairn({"query", "SELECT key, views FROM notes"}).out, "{\"key\":\"n1\",\"views\":3}\n");
  EXPECT_EQ(Digest().size(), 65u);
  EXPECT_EQ(Cairn({"del", "notes", "n1"}).code, 0);
  CliRun get = Cairn({"get", "notes", "n1"});
  EXPECT_EQ(get.code, 1);
  EXPECT_EQ(get.out, "");
  EXPECT_EQ(Cairn({"dump"}).out, "{}\n");
  CliRun log = Cairn({"log"});
  EXPECT_NE(log.out.find("\"kind\":\"del\""), std::string::npos);
  EXPECT_NE(Cairn({"status"}).out.find("\"pending_ops\":5"), std::string::npos);
}

// put, inc and del --print-seq print the write's receipt (docs/cli.md "Write receipts"); without
// the flag they print nothing; a refused write prints none.
TEST_F(CliTest, WritesPrintTheirReceiptWhenAsked) {
  EXPECT_EQ(Cairn({"put", "--print-seq", "notes", "n1", R"({"a":1,"b":2})"}).out, "2\n");
  EXPECT_EQ(Cairn({"inc", "notes", "n1", "views", "3", "--print-seq"}).out, "3\n");
  EXPECT_EQ(Cairn({"put", "notes", "n2", R"({"a":1})"}).out, "");
  CliRun bad = Cairn({"put", "--print-seq", "notes", "n3", "{oops"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(bad.out, "");
  EXPECT_EQ(Cairn({"del", "--print-seq", "notes", "n1"}).out, "5\n");
}

TEST_F(CliTest, UsageErrorsExitTwoAndChangeNothing) {
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
  std::string before = Digest();
  const std::vector<std::vector<std::string>> bad = {
      {"put", "notes", "n1", "{not json"},
      {"put", "notes", "n1", "[1,2]"},
      {"put", "notes", "n1", "{}"},
      {"put", "notes", "n1", R"({"a":[1]})"},
      {"put", "notes", "n1", R"({"a":{"b":1}})"},
      {"put", "notes", "n1", R"({"bad-field":1})"},
      {"put", "bad name", "n1", R"({"a":1})"},
      {"put", "cairn_x", "n1", R"({"a":1})"},
      {"put", "notes", std::string(1025, 'k'), R"({"a":1})"},
      {"put", "notes", "", R"({"a":1})"},
      {"put", "notes", "n1", R"({"a":18446744073709551615})"},
      // Integer literals outside int64 are refused, never read as a double.
      {"put", "notes", "n1", R"({"a":99999999999999999999999})"},
      {"put", "notes", "n1", R"({"a":-9223372036854775809})"},
      {"put", "notes", "n1", R"({"a":9223372036854775808})"},
      {"inc", "notes", "n1", "n", "1.5"},
      {"inc", "notes", "n1", "n", "99999999999999999999"},
      {"inc", "notes", "n1", "key", "1"},
      {"frobnicate"},
      {"put", "notes"},
  };
  for (const auto& args : bad) {
    CliRun r = Cairn(args);
    EXPECT_EQ(r.code, 2) << args[0] << " " << (args.size() > 3 ? args[3] : "");
    EXPECT_FALSE(stderr_.empty());
  }
  EXPECT_EQ(Digest(), before);
}

TEST_F(CliTest, OtherErrorsExitThree) {
  EXPECT_EQ(Cairn({"dump"}).code, 3);  // no replica yet: reading does not create one
  EXPECT_NE(stderr_.find("no replica"), std::string::npos);
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
  std::string before = Digest();
  EXPECT_EQ(Cairn({"query", "DELETE FROM notes"}).code, 3);
  EXPECT_EQ(Cairn({"import", dir_.File("missing.cex")}).code, 3);
  std::ofstream(dir_.File("junk.cex")) << "junk";
  EXPECT_EQ(Cairn({"import", dir_.File("junk.cex")}).code, 3);
  EXPECT_EQ(Digest(), before);
  std::ofstream(dir_.File("text.db")) << "hello, I am not a replica, just a text file in the way\n";
  db_ = dir_.File("text.db");
  CliRun r = Cairn({"put", "notes", "n1", R"({"a":1})"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(stderr_.find("ENOTREPLICA"), std::string::npos);
}

TEST_F(CliTest, BadInputDoesNotCreateTheReplica) {
  EXPECT_EQ(Cairn({"put", "bad name", "n1", R"({"a":1})"}).code, 2);
  EXPECT_EQ(Cairn({"inc", "notes", "n1", "bad-field", "1"}).code, 2);
  EXPECT_EQ(Cairn({"import", dir_.File("missing.cex")}).code, 3);
  EXPECT_FALSE(std::ifstream(db_).good());
}

// A command refused after the replica file was made for it takes the file away again: a
// damaged import into a new file, an integer outside int64 in a record, a sync that cannot
// reach its server. Nothing is left at the path, not even the WAL.
TEST_F(CliTest, RefusedCommandLeavesNoNewFileBehind) {
  std::ofstream(dir_.File("junk.cex")) << "junk";
  EXPECT_EQ(Cairn({"import", dir_.File("junk.cex")}).code, 3);
  EXPECT_FALSE(std::ifstream(db_).good());
  EXPECT_FALSE(std::ifstream(db_ + "-wal").good());
  EXPECT_FALSE(std::ifstream(db_ + "-shm").good());
  EXPECT_EQ(Cairn({"append", "readings", R"({"t":99999999999999999999})"}).code, 2);
  EXPECT_FALSE(std::ifstream(db_).good());
  EXPECT_EQ(Cairn({"sync", "--server", "127.0.0.1:1", "--once"}).code, 3);
  EXPECT_FALSE(std::ifstream(db_).good());
  // A file that was there before stays, whatever the command's fate.
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
  const std::string before = Digest();
  EXPECT_EQ(Cairn({"import", dir_.File("junk.cex")}).code, 3);
  EXPECT_EQ(Digest(), before);
}

// The same, with another process holding the new file open when the command fails: the file is
// left to it (removing it would lose what that process writes).
TEST_F(CliTest, RefusedCommandLeavesANewFileAnotherProcessOpened) {
  // A "server" that takes the connection and never answers: the sync times out (exit 3).
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string server = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  const std::string cmd = std::string(CAIRN_CLI_PATH) + " --db " + Quote(db_) +
                          " sync --once --timeout-ms 3000 --server " + server + " 2>/dev/null";
  FILE* running = popen(cmd.c_str(), "r");
  ASSERT_NE(running, nullptr);
  // Once the command made the file, this process opens it and reads it (SQLite then holds its
  // shared lock on the -shm, as an app using the file does).
  sqlite3* other = nullptr;
  bool reading = false;
  for (int i = 0; i < 200 && !reading; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!std::ifstream(db_).good()) continue;
    if (other == nullptr && sqlite3_open_v2(db_.c_str(), &other, SQLITE_OPEN_READWRITE,
                                            nullptr) != SQLITE_OK) {
      sqlite3_close(other);
      other = nullptr;
      continue;
    }
    // Read until this connection is in WAL mode, as an app's is: one that read the file while
    // it was still empty (before the command made it a WAL database) holds no lock between
    // reads, which no process can see.
    std::string mode;
    reading = sqlite3_exec(other, "SELECT count(*) FROM sqlite_master", nullptr, nullptr,
                           nullptr) == SQLITE_OK &&
              sqlite3_exec(
                  other, "PRAGMA journal_mode",
                  [](void* out, int, char** values, char**) {
                    *static_cast<std::string*>(out) = values[0] != nullptr ? values[0] : "";
                    return 0;
                  },
                  &mode, nullptr) == SQLITE_OK &&
              mode == "wal";
  }
  ASSERT_TRUE(reading) << "the new file never became readable";
  const int status = pclose(running);
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_TRUE(std::ifstream(db_).good()) << "a file another process had open was removed";
  sqlite3_close(other);
  close(listener);
  // Still a replica, usable.
  EXPECT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
}

TEST_F(CliTest, NewerFormatIsRefused) {
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(Cairn({"dump"}).code, 3);
  EXPECT_NE(stderr_.find("EVERSION"), std::string::npos);
}

TEST_F(CliTest, ExportImportCarriesASync) {
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1,"b":{"$bytes":"AAEC"}})"}).code, 0);
  std::string file = dir_.File("a.cex");
  CliRun exp = Cairn({"export", file});
  ASSERT_EQ(exp.code, 0);
  EXPECT_NE(exp.out.find("\"ops\":2"), std::string::npos);
  std::string a_digest = Digest();
  db_ = dir_.File("b.db");
  ASSERT_EQ(Cairn({"put", "other", "x", R"({"z":true})"}).code, 0);
  std::string b_before = Digest();
  // A damaged copy is refused and changes nothing.
  std::string bytes = cairn::testing::ReadFile(file);
  std::ofstream(dir_.File("cut.cex"), std::ios::binary) << bytes.substr(0, bytes.size() - 5);
  EXPECT_EQ(Cairn({"import", dir_.File("cut.cex")}).code, 3);
  EXPECT_EQ(Digest(), b_before);
  CliRun imp = Cairn({"import", file});
  ASSERT_EQ(imp.code, 0);
  EXPECT_EQ(imp.out, "{\"applied\":2,\"duplicates\":0,\"held_back\":0,\"ops\":2}\n");
  EXPECT_EQ(Cairn({"get", "notes", "n1"}).out, "{\"a\":1,\"b\":{\"$bytes\":\"AAEC\"}}\n");
  EXPECT_NE(Digest(), a_digest);  // b also has its own document
}

}  // namespace

// `sync` checks its arguments before touching the replica, and a server that is not there is an
// error (exit 3) that leaves the outbox as it was.
TEST_F(CliTest, SyncUsageAndUnreachableServer) {
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"a":1})"}).code, 0);
  const std::string before = Digest();
  EXPECT_EQ(Cairn({"sync", "--server", "127.0.0.1:1", "--once", "--watch"}).code, 2);
  EXPECT_EQ(Cairn({"sync", "--server", "127.0.0.1:1", "--ca", "ca.pem"}).code, 2);
  EXPECT_EQ(Cairn({"sync", "--server", "no-port"}).code, 2);
  EXPECT_EQ(Cairn({"sync", "--server", "127.0.0.1:70000"}).code, 2);
  EXPECT_EQ(Cairn({"sync", "--server", "127.0.0.1:1", "--only", "ok,bad name"}).code, 2);
  CliRun down = Cairn({"sync", "--server", "127.0.0.1:1", "--once"});  // nothing listens on 1
  EXPECT_EQ(down.code, 3);
  EXPECT_NE(stderr_.find("ENETWORK"), std::string::npos) << stderr_;
  EXPECT_EQ(Digest(), before);
  EXPECT_NE(Cairn({"status"}).out.find("\"pending_ops\":1"), std::string::npos);
}

// `cairn sync` takes its token from CAIRN_TOKEN when --token is not given: a service (such as
// platforms/linux/cairn-gateway.service) then has no token on its command line, which every
// user of the machine can read.
TEST_F(CliTest, SyncTakesTheTokenFromTheEnvironment) {
  const std::string secret = dir_.File("secret");
  std::ofstream(secret) << "a test secret that is long enough, 32+ bytes";
  cairn::testing::ServerProcess server(dir_.File("server.db"), dir_.File("server.log"), 0,
                                       {"--token-secret", secret});
  const uint16_t port = server.WaitListening();
  ASSERT_NE(port, 0);
  CliRun minted = Capture(std::string(CAIRN_SERVER_PATH) + " --token-secret " + Quote(secret) +
                          " token --sub gateway");
  ASSERT_EQ(minted.code, 0);
  std::string token = minted.out;
  while (!token.empty() && token.back() == '\n') token.pop_back();
  ASSERT_FALSE(token.empty());
  ASSERT_EQ(Cairn({"put", "notes", "n1", R"({"title":"Hi"})"}).code, 0);
  const std::string server_addr = "127.0.0.1:" + std::to_string(port);
  const std::vector<std::string> sync = {"sync", "--server", server_addr, "--once"};
  EXPECT_EQ(Cairn(sync).code, 3) << "synced without a token";
  EXPECT_EQ(Cairn(sync, "CAIRN_TOKEN=not-a-token").code, 3);
  EXPECT_NE(Cairn({"status"}).out.find("\"pending_ops\":1"), std::string::npos);
  EXPECT_EQ(Cairn(sync, "CAIRN_TOKEN=" + Quote(token)).code, 0) << stderr_;
  EXPECT_NE(Cairn({"status"}).out.find("\"pending_ops\":0"), std::string::npos);
  // --token, when given, wins over the environment.
  EXPECT_EQ(Cairn({"sync", "--server", server_addr, "--once", "--token", "bad"},
                  "CAIRN_TOKEN=" + Quote(token)).code, 3);
}

// Telemetry from the command line: append one record or JSON lines, stream settings, counters
// in status, full and bad input, and the upload into the server's table for the stream.
TEST_F(CliTest, AppendStreamSettingsAndUpload) {
  CliRun one = Cairn({"append", "climate", R"({"temp":21.5,"dev":"s1"})"});
  EXPECT_EQ(one.code, 0) << stderr_;
  EXPECT_EQ(one.out, "{\"appended\":1,\"dropped\":0,\"first_seq\":1,\"last_seq\":1}\n");
  EXPECT_EQ(Cairn({"append", "climate", R"({"temp":22})", "--ts", "1700000000000"}).code, 0);
  std::ofstream(dir_.File("lines.jsonl")) << "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n";
  CliRun lines = Cairn({"append", "climate", "--lines", dir_.File("lines.jsonl"), "--batch", "2"});
  EXPECT_EQ(lines.out, "{\"appended\":3,\"dropped\":0,\"first_seq\":3,\"last_seq\":5}\n");
  // Settings: those given change, the others stay; the stream is printed.
  CliRun set = Cairn({"stream", "climate", "--priority", "4", "--max-bytes", "1000"});
  EXPECT_EQ(set.code, 0) << stderr_;
  EXPECT_NE(set.out.find("\"priority\":4"), std::string::npos) << set.out;
  EXPECT_NE(set.out.find("\"max_bytes\":1000"), std::string::npos) << set.out;
  EXPECT_NE(set.out.find("\"records\":5"), std::string::npos) << set.out;
  CliRun again = Cairn({"stream", "climate", "--policy", "drop_oldest"});
  EXPECT_NE(again.out.find("\"priority\":4"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("\"policy\":\"drop_oldest\""), std::string::npos) << again.out;
  EXPECT_EQ(Cairn({"stream", "nothing"}).code, 1);
  EXPECT_NE(Cairn({"status"}).out.find("\"streams\":{\"climate\":{\"bytes\":"),
            std::string::npos);
  // Full under the reject policy: exit 3, EFULL on stderr, counted.
  ASSERT_EQ(Cairn({"stream", "tiny", "--max-bytes", "8"}).code, 0);
  EXPECT_EQ(Cairn({"append", "tiny", R"({"v":1})"}).code, 0);
  EXPECT_EQ(Cairn({"append", "tiny", R"({"v":2})"}).code, 3);
  EXPECT_NE(stderr_.find("EFULL"), std::string::npos) << stderr_;
  EXPECT_NE(Cairn({"stream", "tiny"}).out.find("\"rejected\":1"), std::string::npos);
  // Bad input: exit 2, nothing appended.
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"append", "climate", "{oops"},
           {"append", "climate", R"({"seq":1})"},
           {"append", "1bad", R"({"v":1})"},
           {"append", "climate"},
           {"append", "climate", R"({"v":1})", "--lines", "-"},
           {"stream", "climate", "--policy", "sometimes"},
           {"stream", "climate", "--max-age-ms", "-1"}}) {
    EXPECT_EQ(Cairn(bad).code, 2) << bad[1] << " " << (bad.size() > 2 ? bad[2] : "");
  }
  std::ofstream(dir_.File("bad.jsonl")) << "{\"n\":4}\n{\"n\":5}\n{bad\n";
  EXPECT_EQ(Cairn({"append", "climate", "--lines", dir_.File("bad.jsonl"), "--batch", "1"}).code,
            2);
  EXPECT_NE(stderr_.find("line 3"), std::string::npos) << stderr_;
  EXPECT_NE(stderr_.find("\"appended\":2"), std::string::npos) << stderr_;  // batches before it
  EXPECT_NE(Cairn({"stream", "climate"}).out.find("\"records\":7"), std::string::npos);

  // Upload: the records land in the server's table for the stream and leave the replica.
  cairn::testing::ServerProcess server(dir_.File("server.db"), dir_.File("server.log"), 0, {});
  const uint16_t port = server.WaitListening();
  ASSERT_NE(port, 0);
  CliRun synced = Cairn({"sync", "--server", "127.0.0.1:" + std::to_string(port), "--once"});
  EXPECT_EQ(synced.code, 0) << stderr_;
  EXPECT_NE(synced.out.find("\"records_uploaded\":8"), std::string::npos) << synced.out;
  EXPECT_NE(Cairn({"stream", "climate"}).out.find("\"uploaded\":7"), std::string::npos);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(dir_.File("server.db.streams").c_str(), &db, SQLITE_OPEN_READONLY,
                            nullptr),
            SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT group_concat(coalesce(n, temp), ',') FROM climate "
                                   "ORDER BY seq",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "21.5,22,1,2,3,4,5");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// cairn-server refuses bad flags before it opens or creates anything.
TEST(ServerCliTest, UsageErrorsExitTwoAndCreateNothing) {
  cairn::testing::TempDir dir;
  const std::string db = dir.File("server.db");
  auto run = [&](const std::string& args) {
    std::string cmd = std::string(CAIRN_SERVER_PATH) + " " + args + " 2>" + Quote(dir.File("err"));
    int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const std::string base = "--db " + Quote(db) + " --listen 127.0.0.1:0 ";
  for (const char* bad : {"--max-drift-ms 0", "--max-drift-ms 999", "--max-drift-ms 86400001",
                          "--max-drift-ms -5", "--max-drift-ms abc", "--no-such-flag",
                          "token --sub dev"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(run(base + bad), 2);
    EXPECT_FALSE(std::ifstream(db).good()) << "the store was created";
  }
  EXPECT_EQ(run("--listen 127.0.0.1:0"), 2);  // no --db
  EXPECT_EQ(run(base.substr(0, base.find("--listen")) + "--listen nowhere"), 2);
  EXPECT_FALSE(std::ifstream(db).good());

  // Sync rules (docs/sync-rules.md): a bad file stops the server at start, naming the key or
  // the line; rules without tokens too.
  const std::string secret = dir.File("secret");
  std::ofstream(secret) << std::string(40, 's');
  auto err = [&] {
    std::ifstream in(dir.File("err"));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  struct Bad {
    const char* text;
    const char* says;
  };
  for (const Bad& b :
       {Bad{R"({"collections": {"t": {"channels": ["u:{owner"]}}})", "collections.t.channels[0]"},
        Bad{"{\n\"collections\": {,\n}", "line 2"},
        Bad{R"({"collections": {}, "grants": {"read": ["{a[]}{b[]}"]}})", "grants.read[0]"}}) {
    SCOPED_TRACE(b.text);
    const std::string rules = dir.File("rules.json");
    std::ofstream(rules) << b.text;
    EXPECT_EQ(run(base + "--token-secret " + Quote(secret) + " --rules " + Quote(rules)), 2);
    EXPECT_NE(err().find(b.says), std::string::npos) << err();
    EXPECT_FALSE(std::ifstream(db).good()) << "the store was created";
  }
  const std::string good = dir.File("good.json");
  std::ofstream(good) << R"({"collections": {"t": {"channels": ["u:{owner}"]}}})";
  EXPECT_EQ(run(base + "--rules " + Quote(good)), 2);  // no --token-secret
  EXPECT_NE(err().find("token"), std::string::npos) << err();
  EXPECT_EQ(
      run(base + "--token-secret " + Quote(secret) + " --rules " + Quote(dir.File("missing.json"))),
      3);
  EXPECT_NE(err().find("missing.json"), std::string::npos) << err();

  // Token keys: a file that cannot be read (exit 3), one that holds no key (exit 2), naming it.
  const std::string not_a_key = dir.File("not-a-key.pem");
  std::ofstream(not_a_key) << "hello";
  EXPECT_EQ(run(base + "--token-public-key " + Quote(dir.File("none.pem"))), 3);
  EXPECT_NE(err().find("none.pem"), std::string::npos) << err();
  EXPECT_EQ(run(base + "--token-public-key " + Quote(not_a_key)), 2);
  EXPECT_NE(err().find("not-a-key.pem: not a public key"), std::string::npos) << err();
  EXPECT_EQ(run(base + "--jwks " + Quote(not_a_key)), 2);
  EXPECT_NE(err().find("not a JWKS"), std::string::npos) << err();
  EXPECT_FALSE(std::ifstream(db).good()) << "the store was created";
  // --sql-tables: on or off, and only with a PostgreSQL store.
  EXPECT_EQ(run(base + "--sql-tables off"), 2);
  EXPECT_NE(err().find("--sql-tables needs a PostgreSQL store"), std::string::npos) << err();
  EXPECT_EQ(run(base + "--store postgresql:///x --sql-tables maybe"), 2);
  EXPECT_NE(err().find("--sql-tables"), std::string::npos) << err();
  // --http-rate and --http-burst are whole numbers.
  EXPECT_EQ(run(base + "--http-rate -1"), 2);
  EXPECT_EQ(run(base + "--http-burst many"), 2);
  EXPECT_FALSE(std::ifstream(db).good()) << "the store was created";
  // A claim without its name or value.
  EXPECT_EQ(run("--token-secret " + Quote(secret) + " token --sub dev --claim team"), 2);
  EXPECT_NE(err().find("NAME=VALUE"), std::string::npos) << err();
}
