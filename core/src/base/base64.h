// Standard base64 (RFC 4648 §4, with padding) over mbedTLS's: bytes values in JSON
// ({"$bytes":"..."}) and, in base64url form, tokens.
#ifndef CAIRN_BASE_BASE64_H_
#define CAIRN_BASE_BASE64_H_

#include <string>

namespace cairn {

std::string Base64Encode(const std::string& bytes);
// False when `text` is not valid base64; `out` is then unchanged.
bool Base64Decode(const std::string& text, std::string* out);

// base64url without padding (RFC 4648 §5, as JWTs and JWKs write it).
std::string Base64UrlEncode(const std::string& bytes);
// False when `text` is not unpadded base64url; `out` is then unchanged.
bool Base64UrlDecode(std::string text, std::string* out);

}  // namespace cairn

#endif  // CAIRN_BASE_BASE64_H_
