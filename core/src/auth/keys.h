// Public keys that verify RS256 and ES256 tokens (RFC 7518 §3.3, §3.4), so that an identity
// provider issues tokens without the server holding its secret (docs/protocol.md
// "Authentication and tokens"). mbedTLS does the cryptography; a JWKS file (RFC 7517) is read
// with nlohmann/json.
#ifndef CAIRN_AUTH_KEYS_H_
#define CAIRN_AUTH_KEYS_H_

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace cairn::auth {

enum class KeyType { kRsa, kEcP256 };

class KeySet {
 public:
  KeySet();
  ~KeySet();
  KeySet(KeySet&&) noexcept;
  KeySet& operator=(KeySet&&) noexcept;

  // Adds the public key of a PEM or DER file's text (an RSA key of at least 2048 bits, or an EC
  // key on P-256), with no key id. EINVAL naming `name` when it is neither.
  Status AddPem(const std::string& text, const std::string& name);
  // Adds every key of a JWKS document ({"keys": [...]}: "kty" RSA with "n" and "e", or EC with
  // "crv" P-256, "x" and "y"; "kid" kept for selection; keys whose "use" is not "sig" or whose
  // "alg" is not RS256 or ES256 are skipped). EINVAL naming the key of the first fault.
  Status AddJwks(const std::string& json, const std::string& name);

  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // Whether some key verifies `signature` over SHA-256(`signed_part`), as RS256 (PKCS #1 v1.5,
  // RFC 7518 §3.3) for RSA keys or ES256 (R || S, 64 bytes, RFC 7518 §3.4) for P-256 keys; when
  // one does, its type and id (empty: none) come back. Every key is tried whose type fits the
  // signature's length: nothing of the token but its signature chooses the key.
  bool Verify(const std::string& signed_part, const std::string& signature, KeyType* type,
              std::string* kid) const;

 private:
  struct Key;
  std::vector<std::unique_ptr<Key>> keys_;
};

}  // namespace cairn::auth

#endif  // CAIRN_AUTH_KEYS_H_
