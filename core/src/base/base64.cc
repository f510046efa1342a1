#include "base/base64.h"

#include <mbedtls/base64.h>

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

}  // namespace cairn
