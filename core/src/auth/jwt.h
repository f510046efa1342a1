// HS256 JSON Web Tokens (RFC 7519) as cairn-server uses them (docs/protocol.md
// "Authentication and tokens"): the HMAC-SHA256 comes from mbedTLS, base64 from mbedTLS, JSON
// from nlohmann/json. Claims:
//   sub    the subject (user or device), required
//   exp    expiry, seconds since the Unix epoch, required
//   nbf    optional: not valid before, seconds since the Unix epoch
//   read   collections the holder may read: a list of names, or ["*"] for all
//   write  collections the holder may write: same form
//   rid    optional: the only replica id (32 hex chars) the token may sync as
#ifndef CAIRN_AUTH_JWT_H_
#define CAIRN_AUTH_JWT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace cairn::auth {

struct Claims {
  std::string subject;
  int64_t expires_s = 0;
  std::optional<int64_t> not_before_s;
  std::vector<std::string> read;   // "*" means every collection
  std::vector<std::string> write;
  std::optional<std::string> replica_id;

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

// Signs `claims` with `secret`.
std::string MintToken(const Claims& claims, const std::string& secret);

// base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256): any header and payload,
// for tests that need tokens MintToken would never make.
std::string SignToken(const std::string& header_json, const std::string& payload_json,
                      const std::string& secret);

// Checks, per RFC 8725: the signature first (constant time), then the header (alg pinned to
// HS256, typ JWT when present, no crit), then the claims: sub, exp (with kClockLeewayS, and at
// most kMaxTokenValidityS ahead), nbf
// when present (same leeway), read/write lists, rid. Failures come back as EINVAL with the
// reason ("token has a bad signature", "token expired", ...).
Result<Claims> VerifyToken(const std::string& token, const std::string& secret, int64_t now_s);

}  // namespace cairn::auth

#endif  // CAIRN_AUTH_JWT_H_
