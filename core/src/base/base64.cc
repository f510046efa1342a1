#include "base/base64.h"

#include <mbedtls/base64.h>

#include <algorithm>

namespace cairn {

std::string Base64Encode(const std::string& bytes) {
  size_t needed = 0;
  const auto* src = reinterpret_cast<const unsigned char*>(bytes.data());
  mbedtls_base64_encode(nullptr, 0, &needed, src, bytes.size());
  std::string out(needed, '\0');
  size_t written = 0;
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &written, src,
                        bytes.size());
  out.resize(written);
  return out;
}

bool Base64Decode(const std::string& text, std::string* out) {
  size_t needed = 0;
  const auto* src = reinterpret_cast<const unsigned char*>(text.data());
  int rc = mbedtls_base64_decode(nullptr, 0, &needed, src, text.size());
  if (rc == MBEDTLS_ERR_BASE64_INVALID_CHARACTER) return false;
  std::string buf(needed, '\0');
  size_t written = 0;
  rc = mbedtls_base64_decode(reinterpret_cast<unsigned char*>(buf.data()), buf.size(), &written,
                             src, text.size());
  if (rc != 0) return false;
  buf.resize(written);
  *out = std::move(buf);
  return true;
}

std::string Base64UrlEncode(const std::string& bytes) {
  std::string s = Base64Encode(bytes);
  while (!s.empty() && s.back() == '=') s.pop_back();
  std::replace(s.begin(), s.end(), '+', '-');
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

bool Base64UrlDecode(std::string text, std::string* out) {
  if (text.find_first_of("+/=") != std::string::npos) return false;
  std::replace(text.begin(), text.end(), '-', '+');
  std::replace(text.begin(), text.end(), '_', '/');
  if (text.size() % 4 == 1) return false;
  while (text.size() % 4 != 0) text.push_back('=');
  return Base64Decode(text, out);
}

}  // namespace cairn
