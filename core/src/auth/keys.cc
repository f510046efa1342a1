#include "auth/keys.h"

#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>

#include <nlohmann/json.hpp>

#include "base/base64.h"

namespace cairn::auth {

namespace {

using Json = nlohmann::json;

// RSA keys shorter than this verify nothing (RFC 7518 §3.3: "2048 bits or larger").
constexpr size_t kMinRsaBits = 2048;

const unsigned char* U8(const std::string& s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string Sha256(const std::string& data) {
  unsigned char digest[32];
  mbedtls_sha256_ret(U8(data), data.size(), digest, /*is224=*/0);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

// A JWK member holding base64url bytes.
Result<std::string> JwkBytes(const Json& jwk, const char* member, const std::string& where) {
  if (!jwk.contains(member) || !jwk[member].is_string()) {
    return Status::Invalid(where + ": no \"" + member + "\"");
  }
  std::string out;
  if (!Base64UrlDecode(jwk[member].get<std::string>(), &out) || out.empty()) {
    return Status::Invalid(where + ": \"" + member + "\" is not base64url");
  }
  return out;
}

}  // namespace

struct KeySet::Key {
  std::string kid;
  KeyType type = KeyType::kRsa;
  mbedtls_pk_context pk;
  Key() { mbedtls_pk_init(&pk); }
  ~Key() { mbedtls_pk_free(&pk); }
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  // The key's type, or EINVAL for a kind or size the tokens do not use.
  Status Classify(const std::string& where) {
    if (mbedtls_pk_get_type(&pk) == MBEDTLS_PK_RSA) {
      if (mbedtls_pk_get_bitlen(&pk) < kMinRsaBits) {
        return Status::Invalid(where + ": an RSA key of " +
                               std::to_string(mbedtls_pk_get_bitlen(&pk)) +
                               " bits (at least 2048)");
      }
      type = KeyType::kRsa;
      return Status::OK();
    }
    if (mbedtls_pk_get_type(&pk) == MBEDTLS_PK_ECKEY ||
        mbedtls_pk_get_type(&pk) == MBEDTLS_PK_ECDSA) {
      const mbedtls_ecp_keypair* ec = mbedtls_pk_ec(pk);
      if (ec == nullptr || ec->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
        return Status::Invalid(where + ": an EC key not on P-256 (ES256 uses P-256)");
      }
      type = KeyType::kEcP256;
      return Status::OK();
    }
    return Status::Invalid(where + ": neither an RSA nor an EC public key");
  }
};

KeySet::KeySet() = default;
KeySet::~KeySet() = default;
KeySet::KeySet(KeySet&&) noexcept = default;
KeySet& KeySet::operator=(KeySet&&) noexcept = default;

Status KeySet::AddPem(const std::string& text, const std::string& name) {
  auto key = std::make_unique<Key>();
  // A PEM text is parsed with its terminating NUL counted (mbedTLS's convention).
  const std::string buf = text + '\0';
  const bool pem = text.find("-----BEGIN") != std::string::npos;
  if (mbedtls_pk_parse_public_key(&key->pk, U8(buf), pem ? buf.size() : text.size()) != 0) {
    return Status::Invalid(name + ": not a public key (PEM or DER)");
  }
  CAIRN_RETURN_IF_ERROR(key->Classify(name));
  keys_.push_back(std::move(key));
  return Status::OK();
}

Status KeySet::AddJwks(const std::string& json, const std::string& name) {
  Json doc = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return Status::Invalid(name + ": not a JWKS document ({\"keys\": [...]})");
  }
  std::vector<std::unique_ptr<Key>> added;
  for (size_t i = 0; i < doc["keys"].size(); i++) {
    const Json& jwk = doc["keys"][i];
    const std::string where = name + ": keys[" + std::to_string(i) + "]";
    if (!jwk.is_object() || !jwk.contains("kty") || !jwk["kty"].is_string()) {
      return Status::Invalid(where + ": no \"kty\"");
    }
    if (jwk.contains("use") && jwk["use"] != "sig") continue;  // an encryption key
    if (jwk.contains("alg") && jwk["alg"] != "RS256" && jwk["alg"] != "ES256") continue;
    if (jwk.contains("alg") && (jwk["alg"] == "RS256") != (jwk["kty"] == "RSA")) {
      return Status::Invalid(where + ": \"alg\" does not fit \"kty\"");
    }
    auto key = std::make_unique<Key>();
    if (jwk.contains("kid")) {
      if (!jwk["kid"].is_string()) return Status::Invalid(where + ": \"kid\" is not a string");
      key->kid = jwk["kid"].get<std::string>();
    }
    const std::string kty = jwk["kty"].get<std::string>();
    if (kty == "RSA") {
      CAIRN_ASSIGN_OR_RETURN(std::string n, JwkBytes(jwk, "n", where));
      CAIRN_ASSIGN_OR_RETURN(std::string e, JwkBytes(jwk, "e", where));
      if (mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)) != 0) {
        return Status(Code::kENOMEM, where + ": cannot set up an RSA key");
      }
      mbedtls_rsa_context* rsa = mbedtls_pk_rsa(key->pk);
      if (rsa == nullptr ||
          mbedtls_rsa_import_raw(rsa, U8(n), n.size(), nullptr, 0, nullptr, 0, nullptr, 0, U8(e),
                                 e.size()) != 0 ||
          mbedtls_rsa_complete(rsa) != 0 || mbedtls_rsa_check_pubkey(rsa) != 0) {
        return Status::Invalid(where + ": not a valid RSA public key");
      }
    } else if (kty == "EC") {
      if (!jwk.contains("crv") || jwk["crv"] != "P-256") {
        return Status::Invalid(where + ": an EC key not on P-256 (ES256 uses P-256)");
      }
      CAIRN_ASSIGN_OR_RETURN(std::string x, JwkBytes(jwk, "x", where));
      CAIRN_ASSIGN_OR_RETURN(std::string y, JwkBytes(jwk, "y", where));
      if (x.size() != 32 || y.size() != 32) {
        return Status::Invalid(where + ": \"x\" and \"y\" must be 32 bytes each");
      }
      if (mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0) {
        return Status(Code::kENOMEM, where + ": cannot set up an EC key");
      }
      mbedtls_ecp_keypair* ec = mbedtls_pk_ec(key->pk);
      if (ec == nullptr) return Status(Code::kENOMEM, where + ": cannot set up an EC key");
      const std::string point = std::string(1, '\x04') + x + y;  // uncompressed (SEC 1 §2.3.3)
      if (mbedtls_ecp_group_load(&ec->grp, MBEDTLS_ECP_DP_SECP256R1) != 0 ||
          mbedtls_ecp_point_read_binary(&ec->grp, &ec->Q, U8(point), point.size()) != 0 ||
          mbedtls_ecp_check_pubkey(&ec->grp, &ec->Q) != 0) {
        return Status::Invalid(where + ": not a point of P-256");
      }
    } else {
      return Status::Invalid(where + ": key type \"" + kty + "\" (RSA or EC)");
    }
    CAIRN_RETURN_IF_ERROR(key->Classify(where));
    added.push_back(std::move(key));
  }
  if (added.empty()) return Status::Invalid(name + ": no signing key (RS256 or ES256)");
  for (auto& k : added) keys_.push_back(std::move(k));
  return Status::OK();
}

