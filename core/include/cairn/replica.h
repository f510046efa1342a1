/* cairn/replica.h: a local replica (one SQLite file: op log, merged CRDT state and the
 * per-collection SQL tables). See README "C API" and docs/crdt-semantics.md.
 *
 * Thread-safety: a cairn_replica may be used from several threads; calls on one handle are
 * serialized by the library. Freeing a handle while another thread uses it is undefined. */
#ifndef CAIRN_REPLICA_H
#define CAIRN_REPLICA_H

#include "cairn/common.h"

CAIRN_BEGIN_DECLS
CAIRN_ASSUME_NONNULL_BEGIN

typedef struct cairn_replica cairn_replica;
typedef struct cairn_batch cairn_batch;

typedef struct cairn_replica_options {
  unsigned int version;      /* CAIRN_REPLICA_OPTIONS_VERSION */
  int create;                /* non-zero: create the file when missing (default 1) */
  int read_only;             /* non-zero: no writes (default 0) */
  uint32_t busy_timeout_ms;  /* 0: default (5000) */
} cairn_replica_options;
#define CAIRN_REPLICA_OPTIONS_VERSION 1
#define CAIRN_REPLICA_OPTIONS_INIT {CAIRN_REPLICA_OPTIONS_VERSION, 1, 0, 0}
/** Fills `opts` with defaults. @return CAIRN_OK or CAIRN_EINVAL (unknown version). */
CAIRN_API int cairn_replica_options_init(cairn_replica_options* opts, unsigned int version);

/** Opens (creating when allowed) the replica stored at `path`. Thread-safe.
 *  @param[out] out  receives a handle owned by the caller; NULL on failure.
 *  @param opts      NULL for defaults.
 *  @return CAIRN_OK, CAIRN_ENOTREPLICA (not a Cairn file), CAIRN_EVERSION (newer format),
 *          CAIRN_EIO, CAIRN_EBUSY or CAIRN_ERROR. */
CAIRN_API int cairn_replica_open(cairn_replica* CAIRN_NULLABLE* CAIRN_NONNULL out,
                                 const char* path,
                                 const cairn_replica_options* CAIRN_NULLABLE opts);
/** Closes and frees; NULL is a no-op. Unsent ops stay in the file. */
CAIRN_API void cairn_replica_free(cairn_replica* CAIRN_NULLABLE replica);

/** Writes the replica's id as 32 lowercase hex characters and a NUL into `out`. */
CAIRN_API int cairn_replica_id(char out[33], cairn_replica* replica);

/** Sets the fields of a JSON object (at least one) on a document, in one transaction. Values:
 *  null, bool, integers (int64), doubles, strings, {"$bytes":"<base64>"} (docs/cli.md
 *  "Canonical JSON").
 *  @return CAIRN_OK or CAIRN_EINVAL (bad JSON, name, key or value; nothing written). */
CAIRN_API int cairn_replica_put_json(cairn_replica* replica, const char* collection,
                                     const char* key, const char* fields_json);
/** Adds `delta` (wrapping int64) to a counter field. @return CAIRN_OK or CAIRN_EINVAL. */
CAIRN_API int cairn_replica_increment(cairn_replica* replica, const char* collection,
                                      const char* key, const char* field, int64_t delta);
/** Deletes a document (later writes revive it with only their fields). */
CAIRN_API int cairn_replica_delete(cairn_replica* replica, const char* collection,
                                   const char* key);
/** The same three, each also giving the transaction's receipt: the seq of its last op into
 *  `*seq` (NULL: not wanted; untouched on failure). The server made the write durable once the
 *  durable watermark (cairn_sync_set_durable_callback) reaches it, unless it refused it
 *  (docs/c-api.md "Write receipts"). */
CAIRN_API int cairn_replica_put_json_seq(cairn_replica* replica, const char* collection,
                                         const char* key, const char* fields_json,
                                         uint64_t* CAIRN_NULLABLE seq);
