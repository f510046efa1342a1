// Mixed versions (docs/protocol.md "Versions"): what a release in the field recorded, frame by
// frame and file by file, against today's code. The golden files of a release are made once,
// from that release's own binaries, by tests/compat/record_release.sh (which says what each
// session does), and kept under tests/compat/golden/RELEASE:
//   - its clients' sessions are replayed against today's server: every frame the release's
//     client sent is sent as it was, and every frame today's server answers must say what the
//     release's server said (the same ops, cursors, receipts, snapshot, stream receipts);
//   - its replica files and its server's file open with today's code (migrated) and hold what
//     the release's `cairn dump` printed; today's server serves on its server's file.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "oplog/json_codec.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "replica/replica.h"
#include "support/raw_socket.h"
#include "support/server_thread.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::ServerThread;
using testing::TempDir;

// The release in the field when wave 2 began (docs/protocol.md "Versions").
const std::string kGolden = std::string(CAIRN_TEST_SRCDIR) + "/compat/golden/c5e6389/";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A recorded frame: who sent it ('C' the client, 'S' the server) and its bytes, length prefix
// included (tests/compat/record_session.py).
struct Recorded {
  char from;
  std::string frame;
};

std::vector<Recorded> ReadSession(const std::string& name) {
  const std::string bytes = ReadFile(kGolden + name + ".frames");
  std::vector<Recorded> out;
  size_t at = 0;
  while (at + 5 <= bytes.size()) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at + 1);
    const size_t n = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<size_t>(p[3]) << 24);
    EXPECT_LE(at + 5 + n, bytes.size()) << name << ": a torn record";
    out.push_back({bytes[at], bytes.substr(at + 1, 4 + n)});
    at += 5 + n;
  }
  EXPECT_EQ(at, bytes.size()) << name;
  EXPECT_FALSE(out.empty()) << name;
  return out;
}

const wire::Frame* Verified(const std::string& frame) {
  static std::vector<std::string> kept;  // (the payloads the returned frames point into)
  kept.push_back(frame.substr(4));
  auto f = protocol::VerifyFrame(kept.back(), protocol::FrameLimits{});
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? f.value() : nullptr;
}

// What a frame says, for comparing the release's server with today's: the fields a client
// acts on, without what differs from run to run (the server's id and clock).
std::string Meaning(const wire::Frame* f) {
  if (f == nullptr) return "(not a frame)";
  std::ostringstream s;
  s << wire::EnumNameBody(f->body_type());
  auto ops = [&](const wire::OpBatch* b) {
    if (b == nullptr) return;
    const auto* covers = b->covers();
    s << " cursor=" << b->cursor() << " covers=" << (covers ? covers->size() : 0);
    Status st = protocol::DecodeBatch(*b, protocol::DecodeLimits{}, [&](const Op& op) {
      s << "\n  " << CanonicalJson(OpToJson(op));
      return Status::OK();
    });
    if (!st.ok()) s << " " << st.ToString();
  };
  // (Each body read once and checked: a frame of another type has none.)
  switch (f->body_type()) {
    case wire::Body::Welcome:
      if (const auto* w = f->body_as_Welcome()) s << " protocol=" << w->protocol_version();
      break;
    case wire::Body::OpBatch:
      ops(f->body_as_OpBatch());
      break;
    case wire::Body::Ack:
      if (const wire::Ack* a = f->body_as_Ack()) {
        s << " batch=" << a->batch_id();
        if (const auto* entries = a->entries()) {
          for (const wire::AckEntry* e : *entries) {
            s << " " << protocol::FromWire(e->origin()).Hex() << ":" << e->through_seq();
          }
        }
        const auto* refused = a->refused();
        s << " refused=" << (refused ? refused->size() : 0);
      }
      break;
    case wire::Body::CaughtUp:
      if (const auto* c = f->body_as_CaughtUp()) s << " cursor=" << c->cursor();
      break;
    case wire::Body::SnapshotBegin:
      if (const wire::SnapshotBegin* b = f->body_as_SnapshotBegin()) {
        s << " cursor=" << b->cursor() << " rebase=" << b->rebase() << " collections=";
        if (const auto* collections = b->collections()) {
          for (const auto* c : *collections) s << c->str() << ",";
        }
      }
      break;
    case wire::Body::SnapshotChunk:
      if (const auto* c = f->body_as_SnapshotChunk()) ops(c->batch());
      break;
    case wire::Body::SnapshotEnd:
      if (const auto* e = f->body_as_SnapshotEnd()) s << " cursor=" << e->cursor();
      break;
    case wire::Body::StreamAck:
      if (const wire::StreamAck* a = f->body_as_StreamAck()) {
        const auto* stream = a->stream();
        s << " " << (stream ? stream->str() : "") << " through=" << a->through_seq()
          << " code=" << a->code();
      }
      break;
    case wire::Body::Error:
      if (const auto* e = f->body_as_Error()) s << " code=" << e->code();
      break;
    default:
      break;
  }
  return s.str();
}

// Reads one frame from `fd` (within 10 s): its bytes with the prefix, or "" at the end.
std::string ReadFrame(int fd, std::string* buffer) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    if (buffer->size() >= 4) {
      const auto* p = reinterpret_cast<const unsigned char*>(buffer->data());
      const size_t n = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<size_t>(p[3]) << 24);
      if (buffer->size() >= 4 + n) {
        std::string frame = buffer->substr(0, 4 + n);
        buffer->erase(0, 4 + n);
        return frame;
      }
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return "";
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[65536];
    const ssize_t got = recv(fd, chunk, sizeof chunk, 0);
    if (got <= 0) return "";
    buffer->append(chunk, static_cast<size_t>(got));
  }
}

