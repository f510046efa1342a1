/* The public header compiles alone as strict C99 (-std=c99 -pedantic -Werror). */
#include "cairn/cairn.h"

int cairn_header_test_anchor(void);
int cairn_header_test_anchor(void) {
  cairn_replica_options opts = CAIRN_REPLICA_OPTIONS_INIT;
  return (int)opts.version + CAIRN_OK;
}
