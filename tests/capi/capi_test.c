/* Tests of the C API written in C, using only cairn.h (as leveldb's db/c_test.c).
 * Usage: capi_test WORK_DIR [CAIRN_SERVER]: with the server binary, sync through a real
 * cairn-server too. Prints "N passed, N failed". */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cairn/cairn.h"

extern char** environ;

static int g_passed, g_failed;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (cond) {                                                          \
      g_passed++;                                                        \
    } else {                                                             \
      g_failed++;                                                        \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              cairn_error_last());                                       \
    }                                                                    \
  } while (0)

static char g_dir[512];

static const char* path_of(const char* name) {
  static char buf[1024];
  snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
  return buf;
}

static void test_crud(void) {
  cairn_replica* r = NULL;
  cairn_buf buf = {NULL, 0};
  char id[33], digest[65];
  const char* p = path_of("capi_crud.db");
  unlink(p);
  CHECK(cairn_replica_open(&r, p, NULL) == CAIRN_OK);
  CHECK(r != NULL);
  CHECK(cairn_replica_id(id, r) == CAIRN_OK && strlen(id) == 32);
  CHECK(cairn_replica_put_json(r, "notes", "n1", "{\"title\":\"hi\",\"n\":1}") == CAIRN_OK);
  CHECK(cairn_replica_increment(r, "notes", "n1", "views", 2) == CAIRN_OK);
  CHECK(cairn_replica_get_json(&buf, r, "notes", "n1") == CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data, "{\"n\":1,\"title\":\"hi\",\"views\":2}") == 0);
  cairn_buf_dispose(&buf);
  CHECK(buf.data == NULL);
  CHECK(cairn_replica_query_json(&buf, r, "SELECT key, views FROM notes") == CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data, "{\"key\":\"n1\",\"views\":2}\n") == 0);
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_delete(r, "notes", "n1") == CAIRN_OK);
  CHECK(cairn_replica_get_json(&buf, r, "notes", "n1") == CAIRN_ENOTFOUND);
  CHECK(strlen(cairn_error_last()) > 0);
  CHECK(cairn_replica_digest(digest, r) == CAIRN_OK && strlen(digest) == 64);
  CHECK(cairn_replica_status_json(&buf, r) == CAIRN_OK);
  CHECK(buf.data && strstr((const char*)buf.data, "\"pending_ops\":4") != NULL);
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_rejected_json(&buf, r) == CAIRN_OK && buf.len == 0); /* none refused */
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_rejected_json(&buf, NULL) == CAIRN_EINVAL);
  CHECK(strcmp(cairn_strerror(CAIRN_ECLOCK), "clock too far ahead of the server's") == 0);
  cairn_replica_free(r);
  cairn_replica_free(NULL); /* harmless */
}

/* Write receipts (docs/c-api.md "Write receipts"): each write's _seq variant gives the seq of
 * its transaction's last op; a failed write gives none and uses none. */
static void test_receipts(void) {
  cairn_replica* r = NULL;
  cairn_batch* batch = NULL;
  uint64_t seq = 0;
  const char* p = path_of("capi_receipts.db");
  unlink(p);
  CHECK(cairn_replica_open(&r, p, NULL) == CAIRN_OK);
  CHECK(cairn_replica_put_json_seq(r, "t", "a", "{\"x\":1,\"y\":2}", &seq) == CAIRN_OK);
  CHECK(seq == 2); /* two fields: ops 1 and 2 */
  CHECK(cairn_replica_increment_seq(r, "t", "a", "n", 5, &seq) == CAIRN_OK && seq == 3);
  CHECK(cairn_replica_delete_seq(r, "t", "a", &seq) == CAIRN_OK && seq == 4);
  CHECK(cairn_replica_put_json_seq(r, "t", "b", "{\"x\":1}", NULL) == CAIRN_OK); /* 5 */
  seq = 77;
  CHECK(cairn_replica_put_json_seq(r, "t", "b", "{oops", &seq) == CAIRN_EINVAL && seq == 77);
  CHECK(cairn_replica_increment_seq(r, "bad name!", "b", "n", 1, &seq) == CAIRN_EINVAL);
  CHECK(seq == 77);
  CHECK(cairn_batch_new(&batch) == CAIRN_OK);
  CHECK(cairn_batch_set_int(batch, "t", "c", "n", 1) == CAIRN_OK);
  CHECK(cairn_batch_increment(batch, "t", "c", "m", 2) == CAIRN_OK);
  CHECK(cairn_batch_delete(batch, "t", "b") == CAIRN_OK);
  CHECK(cairn_replica_write_seq(r, batch, &seq) == CAIRN_OK && seq == 8); /* 6, 7, 8 */
  CHECK(cairn_replica_write(r, batch) == CAIRN_OK);                         /* 9, 10, 11 */
  CHECK(cairn_replica_put_json_seq(r, "t", "d", "{\"x\":1}", &seq) == CAIRN_OK && seq == 12);
  CHECK(cairn_replica_write_seq(NULL, batch, &seq) == CAIRN_EINVAL && seq == 12);
  cairn_batch_free(batch);
  cairn_replica_free(r);
}

