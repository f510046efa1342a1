/* cairn/stream.h: telemetry streams of a replica (docs/storage-format.md "Streams").
 * A stream is an append-only queue of records (JSON objects of fields, each with a timestamp)
 * that a sync uploads in order and drops once the server stored it. Appends are durable when
 * they return; each stream has a quota (bytes and/or age of the oldest record), a policy when
 * full (refuse new records with CAIRN_EFULL, or drop the oldest and count them) and a priority
 * (higher uploads first).
 *
 * Thread-safety: as cairn/replica.h (calls on one replica are serialized); a cairn_records is
 * used by one thread at a time. */
#ifndef CAIRN_STREAM_H
#define CAIRN_STREAM_H

#include "cairn/common.h"
#include "cairn/replica.h"

CAIRN_BEGIN_DECLS
CAIRN_ASSUME_NONNULL_BEGIN

/** What a full stream does with a new record (cairn_stream_options.policy). */
typedef enum cairn_stream_policy {
  CAIRN_STREAM_REJECT = 0,      /* new records are refused (CAIRN_EFULL) */
  CAIRN_STREAM_DROP_OLDEST = 1  /* the oldest records are dropped (counted) */
} cairn_stream_policy;

typedef struct cairn_stream_options {
  unsigned int version; /* CAIRN_STREAM_OPTIONS_VERSION */
  uint64_t max_bytes;   /* quota of the queued records' sizes; 0: none (default 64 MiB) */
  int64_t max_age_ms;   /* quota of the oldest queued record's age; 0: none (the default) */
  int policy;           /* a cairn_stream_policy: CAIRN_STREAM_REJECT (default) or
                           CAIRN_STREAM_DROP_OLDEST (an int: the struct's layout is fixed) */
  int32_t priority;     /* higher uploads first (default 0) */
} cairn_stream_options;
#define CAIRN_STREAM_OPTIONS_VERSION 1
#define CAIRN_STREAM_OPTIONS_INIT \
  {CAIRN_STREAM_OPTIONS_VERSION, UINT64_C(67108864), 0, CAIRN_STREAM_REJECT, 0}

/** What an append did: the seqs given to the records stored (0 and 0 when none was), and how
 *  many records were dropped to make room (CAIRN_STREAM_DROP_OLDEST). */
typedef struct cairn_append_result {
  uint64_t first_seq;
  uint64_t last_seq;
  uint64_t dropped;
} cairn_append_result;

/** A record's timestamp "when appended" (cairn_records_add_json). */
#define CAIRN_TS_NOW INT64_MIN

/** Creates `stream` or changes its settings (queued records stay; the next append applies
 *  them). @return CAIRN_OK, CAIRN_EINVAL (bad name, a name differing only in case from another
 *  stream's, negative max_age_ms, unknown policy or version) or CAIRN_EREADONLY. */
CAIRN_API int cairn_replica_configure_stream(cairn_replica* replica, const char* stream,
                                             const cairn_stream_options* opts);
/** Appends one record (a JSON object of fields as cairn_replica_put_json takes; no field named
 *  origin, seq, ts_ms or received_ms) stamped now, creating the stream with default settings
 *  if needed. @param[out] out  NULL, or what the append did.
 *  @return CAIRN_OK, CAIRN_EINVAL (bad name or record, a non-finite double; nothing appended;
 *  a new stream whose name differs only in case from another's), CAIRN_EFULL (the
 *  stream is full under CAIRN_STREAM_REJECT, or the record is larger than its quota; counted
 *  as rejected), CAIRN_EREADONLY. */
CAIRN_API int cairn_replica_append_json(cairn_append_result* CAIRN_NULLABLE out,
                                        cairn_replica* replica, const char* stream,
                                        const char* fields_json);

/** Records appended atomically by cairn_replica_append_records (many records, one commit). */
typedef struct cairn_records cairn_records;
CAIRN_API int cairn_records_new(cairn_records* CAIRN_NULLABLE* CAIRN_NONNULL out);
CAIRN_API void cairn_records_free(cairn_records* CAIRN_NULLABLE records);
/** Adds a record: fields as for cairn_replica_append_json, `ts_ms` its timestamp (ms since the
 *  epoch) or CAIRN_TS_NOW. @return CAIRN_OK or CAIRN_EINVAL (nothing added). */
CAIRN_API int cairn_records_add_json(cairn_records* records, const char* fields_json,
                                     int64_t ts_ms);
CAIRN_API size_t cairn_records_count(const cairn_records* records);
CAIRN_API void cairn_records_clear(cairn_records* records);
/** Appends every record of `records` in one transaction (all or none); `records` is left as
 *  it is. @return as cairn_replica_append_json, and CAIRN_EINVAL for no records. */
CAIRN_API int cairn_replica_append_records(cairn_append_result* CAIRN_NULLABLE out,
                                           cairn_replica* replica, const char* stream,
                                           const cairn_records* records);

/** Every stream's settings and counters as canonical JSON: {"<stream>":{"bytes","dropped",
 *  "last_seq","max_age_ms","max_bytes","oldest_age_ms","policy","priority","records",
 *  "rejected","uploaded"}} ("records"/"bytes": queued, not yet acknowledged by a server). */
CAIRN_API int cairn_replica_streams_json(cairn_buf* out, cairn_replica* replica);

CAIRN_ASSUME_NONNULL_END
CAIRN_END_DECLS

#endif /* CAIRN_STREAM_H */
