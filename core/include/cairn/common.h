/* Cairn C API: conventions shared by every header (see README "C API").
 *
 *  1. Opaque handles; a handle received through `T** out` belongs to the caller, who frees it
 *     with cairn_T_free (NULL is a harmless no-op).
 *  2. Fallible calls return CAIRN_OK (0) or a negative CAIRN_E* code. The readable message of the
 *     last failure on the calling thread is cairn_error_last(); it does not allocate.
 *  3. Out-parameters come first, then the handle, then inputs.
 *  4. Strings are UTF-8 and NUL-terminated unless a length is given. Bytes returned by the library
 *     come in a cairn_buf, released with cairn_buf_dispose.
 *  5. No C++ exception crosses this boundary.
 */
#ifndef CAIRN_COMMON_H
#define CAIRN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define CAIRN_BEGIN_DECLS extern "C" {
#define CAIRN_END_DECLS }
#else
#define CAIRN_BEGIN_DECLS
#define CAIRN_END_DECLS
#endif

#if defined(CAIRN_BUILDING_SHARED)
#define CAIRN_API __attribute__((visibility("default")))
#else
#define CAIRN_API
#endif

#if defined(__clang__)
#if __has_feature(nullability)
#define CAIRN_HAS_NULLABILITY 1
#endif
#endif
#if defined(CAIRN_HAS_NULLABILITY)
#define CAIRN_NULLABLE _Nullable
#define CAIRN_NONNULL _Nonnull
#define CAIRN_ASSUME_NONNULL_BEGIN _Pragma("clang assume_nonnull begin")
#define CAIRN_ASSUME_NONNULL_END _Pragma("clang assume_nonnull end")
#else
#define CAIRN_NULLABLE
#define CAIRN_NONNULL
#define CAIRN_ASSUME_NONNULL_BEGIN
#define CAIRN_ASSUME_NONNULL_END
#endif

CAIRN_BEGIN_DECLS

/** Error codes, generated from cairn/errors.def. Numbers are never reused. (Outside the
 *  nullability region: clang refuses an #include inside one.) */
typedef enum cairn_code {
#define XX(name, num, retry, msg) CAIRN_##name = (num),
#include "cairn/errors.def"
#undef XX
  CAIRN_CODE_END_ = -1000
} cairn_code;

CAIRN_ASSUME_NONNULL_BEGIN

/** Bytes owned by the library until cairn_buf_dispose. `data` is NUL-terminated for text. */
typedef struct cairn_buf {
  uint8_t* CAIRN_NULLABLE data;
  size_t len;
} cairn_buf;

/** Releases the bytes of `buf` and zeroes it; a zeroed buf is a no-op. Thread-safe. */
CAIRN_API void cairn_buf_dispose(cairn_buf* CAIRN_NULLABLE buf);

/** The message of the last failed call on this thread ("" if none). The pointer stays valid until
 *  the next Cairn call on this thread. Thread-safe (thread-local); does not allocate. */
CAIRN_API const char* cairn_error_last(void);

/** The generic message of a code ("invalid argument"); never NULL. Thread-safe. */
CAIRN_API const char* cairn_strerror(int code);

/** The library version, "MAJOR.MINOR.PATCH". Thread-safe. */
CAIRN_API const char* cairn_version(void);

/** Levels of the library's log messages (connections, retries, refused writes). */
typedef enum cairn_log_level {
  CAIRN_LOG_DEBUG = 0,
  CAIRN_LOG_INFO = 1,
  CAIRN_LOG_WARN = 2,
  CAIRN_LOG_ERROR = 3
} cairn_log_level;
typedef void (*cairn_log_fn)(void* CAIRN_NULLABLE ctx, int level, const char* message);
/** Sends the library's messages at `min_level` or above to `fn` (process-wide; fn NULL: none,
 *  the default). `fn` runs on the thread that logs (often a sync thread), possibly on several
 *  threads at once. `free_ctx`, if not NULL, is called on `ctx` once the callback is replaced
 *  or removed and no call to it is in progress (also when this call fails).
 *  @return CAIRN_OK or CAIRN_EINVAL (bad level). Thread-safe. */
CAIRN_API int cairn_set_log_callback(int min_level, cairn_log_fn CAIRN_NULLABLE fn,
                                     void* CAIRN_NULLABLE ctx,
                                     void (*CAIRN_NULLABLE free_ctx)(void* CAIRN_NULLABLE));

CAIRN_ASSUME_NONNULL_END
CAIRN_END_DECLS

#endif /* CAIRN_COMMON_H */