static void test_errors(void) {
  cairn_replica* r = NULL;
  cairn_buf buf = {NULL, 0};
  char before[65], after[65];
  const char* p = path_of("capi_err.db");
  unlink(p);
  CHECK(cairn_replica_open(&r, p, NULL) == CAIRN_OK);
  CHECK(cairn_replica_put_json(r, "c", "k", "{\"a\":1}") == CAIRN_OK);
  CHECK(cairn_replica_digest(before, r) == CAIRN_OK);
  CHECK(cairn_replica_put_json(r, "c", "k", "{oops") == CAIRN_EINVAL);
  CHECK(strstr(cairn_error_last(), "JSON") != NULL);
  CHECK(cairn_replica_put_json(r, "bad name", "k", "{\"a\":1}") == CAIRN_EINVAL);
  CHECK(cairn_replica_put_json(r, "c", NULL, "{\"a\":1}") == CAIRN_EINVAL);
  CHECK(cairn_replica_query_json(&buf, r, "DELETE FROM c") == CAIRN_EREADONLY);
  CHECK(cairn_replica_import(NULL, r, path_of("does-not-exist.cex")) == CAIRN_EIO);
  CHECK(cairn_replica_digest(after, r) == CAIRN_OK);
  CHECK(strcmp(before, after) == 0);
  CHECK(strcmp(cairn_strerror(CAIRN_ENOTFOUND), "not found") == 0);
  cairn_replica_free(r);
  {
    cairn_replica* none = (cairn_replica*)1;
    cairn_replica_options opts;
    CHECK(cairn_replica_options_init(&opts, CAIRN_REPLICA_OPTIONS_VERSION) == CAIRN_OK);
    opts.create = 0;
    CHECK(cairn_replica_open(&none, path_of("absent.db"), &opts) != CAIRN_OK);
    CHECK(none == NULL);
  }
}

static void test_streams(void) {
  cairn_replica* r = NULL;
  cairn_buf buf = {NULL, 0};
  cairn_append_result res = {0, 0, 0};
  cairn_records* recs = NULL;
  unlink(path_of("capi_streams.db"));
  CHECK(cairn_replica_open(&r, path_of("capi_streams.db"), NULL) == CAIRN_OK);
  cairn_stream_options so = CAIRN_STREAM_OPTIONS_INIT;
  so.max_bytes = 100;
  so.policy = CAIRN_STREAM_DROP_OLDEST;
  so.priority = 3;
  CHECK(cairn_replica_configure_stream(r, "temps", &so) == CAIRN_OK);
  CHECK(cairn_replica_append_json(&res, r, "temps", "{\"t\":1}") == CAIRN_OK);
  CHECK(res.first_seq == 1 && res.last_seq == 1 && res.dropped == 0);
  CHECK(cairn_records_new(&recs) == CAIRN_OK);
  for (int i = 0; i < 40; i++) {
    CHECK(cairn_records_add_json(recs, "{\"t\":2}", 1700000000000 + i) == CAIRN_OK);
  }
  CHECK(cairn_records_add_json(recs, "{\"seq\":2}", CAIRN_TS_NOW) == CAIRN_EINVAL);
  CHECK(cairn_records_add_json(recs, "[1]", CAIRN_TS_NOW) == CAIRN_EINVAL);
  CHECK(cairn_records_count(recs) == 40);
  /* Each record is 5 bytes ({"t":2}: count, name, tag, value): 20 fit, 21 are dropped. */
  CHECK(cairn_replica_append_records(&res, r, "temps", recs) == CAIRN_OK);
  CHECK(res.first_seq == 2 && res.last_seq == 21 && res.dropped == 21);
  CHECK(cairn_replica_streams_json(&buf, r) == CAIRN_OK);
  CHECK(buf.data && strstr((const char*)buf.data, "\"dropped\":21") != NULL &&
        strstr((const char*)buf.data, "\"records\":20") != NULL &&
        strstr((const char*)buf.data, "\"policy\":\"drop_oldest\"") != NULL);
  cairn_buf_dispose(&buf);
  /* The reject policy: CAIRN_EFULL, nothing appended, counted. */
  so.policy = CAIRN_STREAM_REJECT;
  CHECK(cairn_replica_configure_stream(r, "temps", &so) == CAIRN_OK);
  CHECK(cairn_replica_append_json(&res, r, "temps", "{\"t\":3}") == CAIRN_EFULL);
  CHECK(strstr(cairn_error_last(), "full") != NULL);
  CHECK(cairn_replica_status_json(&buf, r) == CAIRN_OK);
  CHECK(buf.data && strstr((const char*)buf.data, "\"rejected\":1") != NULL);
  cairn_buf_dispose(&buf);
  so.policy = 9;
  CHECK(cairn_replica_configure_stream(r, "temps", &so) == CAIRN_EINVAL);
  CHECK(cairn_replica_append_json(NULL, r, "bad name", "{\"t\":1}") == CAIRN_EINVAL);
  cairn_records_clear(recs);
  CHECK(cairn_replica_append_records(NULL, r, "temps", recs) == CAIRN_EINVAL);
  cairn_records_free(recs);
  CHECK(strcmp(cairn_strerror(CAIRN_EFULL), "stream is full") == 0);
  cairn_replica_free(r);
}

