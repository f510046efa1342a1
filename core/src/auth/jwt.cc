#include "auth/jwt.h"

#include <mbedtls/md.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "auth/keys.h"
#include "base/base64.h"
#include "base/strings.h"

namespace cairn::auth {

namespace {

using Json = nlohmann::json;

std::string HmacSha256(const std::string& key, const std::string& data) {
  unsigned char mac[32];
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                  reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                  reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac);
  return std::string(reinterpret_cast<const char*>(mac), sizeof(mac));
}

bool ConstantTimeEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); i++) {
    diff = static_cast<unsigned char>(diff | (static_cast<unsigned char>(a[i]) ^
                                              static_cast<unsigned char>(b[i])));
  }
  return diff == 0;
}

bool Allows(const std::vector<std::string>& list, const std::string& collection) {
  for (const auto& c : list) {
    if (c == "*" || c == collection) return true;
  }
  return false;
}

Result<std::vector<std::string>> CollectionList(const Json& claims, const char* name) {
  std::vector<std::string> out;
  if (!claims.contains(name)) return out;
  const Json& j = claims[name];
  if (!j.is_array()) return Status::Invalid(std::string("token claim '") + name + "' is not a list");
  for (const auto& c : j) {
    if (!c.is_string()) {
      return Status::Invalid(std::string("token claim '") + name + "' holds a non-string");
    }
    out.push_back(c.get<std::string>());
  }
  return out;
}

// An integer NumericDate; one above INT64_MAX (JSON allows it) is INT64_MAX, not a wrapped
// negative number (a huge nbf must not read as long ago).
int64_t NumericDate(const Json& v) {
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::numeric_limits<int64_t>::max();
  }
  return v.get<int64_t>();
}

}  // namespace

bool Claims::MayRead(const std::string& collection) const { return Allows(read, collection); }
bool Claims::MayWrite(const std::string& collection) const { return Allows(write, collection); }

std::string SignToken(const std::string& header_json, const std::string& payload_json,
                      const std::string& secret) {
  std::string signing = Base64UrlEncode(header_json) + "." + Base64UrlEncode(payload_json);
  return signing + "." + Base64UrlEncode(HmacSha256(secret, signing));
}

std::string MintToken(const Claims& claims, const std::string& secret) {
  Json payload = {{"sub", claims.subject}, {"exp", claims.expires_s},
                  {"read", claims.read},   {"write", claims.write}};
  if (claims.not_before_s) payload["nbf"] = *claims.not_before_s;
  if (claims.replica_id) payload["rid"] = *claims.replica_id;
  if (claims.admin) payload["admin"] = true;
  for (const auto& [name, v] : claims.values) {
    if (payload.contains(name) || name == "admin") continue;  // the ones above are set above
    if (v.array) {
      payload[name] = v.items;
    } else if (!v.items.empty()) {
      payload[name] = v.items[0];
    }
  }
  return SignToken(R"({"alg":"HS256","typ":"JWT"})", payload.dump(), secret);
}

bool TokenPolicy::enabled() const { return !secret.empty() || (keys && !keys->empty()); }

Result<Claims> VerifyToken(const std::string& token, const std::string& secret, int64_t now_s) {
  TokenPolicy policy;
  policy.secret = secret;
  return VerifyToken(token, policy, now_s);
}

