#include "base/sha256.h"

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

namespace cairn {

struct Sha256::Impl {
  mbedtls_sha256_context ctx;
};

Sha256::Sha256() : impl_(new Impl) {
  mbedtls_sha256_init(&impl_->ctx);
#if MBEDTLS_VERSION_MAJOR >= 3
  mbedtls_sha256_starts(&impl_->ctx, 0);
#else
  mbedtls_sha256_starts_ret(&impl_->ctx, 0);
#endif
}

Sha256::~Sha256() { mbedtls_sha256_free(&impl_->ctx); }

void Sha256::Update(std::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
#if MBEDTLS_VERSION_MAJOR >= 3
  mbedtls_sha256_update(&impl_->ctx, p, data.size());
#else
  mbedtls_sha256_update_ret(&impl_->ctx, p, data.size());
#endif
}

std::string Sha256::Finish() {
  unsigned char out[32];
#if MBEDTLS_VERSION_MAJOR >= 3
  mbedtls_sha256_finish(&impl_->ctx, out);
#else
  mbedtls_sha256_finish_ret(&impl_->ctx, out);
#endif
  return std::string(reinterpret_cast<char*>(out), 32);
}

}  // namespace cairn
