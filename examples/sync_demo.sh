#!/usr/bin/env bash
# The main demo (README "Set-up"): a cairn-server on an embedded SQLite store, serving TLS with a
# development CA and checking tokens; three replicas edit offline with conflicts (a rename, a
# delete and a revival, counters), then sync through the server and converge; a fourth replica
# whose token may not write a collection sees its write there refused, reported and undone.
# Usage: examples/sync_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER
set -euo pipefail
CAIRN=${1:?usage: sync_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER}
SERVER=${2:?usage: sync_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d -t cairn-demo-XXXXXX)
SERVER_PID=
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$DIR"; }
trap cleanup EXIT
c() { local who=$1; shift; "$CAIRN" --db "$DIR/$who.db" "$@"; }
# shellcheck source=demo_edits.sh source-path=SCRIPTDIR
. "$(dirname "$0")/demo_edits.sh"
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "1. A sync server: TLS (a development CA made just now), tokens (HS256), SQLite store."
python3 "$HERE/make_dev_certs.py" "$DIR"
head -c 48 /dev/urandom | base64 > "$DIR/secret"
"$SERVER" --db "$DIR/server.db" --listen "127.0.0.1:$PORT" --tls-cert "$DIR/server.pem" \
  --tls-key "$DIR/server.key" --token-secret "$DIR/secret" 2> "$DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 50); do grep -q listening "$DIR/server.log" && break; sleep 0.1; done
cat "$DIR/server.log"
declare -A TOKEN
for who in alice bob carol; do
  TOKEN[$who]=$("$SERVER" token --token-secret "$DIR/secret" --sub "$who")
done
sync() {
  c "$1" sync --server "127.0.0.1:$PORT" --tls --ca "$DIR/ca.pem" --server-name localhost \
    --token "${TOKEN[$1]}" --once
}

say "2. Alice creates the shared list and syncs; Bob and Carol get it."
c alice put tasks groceries '{"title":"Buy groceries","done":false,"owner":"alice"}'
c alice put tasks tent '{"title":"Pack the tent","done":false}'
c alice inc tasks tent votes 1
sync alice >/dev/null; sync bob >/dev/null; sync carol >/dev/null
c carol dump

say "3. The network goes away. Everyone edits the same documents offline."
offline_edits
for who in alice bob carol; do
  printf '%-6s pending ops: %s\n' "$who" \
    "$(c $who status | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_ops"])')"
done

say "4. The network is back: each syncs (carol, bob, alice, then carol and bob again)."
for who in carol bob alice carol bob; do printf '%-6s %s\n' "$who" "$(sync $who)"; done

say "5. Every replica shows the same data as the server:"
for who in alice bob carol server; do printf '%-6s %s\n' "$who" "$(c $who dump)"; done
say "   and the same digest:"
for who in alice bob carol server; do printf '%-6s %s\n' "$who" "$(c $who digest)"; done
say "   The collection is a real SQL table on every replica:"
c bob query 'SELECT key, title, done, owner, votes FROM tasks ORDER BY key'

say "6. Dave may read everything but write only 'notes'. Offline he edits a task and writes a note;
   when he syncs, the server refuses the task edit (reported to him) and takes the note:"
TOKEN[dave]=$("$SERVER" token --token-secret "$DIR/secret" --sub dave --write notes)
sync dave >/dev/null
c dave put tasks groceries '{"title":"Buy nothing at all"}'
c dave put notes hello '{"text":"hi from dave"}'
printf '%-6s %s\n' dave "$(sync dave)"
c dave rejected
c dave rejected | grep -q '"error":"EPERM"' || { echo "the refusal was not recorded" >&2; exit 1; }
say "   Dave's replica undid the refused edit; everyone gets his note:"
for who in alice bob carol; do sync $who >/dev/null; done
c dave get tasks groceries
c alice get notes hello

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
da=$(c alice digest); db=$(c bob digest); dc=$(c carol digest); dd=$(c dave digest)
ds=$(c server digest)
if [ "$da" = "$db" ] && [ "$db" = "$dc" ] && [ "$dc" = "$dd" ] && [ "$dd" = "$ds" ]; then
  say "Converged: all four replicas and the server are identical."
else
  echo "DIVERGED" >&2
  exit 1
fi
