/* Tests of the C API written in C, using only cairn.h (as leveldb's db/c_test.c).
 * Usage: capi_test WORK_DIR. Prints "N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn/cairn.h"

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
  cairn_replica_free(r);
  cairn_replica_free(NULL); /* harmless */
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

int main(int argc, char** argv) {
  snprintf(g_dir, sizeof g_dir, "%s", argc > 1 ? argv[1] : ".");
  test_crud();
  test_errors();
  test_batch_and_exchange();
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
