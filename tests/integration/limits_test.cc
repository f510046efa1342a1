// Limits that hold (docs/protocol.md "Limits"), against a real cairn-server process: values large
// enough that a batch of them exceeds a frame reach new readers, long-offline writers and
// snapshot readers; a document larger than a frame travels; a peer that floods Pings and never
// reads cannot grow the server; what connections that have not said Hello hold has one budget.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/jwt.h"
#include "port/port.h"
#include "protocol/frame.h"
#include "replica/replica.h"
#include "support/raw_socket.h"
#include "support/server_process.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::Dial;
using testing::LengthPrefix;
using testing::OpenReplica;
using testing::PeerClosed;
using testing::SendAll;
using testing::ServerProcess;
using testing::SyncOnce;
using testing::TempDir;

// The least frame limit a server may have: the tests need less data to pass it.
const std::string kSmallFrame = std::to_string(protocol::kMinMaxFrameBytes);

// A process's resident set in KiB (VmRSS), or 0.
size_t RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

std::string HelloFrame(const std::string& token) {
  flatbuffers::FlatBufferBuilder fbb;
  ReplicaId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(0x40 + i);
  wire::ReplicaId wid = protocol::ToWire(id);
  auto hello = wire::CreateHello(fbb, protocol::kProtocolVersion, &wid, fbb.CreateString(token));
  return protocol::FinishFrame(&fbb, wire::Body::Hello, hello);
}

std::string PingFrame() {
  flatbuffers::FlatBufferBuilder fbb;
  return protocol::FinishFrame(&fbb, wire::Body::Ping, wire::CreatePing(fbb, 1));
}

std::string Big(size_t n, int i) { return std::string(n, static_cast<char>('a' + i % 26)); }

// Under AddressSanitizer, memory freed goes to a quarantine (256 MB by default) before it can be
// used again: the server these tests measure runs with a small one, so that its RSS is what it
// holds. (Ignored by other builds.)
std::vector<std::string> ServerEnv() {
  const char* inherited = std::getenv("ASAN_OPTIONS");
  return {std::string("ASAN_OPTIONS=") + (inherited ? std::string(inherited) + ":" : "") +
          "quarantine_size_mb=4"};
}

class LimitsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra) {
    server_ = std::make_unique<ServerProcess>(dir_.File("server.db"), dir_.File("server.log"), 0,
                                              extra, nullptr, ServerEnv());
    port_ = server_->WaitListening();
    ASSERT_NE(port_, 0);
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Writes blobs/b<i> = {v: Big(size, i)} for i in [from, to), one transaction each.
  void WriteBlobs(Replica* r, int from, int to, size_t size) {
    for (int i = from; i < to; ++i) {
      ASSERT_TRUE(
          r->Put("blobs", "b" + std::to_string(i), {{"v", Value::String(Big(size, i))}}).ok());
    }
  }
  // Whether `r` holds every blob in [0, n) as WriteBlobs wrote it.
  void ExpectBlobs(Replica* r, int n, size_t size) {
    for (int i = 0; i < n; ++i) {
      auto got = r->Get("blobs", "b" + std::to_string(i));
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_TRUE(got->has_value()) << "b" << i;
      ASSERT_EQ((**got).at("v"), Value::String(Big(size, i))) << "b" << i;
    }
  }
  std::string Log() const { return testing::ReadFile(dir_.File("server.log")); }
  // The server's RSS once it has served a sync (under qemu the code it runs is translated as it
  // is first run: that growth is not the test's).
  size_t WarmRssKb(const sync::SyncOptions& o = {}) {
    auto r = OpenReplica(dir_.File("warm.db"));
    EXPECT_TRUE(r->Put("warm", "w", {{"v", Value::Int(1)}}).ok());
    Status st = SyncOnce(r.get(), Address(), o);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return RssKb(server_->pid());
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  uint16_t port_ = 0;
};

// Issue 26 §1: the server packed up to 64 log entries into one batch whatever their size, so a
// reader of a log holding more than a frame of values failed on every retry. (18 MB: more than
// the 16 MiB a client takes whatever the server's limit.)
TEST_F(LimitsTest, LargeValuesReachANewReader) {
  Start({"--max-frame-bytes", kSmallFrame});
  auto writer = OpenReplica(dir_.File("writer.db"));
  for (int round = 0; round < 6; ++round) {  // 24 values of 750 KB, pushed 4 at a time
    WriteBlobs(writer.get(), round * 4, round * 4 + 4, 750000);
    Status st = SyncOnce(writer.get(), Address());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  auto reader = OpenReplica(dir_.File("reader.db"));
  Status st = SyncOnce(reader.get(), Address());
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExpectBlobs(reader.get(), 24, 750000);
}

// Issue 26 §2: a writer offline long enough to queue more than a frame pushed it all at once,
// and the server refused the frame every time: its writes never left.
TEST_F(LimitsTest, ALargeOfflineQueueIsPushedInParts) {
  Start({"--max-frame-bytes", kSmallFrame});
  auto writer = OpenReplica(dir_.File("writer.db"));
  WriteBlobs(writer.get(), 0, 24, 500000);
  Status st = SyncOnce(writer.get(), Address());
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto pending = writer->PendingOps();
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(*pending, 0);
  auto reader = OpenReplica(dir_.File("reader.db"));
  st = SyncOnce(reader.get(), Address());
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExpectBlobs(reader.get(), 24, 500000);
}

// Issue 26 §1, snapshots: a reader behind the kept log gets the state in chunks bounded in bytes,
// and a document larger than a frame (six fields of 3 MB, each its own transaction: 18 MB) is
// split over several.
TEST_F(LimitsTest, SnapshotsOfLargeDocumentsTravelInParts) {
  Start({"--max-frame-bytes", kSmallFrame, "--keep-log", "2"});
  auto writer = OpenReplica(dir_.File("writer.db"));
  WriteBlobs(writer.get(), 0, 8, 500000);
  for (int f = 0; f < 6; ++f) {  // each field its own transaction
    ASSERT_TRUE(
        writer->Put("huge", "doc", {{"f" + std::to_string(f), Value::String(Big(3000000, f))}})
            .ok());
  }
  Status pushed = SyncOnce(writer.get(), Address());  // (in parts: 22 MB)
  ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  auto reader = OpenReplica(dir_.File("reader.db"));
  Status st = SyncOnce(reader.get(), Address());
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << Log();
  EXPECT_NE(Log().find("snapshot"), std::string::npos) << Log();
  ExpectBlobs(reader.get(), 8, 500000);
  auto huge = reader->Get("huge", "doc");
  ASSERT_TRUE(huge.ok() && huge->has_value());
  ASSERT_EQ((**huge).size(), 6u);
  for (int f = 0; f < 6; ++f) {
    EXPECT_EQ((**huge).at("f" + std::to_string(f)), Value::String(Big(3000000, f)));
  }
}

// Issue 26 §3: a peer with a token that may read and write nothing sends Pings and never reads
// the Pongs. The server stops reading from it once its replies back up, so the flood stays in
// the kernel's buffers instead of the server's memory, and closes it when it reads nothing for
// the idle timeout. Before, 52 MB of Pings grew the server by 270 MB.
TEST_F(LimitsTest, APingFloodDoesNotGrowTheServer) {
  const std::string secret(32, 's');
  {
    std::ofstream f(dir_.File("secret"));
    f << secret;
  }
  Start({"--token-secret", dir_.File("secret"), "--idle-timeout-ms", "2000"});
  auth::Claims claims;
  claims.subject = "flooder";
  claims.expires_s = port::WallClockMs() / 1000 + 3600;
  const std::string token = auth::MintToken(claims, secret);  // reads and writes nothing
  sync::SyncOptions legit;
  auth::Claims all = claims;
  all.subject = "other";
  all.read = {"*"};
  all.write = {"*"};
  legit.token = auth::MintToken(all, secret);
  const size_t rss_before = WarmRssKb(legit);
  ASSERT_GT(rss_before, 0u);

  int fd = Dial(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, HelloFrame(token)));
  ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  // Up to 64 MB of Pings, sent as fast as the server takes them, for at most 5 s.
  std::string pings;
  for (int i = 0; i < 4096; ++i) pings += PingFrame();
  size_t sent = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto progress = std::chrono::steady_clock::now();
  size_t off = 0;
  // (Stops early once the server has taken nothing for 1.5 s: it stopped reading.)
  while (sent < (64u << 20) && std::chrono::steady_clock::now() < end &&
         std::chrono::steady_clock::now() - progress < std::chrono::milliseconds(1500)) {
    ssize_t n = send(fd, pings.data() + off, pings.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      off = (off + static_cast<size_t>(n)) % pings.size();
      progress = std::chrono::steady_clock::now();
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    poll(&p, 1, 100);
  }
  const size_t rss_after = RssKb(server_->pid());
  std::fprintf(stderr, "server RSS %zu -> %zu KiB after %zu bytes of Pings\n", rss_before,
               rss_after, sent);
  // Generous: the point is that the growth does not follow the flood.
  EXPECT_LT(rss_after, rss_before + 48 * 1024) << "server RSS " << rss_before << " -> " << rss_after
                                               << " KiB after " << sent << " bytes of Pings";
  EXPECT_LT(sent, size_t{64} << 20) << "the server read every Ping";

  // Others are served meanwhile; the flooder, reading nothing, is closed.
  auto other = OpenReplica(dir_.File("other.db"));
  ASSERT_TRUE(other->Put("notes", "n", {{"v", Value::Int(1)}}).ok());
  Status st = SyncOnce(other.get(), Address(), legit);
  EXPECT_TRUE(st.ok()) << st.ToString();
  bool closed = false;
  for (int i = 0; i < 600 && !closed; ++i) {  // (30 s: slow under qemu)
    closed = Log().find("read nothing for") != std::string::npos;
    if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(closed) << Log();
  close(fd);
}

// Issue 26 §5: each connection before Hello may hold a frame of 256 KiB, and many addresses
// multiply that: what they hold together has one budget; past it the connections holding the
// most are closed (while legitimate clients go on).
TEST_F(LimitsTest, ConnectionsBeforeHelloShareOneBudget) {
  Start({"--max-unauthenticated-bytes", std::to_string(4u << 20), "--handshake-timeout-ms", "60000",
         "--frame-timeout-ms", "60000", "--max-connections-per-address", "1000"});
  const size_t rss_before = WarmRssKb();
  std::vector<int> fds;
  // 640 peers each sending 209,712 bytes of a 250 KB frame: 134 MB in all. The budget of 4 MiB
  // holds 20 of them with 64 bytes to spare: less than a Hello.
  constexpr int kPeers = 640;
  std::string part = LengthPrefix(250000) + std::string(8, '\0') + std::string(209712 - 12, 'x');
  part.replace(8, 4, "CRN1");  // a Cairn frame's identifier: refused for its size, not its kind
  for (int i = 0; i < kPeers; ++i) {
    int fd = Dial(port_);
    ASSERT_GE(fd, 0);
    SendAll(fd, part);  // (a closed connection may refuse the rest)
    fds.push_back(fd);
  }
  // Closed ones are seen at once; the last few may still be read (under qemu, slowly).
  std::vector<bool> gone(fds.size(), false);
  int closed = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (closed < kPeers - 20 && std::chrono::steady_clock::now() < until) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!gone[i] && PeerClosed(fds[i])) {
        gone[i] = true;
        closed++;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const size_t rss_after = RssKb(server_->pid());
  std::fprintf(stderr, "server RSS %zu -> %zu KiB, %d of %d peers closed\n", rss_before, rss_after,
               closed, kPeers);
  EXPECT_GE(closed, kPeers - 20);
  // Generous (what was freed may stay in the heap), and far below the 134 MB they sent.
  EXPECT_LT(rss_after, rss_before + 32 * 1024)
      << "server RSS " << rss_before << " -> " << rss_after << " KiB";
  EXPECT_NE(Log().find("said Hello"), std::string::npos) << Log();
  // A legitimate client gets in while the budget is full: the peer holding the most goes, not
  // the newcomer.
  auto r = OpenReplica(dir_.File("r.db"));
  ASSERT_TRUE(r->Put("notes", "n", {{"v", Value::Int(1)}}).ok());
  Status st = SyncOnce(r.get(), Address());
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (int fd : fds) close(fd);
}

// Issue 26 §5, as a review found it in the first fix: a connection was charged the whole frame
// its header announced, so a few peers sending 12 bytes each (a header announcing 250 KB) filled
// the budget and every newcomer, a legitimate client included, was closed. What is charged is
// what was received.
TEST_F(LimitsTest, AnnouncingLargeFramesDoesNotFillTheBudget) {
  Start({"--max-unauthenticated-bytes", std::to_string(4u << 20), "--handshake-timeout-ms", "60000",
         "--frame-timeout-ms", "60000", "--max-connections-per-address", "1000"});
  std::string header = LengthPrefix(250000) + std::string(8, '\0');
  header.replace(8, 4, "CRN1");
  std::vector<int> fds;
  for (int i = 0; i < 64; ++i) {  // 64 x 250 KB announced: 16 MB, four times the budget
    int fd = Dial(port_);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, header));
    fds.push_back(fd);
  }
  auto r = OpenReplica(dir_.File("r.db"));
  ASSERT_TRUE(r->Put("notes", "n", {{"v", Value::Int(1)}}).ok());
  Status st = SyncOnce(r.get(), Address());
  EXPECT_TRUE(st.ok()) << st.ToString();
  int closed = 0;
  for (int fd : fds) {
    closed += PeerClosed(fd) ? 1 : 0;
    close(fd);
  }
  EXPECT_EQ(closed, 0);
}

}  // namespace
}  // namespace cairn
