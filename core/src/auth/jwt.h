// HS256 JSON Web Tokens (RFC 7519) as cairn-server uses them (SPEC §5): the HMAC-SHA256 comes
// from mbedTLS, base64 from mbedTLS, JSON from nlohmann/json. Claims:
//   sub    the subject (user or device), required
//   exp    expiry, seconds since the Unix epoch, required
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
  std::vector<std::string> read;   // "*" means every collection
  std::vector<std::string> write;
  std::optional<std::string> replica_id;

  bool MayRead(const std::string& collection) const;
  bool MayWrite(const std::string& collection) const;
};

// Signs `claims` with `secret`.
std::string MintToken(const Claims& claims, const std::string& secret);

// Checks the signature (constant time), the algorithm (HS256 only) and the expiry against
// `now_s`. EPERM-like failures come back as EINVAL with the reason ("bad signature", "expired").
Result<Claims> VerifyToken(const std::string& token, const std::string& secret, int64_t now_s);

}  // namespace cairn::auth

#endif  // CAIRN_AUTH_JWT_H_
