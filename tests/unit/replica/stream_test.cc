// Telemetry streams on one replica (docs/storage-format.md "Streams"): appends, quotas and both
// full-policies exactly, upload reads and acknowledgements, bad input, persistence; the
// StreamBatch codec.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cmath>
#include <string>
#include <vector>

#include "oplog/record.h"
#include "protocol/frame.h"
#include "protocol/stream_codec.h"
#include "replica/replica.h"
#include "replica/sync_access.h"
#include "support/temp_dir.h"

namespace cairn {
namespace {

using testing::FakeClock;
using testing::TempDir;

constexpr int64_t kT0 = 1'700'000'000'000;

Fields Reading(int64_t n) {
  return {{"n", Value::Int(n)}, {"temp", Value::Double(20.0 + static_cast<double>(n) / 10)}};
}

// The size a record's body counts for in the quota.
uint64_t SizeOf(const Fields& f) {
  std::string body;
  EncodeRecord(f, &body);
  return body.size();
}

// What a server would get: every queued record of `stream` after `after`, decoded.
std::vector<protocol::StreamRecord> Upload(Replica* r, const std::string& stream,
                                           uint64_t after = 0,
                                           std::vector<std::string>* names = nullptr) {
  protocol::StreamEncoder enc(stream);
  Status s = SyncAccess(*r).ReadStream(stream, after, 1000000, 64u << 20, &enc);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::string frame;
  enc.FinishFrame(&frame);
  std::string payload = frame.substr(4);
  auto verified = protocol::VerifyFrame(payload, {});
  EXPECT_TRUE(verified.ok()) << verified.status().ToString();
  std::vector<protocol::StreamRecord> out;
  if (!verified.ok()) return out;
  const wire::StreamBatch* b = verified.value()->body_as_StreamBatch();
  EXPECT_NE(b, nullptr);
  if (names && b->fields()) {
    for (const auto* f : *b->fields()) names->push_back(f->str());
  }
  s = protocol::DecodeStreamBatch(*b, 1000000, [&](const protocol::StreamRecord& rec) {
    out.push_back(rec);
    return Status::OK();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<int64_t> Ns(const std::vector<protocol::StreamRecord>& recs) {
  std::vector<int64_t> out;
  for (const auto& r : recs) {
    for (const auto& [idx, v] : r.fields) {
      if (idx == 0) out.push_back(v.as_int());  // "n" is named first
    }
  }
  return out;
}

std::vector<uint64_t> Seqs(const std::vector<protocol::StreamRecord>& recs) {
  std::vector<uint64_t> out;
  for (const auto& r : recs) out.push_back(r.seq);
  return out;
}

StreamInfo Info(Replica* r, const std::string& stream) {
  auto all = r->Streams();
  EXPECT_TRUE(all.ok()) << all.status().ToString();
  for (const auto& s : all.value()) {
    if (s.name == stream) return s;
  }
  ADD_FAILURE() << "no stream " << stream;
  return {};
}

class StreamTest : public ::testing::Test {
 protected:
  std::unique_ptr<Replica> Open(const std::string& name, bool read_only = false) {
    ReplicaOptions o;
    o.clock = &clock_;
    o.read_only = read_only;
    auto r = Replica::Open(dir_.File(name), o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  TempDir dir_;
  FakeClock clock_{kT0};
};

TEST_F(StreamTest, AppendsGetConsecutiveSeqsAndUploadInOrder) {
  auto r = Open("r.db");
  for (int64_t n = 1; n <= 3; n++) {
    auto res = r->Append("temps", Reading(n));
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    EXPECT_EQ(res->first_seq, static_cast<uint64_t>(n));
    EXPECT_EQ(res->last_seq, static_cast<uint64_t>(n));
    clock_.Advance(10);
  }
  RecordBatch batch;
  for (int64_t n = 4; n <= 8; n++) ASSERT_TRUE(batch.Add(Reading(n), kT0 - n).ok());
  auto res = r->Append("temps", batch);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->first_seq, 4u);
  EXPECT_EQ(res->last_seq, 8u);

  StreamInfo info = Info(r.get(), "temps");
  EXPECT_EQ(info.last_seq, 8u);
  EXPECT_EQ(info.records, 8u);
  uint64_t bytes = 0;
  for (int64_t n = 1; n <= 8; n++) bytes += SizeOf(Reading(n));
  EXPECT_EQ(info.bytes, bytes);
  EXPECT_EQ(info.oldest_ts_ms, kT0);
  EXPECT_EQ(info.config.policy, StreamPolicy::kReject);  // the defaults
  EXPECT_EQ(info.config.max_bytes, 64u << 20);

  std::vector<std::string> names;
  auto recs = Upload(r.get(), "temps", 0, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"n", "temp"}));
  EXPECT_EQ(Seqs(recs), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(Ns(recs), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_EQ(recs.size(), 8u);
  EXPECT_EQ(recs[0].ts_ms, kT0);       // stamped by the replica's clock
  EXPECT_EQ(recs[2].ts_ms, kT0 + 20);
  EXPECT_EQ(recs[5].ts_ms, kT0 - 6);   // given by the caller
  EXPECT_EQ(recs[1].fields[1].second, Value::Double(20.2));
  EXPECT_EQ(Seqs(Upload(r.get(), "temps", 5)), (std::vector<uint64_t>{6, 7, 8}));

  // A status JSON with the stream's counters.
  Json status = r->GetStatus().value().ToJson();
  EXPECT_EQ(status["streams"]["temps"]["records"], 8);
  EXPECT_EQ(status["streams"]["temps"]["oldest_age_ms"], 30);  // now: T0 + 30
  EXPECT_EQ(status["streams"]["temps"]["policy"], "reject");
}

TEST_F(StreamTest, AcknowledgedRecordsLeaveAndAreCounted) {
  auto r = Open("r.db");
  RecordBatch batch;
  for (int64_t n = 1; n <= 10; n++) ASSERT_TRUE(batch.Add(Reading(n)).ok());
  ASSERT_TRUE(r->Append("temps", batch).ok());
  EXPECT_EQ(SyncAccess(*r).AckStream("temps", 4).value(), 4u);
  EXPECT_EQ(SyncAccess(*r).AckStream("temps", 4).value(), 0u);  // again (a retry): nothing more
  EXPECT_EQ(SyncAccess(*r).AckStream("temps", 2).value(), 0u);
  EXPECT_EQ(Seqs(Upload(r.get(), "temps")), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10}));
  StreamInfo info = Info(r.get(), "temps");
  EXPECT_EQ(info.records, 6u);
  EXPECT_EQ(info.uploaded, 4u);
  EXPECT_EQ(SyncAccess(*r).QueuedRecords().value(), 6u);
  // Beyond what was ever appended: refused, nothing changes.
  EXPECT_EQ(SyncAccess(*r).AckStream("temps", 11).status().code(), Code::kECORRUPT);
  EXPECT_EQ(SyncAccess(*r).AckStream("nope", 1).status().code(), Code::kENOTFOUND);
  EXPECT_EQ(Info(r.get(), "temps").records, 6u);
  // Seqs go on after the queue empties.
  EXPECT_EQ(SyncAccess(*r).AckStream("temps", 10).value(), 6u);
  EXPECT_EQ(r->Append("temps", Reading(11)).value().first_seq, 11u);
}

TEST_F(StreamTest, RejectPolicyRefusesWithEFullAndKeepsTheQueue) {
  auto r = Open("r.db");
  const uint64_t size = SizeOf(Reading(1));
  for (int64_t n = 2; n <= 40; n++) ASSERT_EQ(SizeOf(Reading(n)), size);
  StreamConfig cfg;
  cfg.max_bytes = 10 * size;
  ASSERT_TRUE(r->ConfigureStream("temps", cfg).ok());
  for (int64_t n = 1; n <= 10; n++) ASSERT_TRUE(r->Append("temps", Reading(n)).ok());
  auto full = r->Append("temps", Reading(11));
  ASSERT_EQ(full.status().code(), Code::kEFULL);
  EXPECT_NE(full.status().message().find("stream 'temps' is full"), std::string::npos)
      << full.status().message();
  RecordBatch three;
  for (int64_t n = 11; n <= 13; n++) ASSERT_TRUE(three.Add(Reading(n)).ok());
  EXPECT_EQ(r->Append("temps", three).status().code(), Code::kEFULL);
  StreamInfo info = Info(r.get(), "temps");
  EXPECT_EQ(info.rejected, 4u);
  EXPECT_EQ(info.dropped, 0u);
  EXPECT_EQ(info.records, 10u);
  EXPECT_EQ(info.last_seq, 10u);
  EXPECT_EQ(Ns(Upload(r.get(), "temps")),
            (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  // Room made by an upload: the batch fits again, whole.
  ASSERT_TRUE(SyncAccess(*r).AckStream("temps", 3).ok());
  auto ok = r->Append("temps", three);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->first_seq, 11u);
  EXPECT_EQ(Info(r.get(), "temps").records, 10u);
  EXPECT_EQ(r->Append("temps", Reading(14)).status().code(), Code::kEFULL);
  EXPECT_EQ(Info(r.get(), "temps").rejected, 5u);
}

TEST_F(StreamTest, DropOldestDropsExactlyWhatDoesNotFitAndCountsIt) {
  auto r = Open("r.db");
  const uint64_t size = SizeOf(Reading(1));
  StreamConfig cfg;
  cfg.max_bytes = 10 * size;
  cfg.policy = StreamPolicy::kDropOldest;
  ASSERT_TRUE(r->ConfigureStream("temps", cfg).ok());
  uint64_t dropped = 0;
  for (int64_t n = 1; n <= 25; n++) {
    auto res = r->Append("temps", Reading(n));
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    dropped += res->dropped;
  }
  EXPECT_EQ(dropped, 15u);
  StreamInfo info = Info(r.get(), "temps");
  EXPECT_EQ(info.dropped, 15u);
  EXPECT_EQ(info.rejected, 0u);
  EXPECT_EQ(info.records, 10u);
  EXPECT_EQ(info.bytes, 10 * size);
  EXPECT_EQ(Ns(Upload(r.get(), "temps")),
            (std::vector<int64_t>{16, 17, 18, 19, 20, 21, 22, 23, 24, 25}));
  // A batch larger than the quota: every queued record goes, then its own oldest ones.
  RecordBatch big;
  for (int64_t n = 26; n <= 39; n++) ASSERT_TRUE(big.Add(Reading(n)).ok());
  auto res = r->Append("temps", big);
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->dropped, 14u);  // 10 queued + 4 of the batch
  EXPECT_EQ(res->first_seq, 26u);
  EXPECT_EQ(res->last_seq, 35u);
  info = Info(r.get(), "temps");
  EXPECT_EQ(info.dropped, 29u);
  EXPECT_EQ(info.records, 10u);
  EXPECT_EQ(Ns(Upload(r.get(), "temps")),
            (std::vector<int64_t>{30, 31, 32, 33, 34, 35, 36, 37, 38, 39}));
  EXPECT_EQ(Seqs(Upload(r.get(), "temps")).front(), 26u);
}

TEST_F(StreamTest, AgeLimitRejectsOrDropsByTheOldestRecord) {
  auto r = Open("r.db");
  StreamConfig reject;
  reject.max_age_ms = 1000;
  ASSERT_TRUE(r->ConfigureStream("slow", reject).ok());
  StreamConfig drop = reject;
  drop.policy = StreamPolicy::kDropOldest;
  ASSERT_TRUE(r->ConfigureStream("fast", drop).ok());
  for (int64_t n = 1; n <= 5; n++) {
    ASSERT_TRUE(r->Append("slow", Reading(n)).ok());
    ASSERT_TRUE(r->Append("fast", Reading(n)).ok());
    clock_.Advance(200);  // records at T0, +200, +400, +600, +800
  }
  clock_.Advance(500);
  // Now T0 + 1500: records older than T0 + 500 are over the limit (the first three).
  auto refused = r->Append("slow", Reading(6));
  ASSERT_EQ(refused.status().code(), Code::kEFULL);
  EXPECT_NE(refused.status().message().find("1500 ms old"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(Info(r.get(), "slow").records, 5u);
  EXPECT_EQ(Info(r.get(), "slow").rejected, 1u);
  auto res = r->Append("fast", Reading(6));
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->dropped, 3u);
  EXPECT_EQ(Ns(Upload(r.get(), "fast")), (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(Info(r.get(), "fast").dropped, 3u);
  // Once the old ones are uploaded, the reject stream takes records again.
  ASSERT_TRUE(SyncAccess(*r).AckStream("slow", 2).ok());
  EXPECT_EQ(r->Append("slow", Reading(6)).status().code(), Code::kEFULL);  // T0 + 400: too old
  ASSERT_TRUE(SyncAccess(*r).AckStream("slow", 3).ok());
  EXPECT_TRUE(r->Append("slow", Reading(6)).ok());
}

TEST_F(StreamTest, ARecordLargerThanTheQuotaIsRefusedUnderEitherPolicy) {
  auto r = Open("r.db");
  StreamConfig cfg;
  cfg.max_bytes = 16;
  cfg.policy = StreamPolicy::kDropOldest;
  ASSERT_TRUE(r->ConfigureStream("s", cfg).ok());
  ASSERT_TRUE(r->Append("s", {{"v", Value::Int(1)}}).ok());
  auto big = r->Append("s", {{"v", Value::String(std::string(64, 'x'))}});
  EXPECT_EQ(big.status().code(), Code::kEFULL);
  StreamInfo info = Info(r.get(), "s");
  EXPECT_EQ(info.records, 1u);
  EXPECT_EQ(info.rejected, 1u);
  EXPECT_EQ(info.dropped, 0u);
}

TEST_F(StreamTest, BadInputIsRefusedWithNothingChanged) {
  auto r = Open("r.db");
  for (const char* name : {"", "1x", "cairn_s", "sqlite_s", "a-b"}) {
    EXPECT_EQ(r->Append(name, Reading(1)).status().code(), Code::kEINVAL) << name;
    EXPECT_EQ(r->ConfigureStream(name, {}).code(), Code::kEINVAL) << name;
  }
  EXPECT_NE(r->Append("1x", Reading(1)).status().message().find("stream name"),
            std::string::npos);
  const Fields bad[] = {
      {},
      {{"seq", Value::Int(1)}},
      {{"ORIGIN", Value::Int(1)}},
      {{"ts_ms", Value::Int(1)}},
      {{"temp", Value::Int(1)}, {"Temp", Value::Int(2)}},
      {{"cairn_x", Value::Int(1)}},
      {{"s", Value::String("\xff\xfe")}},
      {{"nan", Value::Double(std::nan(""))}},
      {{"inf", Value::Double(-HUGE_VAL)}},
      {{"big", Value::Bytes(std::string(kMaxRecordBytes, 'x'))}},
  };
  for (const Fields& f : bad) {
    EXPECT_EQ(r->Append("temps", f).status().code(), Code::kEINVAL)
        << CanonicalJson(FieldsToJson(f)).substr(0, 60);
  }
  EXPECT_EQ(r->Append("temps", RecordBatch()).status().code(), Code::kEINVAL);
  StreamConfig cfg;
  cfg.max_age_ms = -1;
  EXPECT_EQ(r->ConfigureStream("temps", cfg).code(), Code::kEINVAL);
  cfg = StreamConfig();
  cfg.policy = static_cast<StreamPolicy>(7);
  EXPECT_EQ(r->ConfigureStream("temps", cfg).code(), Code::kEINVAL);
  EXPECT_TRUE(r->Streams().value().empty());
  // "key" is only a documents' name: a stream may have such a field.
  EXPECT_TRUE(r->Append("temps", {{"key", Value::Int(1)}}).ok());
}

// The server keeps a stream in a table named as it, and SQL names ignore case: two streams whose
// names differ only in case would share one table and take each other's seqs for copies.
TEST_F(StreamTest, ANameDifferingOnlyInCaseFromAStreamIsRefused) {
  auto r = Open("r.db");
  ASSERT_TRUE(r->Append("Readings", Reading(1)).ok());
  auto clash = r->Append("readings", Reading(2));
  EXPECT_EQ(clash.status().code(), Code::kEINVAL);
  EXPECT_NE(clash.status().message().find("'Readings'"), std::string::npos)
      << clash.status().message();
  EXPECT_EQ(r->ConfigureStream("READINGS", {}).code(), Code::kEINVAL);
  ASSERT_EQ(r->Streams().value().size(), 1u);
  EXPECT_EQ(Info(r.get(), "Readings").records, 1u);
  EXPECT_TRUE(r->ConfigureStream("Readings", {}).ok());  // the same name is fine
}

// Record keys hold the stream id in their high bits: ids past the last that fits are refused.
TEST_F(StreamTest, StreamIdsEndWhereTheKeyLayoutDoes) {
  {
    auto r = Open("r.db");
    ASSERT_TRUE(r->Append("first", Reading(1)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.File("r.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT INTO cairn_streams VALUES (524286, 'last', 0, 0, 0, 0, 0, 0, 0, "
                         "0, 0, 0)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto r = Open("r.db");
  // The last id works, its records apart from the others'.
  ASSERT_TRUE(r->Append("last", Reading(7)).ok());
  EXPECT_EQ(Ns(Upload(r.get(), "last")), (std::vector<int64_t>{7}));
  EXPECT_EQ(Ns(Upload(r.get(), "first")), (std::vector<int64_t>{1}));
  EXPECT_EQ(SyncAccess(*r).AckStream("last", 1).value(), 1u);
  EXPECT_EQ(Info(r.get(), "first").records, 1u);
  // One more stream does not fit.
  EXPECT_EQ(r->Append("one_more", Reading(1)).status().code(), Code::kEINVAL);
  EXPECT_EQ(r->ConfigureStream("one_more", {}).code(), Code::kEINVAL);
  EXPECT_EQ(r->Streams().value().size(), 2u);
}

// Fields of one stream spelled in different cases in different records share one column on the
// server: a batch names each once (the first spelling), or the server would refuse it forever.
TEST_F(StreamTest, FieldsSpelledInOtherCasesAcrossRecordsShareOneName) {
  auto r = Open("r.db");
  ASSERT_TRUE(r->Append("s", {{"Temp", Value::Int(1)}}).ok());
  ASSERT_TRUE(r->Append("s", {{"temp", Value::Int(2)}, {"hum", Value::Int(3)}}).ok());
  std::vector<std::string> names;
  auto recs = Upload(r.get(), "s", 0, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"Temp", "hum"}));
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].fields.size(), 2u);
}

TEST_F(StreamTest, SettingsQueueAndCountersSurviveReopen) {
  {
    auto r = Open("r.db");
    StreamConfig cfg;
    cfg.max_bytes = 5000;
    cfg.max_age_ms = 60000;
    cfg.policy = StreamPolicy::kDropOldest;
    cfg.priority = 7;
    ASSERT_TRUE(r->ConfigureStream("alarms", cfg).ok());
    for (int64_t n = 1; n <= 4; n++) ASSERT_TRUE(r->Append("alarms", Reading(n)).ok());
    ASSERT_TRUE(SyncAccess(*r).AckStream("alarms", 1).ok());
  }
  auto r = Open("r.db");
  StreamInfo info = Info(r.get(), "alarms");
  EXPECT_EQ(info.config.max_bytes, 5000u);
  EXPECT_EQ(info.config.max_age_ms, 60000);
  EXPECT_EQ(info.config.policy, StreamPolicy::kDropOldest);
  EXPECT_EQ(info.config.priority, 7);
  EXPECT_EQ(info.records, 3u);
  EXPECT_EQ(info.uploaded, 1u);
  EXPECT_EQ(info.last_seq, 4u);
  // Changing the settings keeps the queue.
  StreamConfig cfg = info.config;
  cfg.priority = -2;
  ASSERT_TRUE(r->ConfigureStream("alarms", cfg).ok());
  EXPECT_EQ(Info(r.get(), "alarms").records, 3u);
  EXPECT_EQ(Info(r.get(), "alarms").config.priority, -2);
  r.reset();
  auto ro = Open("r.db", /*read_only=*/true);
  EXPECT_EQ(ro->Append("alarms", Reading(5)).status().code(), Code::kEREADONLY);
  EXPECT_EQ(Info(ro.get(), "alarms").records, 3u);
}

// --- The StreamBatch codec -------------------------------------------------------------------

// A StreamBatch frame built by hand: `records` as given.
std::string HandBatch(const std::string& stream, uint64_t first_seq,
                      const std::vector<std::string>& fields, const std::string& records,
                      uint32_t count) {
  flatbuffers::FlatBufferBuilder fbb;
  auto b = wire::CreateStreamBatch(
      fbb, fbb.CreateString(stream), first_seq, kT0, fbb.CreateVectorOfStrings(fields),
      fbb.CreateVector(reinterpret_cast<const uint8_t*>(records.data()), records.size()), count);
  fbb.Finish(wire::CreateFrame(fbb, wire::Body::StreamBatch, b.Union()), wire::FrameIdentifier());
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

Status DecodeHand(const std::string& payload, uint32_t max_records = 1000) {
  auto f = protocol::VerifyFrame(payload, {});
  if (!f.ok()) return f.status();
  return protocol::DecodeStreamBatch(*f.value()->body_as_StreamBatch(), max_records,
                                     [](const protocol::StreamRecord&) { return Status::OK(); });
}

TEST(StreamCodecTest, RefusesMalformedBatches) {
  // One good record: gap 0, ts delta 0, one field (index 0), an int 5.
  const std::string good = std::string("\x00\x00\x01\x00\x03\x0a", 6);
  EXPECT_TRUE(DecodeHand(HandBatch("s", 1, {"v"}, good, 1)).ok());
  struct Case {
    const char* what;
    std::string payload;
    Code code;
    uint32_t max_records = 1000;
  } cases[] = {
      {"bad stream name", HandBatch("1s", 1, {"v"}, good, 1), Code::kEINVAL},
      {"reserved field", HandBatch("s", 1, {"seq"}, good, 1), Code::kEINVAL},
      {"fields equal but for case", HandBatch("s", 1, {"v", "V"}, good, 1), Code::kEINVAL},
      {"seq 0", HandBatch("s", 0, {"v"}, good, 1), Code::kEINVAL},
      {"more records than allowed", HandBatch("s", 1, {"v"}, good + good, 2), Code::kEINVAL, 1},
      {"count beyond the bytes", HandBatch("s", 1, {"v"}, good, 2), Code::kECORRUPT},
      {"trailing bytes", HandBatch("s", 1, {"v"}, good + "x", 1), Code::kECORRUPT},
      {"field index out of range",
       HandBatch("s", 1, {"v"}, std::string("\x00\x00\x01\x01\x03\x0a", 6), 1), Code::kECORRUPT},
      {"a field twice",
       HandBatch("s", 1, {"v"}, std::string("\x00\x00\x02\x00\x03\x0a\x00\x03\x0a", 9), 1),
       Code::kECORRUPT},
      {"no fields", HandBatch("s", 1, {"v"}, std::string("\x00\x00\x00", 3), 1), Code::kECORRUPT},
      {"string not UTF-8",
       HandBatch("s", 1, {"v"}, std::string("\x00\x00\x01\x00\x05\x01\xff", 7), 1),
       Code::kECORRUPT},
      {"seq overflow",
       HandBatch("s", UINT64_MAX, {"v"},
                 good + std::string("\x00\x00\x01\x00\x03\x0a", 6), 2),
       Code::kECORRUPT},
  };
  for (const Case& c : cases) {
    Status s = DecodeHand(c.payload, c.max_records);
    EXPECT_EQ(s.code(), c.code) << c.what << ": " << s.ToString();
  }
}

TEST(StreamCodecTest, EncoderRefusesAMalformedBodyAndKeepsWhatItHad) {
  protocol::StreamEncoder enc("s");
  std::string body;
  EncodeRecord({{"a", Value::Int(1)}}, &body);
  ASSERT_TRUE(enc.Add(1, kT0, body).ok());
  EXPECT_EQ(enc.Add(3, kT0, body.substr(0, body.size() - 1)).code(), Code::kECORRUPT);
  EXPECT_EQ(enc.Add(1, kT0, body).code(), Code::kEINVAL);  // not after seq 1
  ASSERT_TRUE(enc.Add(5, kT0 + 7, body).ok());
  EXPECT_EQ(enc.record_count(), 2u);
  std::string frame;
  enc.FinishFrame(&frame);
  std::vector<std::pair<uint64_t, int64_t>> got;
  const std::string payload = frame.substr(4);  // the frame points into it
  auto f = protocol::VerifyFrame(payload, {});
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(protocol::DecodeStreamBatch(*f.value()->body_as_StreamBatch(), 10,
                                          [&](const protocol::StreamRecord& r) {
                                            got.emplace_back(r.seq, r.ts_ms);
                                            return Status::OK();
                                          })
                  .ok());
  EXPECT_EQ(got, (std::vector<std::pair<uint64_t, int64_t>>{{1, kT0}, {5, kT0 + 7}}));
}

}  // namespace
}  // namespace cairn
