/* An IoT gateway on Cairn's C API (README "Telemetry streams"): it samples simulated sensors into
 * a telemetry stream, one batch per tick, while its uplink goes up and down; its sampling rate is
 * a document ("config"/"gateway", field sample_ms) that an operator changes on the server and
 * that reaches the gateway by the same sync, when the uplink is up. Both lanes, one connection.
 *
 *   gateway --db FILE --server HOST:PORT [--ca PEM] [--token JWT] [--sensors N] [--seconds S]
 *           [--uplink-ms MS]
 *
 * The uplink alternates every MS milliseconds (default 1000) between up (live sync running) and
 * down (stopped; readings queue durably). At the end the gateway syncs once and prints a JSON
 * summary: readings appended, rates seen, what is still queued. */
#include <cairn/cairn.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void die(const char* what, int rc) {
  fprintf(stderr, "gateway: %s: %s (%s)\n", what, cairn_error_last(), cairn_strerror(rc));
  exit(1);
}

/* The sampling rate the configuration document asks for, or `fallback`. */
static long sample_ms(cairn_replica* r, long fallback) {
  cairn_buf buf = {NULL, 0};
  long v = fallback;
  if (cairn_replica_query_json(&buf, r, "SELECT sample_ms FROM config WHERE key = 'gateway'") ==
          CAIRN_OK &&
      buf.data != NULL) {
    const char* colon = strchr((const char*)buf.data, ':');
    if (colon != NULL && strtol(colon + 1, NULL, 10) > 0) v = strtol(colon + 1, NULL, 10);
  }
  cairn_buf_dispose(&buf);
  return v;
}

int main(int argc, char** argv) {
  const char *db = NULL, *server = NULL, *ca = NULL, *token = NULL;
  long sensors = 20, seconds = 6, uplink_ms = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--db") == 0) db = argv[i + 1];
    else if (strcmp(argv[i], "--server") == 0) server = argv[i + 1];
    else if (strcmp(argv[i], "--ca") == 0) ca = argv[i + 1];
    else if (strcmp(argv[i], "--token") == 0) token = argv[i + 1];
    else if (strcmp(argv[i], "--sensors") == 0) sensors = strtol(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--seconds") == 0) seconds = strtol(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--uplink-ms") == 0) uplink_ms = strtol(argv[i + 1], NULL, 10);
    else {
      fprintf(stderr, "gateway: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (db == NULL || server == NULL || sensors <= 0 || seconds <= 0 || uplink_ms <= 0) {
    fprintf(stderr, "usage: gateway --db FILE --server HOST:PORT [--ca PEM] [--token JWT] "
                    "[--sensors N] [--seconds S] [--uplink-ms MS]\n");
    return 2;
  }
  cairn_replica* r = NULL;
  int rc = cairn_replica_open(&r, db, NULL);
  if (rc != CAIRN_OK) die("open", rc);
  /* 32 MiB of readings at most: if the uplink stays down longer, the oldest are dropped (and
   * counted), so the newest always get through. */
  cairn_stream_options so = CAIRN_STREAM_OPTIONS_INIT;
  so.max_bytes = 32u << 20;
  so.policy = CAIRN_STREAM_DROP_OLDEST;
  if ((rc = cairn_replica_configure_stream(r, "readings", &so)) != CAIRN_OK) die("stream", rc);

  cairn_sync_options o;
  cairn_sync_options_init(&o, CAIRN_SYNC_OPTIONS_VERSION);
  o.server = server;
  o.tls = ca != NULL;
  o.ca_file = ca;
  o.token = token;
  o.only = "config"; /* documents: only the configuration comes down */
  cairn_sync* sync = NULL;
  if ((rc = cairn_sync_new(&sync, r, &o)) != CAIRN_OK) die("sync", rc);

  cairn_records* batch = NULL;
  cairn_records_new(&batch);
  const int64_t start = now_ms();
  int64_t appended = 0, next_flip = start;
  int up = 0;
  long rate = 100, last_rate = -1;
  char rates[256] = "";
  unsigned seed = 42;
  while (now_ms() - start < seconds * 1000) {
    if (now_ms() >= next_flip) { /* the uplink comes and goes */
      up = !up;
      rc = up ? cairn_sync_start(sync) : cairn_sync_stop(sync);
      if (rc != CAIRN_OK) die(up ? "start" : "stop", rc);
      next_flip += uplink_ms;
      printf("uplink %s\n", up ? "up" : "down");
    }
    rate = sample_ms(r, rate);
    if (rate != last_rate) {
      printf("sampling every %ld ms\n", rate);
      size_t len = strlen(rates);
      snprintf(rates + len, sizeof rates - len, "%s%ld", len ? "," : "", rate);
      last_rate = rate;
    }
    const int64_t t = now_ms();
    cairn_records_clear(batch);
    for (long s = 0; s < sensors; s++) {
      char rec[128];
      seed = seed * 1103515245u + 12345u;
      snprintf(rec, sizeof rec, "{\"sensor\":\"s%02ld\",\"temp\":%.2f,\"hum\":%.1f}", s,
               18.0 + (double)(seed % 800) / 100.0, 40.0 + (double)(seed % 300) / 10.0);
      if ((rc = cairn_records_add_json(batch, rec, t)) != CAIRN_OK) die("record", rc);
    }
    cairn_append_result res;
    if ((rc = cairn_replica_append_records(&res, r, "readings", batch)) != CAIRN_OK) {
      die("append", rc);
    }
    appended += (int64_t)cairn_records_count(batch);
    sleep_ms(rate);
  }
  /* Shutting down: the uplink is up once more, everything goes. */
  cairn_sync_stop(sync);
  rc = cairn_sync_once(sync, 30000);
  if (rc != CAIRN_OK) die("final sync", rc);
  cairn_buf st = {NULL, 0};
  cairn_sync_status_json(&st, sync);
  printf("{\"appended\":%" PRId64 ",\"rates\":[%s],\"sync\":%s}\n", appended, rates,
         (const char*)st.data);
  cairn_buf_dispose(&st);
  cairn_records_free(batch);
  cairn_sync_free(sync);
  cairn_replica_free(r);
  return 0;
}
