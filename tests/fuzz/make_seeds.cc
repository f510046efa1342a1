// Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/): valid inputs of each
// kind, made with the engine's own encoders, so the fuzzers start from deep inside the formats.
// Run once when a format changes: make_seeds tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "auth/jwt.h"
#include "oplog/record.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "replica/replica.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using namespace cairn;  // NOLINT

namespace {

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

// A frame without its 4-byte length prefix (what VerifyFrame takes).
std::string Payload(const std::string& frame) { return frame.substr(4); }

Op MakeOp(uint64_t seq, OpKind kind, const std::string& key, const std::string& field,
          Value value, bool continues) {
  Op op;
  op.id.origin.bytes.fill(0x22);
  op.id.seq = seq;
  op.id.hlc = MakeHlc(1700000000000 + seq, 0);
  op.kind = kind;
  op.collection = seq % 2 ? "notes" : "tasks";
  op.key = key;
  op.field = field;
  op.value = std::move(value);
  op.delta = kind == OpKind::kIncrement ? 3 : 0;
  op.continues_txn = continues;
  return op;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  // Op batches: sets of every value type, increments, a delete, a transaction, two origins.
  protocol::BatchEncoder enc;
  enc.Add(MakeOp(1, OpKind::kSet, "n1", "title", Value::String("hello"), false));
  enc.Add(MakeOp(2, OpKind::kSet, "n1", "n", Value::Int(-5), true));
  enc.Add(MakeOp(3, OpKind::kSet, "n1", "d", Value::Double(0.25), true));
  enc.Add(MakeOp(4, OpKind::kSet, "n2", "b", Value::Bytes(std::string("\0\1\2", 3)), false));
  enc.Add(MakeOp(5, OpKind::kIncrement, "n1", "views", Value(), false));
  enc.Add(MakeOp(6, OpKind::kSet, "n1", "ok", Value::Bool(true), false));
  enc.Add(MakeOp(7, OpKind::kDelete, "n2", "", Value(), false));
  enc.Add(MakeOp(8, OpKind::kSet, "n3", "z", Value::Null(), false));
  std::string batch;
  enc.FinishFrame(&batch, /*cursor=*/1);
  Write(out / "frame", "opbatch", Payload(batch));
  Write(out / "apply", "opbatch", Payload(batch));
  protocol::BatchEncoder one;
  one.Add(MakeOp(1, OpKind::kSet, "n1", "title", Value::String("x"), false));
  one.Cover(MakeOp(1, OpKind::kSet, "", "", Value(), false).id.origin, 1, 3);
  std::string covered;
  one.FinishFrame(&covered, 2);
  Write(out / "apply", "covered", Payload(covered));
  Write(out / "frame", "covered", Payload(covered));
  // A stream batch.
  protocol::StreamEncoder streams("readings");
  for (uint64_t seq = 1; seq <= 4; seq++) {
    std::string body;
    EncodeRecord({{"dev", Value::String("s1")}, {"temp", Value::Double(20.5 + double(seq))},
                  {"n", Value::Int(int64_t(seq))}},
                 &body);
    (void)streams.Add(seq * 2, 1700000000000 + int64_t(seq) * 10, body);
  }
  std::string stream_frame;
  streams.FinishFrame(&stream_frame);
  Write(out / "frame", "streambatch", Payload(stream_frame));
  // An export file of a small replica.
  const fs::path tmp = fs::temp_directory_path() / "cairn-make-seeds";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  {
    auto r = Replica::Open((tmp / "r.db").string()).value();
    (void)r->Put("notes", "n1", {{"title", Value::String("hi")}, {"n", Value::Int(1)}});
    (void)r->Increment("notes", "n1", "views", 4);
    (void)r->Delete("notes", "n2");
    (void)r->Export((tmp / "r.cex").string());
  }
  Write(out / "import", "export", testing::ReadFile((tmp / "r.cex").string()));
  fs::remove_all(tmp);
  // JSON: fields of every kind, a record, values.
  Write(out / "json", "fields", R"({"title":"Hi","n":1,"d":0.5,"ok":true,"z":null,)"
                                R"("b":{"$bytes":"AAEC"}})");
  Write(out / "json", "record", R"({"dev":"dev-017","temp":20.74,"hum":68.8})");
  Write(out / "json", "unicode", "{\"s\":\"h\\u00e9llo \\ud83d\\ude00\",\"big\":9223372036854775807}");
  // Tokens: a valid one, one with a replica id, and an expired one.
  auth::Claims c;
  c.subject = "device-7";
  c.expires_s = 1900000000;
  c.read = {"*"};
  c.write = {"notes", "readings"};
  const std::string secret(32, 'k');
  Write(out / "token", "valid", auth::MintToken(c, secret));
  c.replica_id = std::string(32, 'a');
  Write(out / "token", "rid", auth::MintToken(c, secret));
  c.expires_s = 1;
  Write(out / "token", "expired", auth::MintToken(c, secret));
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
