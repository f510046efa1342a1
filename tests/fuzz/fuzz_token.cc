// Fuzz target: bearer tokens as cairn-server receives them in Hello (auth::VerifyToken: base64url
// parts, the header's algorithm, the signature in constant time, the claims' JSON and types).
// Each input is tried as it is and, so that the fuzzer gets past the signature to the header and
// the claims, with its first two parts signed correctly.
#include <mbedtls/base64.h>
#include <mbedtls/md.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "auth/jwt.h"

namespace {

const std::string kSecret(32, 'k');

// "header.payload" + "." + base64url(HMAC-SHA256(kSecret, "header.payload")).
std::string Signed(const std::string& signing) {
  unsigned char mac[32];
  mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                  reinterpret_cast<const unsigned char*>(kSecret.data()), kSecret.size(),
                  reinterpret_cast<const unsigned char*>(signing.data()), signing.size(), mac);
  unsigned char b64[64];
  size_t n = 0;
  mbedtls_base64_encode(b64, sizeof b64, &n, mac, sizeof mac);
  std::string sig(reinterpret_cast<const char*>(b64), n);
  for (char& c : sig) c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (!sig.empty() && sig.back() == '=') sig.pop_back();
  return signing + "." + sig;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cairn;
  const std::string token(reinterpret_cast<const char*>(data), size);
  (void)auth::VerifyToken(token, kSecret, 1'700'000'000);
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 != std::string::npos) {
    (void)auth::VerifyToken(Signed(token.substr(0, dot2)), kSecret, 1'700'000'000);
  }
  return 0;
}
