#!/bin/sh
# Makes the golden files of a release (docs/protocol.md "Versions"): its sync sessions, frame by
# frame, and the files its replicas and server leave, from that release's own binaries. Run once
# per release, before the protocol or the storage format changes; the output is committed under
# tests/compat/golden/RELEASE and replayed by tests/integration/compat_test.cc.
#
#   record_release.sh BIN_DIR OUT_DIR
#     BIN_DIR: the release's build/core (its cairn and cairn-server); OUT_DIR: made afresh.
#
# The sessions, in order, against one open server (no tokens, no TLS: the frames are readable
# and need no secret to replay), each a connection of `cairn sync --once`:
#   1 writer   replica a: sets, a counter, a delete, pushed to an empty server
#   2 reader   replica b, new: pulls them from the log
#   3 again    replica a: more writes (a revival among them), pushed from its cursor
#   4 follow   replica b: pulls what is new from its cursor
#   5 partial  replica c, new: only the collection "tasks" (--only tasks)
#   6 stream   replica a: telemetry records of stream "temp" uploaded
#   7 trim     replica a: two writes pushed to the server restarted with --keep-log 2
#   8 snapshot replica d, new: the log was trimmed, the state comes as a snapshot
# Then the files: replica a's, b's, c's and d's, the server's, and each one's `cairn dump`.
set -eu
bin=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $server $recorder 2>/dev/null || true; rm -rf "$work"' EXIT
server='' recorder=''
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() {  # start_server [FLAGS...]
  "$bin/cairn-server" --db "$work/server.db" --listen 127.0.0.1:0 "$@" 2> "$work/server.log" &
  server=$!
  i=0
  until grep -q 'listening on 127.0.0.1:' "$work/server.log"; do
    i=$((i + 1)); [ $i -lt 200 ] || { cat "$work/server.log"; exit 1; }; sleep 0.05
  done
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.log" | head -1)
}
stop_server() { kill -TERM "$server"; wait "$server" || true; server=''; }

session() {  # session NAME REPLICA [SYNC FLAGS...]: one `cairn sync --once` through the recorder
  name=$1 replica=$2
  shift 2
  rport=$(free_port)
  python3 "$here/record_session.py" --listen "$rport" --server "127.0.0.1:$port" \
    --out "$work/$name" > "$work/recorder.log" 2>&1 &
  recorder=$!
  i=0
  until grep -q listening "$work/recorder.log"; do
    i=$((i + 1)); [ $i -lt 200 ] || { cat "$work/recorder.log"; exit 1; }; sleep 0.05
  done
  "$bin/cairn" --db "$work/$replica.db" sync --server "127.0.0.1:$rport" --once "$@" > /dev/null
  sleep 0.2  # (the proxy writes the last frames)
  kill -TERM "$recorder"; wait "$recorder" || true; recorder=''
  mv "$work/$name-1.frames" "$out/$name.frames"
}

c() { "$bin/cairn" --db "$work/$1.db" "$@"; }
cli() { db=$1; shift; "$bin/cairn" --db "$work/$db.db" "$@" > /dev/null; }

start_server
cli a put tasks t1 '{"title":"write the spec","done":false,"weight":1.5}'
# shellcheck disable=SC2016 # (the JSON is literal)
cli a put tasks t2 '{"title":"ship it","tags":"x","blob":{"$bytes":"AAEC/w=="}}'
cli a inc counters visits n 5
cli a inc counters visits n -2
cli a put notes n1 '{"text":"caf\u00e9 \u2603","n":null}'
cli a del tasks t2
session writer a
session reader b
cli a put tasks t2 '{"title":"revived"}'
cli a put tasks t1 '{"done":true}'
cli a inc counters visits n 10
cli a put tasks t3 '{"title":"three"}'
session again a
session follow b
session partial c --only tasks
cli a append temp '{"c":21.5,"ok":true}'
cli a append temp '{"c":22.0,"ok":false}'
cli a append temp '{"c":-3,"note":"cold"}'
session stream a
stop_server
start_server --keep-log 2
cli a put tasks t4 '{"title":"after the restart"}'
cli a put tasks t5 '{"title":"trims the log"}'
session trim a
session snapshot d
stop_server
for r in a b c d; do
  cp "$work/$r.db" "$out/replica-$r.db"
  "$bin/cairn" --db "$work/$r.db" dump > "$out/replica-$r.dump.json"
done
cp "$work/server.db" "$out/server.db"
"$bin/cairn" --db "$work/server.db" dump > "$out/server.dump.json"
[ -f "$work/server.db.streams" ] && cp "$work/server.db.streams" "$out/server.db.streams"
ls "$work"/*-wal 2>/dev/null && { echo "record_release: a WAL was left behind" >&2; exit 1; }
{
  echo "release: commit $(git -C "$bin" rev-parse --short HEAD 2>/dev/null || echo '?')," \
    "$("$bin/cairn-server" --version)"
  echo "recorded: $(date -u +%Y-%m-%d) by tests/compat/record_release.sh"
} > "$out/RELEASE"
echo "record_release: $(find "$out" -type f | wc -l) files in $out"
