/* cairn/sync.h: syncing a replica with a cairn-server (docs/protocol.md). A cairn_sync runs
 * either one exchange on the calling thread (cairn_sync_once) or live sync on a background
 * thread of its own (cairn_sync_start .. cairn_sync_stop), reconnecting with backoff.
 *
 * Thread-safety: every function may be called from any thread. Callbacks run on the sync
 * thread (live sync) or the thread inside cairn_sync_once; they must not call cairn_sync_stop
 * or cairn_sync_free on their own handle. */
#ifndef CAIRN_SYNC_H
#define CAIRN_SYNC_H

#include "cairn/common.h"
#include "cairn/replica.h"

CAIRN_BEGIN_DECLS
CAIRN_ASSUME_NONNULL_BEGIN

typedef struct cairn_sync cairn_sync;

typedef struct cairn_sync_options {
  unsigned int version;                    /* CAIRN_SYNC_OPTIONS_VERSION */
  const char* CAIRN_NULLABLE server;       /* "HOST:PORT" (required) */
  const char* CAIRN_NULLABLE token;        /* bearer token (JWT); NULL: none */
  int tls;                                 /* non-zero: TLS, certificate and name verified */
  const char* CAIRN_NULLABLE ca_file;      /* PEM CA bundle; NULL: the system's */
  const char* CAIRN_NULLABLE server_name;  /* name to verify; NULL: the host of `server` */
  /* Partial sync: the collections to sync, comma-separated ("tasks,notes"); NULL: all. */
  const char* CAIRN_NULLABLE only;
  /* Version 2. With the server's sync rules (docs/sync-rules.md): the channels to sync,
   * comma-separated ("user:alice,public"), each one the token may read; NULL: all it may. */
  const char* CAIRN_NULLABLE channels;
} cairn_sync_options;
#define CAIRN_SYNC_OPTIONS_VERSION 2
/** The defaults as an initializer: cairn_sync_options o = CAIRN_SYNC_OPTIONS_INIT; (no server
 *  yet, no token, plain TCP, every collection and channel), as cairn_sync_options_init. */
#define CAIRN_SYNC_OPTIONS_INIT \
  { CAIRN_SYNC_OPTIONS_VERSION, NULL, NULL, 0, NULL, NULL, NULL, NULL }
/** Fills `opts` with defaults: the fields of `version` (1 or 2; a program built against an
 *  older header passes its own version and has its smaller struct filled).
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL opts, unknown version). */
CAIRN_API int cairn_sync_options_init(cairn_sync_options* opts, unsigned int version);

/** Creates a sync handle for `replica` (which must outlive it). Nothing connects yet.
 *  @return CAIRN_OK or CAIRN_EINVAL (no server, bad HOST:PORT, bad collection name). */
CAIRN_API int cairn_sync_new(cairn_sync* CAIRN_NULLABLE* CAIRN_NONNULL out,
                             cairn_replica* replica, const cairn_sync_options* opts);
/** Stops live sync if running and frees; NULL is a no-op. */
CAIRN_API void cairn_sync_free(cairn_sync* CAIRN_NULLABLE sync);

/** One exchange: pushes every local op and stream record, pulls everything the server has,
 *  returns when both are done (CAIRN_OK), on an error (CAIRN_ENETWORK, CAIRN_ETIMEDOUT,
 *  CAIRN_EPERM, ...: the server's or the connection's) or after `timeout_ms` (0: no limit).
 *  A stream the server refused keeps its records and makes the call fail with the server's
 *  code once everything else is done. CAIRN_EBUSY while live sync runs. */
CAIRN_API int cairn_sync_once(cairn_sync* sync, uint32_t timeout_ms);
/** Starts live sync on a background thread.
 *  @return CAIRN_OK, CAIRN_EINVAL (NULL sync) or CAIRN_EBUSY (running). */
