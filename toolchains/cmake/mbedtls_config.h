/* mbedTLS settings of the self-contained build (CAIRN_BUNDLE_DEPS), applied after mbedTLS's own
 * default configuration (mbedtls/config.h includes this file last, as MBEDTLS_USER_CONFIG_FILE).
 * Threading as Debian's package builds it: several sync clients may run at once. */
#ifndef CAIRN_MBEDTLS_CONFIG_H_
#define CAIRN_MBEDTLS_CONFIG_H_

#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD

#endif /* CAIRN_MBEDTLS_CONFIG_H_ */
