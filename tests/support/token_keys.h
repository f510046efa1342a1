// Test support: the keys of tests/unit/auth/testdata, and RS256 / ES256 tokens signed with
// them, as an identity provider would sign them.
#ifndef CAIRN_TESTS_SUPPORT_TOKEN_KEYS_H_
#define CAIRN_TESTS_SUPPORT_TOKEN_KEYS_H_

#include <gtest/gtest.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include <fstream>
#include <sstream>
#include <string>

#include "base/base64.h"

namespace cairn::testing {

// The content of tests/unit/auth/testdata/`name`.
inline std::string TestKeyFile(const std::string& name) {
  std::ifstream in(std::string(CAIRN_TEST_SRCDIR) + "/unit/auth/testdata/" + name,
                   std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Signs header.payload with the private key in testdata file `key`: RS256 for an RSA key,
// ES256 (R || S) for an EC one.
inline std::string SignWithKey(const std::string& key, const std::string& header,
                               const std::string& payload) {
  const std::string signed_part = Base64UrlEncode(header) + "." + Base64UrlEncode(payload);
  unsigned char digest[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(),
                     digest, 0);
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_pk_context pk;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_pk_init(&pk);
  EXPECT_EQ(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0), 0);
  const std::string pem = TestKeyFile(key) + '\0';
  EXPECT_EQ(mbedtls_pk_parse_key(&pk, reinterpret_cast<const unsigned char*>(pem.data()),
                                 pem.size(), nullptr, 0),
            0)
      << key;
  std::string sig;
  if (mbedtls_pk_get_type(&pk) == MBEDTLS_PK_RSA) {
    sig.resize(mbedtls_pk_get_len(&pk));
    size_t len = 0;
    EXPECT_EQ(mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, digest, sizeof digest,
                              reinterpret_cast<unsigned char*>(sig.data()), &len,
                              mbedtls_ctr_drbg_random, &drbg),
              0);
    sig.resize(len);
  } else {
    mbedtls_ecp_keypair* ec = mbedtls_pk_ec(pk);
    if (ec == nullptr) {
      ADD_FAILURE() << key << " is neither an RSA nor an EC key";
      mbedtls_pk_free(&pk);
      mbedtls_ctr_drbg_free(&drbg);
      mbedtls_entropy_free(&entropy);
      return "";
    }
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    EXPECT_EQ(mbedtls_ecdsa_sign(&ec->grp, &r, &s, &ec->d, digest, sizeof digest,
                                 mbedtls_ctr_drbg_random, &drbg),
              0);
    sig.resize(64);
    auto* out = reinterpret_cast<unsigned char*>(sig.data());
    EXPECT_EQ(mbedtls_mpi_write_binary(&r, out, 32), 0);
    EXPECT_EQ(mbedtls_mpi_write_binary(&s, out + 32, 32), 0);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
  }
  mbedtls_pk_free(&pk);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  return signed_part + "." + Base64UrlEncode(sig);
}

}  // namespace cairn::testing

#endif  // CAIRN_TESTS_SUPPORT_TOKEN_KEYS_H_
