/* An application built against an installed Cairn (tests/install/install_test.sh): with
 * find_package(Cairn CONFIG) and with pkg-config. Writes a document, reads it back, prints it.
 *   app FILE */
#include <cairn/cairn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: app FILE\n");
    return 2;
  }
  cairn_replica* r = NULL;
  int rc = cairn_replica_open(&r, argv[1], NULL);
  if (rc != CAIRN_OK) {
    fprintf(stderr, "open: %s\n", cairn_error_last());
    return 1;
  }
  rc = cairn_replica_put_json(r, "tasks", "t1", "{\"title\":\"installed\",\"n\":7}");
  cairn_buf out = {NULL, 0};
  if (rc == CAIRN_OK) rc = cairn_replica_get_json(&out, r, "tasks", "t1");
  if (rc != CAIRN_OK) {
    fprintf(stderr, "write or read: %s\n", cairn_error_last());
    cairn_replica_free(r);
    return 1;
  }
  printf("cairn %s: %.*s\n", cairn_version(), (int)out.len, (const char*)out.data);
  cairn_buf_dispose(&out);
  cairn_replica_free(r);
  return 0;
}