bool KeySet::Verify(const std::string& signed_part, const std::string& signature, KeyType* type,
                    std::string* kid) const {
  const std::string digest = Sha256(signed_part);
  for (const auto& key : keys_) {
    bool ok = false;
    if (key->type == KeyType::kRsa) {
      ok = signature.size() == mbedtls_pk_get_len(&key->pk) &&
           mbedtls_pk_verify(&key->pk, MBEDTLS_MD_SHA256, U8(digest), digest.size(), U8(signature),
                             signature.size()) == 0;
    } else if (mbedtls_ecp_keypair* ec = mbedtls_pk_ec(key->pk);
               ec != nullptr && signature.size() == 64) {
      mbedtls_mpi r, s;
      mbedtls_mpi_init(&r);
      mbedtls_mpi_init(&s);
      ok = mbedtls_mpi_read_binary(&r, U8(signature), 32) == 0 &&
           mbedtls_mpi_read_binary(&s, U8(signature) + 32, 32) == 0 &&
           mbedtls_ecdsa_verify(&ec->grp, U8(digest), digest.size(), &ec->Q, &r, &s) == 0;
      mbedtls_mpi_free(&r);
      mbedtls_mpi_free(&s);
    }
    if (ok) {
      *type = key->type;
      *kid = key->kid;
      return true;
    }
  }
  return false;
}

}  // namespace cairn::auth