static void test_batch_and_exchange(void) {
  cairn_replica *a = NULL, *b = NULL;
  cairn_batch* batch = NULL;
  char da[65], db[65];
  uint64_t n = 0;
  static const uint8_t raw[3] = {0, 1, 2};
  unlink(path_of("capi_a.db"));
  unlink(path_of("capi_b.db"));
  CHECK(cairn_replica_open(&a, path_of("capi_a.db"), NULL) == CAIRN_OK);
  CHECK(cairn_replica_open(&b, path_of("capi_b.db"), NULL) == CAIRN_OK);
  CHECK(cairn_batch_new(&batch) == CAIRN_OK);
  CHECK(cairn_batch_set_string(batch, "c", "k", "s", "h\0i", 3) == CAIRN_OK);
  CHECK(cairn_batch_set_int(batch, "c", "k", "i", -7) == CAIRN_OK);
  CHECK(cairn_batch_set_double(batch, "c", "k", "d", 0.25) == CAIRN_OK);
  CHECK(cairn_batch_set_bool(batch, "c", "k", "b", 1) == CAIRN_OK);
  CHECK(cairn_batch_set_null(batch, "c", "k", "z") == CAIRN_OK);
  CHECK(cairn_batch_set_bytes(batch, "c", "k", "y", raw, 3) == CAIRN_OK);
  CHECK(cairn_batch_increment(batch, "c", "k2", "n", 5) == CAIRN_OK);
  CHECK(cairn_batch_delete(batch, "c", "gone") == CAIRN_OK);
  CHECK(cairn_replica_write(a, batch) == CAIRN_OK);
  cairn_batch_free(batch);
  CHECK(cairn_batch_new(&batch) == CAIRN_OK);
  CHECK(cairn_batch_set_int(batch, "c", "k", "ok", 1) == CAIRN_OK);
  CHECK(cairn_batch_set_int(batch, "c", "k", "key", 1) == CAIRN_OK); /* reserved name */
  CHECK(cairn_replica_write(a, batch) == CAIRN_EINVAL);
  cairn_batch_free(batch);
  CHECK(cairn_replica_export(&n, a, path_of("capi_a.cex")) == CAIRN_OK);
  CHECK(n == 8);
  CHECK(cairn_replica_import(&n, b, path_of("capi_a.cex")) == CAIRN_OK);
  CHECK(n == 8);
  CHECK(cairn_replica_digest(da, a) == CAIRN_OK);
  CHECK(cairn_replica_digest(db, b) == CAIRN_OK);
  CHECK(strcmp(da, db) == 0);
  cairn_replica_free(a);
  cairn_replica_free(b);
}

/* One batch reused for many transactions (cairn_batch_clear), the option initializers, the
 * named stream policy. */
