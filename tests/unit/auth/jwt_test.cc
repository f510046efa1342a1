// Bearer tokens checked the way RFC 8725 asks: the signature before anything else, the algorithm
// pinned, the type when given, no critical extensions, exp and nbf with a small leeway.
#include "auth/jwt.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>

#include "auth/keys.h"
#include "base/base64.h"
#include "support/token_keys.h"

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
  // Its own code: the app renews the token (docs/protocol.md "Token renewal").
  EXPECT_EQ(VerifyToken(SignToken(kHeader, Payload("", kNow - 86400), kSecret), kSecret, kNow)
                .status()
                .code(),
            Code::kETOKEN);
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

// ---------------------------------------------------------------------------------------------
// RS256 and ES256 (docs/protocol.md "Authentication and tokens"): tokens an identity provider
// signs with its private key, checked with public keys. The keys are tests/unit/auth/testdata.

using cairn::testing::SignWithKey;
using cairn::testing::TestKeyFile;

TokenPolicy KeysPolicy(const std::vector<std::string>& pems, const std::string& jwks = "") {
  auto keys = std::make_shared<KeySet>();
  for (const std::string& p : pems) EXPECT_TRUE(keys->AddPem(TestKeyFile(p), p).ok()) << p;
  if (!jwks.empty()) {
    Status st = keys->AddJwks(TestKeyFile(jwks), jwks);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  TokenPolicy policy;
  policy.keys = std::move(keys);
  return policy;
}

std::string ReasonWith(const TokenPolicy& policy, const std::string& token) {
  auto c = VerifyToken(token, policy, kNow);
  return c.ok() ? "ok" : c.status().message();
}

TEST(JwtKeysTest, Rs256AndEs256VerifyWithPublicKeys) {
  const TokenPolicy policy = KeysPolicy({"rsa1.pub.pem", "ec1.pub.pem"});
  const std::string rs = SignWithKey("rsa1.key.pem", R"({"alg":"RS256","typ":"JWT"})", Payload());
  const std::string es = SignWithKey("ec1.key.pem", R"({"alg":"ES256"})", Payload());
  EXPECT_EQ(ReasonWith(policy, rs), "ok");
  EXPECT_EQ(ReasonWith(policy, es), "ok");
  auto claims = VerifyToken(rs, policy, kNow);
  ASSERT_TRUE(claims.ok());
  EXPECT_EQ(claims->subject, "alice");
  // Another key's signature; a flipped bit; the header naming another algorithm.
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa2.key.pem", R"({"alg":"RS256"})", Payload())),
            "token has a bad signature");
  std::string flipped = es;
  flipped[flipped.size() - 3] = flipped[flipped.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_EQ(ReasonWith(policy, flipped), "token has a bad signature");
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa1.key.pem", R"({"alg":"ES256"})", Payload())),
            "token algorithm must be RS256");
  EXPECT_EQ(ReasonWith(policy, SignWithKey("ec1.key.pem", R"({"alg":"HS256"})", Payload())),
            "token algorithm must be ES256");
  // The claims are checked as for HS256.
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa1.key.pem", R"({"alg":"RS256"})",
                                           Payload("", kNow - kClockLeewayS - 1))),
            "token expired");
  EXPECT_EQ(ReasonWith(policy, SignWithKey("ec1.key.pem", R"({"alg":"ES256"})",
                                           Payload(R"(,"nbf":)" + std::to_string(kNow + 600)))),
            "token not valid yet (nbf)");
  // A server with keys only takes no HS256 token, whatever secret signed it.
  EXPECT_EQ(ReasonWith(policy, SignToken(kHeader, Payload(), kSecret)),
            "token has a bad signature");
}

// RFC 8725 §2.1: an HS256 token "signed" with the server's public key as the HMAC secret must
// not pass, with or without a secret of the server's own; nor "none".
TEST(JwtKeysTest, AlgorithmConfusionAndNoneAreRefused) {
  TokenPolicy policy = KeysPolicy({"rsa1.pub.pem"});
  const std::string public_pem = TestKeyFile("rsa1.pub.pem");
  const std::string confused = SignToken(R"({"alg":"HS256"})", Payload(), public_pem);
  EXPECT_EQ(ReasonWith(policy, confused), "token has a bad signature");
  policy.secret = kSecret;
  EXPECT_EQ(ReasonWith(policy, confused), "token has a bad signature");
  EXPECT_EQ(ReasonWith(policy, SignToken(kHeader, Payload(), kSecret)), "ok");  // both work
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa1.key.pem", R"({"alg":"RS256"})", Payload())), "ok");
  const std::string none =
      Base64UrlEncode(R"({"alg":"none"})") + "." + Base64UrlEncode(Payload()) + ".";
  EXPECT_EQ(ReasonWith(policy, none), "token has a bad signature");
}