CAIRN_API int cairn_replica_increment_seq(cairn_replica* replica, const char* collection,
                                          const char* key, const char* field, int64_t delta,
                                          uint64_t* CAIRN_NULLABLE seq);
CAIRN_API int cairn_replica_delete_seq(cairn_replica* replica, const char* collection,
                                       const char* key, uint64_t* CAIRN_NULLABLE seq);

/** The visible document as canonical JSON in `out` (NUL-terminated).
 *  @return CAIRN_OK, CAIRN_ENOTFOUND (not visible) or CAIRN_EINVAL. */
CAIRN_API int cairn_replica_get_json(cairn_buf* out, cairn_replica* replica,
                                     const char* collection, const char* key);
/** Canonical JSON of all visible data, {"collection":{"key":{"field":value}}}. */
CAIRN_API int cairn_replica_dump_json(cairn_buf* out, cairn_replica* replica);
/** The SHA-256 of the canonical dump as 64 hex characters and a NUL. */
CAIRN_API int cairn_replica_digest(char out[65], cairn_replica* replica);
/** Runs one read-only SQL statement; `out` receives one canonical JSON object per row, each
 *  followed by '\n'. @return CAIRN_OK, CAIRN_EREADONLY (would write) or CAIRN_EINVAL. */
CAIRN_API int cairn_replica_query_json(cairn_buf* out, cairn_replica* replica, const char* sql);
/** The same with parameters: `params_json` is a JSON array bound in order to the statement's
 *  parameters (?, ?NNN, :name), values as docs/cli.md "Canonical JSON" ({"$bytes":"<base64>"}
 *  binds a blob).
 *  @return as above, or CAIRN_EINVAL (not an array, a bad value, or a count that differs from
 *  the statement's). */
CAIRN_API int cairn_replica_query_json_params(cairn_buf* out, cairn_replica* replica,
                                              const char* sql, const char* params_json);
/** Status as canonical JSON: replica_id, seq, pending_ops, held_back_ops, rejected_ops, known. */
CAIRN_API int cairn_replica_status_json(cairn_buf* out, cairn_replica* replica);
/** The ops a sync server refused (docs/protocol.md "Refused ops"), oldest first: one canonical
 *  JSON object per op, each followed by '\n': the op (origin, seq, hlc, kind, collection, key,
 *  field, value or delta), "error" (e.g. "EPERM", "ECLOCK"), "reason", "at_ms". */
CAIRN_API int cairn_replica_rejected_json(cairn_buf* out, cairn_replica* replica);

/** Writes every op the replica has to `path` as protocol frames (an offline sync).
 *  @param[out] ops_out  NULL, or receives the number of ops written. */
CAIRN_API int cairn_replica_export(uint64_t* CAIRN_NULLABLE ops_out, cairn_replica* replica,
                                   const char* path);
/** Applies an export atomically: all of it or nothing.
 *  @param[out] applied_out  NULL, or receives the number of ops merged.
 *  @return CAIRN_OK, CAIRN_ECORRUPT (damaged or truncated), CAIRN_EVERSION, CAIRN_EIO. */
CAIRN_API int cairn_replica_import(uint64_t* CAIRN_NULLABLE applied_out, cairn_replica* replica,
                                   const char* path);

/* --- Change listeners ------------------------------------------------------------------- */

/** Called after a transaction committed, once per collection whose documents it changed
 *  (a value, a counter, a delete or a revival), with those documents' keys (sorted, unique;
 *  valid during the call only). `local` is 1 for writes made through this replica, 0 for ops
 *  received (sync, snapshot, import, a refused write undone). Calls are serialized per replica
 *  and in commit order; they run outside the replica's lock, on the thread that committed
 *  (the writer's thread, or the sync thread for received ops) or on another thread of this
 *  replica that committed and is delivering at that moment; never on one that only read. A
 *  listener may read and write the replica; it must not free it. A key may be reported whose
 *  visible state ends up the same (a delete of a deleted document, a document recomputed after
 *  a refused write); changes not yet delivered when the replica is freed are dropped. */