static void test_batch_reuse_and_initializers(void) {
  cairn_replica* r = NULL;
  cairn_batch* batch = NULL;
  cairn_buf out = {NULL, 0};
  cairn_sync_options by_macro = CAIRN_SYNC_OPTIONS_INIT, by_call;
  cairn_stream_options so = CAIRN_STREAM_OPTIONS_INIT;
  cairn_stream_policy policy = CAIRN_STREAM_DROP_OLDEST;
  int i;
  unlink(path_of("capi_reuse.db"));
  CHECK(cairn_replica_open(&r, path_of("capi_reuse.db"), NULL) == CAIRN_OK);
  CHECK(cairn_batch_new(&batch) == CAIRN_OK);
  CHECK(cairn_batch_count(batch) == 0);
  CHECK(cairn_batch_count(NULL) == 0);
  for (i = 0; i < 100; i++) {
    cairn_batch_clear(batch);
    CHECK(cairn_batch_count(batch) == 0);
    CHECK(cairn_batch_increment(batch, "c", "k", "n", 1) == CAIRN_OK);
    CHECK(cairn_batch_set_int(batch, "c", "k", "last", i) == CAIRN_OK);
    CHECK(cairn_batch_count(batch) == 2);
    CHECK(cairn_replica_write(r, batch) == CAIRN_OK);
  }
  /* Each write held its own two changes: 100 increments of 1, not 1 + 2 + ... + 100. */
  CHECK(cairn_replica_get_json(&out, r, "c", "k") == CAIRN_OK);
  CHECK(out.data != NULL && strcmp((const char*)out.data, "{\"last\":99,\"n\":100}") == 0);
  cairn_buf_dispose(&out);
  cairn_batch_clear(batch);
  CHECK(cairn_batch_delete(batch, NULL, "k") == CAIRN_EINVAL);
  CHECK(cairn_batch_count(batch) == 0);
  cairn_batch_clear(NULL);
  cairn_batch_free(batch);
  CHECK(cairn_sync_options_init(&by_call, CAIRN_SYNC_OPTIONS_VERSION) == CAIRN_OK);
  CHECK(by_macro.version == by_call.version && by_macro.server == by_call.server &&
        by_macro.token == by_call.token && by_macro.tls == by_call.tls &&
        by_macro.ca_file == by_call.ca_file && by_macro.server_name == by_call.server_name &&
        by_macro.only == by_call.only && by_macro.channels == by_call.channels);
  CHECK(cairn_sync_options_init(NULL, CAIRN_SYNC_OPTIONS_VERSION) == CAIRN_EINVAL);
  so.policy = policy;
  CHECK(cairn_replica_configure_stream(r, "s", &so) == CAIRN_OK);
  CHECK(cairn_replica_streams_json(&out, r) == CAIRN_OK);
  CHECK(out.data != NULL && strstr((const char*)out.data, "\"policy\":\"drop_oldest\"") != NULL);
  cairn_buf_dispose(&out);
  cairn_replica_free(r);
}

/* Starts `server_bin` on a free port of 127.0.0.1; returns its pid and writes "127.0.0.1:PORT"
 * into `address` (0 on failure). */
/* Change listeners: what they saw, as "L|R collection:key,key;" per call. */
static char g_changes[4096];
static int g_change_contexts_freed;
static void on_change(void* ctx, const char* collection, const char* const* keys, size_t n,
                      int local) {
  char* log = (char*)ctx;
  size_t at = strlen(log);
  at += (size_t)snprintf(log + at, sizeof g_changes - at, "%s %s:", local ? "L" : "R", collection);
  for (size_t i = 0; i < n && at < sizeof g_changes; i++) {
    at += (size_t)snprintf(log + at, sizeof g_changes - at, "%s%s", i ? "," : "", keys[i]);
  }
  if (at < sizeof g_changes) snprintf(log + at, sizeof g_changes - at, ";");
}
static void free_change_context(void* ctx) {
  (void)ctx;
  g_change_contexts_freed++;
}

