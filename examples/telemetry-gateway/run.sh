#!/usr/bin/env bash
# The telemetry gateway demo (README "Telemetry streams"): a cairn-server over TLS; a gateway
# (gateway.c, on the C API) samples 20 simulated sensors for a few seconds while its uplink goes
# up and down; meanwhile an operator changes the gateway's sampling rate in a document on the
# server. At the end every reading is in the server's table for the stream, exactly once, and
# the gateway followed the new rate.
# Usage: run.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER PATH_TO_GATEWAY
set -euo pipefail
CAIRN=${1:?usage: run.sh CAIRN CAIRN_SERVER GATEWAY}
SERVER=${2:?usage: run.sh CAIRN CAIRN_SERVER GATEWAY}
GATEWAY=${3:?usage: run.sh CAIRN CAIRN_SERVER GATEWAY}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d -t cairn-gateway-XXXXXX)
SERVER_PID=
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$DIR"; }
trap cleanup EXIT
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "1. A cairn-server over TLS with tokens; the operator sets the gateway's sampling rate."
python3 "$HERE/../make_dev_certs.py" "$DIR" >/dev/null
head -c 48 /dev/urandom | base64 > "$DIR/secret"
"$SERVER" --db "$DIR/server.db" --listen "127.0.0.1:$PORT" --tls-cert "$DIR/server.pem" \
  --tls-key "$DIR/server.key" --token-secret "$DIR/secret" 2> "$DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 50); do grep -q listening "$DIR/server.log" && break; sleep 0.1; done
GW_TOKEN=$("$SERVER" token --token-secret "$DIR/secret" --sub gateway-7 --read config \
  --write readings)
OP_TOKEN=$("$SERVER" token --token-secret "$DIR/secret" --sub operator --read config \
  --write config)
op() {
  "$CAIRN" --db "$DIR/operator.db" "$@"
}
op_sync() {
  op sync --server "localhost:$PORT" --tls --ca "$DIR/ca.pem" --token "$OP_TOKEN" --once >/dev/null
}
op put config gateway '{"sample_ms":100}'
op_sync

say "2. The gateway runs 6 s, its uplink up and down every second; after 2.5 s the operator asks
   for a reading every 40 ms."
"$GATEWAY" --db "$DIR/gateway.db" --server "localhost:$PORT" --ca "$DIR/ca.pem" \
  --token "$GW_TOKEN" --seconds 6 --uplink-ms 1000 > "$DIR/gateway.out" &
GW_PID=$!
sleep 2.5
op put config gateway '{"sample_ms":40}'
op_sync
wait "$GW_PID"
cat "$DIR/gateway.out"
SUMMARY=$(tail -1 "$DIR/gateway.out")

say "3. The server's table for the stream (SQL on the server's streams file):"
sqlite3 -header -column "$DIR/server.db.streams" \
  "SELECT sensor, count(*) AS readings, round(avg(temp), 2) AS avg_temp,
          max(received_ms - ts_ms) AS max_delay_ms
   FROM readings GROUP BY sensor ORDER BY sensor LIMIT 5"
ROWS=$(sqlite3 "$DIR/server.db.streams" "SELECT count(*) FROM readings")
DISTINCT=$(sqlite3 "$DIR/server.db.streams" "SELECT count(DISTINCT seq) FROM readings")
APPENDED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["appended"])' "$SUMMARY")
RATES=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rates"])' "$SUMMARY")
printf 'appended by the gateway: %s; rows on the server: %s (%s distinct seqs); rates: %s\n' \
  "$APPENDED" "$ROWS" "$DISTINCT" "$RATES"
"$CAIRN" --db "$DIR/gateway.db" stream readings
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
if [ "$ROWS" != "$APPENDED" ] || [ "$DISTINCT" != "$APPENDED" ]; then
  echo "LOST OR DUPLICATED READINGS" >&2
  exit 1
fi
if [ "$RATES" != "[100, 40]" ]; then
  echo "the gateway did not follow the configuration (rates $RATES)" >&2
  exit 1
fi
say "Every reading arrived once; the configuration came down the same connection."