typedef void (*cairn_change_fn)(void* CAIRN_NULLABLE ctx, const char* collection,
                                const char* CAIRN_NONNULL const* CAIRN_NONNULL keys,
                                size_t n_keys, int local);
/** Adds a change listener. `free_ctx`, if not NULL, is called on `ctx` once the listener is
 *  removed (or the replica freed) and no call to it is in progress; also when this call fails.
 *  @param[out] id_out  receives the listener's id (never 0), for removal.
 *  @return CAIRN_OK or CAIRN_EINVAL (NULL argument). */
CAIRN_API int cairn_replica_add_change_listener(uint64_t* id_out, cairn_replica* replica,
                                                cairn_change_fn fn, void* CAIRN_NULLABLE ctx,
                                                void (*CAIRN_NULLABLE free_ctx)(
                                                    void* CAIRN_NULLABLE));
/** Removes a listener: it is not called after this returns, except by a call another thread is
 *  starting at that moment; a running call finishes. @return CAIRN_OK or CAIRN_ENOTFOUND. */
CAIRN_API int cairn_replica_remove_change_listener(cairn_replica* replica, uint64_t id);

/* --- Multi-op transactions -------------------------------------------------------------- */

/** A list of changes applied atomically by cairn_replica_write. One thread at a time.
 *  The cairn_batch_set_*, _increment and _delete calls add a change and return CAIRN_OK, or
 *  CAIRN_EINVAL for a NULL argument (nothing added); names, keys and values are checked by
 *  cairn_replica_write, against the replica (CAIRN_EINVAL there, nothing written). */
CAIRN_API int cairn_batch_new(cairn_batch* CAIRN_NULLABLE* CAIRN_NONNULL out);
CAIRN_API void cairn_batch_free(cairn_batch* CAIRN_NULLABLE batch);
/** Removes every change, keeping the batch's memory: a loop that writes one transaction at a
 *  time reuses one batch instead of making one per write. NULL is a no-op. */
CAIRN_API void cairn_batch_clear(cairn_batch* CAIRN_NULLABLE batch);
/** The number of changes in the batch (0 for NULL). */
CAIRN_API size_t cairn_batch_count(const cairn_batch* CAIRN_NULLABLE batch);
CAIRN_API int cairn_batch_set_null(cairn_batch* b, const char* collection, const char* key,
                                   const char* field);
CAIRN_API int cairn_batch_set_bool(cairn_batch* b, const char* collection, const char* key,
                                   const char* field, int value);
CAIRN_API int cairn_batch_set_int(cairn_batch* b, const char* collection, const char* key,
                                  const char* field, int64_t value);
CAIRN_API int cairn_batch_set_double(cairn_batch* b, const char* collection, const char* key,
                                     const char* field, double value);
/** `value` is UTF-8 of `len` bytes (it may contain NUL). */
CAIRN_API int cairn_batch_set_string(cairn_batch* b, const char* collection, const char* key,
                                     const char* field, const char* value, size_t len);
CAIRN_API int cairn_batch_set_bytes(cairn_batch* b, const char* collection, const char* key,
                                    const char* field, const uint8_t* CAIRN_NULLABLE value,
                                    size_t len);
CAIRN_API int cairn_batch_increment(cairn_batch* b, const char* collection, const char* key,
                                    const char* field, int64_t delta);
CAIRN_API int cairn_batch_delete(cairn_batch* b, const char* collection, const char* key);
/** Applies every change of `batch` in one transaction; the batch is left unchanged.
 *  @return CAIRN_OK or CAIRN_EINVAL (nothing written). */
CAIRN_API int cairn_replica_write(cairn_replica* replica, const cairn_batch* batch);
/** The same, with the transaction's receipt into `*seq` (as cairn_replica_put_json_seq). */
CAIRN_API int cairn_replica_write_seq(cairn_replica* replica, const cairn_batch* batch,
                                      uint64_t* CAIRN_NULLABLE seq);

CAIRN_ASSUME_NONNULL_END
CAIRN_END_DECLS

#endif /* CAIRN_REPLICA_H */