static void test_listeners_and_params(void) {
  cairn_replica *r = NULL, *other = NULL;
  cairn_buf buf = {NULL, 0};
  uint64_t id = 0;
  unlink(path_of("capi_listen.db"));
  unlink(path_of("capi_listen_other.db"));
  unlink(path_of("capi_listen.cex"));
  CHECK(cairn_replica_open(&r, path_of("capi_listen.db"), NULL) == CAIRN_OK);
  CHECK(cairn_replica_open(&other, path_of("capi_listen_other.db"), NULL) == CAIRN_OK);
  CHECK(cairn_replica_add_change_listener(&id, r, on_change, g_changes, free_change_context) ==
        CAIRN_OK);
  CHECK(id != 0);
  cairn_batch* b = NULL;
  CHECK(cairn_batch_new(&b) == CAIRN_OK);
  CHECK(cairn_batch_set_int(b, "tasks", "t2", "n", 1) == CAIRN_OK);
  CHECK(cairn_batch_set_int(b, "notes", "a", "n", 1) == CAIRN_OK);
  CHECK(cairn_batch_set_int(b, "tasks", "t1", "n", 1) == CAIRN_OK);
  CHECK(cairn_replica_write(r, b) == CAIRN_OK);
  cairn_batch_free(b);
  CHECK(strcmp(g_changes, "L notes:a;L tasks:t1,t2;") == 0);
  g_changes[0] = 0;
  /* A failed write calls nothing. */
  CHECK(cairn_replica_put_json(r, "tasks", "t3", "{\"bad name\":1}") == CAIRN_EINVAL);
  CHECK(g_changes[0] == 0);
  /* Received ops (an import) are not local. */
  CHECK(cairn_replica_put_json(other, "notes", "b", "{\"x\":1}") == CAIRN_OK);
  CHECK(cairn_replica_export(NULL, other, path_of("capi_listen.cex")) == CAIRN_OK);
  CHECK(cairn_replica_import(NULL, r, path_of("capi_listen.cex")) == CAIRN_OK);
  CHECK(strcmp(g_changes, "R notes:b;") == 0);
  /* Removed: not called again, its context freed once. */
  CHECK(cairn_replica_remove_change_listener(r, id) == CAIRN_OK);
  CHECK(g_change_contexts_freed == 1);
  CHECK(cairn_replica_remove_change_listener(r, id) == CAIRN_ENOTFOUND);
  g_changes[0] = 0;
  CHECK(cairn_replica_put_json(r, "tasks", "t4", "{\"n\":4}") == CAIRN_OK);
  CHECK(g_changes[0] == 0);
  /* Bad arguments: an error, and the context is still freed. */
  CHECK(cairn_replica_add_change_listener(&id, r, NULL, g_changes, free_change_context) ==
        CAIRN_EINVAL);
  CHECK(g_change_contexts_freed == 2);
  /* A listener still set when the replica is freed: its context is freed with it. */
  CHECK(cairn_replica_add_change_listener(&id, r, on_change, g_changes, free_change_context) ==
        CAIRN_OK);

  /* Query parameters, bound in order; their count must match. */
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT key FROM tasks WHERE n >= ? ORDER BY key",
                                        "[1]") == CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data,
                           "{\"key\":\"t1\"}\n{\"key\":\"t2\"}\n{\"key\":\"t4\"}\n") == 0);
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT key FROM tasks WHERE key = :k",
                                        "[\"t4\"]") == CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data, "{\"key\":\"t4\"}\n") == 0);
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT ? AS v", "[{\"$bytes\":\"AAE=\"}]") ==
        CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data, "{\"v\":{\"$bytes\":\"AAE=\"}}\n") == 0);
  cairn_buf_dispose(&buf);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT ?", "[]") == CAIRN_EINVAL);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT ?", "[1,2]") == CAIRN_EINVAL);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT ?", "{\"a\":1}") == CAIRN_EINVAL);
  CHECK(cairn_replica_query_json_params(&buf, r, "SELECT ?", "[{\"$bytes\":\"!\"}]") ==
        CAIRN_EINVAL);
  CHECK(cairn_replica_query_json_params(&buf, r, "DELETE FROM tasks WHERE key = ?", "[\"t1\"]") ==
        CAIRN_EREADONLY);
  CHECK(buf.data == NULL);
  cairn_replica_free(r);
  CHECK(g_change_contexts_freed == 3);
  cairn_replica_free(other);
}

