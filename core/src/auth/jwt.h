// HS256 JSON Web Tokens (RFC 7519) as cairn-server uses them (docs/protocol.md
// "Authentication and tokens"): the HMAC-SHA256 comes from mbedTLS, base64 from mbedTLS, JSON
// from nlohmann/json. Claims:
//   sub    the subject (user or device), required
//   exp    expiry, seconds since the Unix epoch, required
//   nbf    optional: not valid before, seconds since the Unix epoch
//   read   collections the holder may read: a list of names, or ["*"] for all
//   write  collections the holder may write: same form
//   rid    optional: the only replica id (32 hex chars) the token may sync as
//   admin  optional: true, every document may be read and written (sync rules)
// and any other claim, for the grants of sync rules (docs/sync-rules.md).
#ifndef CAIRN_AUTH_JWT_H_
#define CAIRN_AUTH_JWT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace cairn::auth {

// A claim as sync rules' grant templates read it: a string or an integer (as decimal text), or
// an array (`array`) of those; other values (and other elements of an array) are left out.
struct ClaimValue {
  bool array = false;
  std::vector<std::string> items;
};

struct Claims {
  std::string subject;
  int64_t expires_s = 0;
  std::optional<int64_t> not_before_s;
  std::vector<std::string> read;   // "*" means every collection
  std::vector<std::string> write;
  std::optional<std::string> replica_id;
  bool admin = false;                        // "admin": true
  std::map<std::string, ClaimValue> values;  // every claim, "sub" included, as above

  bool MayRead(const std::string& collection) const;
  bool MayWrite(const std::string& collection) const;
};

// Clock skew tolerated between the token's issuer and the server (RFC 7519 §4.1.4-5: "a small
// leeway"): a token is taken until exp + 60 s, and from nbf - 60 s.
constexpr int64_t kClockLeewayS = 60;
// The furthest ahead a token's exp may be (docs/protocol.md "Authentication and tokens"): 400
// days, a yearly device token with room to renew it. A token valid longer cannot be revoked by
// letting it lapse, and an exp near 2^63 would never lapse at all: refused.
constexpr int64_t kMaxTokenValidityS = 400 * 24 * 3600;

// Signs `claims` with `secret` (`values` other than the claims above as strings and lists of
// strings).
std::string MintToken(const Claims& claims, const std::string& secret);

// base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256): any header and payload,
// for tests that need tokens MintToken would never make.
std::string SignToken(const std::string& header_json, const std::string& payload_json,
                      const std::string& secret);

class KeySet;  // auth/keys.h

// What tokens are checked with (docs/protocol.md "Authentication and tokens").
struct TokenPolicy {
  std::string secret;                  // HS256 (shared secret); empty: no HS256 token is taken
  std::shared_ptr<const KeySet> keys;  // RS256 and ES256 (public keys); null: none taken
  std::string issuer;                  // not empty: the `iss` claim must be this
  std::string audience;                // not empty: `aud` (a string or a list) must hold this
  bool enabled() const;                // some secret or key
};

// Checks, per RFC 8725: the signature first, against the secret (HMAC-SHA256, constant time)
// and the public keys, never a public key as an HMAC secret; then the header (its alg must be
// the algorithm that verified it, its kid the key's when both have one, typ JWT when present,
// no crit); then the claims: sub, exp (with kClockLeewayS, and at most kMaxTokenValidityS
// ahead), nbf when present (same leeway), iss and aud when the policy names them, read/write
// lists, rid, admin. Failures come back as EINVAL with the reason ("token has a bad
// signature", "token expired", ...).
Result<Claims> VerifyToken(const std::string& token, const TokenPolicy& policy, int64_t now_s);
// The same with an HS256 secret alone.
Result<Claims> VerifyToken(const std::string& token, const std::string& secret, int64_t now_s);

}  // namespace cairn::auth

#endif  // CAIRN_AUTH_JWT_H_
