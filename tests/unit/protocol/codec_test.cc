// Op batch encoding, framing and the JSON value conventions.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "oplog/json_codec.h"
#include "oplog/validate.h"
#include "protocol/batch_codec.h"
#include "protocol/frame.h"

namespace cairn {
namespace {

ReplicaId Rid(uint8_t b) {
  ReplicaId id;
  id.bytes.fill(b);
  id.bytes[0] = 0x10;
  return id;
}

Op MakeOp(uint8_t origin, uint64_t seq, Hlc hlc, OpKind kind, std::string key, std::string field,
          Value v = Value(), int64_t delta = 0) {
  Op op;
  op.id = OpId{hlc, Rid(origin), seq};
  op.kind = kind;
  op.collection = "notes";
  op.key = std::move(key);
  op.field = std::move(field);
  op.value = std::move(v);
  op.delta = delta;
  return op;
}

bool SameOp(const Op& a, const Op& b) {
  return a.id == b.id && a.kind == b.kind && a.collection == b.collection && a.key == b.key &&
         a.field == b.field && a.value == b.value && a.delta == b.delta;
}

// Encodes ops into one frame, verifies and decodes it.
std::vector<Op> RoundTrip(const std::vector<Op>& ops, std::string* frame_out = nullptr) {
  protocol::BatchEncoder enc;
  for (const Op& op : ops) enc.Add(op);
  std::string frame;
  enc.FinishFrame(&frame);
  if (frame_out) *frame_out = frame;
  std::string payload = frame.substr(4);
  auto f = protocol::VerifyFrame(payload, {});
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  std::vector<Op> out;
  if (!f.ok()) return out;
  Status st = protocol::DecodeBatch(*f.value()->body_as_OpBatch(), {}, [&](const Op& op) {
    out.push_back(op);
    return Status::OK();
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

TEST(BatchCodecTest, RoundTripsEveryValueTypeAndKind) {
  const Hlc t = MakeHlc(1700000000000, 0);
  std::vector<Op> ops = {
      MakeOp(1, 1, t, OpKind::kSet, "k1", "a", Value::Null()),
      MakeOp(1, 2, t + 1, OpKind::kSet, "k1", "b", Value::Bool(true)),
      MakeOp(1, 3, t + 2, OpKind::kSet, "k1", "c", Value::Bool(false)),
      MakeOp(1, 4, t + 3, OpKind::kSet, "k2", "a", Value::Int(INT64_MIN)),
      MakeOp(1, 5, t + 4, OpKind::kSet, "k2", "b", Value::Int(INT64_MAX)),
      MakeOp(1, 7, MakeHlc(1700000000500, 0), OpKind::kSet, "k2", "c", Value::Double(-0.0)),
      MakeOp(1, 9, MakeHlc(1700000000400, 3), OpKind::kSet, "k1", "d", Value::Double(1e-300)),
      MakeOp(2, 1, MakeHlc(1600000000000, 0), OpKind::kSet, "k\xc3\xa9", "s",
             Value::String("h\xc3\xa9llo")),
      MakeOp(2, 2, MakeHlc(1600000000001, 0), OpKind::kSet, "k1", "y",
             Value::Bytes(std::string("\0\xff", 2))),
      MakeOp(1, 10, MakeHlc(1700000000600, 0), OpKind::kIncrement, "k1", "n", Value(), -5),
      MakeOp(2, 3, MakeHlc(1600000000002, 0), OpKind::kDelete, "k2", ""),
  };
  auto out = RoundTrip(ops);
  ASSERT_EQ(out.size(), ops.size());
  for (size_t i = 0; i < ops.size(); i++) EXPECT_TRUE(SameOp(ops[i], out[i])) << i;
}

TEST(BatchCodecTest, TypicalOpCostsAFewBytesPlusItsValue) {
  std::vector<Op> ops;
  for (uint64_t i = 1; i <= 1000; i++) {
    ops.push_back(MakeOp(1, i, MakeHlc(1700000000000 + i * 100, 0), OpKind::kIncrement,
                         "doc-" + std::to_string(i % 50), "n", Value(), 1));
  }
  std::string frame;
  auto out = RoundTrip(ops, &frame);
  ASSERT_EQ(out.size(), ops.size());
  EXPECT_LT(frame.size(), 1000u * 8);  // header, seq, time, doc ref, field, delta
}

TEST(BatchCodecTest, RandomOpsRoundTrip) {
  std::mt19937_64 rng(42);
  std::vector<Op> ops;
  std::map<uint8_t, uint64_t> seqs;
  for (int i = 0; i < 2000; i++) {
    uint8_t origin = static_cast<uint8_t>(rng() % 4);
    uint64_t seq = seqs[origin] += 1 + rng() % 3;
    Hlc hlc = MakeHlc(1700000000000 + rng() % 100000, rng() % 3);
    auto kind = static_cast<OpKind>(rng() % 3);
    std::string key = "k" + std::to_string(rng() % 20);
    Value v = Value::Int(static_cast<int64_t>(rng()));
    ops.push_back(MakeOp(origin, seq, hlc, kind, key, kind == OpKind::kDelete ? "" : "f",
                         kind == OpKind::kSet ? v : Value(),
                         kind == OpKind::kIncrement ? static_cast<int64_t>(rng()) : 0));
  }
  auto out = RoundTrip(ops);
  ASSERT_EQ(out.size(), ops.size());
  for (size_t i = 0; i < ops.size(); i++) EXPECT_TRUE(SameOp(ops[i], out[i])) << i;
}

// The limits rest on two measures (docs/protocol.md "Limits"): BatchWireBytes is at least the
// payload of a frame carrying only that batch (with its coverage and cursor), the encoder's
// wire_bytes() is exactly what BatchWireBytes counts for it, and OpBytesBound bounds what any op
// adds, new origin, names and document included. Random batches of random-sized ops, names and
// keys, a few of them large, with and without coverage.
TEST(BatchCodecTest, SizeMeasuresBoundTheFrame) {
  std::mt19937_64 rng(7);
  auto text = [&](size_t n) {
    std::string t(n, 'a');
    for (char& c : t) c = static_cast<char>('a' + rng() % 26);
    return t;
  };
  for (int round = 0; round < 60; round++) {
    protocol::BatchEncoder enc;
    size_t bound = protocol::BatchEncoder().wire_bytes();
    std::map<uint8_t, uint64_t> seqs;
    const int n = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < n; i++) {
      const uint8_t origin = static_cast<uint8_t>(rng() % 8);
      const uint64_t seq = seqs[origin] += 1 + rng() % 1000;
      const Hlc hlc = MakeHlc(1700000000000 + rng() % 100000000, rng() % 70000);
      auto kind = static_cast<OpKind>(rng() % 3);
      const size_t value_size = static_cast<size_t>(rng() % 10 == 0 ? rng() % 200000 : rng() % 40);
      Value v = rng() % 2 ? Value::String(text(value_size)) : Value::Bytes(text(value_size));
      if (rng() % 4 == 0) v = Value::Double(0.5);
      Op op = MakeOp(origin, seq, hlc, kind,
                     text(static_cast<size_t>(1 + rng() % (rng() % 8 == 0 ? 1024 : 12))),
                     kind == OpKind::kDelete ? "" : "f" + text(static_cast<size_t>(rng() % 62)),
                     kind == OpKind::kSet ? v : Value(),
                     kind == OpKind::kIncrement ? static_cast<int64_t>(rng()) : 0);
      op.collection = "c" + text(static_cast<size_t>(rng() % 62));
      const size_t before = enc.wire_bytes();
      enc.Add(op);
      ASSERT_LE(enc.wire_bytes() - before, protocol::OpBytesBound(op)) << round << " " << i;
      bound += protocol::OpBytesBound(op);
    }
    if (round % 2) {
      for (const auto& [origin, seq] : seqs) enc.Cover(Rid(origin), 0, seq);
    }
    const size_t counted = enc.wire_bytes();
    ASSERT_LE(counted, bound + seqs.size() * 32);
    std::string frame;
    enc.FinishFrame(&frame, /*cursor=*/uint64_t{1} << 60, /*batch_id=*/uint64_t{1} << 60);
    std::string payload = frame.substr(4);
    auto f = protocol::VerifyFrame(payload, {protocol::kMaxMaxFrameBytes, 16, 1u << 20});
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_EQ(protocol::BatchWireBytes(*f.value()->body_as_OpBatch()), counted) << round;
    EXPECT_GE(counted, payload.size()) << round;
  }
}

// A sender merging whole batches (log entries, outbox rows) into one checks MergeBytesBound
// before it adds a batch: the growth of the merged batch must never pass it, however many
// documents and names the merged batch already has (its indexes take more bytes then) and
// whether the added batch's origin is new to it or continues it.
TEST(BatchCodecTest, MergeBytesBoundBoundsWhatABatchAdds) {
  std::mt19937_64 rng(11);
  uint64_t seq = 0;
  auto random_op = [&](uint8_t origin, uint64_t docs, uint64_t fields) {
    const Hlc hlc = MakeHlc(1700000000000 + rng() % 100000000, rng() % 3);
    auto kind = static_cast<OpKind>(rng() % 3);
    Op op = MakeOp(origin, ++seq, hlc, kind, "k" + std::to_string(rng() % docs),
                   kind == OpKind::kDelete ? "" : "f" + std::to_string(rng() % fields),
                   kind == OpKind::kSet
                       ? Value::String(std::string(static_cast<size_t>(rng() % 20), 'v'))
                       : Value(),
                   kind == OpKind::kIncrement ? 1 : 0);
    op.collection = "c" + std::to_string(rng() % 3);
    return op;
  };
  for (int round = 0; round < 40; round++) {
    protocol::BatchEncoder merged;
    seq = 0;
    const int before = static_cast<int>(rng() % 20000);
    for (int i = 0; i < before; i++) merged.Add(random_op(1, 30000, 3000));
    // The batch to add: its own indexes small, in the merged one large.
    protocol::BatchEncoder part;
    const uint8_t origin = rng() % 2 ? 1 : 2;
    if (origin == 2) seq = rng() % 1000;
    const int n = 1 + static_cast<int>(rng() % 3000);
    for (int i = 0; i < n; i++) part.Add(random_op(origin, 100 + rng() % 30000, 50));
    if (round % 3 == 0) part.Cover(Rid(origin), 0, seq);
    flatbuffers::FlatBufferBuilder fbb;
    part.Finish(&fbb);
    const wire::OpBatch& batch = *wire::GetFrame(fbb.GetBufferPointer())->body_as_OpBatch();
    const size_t bound = protocol::MergeBytesBound(batch);
    const size_t start = merged.wire_bytes();
    ASSERT_TRUE(protocol::DecodeBatch(batch, {}, [&](const Op& op) {
                  merged.Add(op);
                  return Status::OK();
                }).ok());
    merged.Cover(Rid(origin), 0, seq);
    EXPECT_LE(merged.wire_bytes() - start, bound) << round;
  }
}

// An OpBatch (no frame: a value over the frame limit fits) of an ok op, then `bad` at field g.
struct BatchWith {
  explicit BatchWith(const Value& bad, const std::string& field = "g") {
    const Hlc t = MakeHlc(1700000000000, 0);
    protocol::BatchEncoder enc;
    enc.Add(MakeOp(1, 1, t, OpKind::kSet, "k", "f", Value::Int(1)));
    enc.Add(MakeOp(1, 2, t + 1, OpKind::kSet, "k", field, bad));
    enc.Finish(&fbb);
  }
  const wire::OpBatch& batch() const {
    return *wire::GetFrame(fbb.GetBufferPointer())->body_as_OpBatch();
  }
  // The ops decoded before the first error, and that error's code.
  std::pair<int, Code> Decode(protocol::ValueCheck check) const {
    protocol::DecodeLimits limits;
    limits.values = check;
    int seen = 0;
    Status st = protocol::DecodeBatch(batch(), limits, [&](const Op&) {
      seen++;
      return Status::OK();
    });
    return {seen, st.code()};
  }
  flatbuffers::FlatBufferBuilder fbb;
};

// A received op is checked once, by the decoder: a value that breaks the data model's rules
// refuses the batch (EINVAL), unless the caller checks values itself (a push refuses only the
// transaction). Frames the program stored get the UTF-8 check they always had.
TEST(BatchCodecTest, DecoderChecksValuesUnlessTheCallerDoes) {
  using protocol::ValueCheck;
  const std::pair<int, Code> refused{1, Code::kEINVAL}, passed{2, Code::kOK},
      damaged{1, Code::kECORRUPT};
  for (const Value& bad :
       {Value::Double(std::nan("")), Value::Double(HUGE_VAL), Value::Double(-HUGE_VAL),
        Value::String(std::string(kMaxValueBytes + 1, 's')),
        Value::Bytes(std::string(kMaxValueBytes + 1, 'x'))}) {
    BatchWith b(bad);
    EXPECT_EQ(b.Decode(ValueCheck::kFull), refused);
    EXPECT_EQ(b.Decode(ValueCheck::kByCaller), passed);
    EXPECT_EQ(b.Decode(ValueCheck::kUtf8), passed);
  }
  BatchWith not_utf8(Value::String("\xff\xfe"));
  EXPECT_EQ(not_utf8.Decode(ValueCheck::kFull), refused);
  EXPECT_EQ(not_utf8.Decode(ValueCheck::kByCaller), passed);
  EXPECT_EQ(not_utf8.Decode(ValueCheck::kUtf8), damaged);
  // At the limits: accepted.
  for (const Value& ok :
       {Value::String(std::string(kMaxValueBytes, 's')), Value::Bytes(std::string("\xff\xfe")),
        Value::Double(std::numeric_limits<double>::max())}) {
    EXPECT_EQ(BatchWith(ok).Decode(ValueCheck::kFull), passed);
  }
  // Names are checked whatever the value check.
  BatchWith bad_name(Value::Int(2), "cairn_field");
  for (ValueCheck check : {ValueCheck::kFull, ValueCheck::kByCaller, ValueCheck::kUtf8}) {
    EXPECT_EQ(bad_name.Decode(check).second, Code::kEINVAL);
  }
}

std::string OneBatchFrame() {
  protocol::BatchEncoder enc;
  enc.Add(MakeOp(1, 1, MakeHlc(1000, 0), OpKind::kSet, "k", "f", Value::String("value")));
  enc.Add(MakeOp(1, 2, MakeHlc(1001, 0), OpKind::kIncrement, "k", "n", Value(), 3));
  std::string frame;
  enc.FinishFrame(&frame);
  return frame;
}

Status DecodeFrame(const std::string& payload) {
  auto f = protocol::VerifyFrame(payload, {});
  if (!f.ok()) return f.status();
  const wire::OpBatch* b = f.value()->body_as_OpBatch();
  if (!b) return Status::Corrupt("not a batch");
  return protocol::DecodeBatch(*b, {}, [](const Op&) { return Status::OK(); });
}

TEST(FrameTest, GarbageTruncatedAndOversizedFramesAreRefused) {
  std::string payload = OneBatchFrame().substr(4);
  EXPECT_TRUE(DecodeFrame(payload).ok());
  EXPECT_EQ(DecodeFrame("garbage that is not a frame").code(), Code::kECORRUPT);
  EXPECT_EQ(DecodeFrame(payload.substr(0, payload.size() / 2)).code(), Code::kECORRUPT);
  protocol::FrameLimits small;
  small.max_frame_bytes = 16;
  EXPECT_EQ(protocol::VerifyFrame(payload, small).status().code(), Code::kECORRUPT);
}

TEST(FrameTest, EveryBitFlipIsRefusedOrDecodesToValidOps) {
  // The Verifier and the op decoder may accept a flip in a value byte (the file checksum
  // catches those); what they must never do is crash or yield an op that breaks the rules.
  std::string payload = OneBatchFrame().substr(4);
  for (size_t i = 0; i < payload.size(); i++) {
    for (int bit = 0; bit < 8; bit++) {
      std::string p = payload;
      p[i] = static_cast<char>(p[i] ^ (1 << bit));
      auto f = protocol::VerifyFrame(p, {});
      if (!f.ok() || !f.value()->body_as_OpBatch()) continue;
      (void)protocol::DecodeBatch(*f.value()->body_as_OpBatch(), {}, [](const Op& op) {
        EXPECT_FALSE(op.key.empty());
        EXPECT_GE(op.id.seq, 1u);
        return Status::OK();
      });
    }
  }
}

TEST(FrameTest, TornStreamIsCorrupt) {
  std::string frame = OneBatchFrame();
  std::string path = ::testing::TempDir() + "/torn.bin";
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fwrite(frame.data(), 1, frame.size() - 3, f);
  std::fclose(f);
  f = std::fopen(path.c_str(), "rb");
  protocol::FrameReader reader(f, {});
  std::string payload;
  bool eof;
  EXPECT_EQ(reader.Next(&payload, &eof).code(), Code::kECORRUPT);
  std::fclose(f);
}

TEST(JsonValueTest, CanonicalForms) {
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Int(-3))), "-3");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(0.1))), "0.1");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(2.0))), "2.0");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(1e21))), "1e+21");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Bytes(std::string("\x00\x01\x02", 3)))),
            "{\"$bytes\":\"AAEC\"}");
  EXPECT_EQ(CanonicalJson(Json{{"b", 1}, {"a", Json{{"z", 1}, {"c", 2}}}}),
            "{\"a\":{\"c\":2,\"z\":1},\"b\":1}");
}

