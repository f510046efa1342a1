#include <gtest/gtest.h>

#include "base/coding.h"
#include "base/result.h"
#include "base/sha256.h"
#include "base/strings.h"

namespace cairn {
namespace {

TEST(StatusTest, OkCarriesNoMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOK);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, ErrorKeepsCodeAndContext) {
  Status s = Status::Invalid("bad name").WithContext("put");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kEINVAL);
  EXPECT_EQ(s.ToString(), "EINVAL: put: bad name");
  EXPECT_EQ(CodeRetryClass(Code::kEBUSY), RetryClass::kTransient);
  EXPECT_EQ(CodeRetryClass(Code::kEINVAL), RetryClass::kPermanent);
}

// Codes received from a peer: every known number maps back to its code, anything else is ERROR.
TEST(StatusTest, CodeFromIntRoundTripsEveryCode) {
#define XX(name, num, retry, msg) EXPECT_EQ(CodeFromInt(num), Code::k##name);
#include "cairn/errors.def"
#undef XX
  EXPECT_EQ(CodeFromInt(-9999), Code::kERROR);
  EXPECT_EQ(CodeFromInt(7), Code::kERROR);
}

TEST(VarintTest, RoundTripsBoundaries) {
  const uint64_t values[] = {0, 1, 127, 128, 16383, 16384, (1ull << 32), UINT64_MAX};
  std::string buf;
  for (uint64_t v : values) PutVarint(&buf, v);
  Reader r(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
  for (uint64_t v : values) {
    uint64_t got;
    ASSERT_TRUE(r.GetVarint(&got));
    EXPECT_EQ(got, v);
  }
  EXPECT_TRUE(r.done());
}

TEST(VarintTest, SignedSmallMagnitudesTakeOneByte) {
  for (int64_t v : {0, -1, 1, -64, 63}) {
    std::string buf;
    PutSignedVarint(&buf, v);
    EXPECT_EQ(buf.size(), 1u) << v;
  }
  for (int64_t v : {INT64_MIN, INT64_MAX, int64_t{-123456789}}) {
    std::string buf;
    PutSignedVarint(&buf, v);
    Reader r(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
    int64_t got;
    ASSERT_TRUE(r.GetSignedVarint(&got));
    EXPECT_EQ(got, v);
  }
}

TEST(VarintTest, TruncatedAndOverlongInputFail) {
  std::string buf;
  PutVarint(&buf, UINT64_MAX);
  Reader truncated(reinterpret_cast<const uint8_t*>(buf.data()), buf.size() - 1);
  uint64_t v;
  EXPECT_FALSE(truncated.GetVarint(&v));
  std::string overlong(11, '\xff');
  Reader r(reinterpret_cast<const uint8_t*>(overlong.data()), overlong.size());
  EXPECT_FALSE(r.GetVarint(&v));
}

TEST(HexTest, RoundTrips) {
  std::string raw("\x00\x7f\xff", 3), back;
  EXPECT_EQ(HexEncode(raw), "007fff");
  ASSERT_TRUE(HexDecode("007FFF", &back));
  EXPECT_EQ(back, raw);
  EXPECT_FALSE(HexDecode("0g", &back));
  EXPECT_FALSE(HexDecode("abc", &back));
}

TEST(Utf8PrefixTest, CutsAtACharacterBoundary) {
  EXPECT_EQ(Utf8Prefix("abc", 5), "abc");
  EXPECT_EQ(Utf8Prefix("abc", 2), "ab");
  EXPECT_EQ(Utf8Prefix("a\xc3\xa9z", 2), "a");  // "é" not cut in two
  EXPECT_EQ(Utf8Prefix("a\xc3\xa9z", 3), "a\xc3\xa9");
  EXPECT_EQ(Utf8Prefix("\xf0\x9f\x98\x80!", 3), "");  // a 4-byte character
  EXPECT_EQ(Utf8Prefix("\xf0\x9f\x98\x80!", 4), "\xf0\x9f\x98\x80");
  EXPECT_EQ(Utf8Prefix("abc", 0), "");
}

TEST(Sha256Test, MatchesKnownVector) {
  Sha256 sha;
  sha.Update("abc");
  EXPECT_EQ(HexEncode(sha.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace cairn
