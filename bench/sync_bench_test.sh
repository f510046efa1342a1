#!/usr/bin/env bash
# The documented sync benchmark runs as written (docs/BENCHMARKS.md), and none of its children
# (cairn-server, the client processes) outlives it when it dies.
#   sync_bench_test.sh SYNC_BENCH
set -euo pipefail
bench="$1"
work="$(mktemp -d /tmp/cairn-sync-bench-test-XXXXXX)"
cleanup() { pkill -KILL -f "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# 1. More idle connections than the server's default per-address limit (256), all from
#    127.0.0.1, as the documented `--idle 5000` run opens.
out="$("$bench" --scenario idle --idle 400 --dir "$work/idle" 2>"$work/idle.err")" || {
  echo "FAIL: sync_bench --scenario idle --idle 400 failed:"; cat "$work/idle.err"; exit 1; }
grep -q "Idle TLS connections" <<<"$out" || { echo "FAIL: no idle figures in:"; echo "$out"; exit 1; }
grep -Eq '^\| 400 \|' <<<"$out" || { echo "FAIL: not 400 connections:"; echo "$out"; exit 1; }

# 2. The benchmark killed (SIGKILL: no handler of its own runs) while its server and idle client
#    are up: both go with it.
"$bench" --scenario idle --idle 3000 --dir "$work/killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do
  grep -q "listening on" "$work/killed/idle-server.log" 2>/dev/null && break
  sleep 0.02
done
grep -q "listening on" "$work/killed/idle-server.log" || { echo "FAIL: the server never started"; exit 1; }
pgrep -f "$work/killed/idle-server.db" >/dev/null || { echo "FAIL: no server process seen"; exit 1; }
# ... and its idle client (a child of the benchmark too, opening connections).
for _ in $(seq 1 500); do
  pgrep -f -- "--child idle .*$work/killed" >/dev/null && break
  sleep 0.02
done
pgrep -f -- "--child idle .*$work/killed" >/dev/null || { echo "FAIL: no idle client seen"; exit 1; }
kill -KILL "$pid"
{ wait "$pid"; } 2>/dev/null || true
for _ in $(seq 1 250); do
  pgrep -f "$work/killed" >/dev/null || break
  sleep 0.02
done
if pgrep -af "$work/killed"; then
  echo "FAIL: processes of the killed benchmark are still running (above)"
  exit 1
fi
echo "sync_bench: idle run of 400 connections passed; no child outlived a killed benchmark"
