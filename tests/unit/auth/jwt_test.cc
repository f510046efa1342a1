// Bearer tokens checked the way RFC 8725 asks: the signature before anything else, the algorithm
// pinned, the type when given, no critical extensions, exp and nbf with a small leeway.
#include "auth/jwt.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace cairn::auth {
namespace {

const std::string kSecret = "a test secret that is long enough, 32+ bytes";
constexpr int64_t kNow = 1'800'000'000;
constexpr char kHeader[] = R"({"alg":"HS256","typ":"JWT"})";

std::string Payload(const std::string& extra = "", int64_t exp = kNow + 3600) {
  return R"({"sub":"alice","exp":)" + std::to_string(exp) + R"(,"read":["*"],"write":["notes"])" +
         extra + "}";
}

std::string Reason(const std::string& token) {
  auto c = VerifyToken(token, kSecret, kNow);
  return c.ok() ? "ok" : c.status().message();
}

TEST(JwtTest, MintedTokenVerifies) {
  Claims c;
  c.subject = "device-7";
  c.expires_s = kNow + 60;
  c.not_before_s = kNow - 5;
  c.read = {"*"};
  c.write = {"telemetry"};
  c.replica_id = std::string(32, 'a');
  auto v = VerifyToken(MintToken(c, kSecret), kSecret, kNow);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->subject, "device-7");
  EXPECT_EQ(v->expires_s, kNow + 60);
  EXPECT_EQ(v->not_before_s, kNow - 5);
  EXPECT_TRUE(v->MayWrite("telemetry"));
  EXPECT_FALSE(v->MayWrite("notes"));
  EXPECT_TRUE(v->MayRead("notes"));
  EXPECT_EQ(v->replica_id, std::string(32, 'a'));
}

TEST(JwtTest, SignatureIsCheckedFirst) {
  const std::string token = SignToken(kHeader, Payload(), kSecret);
  EXPECT_EQ(Reason(token), "ok");
  EXPECT_EQ(Reason(SignToken(kHeader, Payload(), "another secret, also 32 bytes long......")),
            "token has a bad signature");
  std::string flipped = token;
  flipped[flipped.size() - 2] = flipped[flipped.size() - 2] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Reason(flipped), "token has a bad signature");
  // A bad header behind a bad signature says only "bad signature": nothing unsigned is read.
  EXPECT_EQ(Reason(SignToken(R"({"alg":"none"})", Payload(), "x")), "token has a bad signature");
}

// RFC 8725 §2.1, §3.1: the algorithm is the server's choice, never the token's.
TEST(JwtTest, AlgorithmIsPinned) {
  for (const char* header : {R"({"alg":"none","typ":"JWT"})", R"({"alg":"HS512","typ":"JWT"})",
                             R"({"alg":"RS256","typ":"JWT"})", R"({"alg":"hs256"})",
                             R"({"typ":"JWT"})", R"({"alg":["HS256"]})"}) {
    EXPECT_EQ(Reason(SignToken(header, Payload(), kSecret)), "token algorithm must be HS256")
        << header;
  }
  // "none" with an empty signature: not even a signature match.
  const std::string unsigned_token = SignToken(R"({"alg":"none"})", Payload(), kSecret);
  EXPECT_NE(Reason(unsigned_token.substr(0, unsigned_token.rfind('.') + 1)), "ok");
  EXPECT_EQ(Reason(SignToken(R"({"alg":"HS256"})", Payload(), kSecret)), "ok");  // typ optional
}

TEST(JwtTest, TypeAndCriticalExtensions) {
  EXPECT_EQ(Reason(SignToken(R"({"alg":"HS256","typ":"jwt"})", Payload(), kSecret)), "ok");
  EXPECT_EQ(Reason(SignToken(R"({"alg":"HS256","typ":"at+jwt"})", Payload(), kSecret)),
            "token type must be JWT");
  EXPECT_EQ(Reason(SignToken(R"({"alg":"HS256","typ":7})", Payload(), kSecret)),
            "token type must be JWT");
  EXPECT_EQ(Reason(SignToken(R"({"alg":"HS256","crit":["exp"]})", Payload(), kSecret)),
            "token names critical header extensions (crit): not supported");
}

TEST(JwtTest, ExpiryHasASmallLeeway) {
  auto with_exp = [](int64_t exp) { return Reason(SignToken(kHeader, Payload("", exp), kSecret)); };
  EXPECT_EQ(with_exp(kNow + 1), "ok");
  EXPECT_EQ(with_exp(kNow - kClockLeewayS + 1), "ok");  // expired 59 s ago: within the leeway
  EXPECT_EQ(with_exp(kNow - kClockLeewayS), "token expired");
  EXPECT_EQ(with_exp(kNow - 86400), "token expired");
  EXPECT_EQ(with_exp(INT64_MIN), "token expired");
  // No further ahead than kMaxTokenValidityS (and the leeway): an exp of 2^63 - 1 or above
  // would never lapse.
  EXPECT_EQ(with_exp(kNow + kMaxTokenValidityS + kClockLeewayS), "ok");
  const std::string too_far = "token expires more than 400 days from now";
  EXPECT_EQ(with_exp(kNow + kMaxTokenValidityS + kClockLeewayS + 1).rfind(too_far, 0), 0u);
  EXPECT_EQ(with_exp(INT64_MAX).rfind(too_far, 0), 0u);
  EXPECT_EQ(Reason(SignToken(kHeader, R"({"sub":"a","exp":18446744073709551615})", kSecret))
                .rfind(too_far, 0),
            0u);
  EXPECT_EQ(Reason(SignToken(kHeader, R"({"sub":"alice","exp":1.9e9})", kSecret)),
            "token has no expiry");
  EXPECT_EQ(Reason(SignToken(kHeader, R"({"sub":"alice","exp":"1900000000"})", kSecret)),
            "token has no expiry");
  EXPECT_EQ(Reason(SignToken(kHeader, R"({"sub":"alice"})", kSecret)), "token has no expiry");
}

TEST(JwtTest, NotBeforeHasTheSameLeeway) {
  auto with_nbf = [](const std::string& nbf) {
    return Reason(SignToken(kHeader, Payload(R"(,"nbf":)" + nbf), kSecret));
  };
  EXPECT_EQ(with_nbf(std::to_string(kNow - 10)), "ok");
  EXPECT_EQ(with_nbf(std::to_string(kNow + kClockLeewayS)), "ok");  // a clock 60 s behind
  EXPECT_EQ(with_nbf(std::to_string(kNow + kClockLeewayS + 1)), "token not valid yet (nbf)");
  EXPECT_EQ(with_nbf(std::to_string(INT64_MAX)), "token not valid yet (nbf)");
  EXPECT_EQ(with_nbf("18446744073709551615"), "token not valid yet (nbf)");  // not wrapped
  EXPECT_EQ(with_nbf("\"soon\""), "token claim 'nbf' is not an integer");
}

TEST(JwtTest, MalformedTokens) {
  for (const char* token : {"", "a", "a.b", "a.b.c.d", "***.***.***", "e30.e30."}) {
    EXPECT_NE(Reason(token), "ok") << token;
  }
  EXPECT_EQ(Reason(SignToken(kHeader, "[]", kSecret)), "token is not JSON");
  EXPECT_EQ(Reason(SignToken(kHeader, R"({"sub":"","exp":1900000000})", kSecret)),
            "token has no subject");
}

}  // namespace
}  // namespace cairn::auth