Result<Claims> VerifyToken(const std::string& token, const TokenPolicy& policy, int64_t now_s) {
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string::npos || token.find('.', dot2 + 1) != std::string::npos) {
    return Status::Invalid("token is not a JWT (header.payload.signature)");
  }
  std::string header_raw, payload_raw, sig;
  if (!Base64UrlDecode(token.substr(0, dot1), &header_raw) ||
      !Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1), &payload_raw) ||
      !Base64UrlDecode(token.substr(dot2 + 1), &sig)) {
    return Status::Invalid("token is not valid base64url");
  }
  // The signature first: nothing from an unsigned token is trusted, not even its header, so
  // the header does not choose how the token is checked (RFC 8725 §2.1, §3.1): the secret
  // checks HMAC-SHA256 only, each public key its own algorithm only (a public key is never
  // taken for an HMAC secret: the "algorithm confusion" attack).
  const std::string signed_part = token.substr(0, dot2);
  std::string alg, key_id;
  if (!policy.secret.empty() && ConstantTimeEqual(sig, HmacSha256(policy.secret, signed_part))) {
    alg = "HS256";
  } else if (KeyType type; policy.keys && policy.keys->Verify(signed_part, sig, &type, &key_id)) {
    alg = type == KeyType::kRsa ? "RS256" : "ES256";
  } else {
    return Status::Invalid("token has a bad signature");
  }
  Json header = Json::parse(header_raw, nullptr, /*allow_exceptions=*/false);
  Json payload = Json::parse(payload_raw, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object() || !payload.is_object()) return Status::Invalid("token is not JSON");
  // RFC 8725 §3.1, §3.11: the header must name the algorithm that verified it (and the key,
  // when both name one); a "typ" other than JWT is another kind of token; critical extensions
  // ("crit") are not understood, so the token is refused (RFC 7515 §4.1.11).
  if (!header.contains("alg") || header["alg"] != alg) {
    return Status::Invalid("token algorithm must be " + alg);
  }
  if (header.contains("kid") && !key_id.empty() && header["kid"] != key_id) {
    return Status::Invalid("token key id does not match the key that signed it");
  }
  if (header.contains("typ") &&
      (!header["typ"].is_string() || AsciiLower(header["typ"].get<std::string>()) != "jwt")) {
    return Status::Invalid("token type must be JWT");
  }
  if (header.contains("crit")) {
    return Status::Invalid("token names critical header extensions (crit): not supported");
  }
  Claims c;
  if (!payload.contains("sub") || !payload["sub"].is_string() ||
      payload["sub"].get<std::string>().empty()) {
    return Status::Invalid("token has no subject");
  }
  c.subject = payload["sub"].get<std::string>();
  if (!payload.contains("exp") || !payload["exp"].is_number_integer()) {
    return Status::Invalid("token has no expiry");
  }
  c.expires_s = NumericDate(payload["exp"]);
  if (c.expires_s <= now_s - kClockLeewayS) return Status(Code::kETOKEN, "token expired");
  if (c.expires_s > now_s + kMaxTokenValidityS + kClockLeewayS) {
    return Status::Invalid("token expires more than " + std::to_string(kMaxTokenValidityS / 86400) +
                           " days from now (exp " + std::to_string(c.expires_s) + ")");
  }
  if (payload.contains("nbf")) {
    if (!payload["nbf"].is_number_integer()) {
      return Status::Invalid("token claim 'nbf' is not an integer");
    }
    c.not_before_s = NumericDate(payload["nbf"]);
    if (*c.not_before_s > now_s + kClockLeewayS) {
      return Status::Invalid("token not valid yet (nbf)");
    }
  }
  // RFC 7519 §4.1.1, §4.1.3: a server told its issuer and audience takes only tokens for it.
  if (!policy.issuer.empty() && (!payload.contains("iss") || payload["iss"] != policy.issuer)) {
    return Status::Invalid("token issuer is not " + policy.issuer);
  }
  if (!policy.audience.empty()) {
    const Json& aud = payload.contains("aud") ? payload["aud"] : Json();
    const bool ours =
        aud == policy.audience ||
        (aud.is_array() && std::find(aud.begin(), aud.end(), Json(policy.audience)) != aud.end());
    if (!ours) return Status::Invalid("token audience does not include " + policy.audience);
  }
  CAIRN_ASSIGN_OR_RETURN(c.read, CollectionList(payload, "read"));
  CAIRN_ASSIGN_OR_RETURN(c.write, CollectionList(payload, "write"));
  if (payload.contains("rid")) {
    if (!payload["rid"].is_string()) return Status::Invalid("token claim 'rid' is not a string");
    c.replica_id = payload["rid"].get<std::string>();
  }
  if (payload.contains("admin")) {
    if (!payload["admin"].is_boolean()) {
      return Status::Invalid("token claim 'admin' is not true or false");
    }
    c.admin = payload["admin"].get<bool>();
  }
  for (const auto& [name, value] : payload.items()) {
    ClaimValue v;
    v.array = value.is_array();
    for (const Json& item : v.array ? value : Json::array({value})) {
      if (item.is_string()) {
        v.items.push_back(item.get<std::string>());
      } else if (item.is_number_integer()) {
        v.items.push_back(item.dump());
      }
    }
    if (v.array || !v.items.empty()) c.values.emplace(name, std::move(v));
  }
  return c;
}

}  // namespace cairn::auth