CAIRN_API int cairn_sync_start(cairn_sync* sync);
/** Stops live sync and waits for its thread; no-op when not running.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL sync). */
CAIRN_API int cairn_sync_stop(cairn_sync* sync);
/** The app says the network is back: a waiting live sync reconnects at once.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL sync). */
CAIRN_API int cairn_sync_network_changed(cairn_sync* sync);
/** Hands a renewed token to the sync (docs/protocol.md "Token renewal"): a live session takes
 *  it without reconnecting (the server checks it as at connect: a token it refuses ends the
 *  session with its error), and every later connection uses it. A live sync whose token
 *  expired (last_error CAIRN_ETOKEN) waits for this call, then reconnects at once. Renew before
 *  "token_expires_ms" of the status. A live session's state is "syncing" until the view the
 *  new token gives is in place (documents entered and left), then "idle" again.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL argument). */
CAIRN_API int cairn_sync_set_token(cairn_sync* sync, const char* token);
/** The status as JSON: {"state":"offline|connecting|syncing|idle","pending_ops":N,
 *  "pending_records":N, "records_uploaded":N, "last_error":..., "last_sync_ms":...,
 *  "cursor":N, "bytes_sent":N, ..., "token_expires_ms":N or null}.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL argument). */
CAIRN_API int cairn_sync_status_json(cairn_buf* out, cairn_sync* sync);

/** Called when the server made every local op up to `through_seq` durable, but the
 *  transactions the refused callback reported before this call (docs/c-api.md "Write
 *  receipts"); never for an acknowledgement of refused transactions alone. */
typedef void (*cairn_durable_fn)(void* CAIRN_NULLABLE ctx, uint64_t through_seq);
/** Sets (or, with fn NULL, removes) the durable notification. `free_ctx`, if not NULL, is
 *  called on `ctx` once: when the callback is replaced, removed or the handle freed (after any
 *  call in progress), or when this call fails. @return CAIRN_OK or CAIRN_EINVAL (NULL sync). */
CAIRN_API int cairn_sync_set_durable_callback(
    cairn_sync* sync, cairn_durable_fn CAIRN_NULLABLE fn, void* CAIRN_NULLABLE ctx,
    void (*CAIRN_NULLABLE free_ctx)(void* CAIRN_NULLABLE));

/** Called for each local transaction the server refused: its seqs (first_seq..last_seq, the
 *  last one its write's receipt), the server's code (CAIRN_EPERM, CAIRN_ECLOCK, CAIRN_EINVAL...)
 *  and reason (valid during the call only); before the durable callback that covers it. The
 *  transaction is undone locally and kept in the rejected ops (cairn_replica_rejected_json). */
typedef void (*cairn_refused_fn)(void* CAIRN_NULLABLE ctx, uint64_t first_seq, uint64_t last_seq,
                                 int code, const char* reason);
/** Sets (or, with fn NULL, removes) the refusal notification; `free_ctx` as for the durable
 *  one. @return CAIRN_OK or CAIRN_EINVAL (NULL sync). */
CAIRN_API int cairn_sync_set_refused_callback(
    cairn_sync* sync, cairn_refused_fn CAIRN_NULLABLE fn, void* CAIRN_NULLABLE ctx,
    void (*CAIRN_NULLABLE free_ctx)(void* CAIRN_NULLABLE));

/** Called when the state, the count of pending ops or the last error changed, with the status
 *  as cairn_sync_status_json gives it (valid during the call only). */
typedef void (*cairn_status_fn)(void* CAIRN_NULLABLE ctx, const char* status_json);
/** Sets (or, with fn NULL, removes) the status callback; `free_ctx` as for the durable one.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL sync). */
CAIRN_API int cairn_sync_set_status_callback(
    cairn_sync* sync, cairn_status_fn CAIRN_NULLABLE fn, void* CAIRN_NULLABLE ctx,
    void (*CAIRN_NULLABLE free_ctx)(void* CAIRN_NULLABLE));

CAIRN_ASSUME_NONNULL_END
CAIRN_END_DECLS

#endif /* CAIRN_SYNC_H */