static pid_t start_server(const char* server_bin, char* address, size_t len) {
  char db[1024], log[1024];
  snprintf(db, sizeof db, "%s", path_of("capi_server.db"));
  snprintf(log, sizeof log, "%s", path_of("capi_server.log"));
  unlink(db);
  unlink(log);
  char* argv[] = {(char*)server_bin, "--db", db, "--listen", "127.0.0.1:0", NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, server_bin, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return 0;
  for (int i = 0; i < 500; i++) {
    char text[4096] = {0};
    FILE* f = fopen(log, "r");
    if (f) {
      size_t n = fread(text, 1, sizeof text - 1, f);
      text[n] = 0;
      fclose(f);
      const char* at = strstr(text, "listening on 127.0.0.1:");
      if (at) {
        snprintf(address, len, "127.0.0.1:%d", atoi(at + strlen("listening on 127.0.0.1:")));
        return pid;
      }
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return 0;
}

static uint64_t g_durable_through;
static int g_contexts_freed;
static void on_durable(void* ctx, uint64_t through) {
  *(uint64_t*)ctx = through;
}
static void on_refused(void* ctx, uint64_t first_seq, uint64_t last_seq, int code,
                       const char* reason) {
  (void)ctx;
  (void)first_seq;
  (void)last_seq;
  (void)code;
  (void)reason;
}

static void free_context(void* ctx) {
  (void)ctx;
  g_contexts_freed++;
}

/* The sync status callback and the log callback: what they were told. */
static char g_states[1024];
static int g_log_lines, g_log_contexts_freed;
static void on_status(void* ctx, const char* json) {
  char* states = (char*)ctx;
  const char* at = strstr(json, "\"state\":\"");
  if (!at) return;
  at += strlen("\"state\":\"");
  size_t len = strlen(states);
  const char* end = strchr(at, '"');
  if (end && len + (size_t)(end - at) + 2 < sizeof g_states) {
    memcpy(states + len, at, (size_t)(end - at));
    states[len + (size_t)(end - at)] = ' ';
    states[len + (size_t)(end - at) + 1] = 0;
  }
}
static void on_log(void* ctx, int level, const char* message) {
  (void)ctx;
  if (level >= CAIRN_LOG_INFO && strstr(message, "sync: connected to") != NULL) g_log_lines++;
}
static void free_log_context(void* ctx) {
  (void)ctx;
  g_log_contexts_freed++;
}

/* Whether `r` has collection/key within 5 s (live sync brings it). */
static int eventually_has(cairn_replica* r, const char* collection, const char* key) {
  cairn_buf buf = {NULL, 0};
  for (int i = 0; i < 500; i++) {
    const int found = cairn_replica_get_json(&buf, r, collection, key) == CAIRN_OK;
    cairn_buf_dispose(&buf);
    if (found) return 1;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

static void test_sync(const char* server_bin) {
  g_contexts_freed = 0;
  char address[64];
  pid_t server = start_server(server_bin, address, sizeof address);
  CHECK(server != 0);
  if (server == 0) return;
  cairn_replica *a = NULL, *b = NULL;
  unlink(path_of("capi_sync_a.db"));
  unlink(path_of("capi_sync_b.db"));
  CHECK(cairn_replica_open(&a, path_of("capi_sync_a.db"), NULL) == CAIRN_OK);
  CHECK(cairn_replica_open(&b, path_of("capi_sync_b.db"), NULL) == CAIRN_OK);
  cairn_sync_options o;
  CHECK(cairn_sync_options_init(&o, CAIRN_SYNC_OPTIONS_VERSION) == CAIRN_OK);
  cairn_sync *sa = NULL, *sb = NULL, *bad = NULL;
  /* Bad options: nothing is created. */
  CHECK(cairn_sync_new(&bad, a, &o) == CAIRN_EINVAL && bad == NULL);
  o.server = "no-port";
  CHECK(cairn_sync_new(&bad, a, &o) == CAIRN_EINVAL && bad == NULL);
  o.server = address;
  o.only = "ok,bad name";
  CHECK(cairn_sync_new(&bad, a, &o) == CAIRN_EINVAL && bad == NULL);
  o.only = NULL;
  CHECK(cairn_sync_new(&sa, a, &o) == CAIRN_OK && sa != NULL);
  CHECK(cairn_sync_new(&sb, b, &o) == CAIRN_OK && sb != NULL);
  CHECK(cairn_sync_set_durable_callback(sa, on_durable, &g_durable_through, free_context) ==
        CAIRN_OK);
  CHECK(cairn_sync_set_status_callback(sa, on_status, g_states, NULL) == CAIRN_OK);
  CHECK(cairn_set_log_callback(99, on_log, NULL, free_log_context) == CAIRN_EINVAL);
  CHECK(g_log_contexts_freed == 1);
  CHECK(cairn_set_log_callback(CAIRN_LOG_INFO, on_log, NULL, free_log_context) == CAIRN_OK);
  /* a writes two transactions offline, b one; both sync; a syncs again to get b's. */
  CHECK(cairn_replica_put_json(a, "notes", "n1", "{\"title\":\"from a\"}") == CAIRN_OK);
  CHECK(cairn_replica_increment(a, "stats", "s", "hits", 5) == CAIRN_OK);
  CHECK(cairn_replica_increment(b, "stats", "s", "hits", 7) == CAIRN_OK);
  CHECK(cairn_sync_once(sa, 20000) == CAIRN_OK);
  CHECK(g_durable_through == 2);
  /* Told each change of state, in order, ending offline (the exchange done). */
  CHECK(strncmp(g_states, "connecting syncing ", strlen("connecting syncing ")) == 0);
  CHECK(strstr(g_states, "idle offline ") != NULL);
  CHECK(g_log_lines == 1);
  CHECK(cairn_set_log_callback(CAIRN_LOG_INFO, NULL, NULL, NULL) == CAIRN_OK);
  CHECK(g_log_contexts_freed == 2);
  /* b's telemetry goes up in the same exchange and leaves b. */
  CHECK(cairn_replica_append_json(NULL, b, "temps", "{\"t\":21.5}") == CAIRN_OK);
  CHECK(cairn_replica_append_json(NULL, b, "temps", "{\"t\":21.75}") == CAIRN_OK);
  CHECK(cairn_sync_once(sb, 20000) == CAIRN_OK);
  cairn_buf sbuf = {NULL, 0};
  CHECK(cairn_replica_streams_json(&sbuf, b) == CAIRN_OK);
  CHECK(sbuf.data && strstr((const char*)sbuf.data, "\"records\":0") != NULL &&
        strstr((const char*)sbuf.data, "\"uploaded\":2") != NULL);
  cairn_buf_dispose(&sbuf);
  CHECK(cairn_sync_once(sa, 20000) == CAIRN_OK);
  char da[65], db[65];
  CHECK(cairn_replica_digest(da, a) == CAIRN_OK && cairn_replica_digest(db, b) == CAIRN_OK);
  CHECK(strcmp(da, db) == 0);
  cairn_buf buf = {NULL, 0};
  CHECK(cairn_replica_get_json(&buf, b, "stats", "s") == CAIRN_OK);
  CHECK(buf.data && strcmp((const char*)buf.data, "{\"hits\":12}") == 0);
  cairn_buf_dispose(&buf);
  CHECK(cairn_sync_status_json(&buf, sa) == CAIRN_OK);
  /* Disconnected after the exchange ("offline"), which completed: no error, nothing pending. */
  CHECK(buf.data && strstr((const char*)buf.data, "\"state\":\"offline\"") != NULL);
  CHECK(buf.data && strstr((const char*)buf.data, "\"pending_ops\":0") != NULL);
  CHECK(buf.data && strstr((const char*)buf.data, "\"last_error\":null") != NULL);
  CHECK(buf.data && strstr((const char*)buf.data, "\"last_sync_ms\":null") == NULL);
  cairn_buf_dispose(&buf);
  /* Live sync: b receives a's next write without asking. */
  CHECK(cairn_sync_start(sb) == CAIRN_OK);
  CHECK(cairn_sync_start(sb) == CAIRN_EBUSY);
  CHECK(cairn_sync_once(sb, 1000) == CAIRN_EBUSY);
  CHECK(cairn_replica_put_json(a, "notes", "n2", "{\"title\":\"live\"}") == CAIRN_OK);
  CHECK(cairn_sync_once(sa, 20000) == CAIRN_OK);
  CHECK(g_durable_through == 3);
  CHECK(eventually_has(b, "notes", "n2"));
  /* A renewed token (this server checks none): the live session goes on under it. */
  CHECK(cairn_sync_set_token(NULL, "t") == CAIRN_EINVAL);
  CHECK(cairn_sync_set_token(sb, NULL) == CAIRN_EINVAL);
  CHECK(cairn_sync_set_token(sb, "renewed") == CAIRN_OK);
  CHECK(cairn_replica_put_json(a, "notes", "n4", "{\"title\":\"after renewal\"}") == CAIRN_OK);
  CHECK(cairn_sync_once(sa, 20000) == CAIRN_OK);
  CHECK(eventually_has(b, "notes", "n4"));
  CHECK(cairn_sync_status_json(&buf, sb) == CAIRN_OK);
  CHECK(buf.data && strstr((const char*)buf.data, "\"reconnects\":0") != NULL);
  CHECK(buf.data && strstr((const char*)buf.data, "\"token_expires_ms\":null") != NULL);
  cairn_buf_dispose(&buf);
  CHECK(cairn_sync_network_changed(sb) == CAIRN_OK);
  CHECK(cairn_sync_stop(sb) == CAIRN_OK);
  /* Replacing the callback frees the old context; freeing the handle frees the current one. */
  CHECK(cairn_sync_set_durable_callback(sa, on_durable, &g_durable_through, free_context) ==
        CAIRN_OK);
  CHECK(g_contexts_freed == 1);
  cairn_sync_free(sa);
  CHECK(g_contexts_freed == 2);
  cairn_sync_free(sb);
  cairn_sync_free(NULL);
  /* Channels (options version 2): a bad list is refused; a server without sync rules refuses
   * channel subscriptions. A version-1 caller's struct is filled and read only as far as it
   * goes (the bytes after it are not touched, nor read: they would be a bad pointer). */
  o.channels = "public,,team:red";
  CHECK(cairn_sync_new(&bad, b, &o) == CAIRN_EINVAL && bad == NULL);
  o.channels = "public";
  CHECK(cairn_sync_new(&sb, b, &o) == CAIRN_OK);
  CHECK(cairn_sync_once(sb, 20000) == CAIRN_EINVAL);
  CHECK(strstr(cairn_error_last(), "no sync rules") != NULL);
  cairn_sync_free(sb);
  o.channels = NULL;
  cairn_sync_options v1;
  memset(&v1, 0xAB, sizeof v1);
  CHECK(cairn_sync_options_init(&v1, 1) == CAIRN_OK);
  CHECK(v1.version == 1 && v1.server == NULL && v1.only == NULL);
  {
    unsigned char expected[sizeof v1.channels];
    memset(expected, 0xAB, sizeof expected);
    CHECK(memcmp(&v1.channels, expected, sizeof expected) == 0);
  }
  v1.server = address;
  CHECK(cairn_sync_new(&sb, b, &v1) == CAIRN_OK);
  CHECK(cairn_sync_once(sb, 20000) == CAIRN_OK);
  cairn_sync_free(sb);
  CHECK(cairn_sync_options_init(&v1, 3) == CAIRN_EINVAL);
  /* The server gone: a network error, the write kept. */
  kill(server, SIGTERM);
  waitpid(server, NULL, 0);
  CHECK(cairn_replica_put_json(a, "notes", "n3", "{\"x\":1}") == CAIRN_OK);
  CHECK(cairn_sync_new(&sa, a, &o) == CAIRN_OK);
  CHECK(cairn_sync_once(sa, 20000) == CAIRN_ENETWORK);
  CHECK(strlen(cairn_error_last()) > 0);
  cairn_sync_free(sa);
  CHECK(cairn_replica_status_json(&buf, a) == CAIRN_OK);
  CHECK(buf.data && strstr((const char*)buf.data, "\"pending_ops\":1") != NULL);
  cairn_buf_dispose(&buf);
  cairn_replica_free(a);
  cairn_replica_free(b);
}

/* Offline live sync: the status callback still hears the pending count grow. */
static atomic_int g_offline_pending_seen; /* set on the sync thread, read on this one */
static void on_offline_status(void* ctx, const char* json) {
  (void)ctx;
  if (strstr(json, "\"pending_ops\":1,") != NULL) atomic_store(&g_offline_pending_seen, 1);
}

static void test_status_while_offline(void) {
  cairn_replica* r = NULL;
  unlink(path_of("capi_offline.db"));
  CHECK(cairn_replica_open(&r, path_of("capi_offline.db"), NULL) == CAIRN_OK);
  cairn_sync_options o;
  CHECK(cairn_sync_options_init(&o, CAIRN_SYNC_OPTIONS_VERSION) == CAIRN_OK);
  o.server = "127.0.0.1:1"; /* nothing listens there */
  cairn_sync* s = NULL;
  CHECK(cairn_sync_new(&s, r, &o) == CAIRN_OK);
  /* A NULL handle: an error, and the payload is still freed. */
  int before = g_contexts_freed;
  CHECK(cairn_sync_set_status_callback(NULL, on_offline_status, NULL, free_context) == CAIRN_EINVAL);
  CHECK(cairn_sync_set_durable_callback(NULL, on_durable, NULL, free_context) == CAIRN_EINVAL);
  CHECK(cairn_sync_set_refused_callback(NULL, on_refused, NULL, free_context) == CAIRN_EINVAL);
  CHECK(g_contexts_freed == before + 3);
  /* The refusal callback's payload is freed once, when it is replaced and when removed (the
   * refusals themselves: SyncAuth.RefusalsAreReportedBeforeTheWatermarkThatCoversThem, and
   * the Java and Swift tests through this call). */
  CHECK(cairn_sync_set_refused_callback(s, on_refused, NULL, free_context) == CAIRN_OK);
  CHECK(cairn_sync_set_refused_callback(s, on_refused, NULL, free_context) == CAIRN_OK);
  CHECK(g_contexts_freed == before + 4);
  CHECK(cairn_sync_set_refused_callback(s, NULL, NULL, NULL) == CAIRN_OK);
  CHECK(g_contexts_freed == before + 5);
  CHECK(cairn_sync_set_status_callback(s, on_offline_status, NULL, NULL) == CAIRN_OK);
  CHECK(cairn_sync_start(s) == CAIRN_OK);
  CHECK(cairn_replica_put_json(r, "notes", "n1", "{\"x\":1}") == CAIRN_OK);
  for (int i = 0; i < 300 && !atomic_load(&g_offline_pending_seen); i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  CHECK(atomic_load(&g_offline_pending_seen));
  CHECK(cairn_sync_stop(s) == CAIRN_OK);
  cairn_sync_free(s);
  cairn_replica_free(r);
}

int main(int argc, char** argv) {
  snprintf(g_dir, sizeof g_dir, "%s", argc > 1 ? argv[1] : ".");
  test_crud();
  test_receipts();
  test_errors();
  test_batch_and_exchange();
  test_batch_reuse_and_initializers();
  test_streams();
  test_listeners_and_params();
  test_status_while_offline();
  if (argc > 2) test_sync(argv[2]);
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