// Replays session `name` against the server on `port`: the client's frames sent as recorded
// (the recording server's id in them replaced by today's server's: `ids`, filled from each
// Welcome), today's server's answers compared with the recorded ones.
void Replay(const std::string& name, uint16_t port, std::map<std::string, std::string>* ids) {
  SCOPED_TRACE("session " + name);
  const int fd = testing::Dial(port);
  ASSERT_GE(fd, 0);
  std::string buffer;
  for (const Recorded& r : ReadSession(name)) {
    if (r.from == 'C') {
      std::string frame = r.frame;
      for (const auto& [recorded, today] : *ids) {
        for (size_t at; (at = frame.find(recorded)) != std::string::npos;) {
          frame.replace(at, recorded.size(), today);
        }
      }
      ASSERT_TRUE(testing::SendAll(fd, frame));
      continue;
    }
    const wire::Frame* want = Verified(r.frame);
    std::string got_bytes = ReadFrame(fd, &buffer);
    // (A Ping of the server's own timing is not an answer.)
    while (!got_bytes.empty() && Verified(got_bytes) != nullptr &&
           Verified(got_bytes)->body_type() == wire::Body::Ping) {
      got_bytes = ReadFrame(fd, &buffer);
    }
    ASSERT_FALSE(got_bytes.empty())
        << "today's server sent nothing where the release's sent " << Meaning(want);
    const wire::Frame* got = Verified(got_bytes);
    EXPECT_EQ(Meaning(got), Meaning(want));
    const wire::Welcome* want_welcome = want != nullptr ? want->body_as_Welcome() : nullptr;
    const wire::Welcome* got_welcome = got != nullptr ? got->body_as_Welcome() : nullptr;
    if (want_welcome != nullptr && got_welcome != nullptr) {
      const auto* w = want_welcome->server_id();
      const auto* g = got_welcome->server_id();
      ASSERT_TRUE(w != nullptr && g != nullptr);
      (*ids)[std::string(reinterpret_cast<const char*>(w->bytes()->data()), 16)] =
          std::string(reinterpret_cast<const char*>(g->bytes()->data()), 16);
    }
  }
  // The release's client closed here; nothing more comes but the end.
  shutdown(fd, SHUT_WR);
  for (std::string more; !(more = ReadFrame(fd, &buffer)).empty();) {
    const wire::Frame* f = Verified(more);
    EXPECT_TRUE(f != nullptr && f->body_type() == wire::Body::Ping)
        << "today's server sent more than the release's: " << Meaning(f);
  }
  close(fd);
}

// The release's clients, each session replayed in the order it was recorded, against today's
// server on an empty file; the server restarted with --keep-log 2 where the recording did.
TEST(Compat, SessionsOfTheReleaseInTheFieldReplayAgainstTodaysServer) {
  TempDir dir;
  std::map<std::string, std::string> ids;
  {
    ServerThread server(testing::Options(dir));
    for (const char* s : {"writer", "reader", "again", "follow", "partial", "stream"}) {
      Replay(s, server.port(), &ids);
    }
  }
  server::ServerOptions o = testing::Options(dir);
  o.store.keep_log_ops = 2;
  ServerThread server(o);
  for (const char* s : {"trim", "snapshot"}) Replay(s, server.port(), &ids);
  // And the state it made is the release's server's.
  auto state = Replica::Open(dir.File("server.db"));
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(state.value()->DumpString().value() + "\n", ReadFile(kGolden + "server.dump.json"));
}

// Copies the golden file `name` into `dir` (the golden stays as it is: opening migrates).
std::string Copy(const TempDir& dir, const std::string& name) {
  const std::string to = dir.File(name);
  std::ofstream(to, std::ios::binary) << ReadFile(kGolden + name);
  return to;
}

// The release's files: its replicas' and its server's open with today's code, migrated, and
// hold what the release's `cairn dump` printed; today's server serves on the release's server
// file, and the release's replicas (and a new one) sync with it to the same state.
TEST(Compat, FilesOfTheReleaseInTheFieldOpenAndSync) {
  TempDir dir;
  for (const char* r : {"a", "b", "c", "d"}) {
    SCOPED_TRACE(std::string("replica ") + r);
    auto replica = Replica::Open(Copy(dir, std::string("replica-") + r + ".db"));
    ASSERT_TRUE(replica.ok()) << replica.status().ToString();
    EXPECT_EQ(replica.value()->DumpString().value() + "\n",
              ReadFile(kGolden + "replica-" + r + ".dump.json"));
  }
  Copy(dir, "server.db");
  Copy(dir, "server.db.streams");
  ServerThread server(testing::Options(dir));
  const std::string want = ReadFile(kGolden + "server.dump.json");
  auto fresh = testing::OpenReplica(dir.File("fresh.db"));
  ASSERT_TRUE(testing::SyncOnce(fresh.get(), server.address()).ok());
  EXPECT_EQ(fresh->DumpString().value() + "\n", want);
  // The release's replica a (migrated) pushes a new write and pulls; b, behind, catches up.
  auto a = Replica::Open(dir.File("replica-a.db"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a.value()->Put("tasks", "t6", {{"title", Value::String("today")}}).ok());
  ASSERT_TRUE(testing::SyncOnce(a.value().get(), server.address()).ok());
  auto b = Replica::Open(dir.File("replica-b.db"));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(testing::SyncOnce(b.value().get(), server.address()).ok());
  ASSERT_TRUE(testing::SyncOnce(fresh.get(), server.address()).ok());
  EXPECT_EQ(b.value()->Digest().value(), a.value()->Digest().value());
  EXPECT_EQ(fresh->Digest().value(), a.value()->Digest().value());
  auto t6 = fresh->Get("tasks", "t6");
  ASSERT_TRUE(t6.ok() && t6->has_value());
}

}  // namespace
}  // namespace cairn
