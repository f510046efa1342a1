#!/usr/bin/env bash
# Offline demo: three replicas edit the same documents with no network, swap export files
# (a USB stick would do) in different orders, and end with identical dumps and digests.
# Usage: examples/offline_demo.sh PATH_TO_CAIRN
set -euo pipefail
CAIRN=${1:?usage: offline_demo.sh PATH_TO_CAIRN}
DIR=$(mktemp -d -t cairn-demo-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
c() { local who=$1; shift; "$CAIRN" --db "$DIR/$who.db" "$@"; }
# shellcheck source=demo_edits.sh source-path=SCRIPTDIR
. "$(dirname "$0")/demo_edits.sh"
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. Alice, Bob and Carol start from the same shared list (Alice exports it to the others)."
c alice put tasks groceries '{"title":"Buy groceries","done":false,"owner":"alice"}'
c alice put tasks tent '{"title":"Pack the tent","done":false}'
c alice inc tasks tent votes 1
c alice export "$DIR/seed.cex" >/dev/null
c bob import "$DIR/seed.cex" >/dev/null
c carol import "$DIR/seed.cex" >/dev/null
c bob dump

say "2. Everyone goes offline and edits the same documents."
offline_edits

say "3. They meet and swap export files, each in a different order."
for who in alice bob carol; do c $who export "$DIR/$who.cex" >/dev/null; done
c alice import "$DIR/bob.cex" >/dev/null;   c alice import "$DIR/carol.cex" >/dev/null
c bob   import "$DIR/carol.cex" >/dev/null; c bob   import "$DIR/alice.cex" >/dev/null
c carol import "$DIR/alice.cex" >/dev/null; c carol import "$DIR/bob.cex" >/dev/null
echo "carol imports bob.cex a second time (nothing changes):"
c carol import "$DIR/bob.cex"

say "4. Every replica shows the same data:"
for who in alice bob carol; do printf '%-6s %s\n' "$who" "$(c $who dump)"; done
say "   and the same digest:"
for who in alice bob carol; do printf '%-6s %s\n' "$who" "$(c $who digest)"; done
say "   The collection is a real SQL table on every replica:"
c alice query 'SELECT key, title, done, owner, votes FROM tasks ORDER BY key'

da=$(c alice digest); db=$(c bob digest); dc=$(c carol digest)
if [ "$da" = "$db" ] && [ "$db" = "$dc" ]; then
  say "Converged: all three replicas are identical."
else
  echo "DIVERGED" >&2
  exit 1
fi
