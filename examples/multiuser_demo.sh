#!/usr/bin/env bash
# Sync rules end to end (docs/sync-rules.md): a cairn-server with a rules file, three users whose
# tokens carry their teams. Each replica holds exactly the documents its user may read; a write
# outside the writer's channels is refused and undone; a document moved to another team leaves
# one replica and enters another; a user taken off a team loses its documents at the next sync;
# a one-way collection (news) is written by admins only, and a device's write to it fails at once.
# Every step is checked: the script exits 1 on the first difference.
# Usage: examples/multiuser_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER
set -euo pipefail
CAIRN=${1:?usage: multiuser_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER}
SERVER=${2:?usage: multiuser_demo.sh PATH_TO_CAIRN PATH_TO_CAIRN_SERVER}
DIR=$(mktemp -d -t cairn-multiuser-XXXXXX)
SERVER_PID=
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$DIR"; }
trap cleanup EXIT
c() { local who=$1; shift; "$CAIRN" --db "$DIR/$who.db" "$@"; }
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "1. A sync server with sync rules: a task is in its owner's channel and its team's;
   a token reads and writes its own channel and its teams' (plain TCP on localhost here;
   examples/sync_demo.sh shows TLS)."
cat > "$DIR/rules.json" <<'JSON'
{
  "collections": {"tasks": {"channels": ["user:{owner}", "team:{team}"]},
                  "news":  {"channels": ["public"], "devices": "read-only"}},
  "grants": {"read":  ["public", "user:{sub}", "team:{teams[]}"],
             "write": ["user:{sub}", "team:{teams[]}"]}
}
JSON
cat "$DIR/rules.json"
head -c 48 /dev/urandom | base64 > "$DIR/secret"
"$SERVER" --db "$DIR/server.db" --listen "127.0.0.1:$PORT" --token-secret "$DIR/secret" \
  --rules "$DIR/rules.json" 2> "$DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 50); do grep -q listening "$DIR/server.log" && break; sleep 0.1; done
declare -A TEAMS=([alice]=red [bob]="red,blue" [carol]=blue)
token() { "$SERVER" token --token-secret "$DIR/secret" --sub "$1" --claim-list "teams=$2"; }
sync() { c "$1" sync --server "127.0.0.1:$PORT" --token "$(token "$1" "${TEAMS[$1]}")" --once; }
# The keys of the tasks a replica holds, space-separated, sorted.
keys() { c "$1" query 'SELECT key FROM tasks ORDER BY key' | python3 -c \
  'import json,sys; print(" ".join(json.loads(l)["key"] for l in sys.stdin if l.strip()))'; }
expect() {  # WHO KEYS...: the replica holds exactly these tasks
  local who=$1; shift
  local got; got=$(keys "$who")
  printf '%-6s holds: %s\n' "$who" "${got:-(nothing)}"
  [ "$got" = "$*" ] || { echo "expected $who to hold: $*" >&2; exit 1; }
}

say "2. Alice (team red) writes a private task; Bob (teams red and blue) a red one and a blue
   one. (Nobody may put a document in a channel they may not write: Alice could not write a
   task owned by Bob.)"
c alice put tasks diary '{"title":"Alice private","owner":"alice"}'
c bob put tasks launch '{"title":"Plan the launch","owner":"bob","team":"red"}'
c bob put tasks budget '{"title":"Blue budget","owner":"bob","team":"blue"}'
for who in alice bob carol alice; do sync $who >/dev/null; done
expect alice diary launch
expect bob budget launch
expect carol budget

say "3. Carol (blue) edits the red task she never got: the server refuses it, she is told,
   and her replica undoes it."
c carol put tasks launch '{"title":"Carol was here"}'
printf '%-6s %s\n' carol "$(sync carol)"
c carol rejected
c carol rejected | grep -q '"error":"EPERM"' || { echo "the refusal was not recorded" >&2; exit 1; }
expect carol budget
sync bob >/dev/null
[ "$(c bob get tasks launch | python3 -c 'import json,sys; print(json.load(sys.stdin)["title"])')" \
  = "Plan the launch" ] || { echo "the refused edit reached bob" >&2; exit 1; }

say "4. Bob hands the launch to team blue: it leaves Alice's replica (removed, not deleted) and
   enters Carol's, whole."
c bob put tasks launch '{"team":"blue"}'
for who in bob alice carol; do sync $who >/dev/null; done
expect alice diary
expect carol budget launch
c carol get tasks launch

say "5. Carol's token loses team blue (she moved to team green): at her next sync, blue's tasks
   leave her replica."
TEAMS[carol]=green
sync carol >/dev/null
expect carol
c carol status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("carol:", s["pending_ops"], "pending ops")'
say "   Bob still has them all:"
expect bob budget launch

say "6. News is one-way: an admin token writes it, every device reads it, and a device's own
   write to it fails at once (EPERM), offline too."
c newsroom put news n1 '{"headline":"Launch moved to blue"}'
c newsroom sync --server "127.0.0.1:$PORT" \
  --token "$("$SERVER" token --token-secret "$DIR/secret" --sub newsroom --admin)" --once >/dev/null
sync alice >/dev/null
c alice get news n1
if c alice put news n2 '{"headline":"fake"}' 2> "$DIR/err"; then
  echo "a device wrote to the one-way collection" >&2; exit 1
fi
cat "$DIR/err"
grep -q EPERM "$DIR/err" || { echo "expected EPERM" >&2; exit 1; }

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
say "Each replica held exactly what its user may read, at every step."