TEST(JwtKeysTest, JwksKeysRotateAndTheirIdsAreChecked) {
  // The JWKS brings rsa1 and ec1 (its encryption key skipped); rsa2 beside it: rotation.
  const TokenPolicy policy = KeysPolicy({"rsa2.pub.pem"}, "keys.jwks.json");
  EXPECT_EQ(policy.keys->size(), 3u);
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa1.key.pem", R"({"alg":"RS256","kid":"rsa-2026"})",
                                           Payload())),
            "ok");
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa2.key.pem", R"({"alg":"RS256"})", Payload())), "ok");
  EXPECT_EQ(ReasonWith(policy,
                       SignWithKey("ec1.key.pem", R"({"alg":"ES256","kid":"ec-2026"})", Payload())),
            "ok");
  EXPECT_EQ(ReasonWith(policy, SignWithKey("rsa1.key.pem", R"({"alg":"RS256","kid":"ec-2026"})",
                                           Payload())),
            "token key id does not match the key that signed it");
}

TEST(JwtKeysTest, BadKeysAreRefusedNamingThem) {
  KeySet keys;
  auto refuses = [&](const Status& st, const std::string& says) {
    EXPECT_EQ(st.code(), Code::kEINVAL);
    EXPECT_NE(st.message().find(says), std::string::npos) << st.message();
  };
  refuses(keys.AddPem(TestKeyFile("rsa1024.pub.pem"), "short.pem"), "at least 2048");
  refuses(keys.AddPem(TestKeyFile("ec384.pub.pem"), "p384.pem"), "P-256");
  refuses(keys.AddPem("not a key", "junk.pem"), "junk.pem: not a public key");
  refuses(keys.AddJwks("[]", "a.jwks"), "a.jwks: not a JWKS");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"RSA","e":"AQAB"}]})", "b.jwks"),
          "b.jwks: keys[0]: no \"n\"");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]})", "c.jwks"),
          "P-256");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]})", "d.jwks"),
          "32 bytes");
  const std::string zeros = Base64UrlEncode(std::string(32, '\x01'));
  refuses(keys.AddJwks(R"({"keys":[{"kty":"EC","crv":"P-256","x":")" + zeros + R"(","y":")" +
                           zeros + R"("}]})",
                       "e.jwks"),
          "not a point of P-256");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"oct","k":"AAAA"}]})", "f.jwks"), "key type");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"EC","alg":"RS256","crv":"P-256","x":"AA","y":"AA"}]})",
                       "h.jwks"),
          "does not fit");
  refuses(keys.AddJwks(R"({"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]})", "g.jwks"),
          "no signing key");
  EXPECT_TRUE(keys.empty());
}

TEST(JwtKeysTest, IssuerAndAudienceWhenConfigured) {
  TokenPolicy policy = KeysPolicy({"ec1.pub.pem"});
  policy.issuer = "https://id.example.com";
  policy.audience = "cairn";
  auto with = [&](const std::string& extra) {
    return ReasonWith(policy, SignWithKey("ec1.key.pem", R"({"alg":"ES256"})", Payload(extra)));
  };
  EXPECT_EQ(with(R"(,"iss":"https://id.example.com","aud":"cairn")"), "ok");
  EXPECT_EQ(with(R"(,"iss":"https://id.example.com","aud":["other","cairn"])"), "ok");
  EXPECT_EQ(with(R"(,"aud":"cairn")"), "token issuer is not https://id.example.com");
  EXPECT_EQ(with(R"(,"iss":"https://evil.example.com","aud":"cairn")"),
            "token issuer is not https://id.example.com");
  EXPECT_EQ(with(R"(,"iss":"https://id.example.com","aud":"other")"),
            "token audience does not include cairn");
  EXPECT_EQ(with(R"(,"iss":"https://id.example.com")"), "token audience does not include cairn");
}

}  // namespace
}  // namespace cairn::auth