TEST(JsonValueTest, DoublesUseTheShortestRoundTripDigits) {
  // Grisu2 (nlohmann's own output) gives 312.97071378092693 here; 16 digits suffice.
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(312.9707137809269))), "312.9707137809269");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(5.829268727717799e-06))),
            "5.829268727717799e-06");
  EXPECT_EQ(CanonicalJson(Json{{"d", -1.645837086224035e+283}}), "{\"d\":-1.645837086224035e+283}");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(-0.0))), "-0.0");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(123456789012.0))), "123456789012.0");
  EXPECT_EQ(CanonicalJson(ValueToJson(Value::Double(5e-324))), "5e-324");
}

TEST(JsonValueTest, DoublesRoundTrip) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; i++) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, 8);
    if (!std::isfinite(d)) continue;
    std::string text = CanonicalJson(ValueToJson(Value::Double(d)));
    auto back = ValueFromJson(Json::parse(text));
    ASSERT_TRUE(back.ok()) << text;
    EXPECT_EQ(back.value(), Value::Double(d)) << text;
  }
}

TEST(JsonValueTest, RejectsUnsupportedValues) {
  EXPECT_FALSE(ValueFromJson(Json::parse("[1,2]")).ok());
  EXPECT_FALSE(ValueFromJson(Json::parse("{\"a\":1}")).ok());
  EXPECT_FALSE(ValueFromJson(Json::parse("{\"$bytes\":\"@@@\"}")).ok());
  EXPECT_FALSE(ValueFromJson(Json::parse("18446744073709551615")).ok());
  EXPECT_TRUE(ValueFromJson(Json::parse("9223372036854775807")).ok());
  EXPECT_FALSE(ParseFieldsJson("{}").ok());
  EXPECT_FALSE(ParseFieldsJson("[]").ok());
  EXPECT_FALSE(ParseFieldsJson("{\"a\":").ok());
  EXPECT_FALSE(ParseFieldsJson("{\"bad-name\":1}").ok());
  EXPECT_FALSE(ParseFieldsJson("{\"key\":1}").ok());
  // An integer literal outside int64 is an error, not a double (nlohmann reads it as one).
  for (const char* big : {"{\"a\":99999999999999999999999}", "{\"a\":-9223372036854775809}",
                          "{\"a\":9223372036854775808}", "{\"a\":1,\"b\":-100000000000000000000}"}) {
    auto r = ParseFieldsJson(big);
    ASSERT_FALSE(r.ok()) << big;
    EXPECT_EQ(r.status().code(), Code::kEINVAL);
    EXPECT_NE(r.status().message().find("int64"), std::string::npos) << r.status().ToString();
  }
  // Doubles written with a fraction or an exponent stay doubles, however large.
  auto d = ParseFieldsJson("{\"a\":1e30,\"b\":99999999999999999999999.0,\"c\":-9223372036854775808}");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d.value().at("a"), Value::Double(1e30));
  EXPECT_EQ(d.value().at("b"), Value::Double(99999999999999999999999.0));
  EXPECT_EQ(d.value().at("c"), Value::Int(INT64_MIN));
  auto ok = ParseFieldsJson("{\"s\":\"x\",\"n\":1,\"d\":1.5,\"b\":false,\"z\":null}");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok.value().size(), 5u);
}

}  // namespace
}  // namespace cairn
